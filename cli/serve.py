"""`recon serve`: run the deployment in this process (no worker), as `recon up` does."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.runner import Runner

from flows.deployment import build_deployment, build_shard_deployment
from flows.resync import full_run
from flows.zombies import ensure_zombie_automation
from recon.broker.pacing import ensure_rate_limit
from recon.logfmt import line
from recon.settings import get_settings

logger = logging.getLogger("recon.serve")


async def serve(*, startup_delay: float | None, shard_pool: str | None = None) -> None:
    settings = get_settings()
    runner = Runner(
        name="recon-runner",
        # Poll twice a second: the poll is the part of trigger-to-event we control (1 s
        # made it 0.51 s to Pending at the median, 0.5 s made it 0.33 s). Prefetch only
        # 2 s ahead: a prefetched cron run already holds the concurrency slot.
        query_seconds=0.5,
        prefetch_seconds=2,
        heartbeat_seconds=settings.heartbeat_seconds,
        # Stopping `recon up` must not pause the deployment or delete its scheduled runs.
        pause_on_shutdown=False,
    )
    # The automation first: it is what crashes a run whose process died with its runner,
    # and a run can be started (by a trigger or the schedule) as soon as the deployment
    # exists, so it must already be guarded then.
    await ensure_zombie_automation(settings.heartbeat_seconds)
    if settings.source == "broker":  # every Broker API request of every run passes it
        await ensure_rate_limit(settings)
    await runner.aadd_deployment(await build_deployment())
    if settings.source == "broker" and shard_pool:  # the pool's workers run the shards
        await _deploy_to_pool(shard_pool)
    elif settings.source == "broker":  # the shards' child runs (RECON_SHARDS > 1)
        await runner.aadd_deployment(await build_shard_deployment())
    background = set()
    if startup_delay is not None:
        task = asyncio.create_task(_startup_run(startup_delay))
        background.add(task)
        task.add_done_callback(background.discard)
    # Installs its own SIGTERM handler: in-flight runs are cancelled, the loop returns.
    await runner.start()


async def _deploy_to_pool(pool: str) -> None:
    """`reconcile-positions/shard` on the process work pool `pool` (created if missing; the
    workers of `recon up --workers` may have created it first), not served here."""
    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    deployment = await build_shard_deployment(work_pool=pool)
    await deployment.aapply(work_pool_name=pool)
    logger.info(line("Shard deployment on the work pool", workPool=pool))


async def _startup_run(delay: float) -> None:
    """The old job reconciled ~10 s after start; so does this one, through the deployment.

    The way the fill listener asks for its resync (`full_run`): beside `recon listen`, whose
    first connect asks for one too, the two share a run that has yet to start, or run one
    after the other; a plain trigger would lose the slot to the listener's and be Cancelled.
    """
    await asyncio.sleep(delay)
    run = await full_run("startup")
    logger.info(line("Startup reconciliation done", flowRunId=str(run.id) if run else None))


def run_serve(startup_delay: float | None, *, shard_pool: str | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(startup_delay=startup_delay, shard_pool=shard_pool))

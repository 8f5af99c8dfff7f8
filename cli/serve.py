"""`recon serve`: run the deployment in this process (no worker), as `recon up` does."""

from __future__ import annotations

import asyncio
import logging

from prefect.deployments import arun_deployment
from prefect.runner import Runner

from flows.deployment import FULL_NAME, build_deployment
from flows.zombies import ensure_zombie_automation
from recon.logfmt import line
from recon.settings import get_settings

logger = logging.getLogger("recon.serve")


async def serve(*, startup_delay: float | None) -> None:
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
    await runner.aadd_deployment(await build_deployment())
    await ensure_zombie_automation(settings.heartbeat_seconds)
    background = set()
    if startup_delay is not None:
        task = asyncio.create_task(_startup_run(startup_delay))
        background.add(task)
        task.add_done_callback(background.discard)
    # Installs its own SIGTERM handler: in-flight runs are cancelled, the loop returns.
    await runner.start()


async def _startup_run(delay: float) -> None:
    """The old job reconciled ~10 s after start; so does this one, through the deployment."""
    await asyncio.sleep(delay)
    run = await arun_deployment(FULL_NAME, timeout=0, tags=["startup"], as_subflow=False)
    logger.info(line("Startup reconciliation triggered", flowRunId=str(run.id)))


def run_serve(startup_delay: float | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(startup_delay=startup_delay))

"""The deployment as `recon up` serves it: schedules, concurrency limit, parameters.

`prefect.yaml` repeats these values for `prefect deploy`; `tests/served/test_deployment.py`
fails if the two drift apart.
"""

from __future__ import annotations

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Schedule
from prefect.types.entrypoint import EntrypointType

from flows.reconcile import reconcile_positions
from recon.deployment import (
    CRON,
    DEPLOYMENT_NAME,
    FALL_BACK_CRON,
    FALL_BACK_TIMEZONE,
    FULL_NAME,
    SHARD_DEPLOYMENT_NAME,
    TIMEZONE,
)

DEFAULT_PARAMETERS = {"allow_mass_removal": False, "dry_run": False}

# CANCEL_NEW, not ENQUEUE: a run that finds another running is cancelled at once and shows
# as Cancelled ("Deployment concurrency limit reached.") in the UI. Queueing it would only
# re-read the same account a few seconds later; the next five-minute run does that anyway.
CONCURRENCY = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)


def schedules() -> list[Schedule]:
    return [
        Cron(CRON, timezone=TIMEZONE),
        Cron(FALL_BACK_CRON, timezone=FALL_BACK_TIMEZONE, day_or=False),
    ]


async def build_deployment(*, paused: bool = False) -> RunnerDeployment:
    """The deployment as `recon up` serves it (module entrypoint: works from any directory)."""
    return await reconcile_positions.ato_deployment(
        name=DEPLOYMENT_NAME,
        schedules=schedules(),
        concurrency_limit=CONCURRENCY,
        parameters=DEFAULT_PARAMETERS,
        paused=paused,
        description="Reconcile Alpaca positions into the local book every five minutes.",
        tags=["recon"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


async def build_shard_deployment(*, work_pool: str | None = None) -> RunnerDeployment:
    """`reconcile-positions/shard`: the Broker API mode's child runs (RECON_SHARDS > 1), one
    per slice of the accounts; no schedule and no concurrency limit of its own (the
    parent's deployment allows one pass at a time). With `work_pool` it is for that pool's
    workers (`recon up --workers K`), not for a runner to serve."""
    return await reconcile_positions.ato_deployment(
        name=SHARD_DEPLOYMENT_NAME,
        work_pool_name=work_pool,
        parameters=DEFAULT_PARAMETERS,
        description="One shard of a Broker API pass (started by the every-5-minutes run).",
        tags=["recon", "shard"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


__all__ = [
    "CONCURRENCY",
    "DEFAULT_PARAMETERS",
    "FULL_NAME",
    "build_deployment",
    "build_shard_deployment",
    "schedules",
]

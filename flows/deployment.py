"""The deployment: schedule, concurrency limit, parameters; defined once, for `recon up`.

`prefect.yaml` repeats these values for `prefect deploy`; `tests/test_deployment.py`
fails if the two drift apart.
"""

from __future__ import annotations

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Schedule
from prefect.types.entrypoint import EntrypointType

from flows.reconcile import reconcile_positions

FLOW_NAME = "reconcile-positions"
DEPLOYMENT_NAME = "every-5-minutes"
FULL_NAME = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
CRON = "*/5 * * * *"
TIMEZONE = "America/New_York"
DEFAULT_PARAMETERS = {"allow_mass_removal": False}

# Prefect 3.9 computes New York cron in wall-clock time and skips the repeated 01:00-01:59
# hour when clocks fall back (first Sunday of November, 06:00-06:55 UTC): a 65-minute gap.
# This second schedule fills exactly that hour. `day_or=False` makes day-of-month 1-7 AND
# Sunday both required (cron would otherwise OR them). Spring-forward needs nothing: the
# skipped 02:xx hour does not exist, and the runs on either side are five minutes apart.
FALL_BACK_CRON = "*/5 6 1-7 11 0"
FALL_BACK_TIMEZONE = "UTC"

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

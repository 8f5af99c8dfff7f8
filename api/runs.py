"""Reading the deployment's flow runs from the Prefect API (the only source of run state)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterEndTime,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateName,
    FlowRunFilterStateType,
    Operator,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound

from recon.deployment import FULL_NAME
from recon.errors import DeploymentNotFoundError

ACTIVE = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
FINISHED = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]
FAILED = [StateType.FAILED, StateType.CRASHED]
# A run due this soon counts as pending: the runner prefetches it and it takes the slot.
DUE_SOON = timedelta(seconds=10)


async def read_deployment(prefect: PrefectClient) -> DeploymentResponse:
    try:
        return await prefect.read_deployment_by_name(FULL_NAME)
    except ObjectNotFound:
        raise DeploymentNotFoundError(
            f"{FULL_NAME} is not deployed on the Prefect server yet"
        ) from None


def runs_of(
    deployment_id: UUID,
    states: list[StateType] | None = None,
    *,
    state_names: list[str] | None = None,
    ended_after: datetime | None = None,
    starting_before: datetime | None = None,
) -> FlowRunFilter:
    state = None
    if states or state_names:
        state = FlowRunFilterState(
            type=FlowRunFilterStateType(any_=states) if states else None,
            name=FlowRunFilterStateName(any_=state_names) if state_names else None,
        )
    return FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
        state=state,
        end_time=FlowRunFilterEndTime(after_=ended_after) if ended_after else None,
        expected_start_time=(
            FlowRunFilterExpectedStartTime(before_=starting_before) if starting_before else None
        ),
    )


async def count(prefect: PrefectClient, flt: FlowRunFilter) -> int:
    return await prefect.count_flow_runs(flow_run_filter=flt)


async def first(prefect: PrefectClient, flt: FlowRunFilter, sort: FlowRunSort) -> FlowRun | None:
    runs = await prefect.read_flow_runs(flow_run_filter=flt, sort=sort, limit=1)
    return runs[0] if runs else None


async def in_progress(prefect: PrefectClient, deployment_id: UUID) -> FlowRun | None:
    """A run that is running, starting, or due within seconds, if there is one.

    One query, not one per state: a runner moving a run from Scheduled to Pending between
    two reads would hide it from both (seen as a trigger that created a second run, which
    the concurrency limit then cancelled).
    """
    busy = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=ACTIVE),
            name=FlowRunFilterStateName(any_=["Scheduled"]),  # not Late: no runner took it
            operator=Operator.or_,  # type: ignore[call-arg]  # a mixin field mypy misses
        ),
        # Active runs started at or before their expected time, so this bounds only the
        # scheduled ones: those due soon, which the runner prefetches into the slot.
        expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(UTC) + DUE_SOON),
    )
    return await first(prefect, busy, FlowRunSort.EXPECTED_START_TIME_ASC)


# Runs read by `open_runs`: the active ones (one or two: the deployment's concurrency
# limit is one) come before the future scheduled ones in expected-start order.
OPEN_RUNS = 3


@dataclass(frozen=True)
class OpenRuns:
    """The deployment's active and Scheduled runs by expected start, and the next Scheduled one.

    Which of them is in progress depends on the clock (a Scheduled run becomes due), so it is
    asked of this at read time, `busy(now)`, and the runs themselves can be kept.
    """

    runs: list[FlowRun]
    upcoming: FlowRun | None

    def busy(self, now: datetime) -> FlowRun | None:
        """`in_progress`'s answer (its filter, applied here): the first run due by now+DUE_SOON."""
        due = now + DUE_SOON
        return next(
            (r for r in self.runs if r.expected_start_time and r.expected_start_time < due), None
        )


async def open_runs(prefect: PrefectClient, deployment_id: UUID) -> OpenRuns:
    """`in_progress`, and the next Scheduled run, from one query (the status endpoint's).

    One read, so the two cannot disagree. Only if the page holds no Scheduled run but is
    full is the next run asked for on its own.
    """
    state = FlowRunFilterState(
        type=FlowRunFilterStateType(any_=ACTIVE),
        name=FlowRunFilterStateName(any_=["Scheduled"]),
        operator=Operator.or_,  # type: ignore[call-arg]  # a mixin field mypy misses
    )
    runs = await prefect.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]), state=state
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        limit=OPEN_RUNS,
    )
    upcoming = next((r for r in runs if _scheduled(r)), None)
    if upcoming is None and len(runs) == OPEN_RUNS:
        flt = runs_of(deployment_id, [StateType.SCHEDULED], state_names=["Scheduled"])
        upcoming = await first(prefect, flt, FlowRunSort.EXPECTED_START_TIME_ASC)
    return OpenRuns(runs, upcoming)


def _scheduled(run: FlowRun) -> bool:
    return run.state_type == StateType.SCHEDULED and run.state_name == "Scheduled"


def ui_url(prefect: PrefectClient, configured: str | None, flow_run_id: UUID | str) -> str:
    base = configured or str(prefect.api_url).rstrip("/").removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"

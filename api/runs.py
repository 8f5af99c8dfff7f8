"""Reading the deployment's flow runs from the Prefect API (the only source of run state)."""

from __future__ import annotations

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
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound

from api.errors import ApiError
from recon.deployment import FULL_NAME

ACTIVE = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
FINISHED = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]
FAILED = [StateType.FAILED, StateType.CRASHED]
# A run due this soon counts as pending: the runner prefetches it and it takes the slot.
DUE_SOON = timedelta(seconds=10)


async def read_deployment(prefect: PrefectClient) -> DeploymentResponse:
    try:
        return await prefect.read_deployment_by_name(FULL_NAME)
    except ObjectNotFound:
        raise ApiError(
            503, "deployment not found", f"{FULL_NAME} is not deployed on the Prefect server yet"
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
    """A run that is running, starting, or due within seconds, if there is one."""
    active = await first(prefect, runs_of(deployment_id, ACTIVE), FlowRunSort.START_TIME_DESC)
    if active is not None:
        return active
    soon = runs_of(
        deployment_id,
        [StateType.SCHEDULED],
        state_names=["Scheduled"],  # not Late: a late run with no runner must not block
        starting_before=datetime.now(UTC) + DUE_SOON,
    )
    return await first(prefect, soon, FlowRunSort.EXPECTED_START_TIME_ASC)


def ui_url(prefect: PrefectClient, configured: str | None, flow_run_id: UUID | str) -> str:
    base = configured or str(prefect.api_url).rstrip("/").removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"

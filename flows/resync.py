"""A full reconciliation that *starts after now*, through the deployment: the listener's answer
to a gap in the stream (a (re)connect, a batch it could not settle).

A run already waiting to start (Scheduled and due within seconds, or Pending) will read the
broker after now: it is adopted instead of asking for another. A Running one may have read
before the gap, so it is waited for and a new run asked for after it; one Cancelled by the
concurrency limit (another run took the slot first) is asked for again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import arun_deployment

from recon.deployment import FULL_NAME
from recon.logfmt import line

logger = logging.getLogger("recon.listener")

FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
ATTEMPTS = 20
DUE_SOON = timedelta(seconds=10)
POLL_SECONDS = 0.5


async def full_run(tag: str) -> FlowRun | None:
    """Until a deployment run that started after this call has finished (not Cancelled)."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(FULL_NAME)
        for _ in range(ATTEMPTS):
            run = await _first(client, deployment.id, [StateType.PENDING], due_soon=False)
            run = run or await _first(client, deployment.id, [StateType.SCHEDULED], due_soon=True)
            if run is None:
                running = await _first(
                    client, deployment.id, [StateType.RUNNING, StateType.CANCELLING]
                )
                if running is not None:
                    await _final(client, running)
                run = await arun_deployment(FULL_NAME, timeout=0, tags=[tag], as_subflow=False)
                logger.info(
                    line("Full reconciliation triggered", flowRunId=str(run.id), trigger=tag)
                )
            else:
                # Tagged with this trigger too: the run's page says whom it served.
                await client.update_flow_run(run.id, tags=sorted({*run.tags, tag}))
                logger.info(line("Full reconciliation adopted", flowRunId=str(run.id), trigger=tag))
            run = await _final(client, run)
            if run.state_type != StateType.CANCELLED:
                return run
    return None


async def _first(
    client: PrefectClient, deployment_id: UUID, states: list[StateType], *, due_soon: bool = False
) -> FlowRun | None:
    flt = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)),
        expected_start_time=(
            FlowRunFilterExpectedStartTime(before_=datetime.now(UTC) + DUE_SOON)
            if due_soon
            else None
        ),
    )
    found = await client.read_flow_runs(flow_run_filter=flt, limit=1)
    return found[0] if found else None


async def _final(client: PrefectClient, run: FlowRun) -> FlowRun:
    while run.state_type not in FINAL:
        await asyncio.sleep(POLL_SECONDS)
        run = await client.read_flow_run(run.id)
    return run

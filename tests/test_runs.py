"""`api.runs.in_progress`, the trigger's and the status's "is a sync running?", against the
session's Prefect server: which states and due times count (one query; no runner here, so a
run stays in the state it was made in)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Cancelling, Completed, Failed, Late, Pending, Running, Scheduled, State

from api.runs import in_progress

NOW = dt.timedelta(0)
STATES: dict[str, tuple[Callable[[], State], bool]] = {
    "scheduled now": (lambda: Scheduled(scheduled_time=_at(NOW)), True),
    "scheduled in 5 s": (lambda: Scheduled(scheduled_time=_at(dt.timedelta(seconds=5))), True),
    "scheduled in an hour": (lambda: Scheduled(scheduled_time=_at(dt.timedelta(hours=1))), False),
    "late": (lambda: Late(scheduled_time=_at(-dt.timedelta(minutes=2))), False),
    "pending": (Pending, True),
    "running": (Running, True),
    "cancelling": (Cancelling, True),
    "completed": (Completed, False),
    "failed": (Failed, False),
}


def _at(offset: dt.timedelta) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + offset


async def _busy_with(deployment_id: UUID, state: State | None) -> tuple[UUID | None, UUID | None]:
    """(the run made in `state`, what in_progress answers), the run deleted afterwards."""
    async with get_client() as client:
        run = None
        if state is not None:
            run = await client.create_flow_run_from_deployment(deployment_id, state=state)
        try:
            busy = await in_progress(client, deployment_id)
        finally:
            if run is not None:
                await client.delete_flow_run(run.id)
    return (run.id if run else None), (busy.id if busy else None)


def test_nothing_is_in_progress_without_runs(deployment: UUID) -> None:
    assert asyncio.run(_busy_with(deployment, None)) == (None, None)


@pytest.mark.parametrize("name", STATES)
def test_which_runs_count_as_in_progress(deployment: UUID, name: str) -> None:
    make, counts = STATES[name]
    made, busy = asyncio.run(_busy_with(deployment, make()))
    assert made is not None
    assert busy == (made if counts else None), name

"""`api.runs.in_progress` (the trigger's "is a sync running?") and `api.runs.open_runs` (the
status's, kept by the status cache), against the session's Prefect server: which states and
due times count, the same for both (no runner here, so a run stays in the state it was made
in)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Cancelling, Completed, Failed, Late, Pending, Running, Scheduled, State

from api.runs import OpenRuns, in_progress, open_runs

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


async def _busy_with(
    deployment_id: UUID, state: State | None
) -> tuple[UUID | None, UUID | None, UUID | None]:
    """(the run made in `state`, what in_progress answers, what open_runs' `busy` answers
    now), the run deleted afterwards."""
    async with get_client() as client:
        run = None
        if state is not None:
            run = await client.create_flow_run_from_deployment(deployment_id, state=state)
        try:
            busy = await in_progress(client, deployment_id)
            kept = (await open_runs(client, deployment_id)).busy(_at(NOW))
        finally:
            if run is not None:
                await client.delete_flow_run(run.id)
    return (run.id if run else None), (busy.id if busy else None), (kept.id if kept else None)


def test_nothing_is_in_progress_without_runs(deployment: UUID) -> None:
    assert asyncio.run(_busy_with(deployment, None)) == (None, None, None)


@pytest.mark.parametrize("name", STATES)
def test_which_runs_count_as_in_progress(deployment: UUID, name: str) -> None:
    make, counts = STATES[name]
    made, busy, kept = asyncio.run(_busy_with(deployment, make()))
    assert made is not None
    assert busy == kept == (made if counts else None), name


def test_a_kept_read_counts_a_run_as_due_when_it_becomes_due(deployment: UUID) -> None:
    """The status keeps `open_runs`' answer; whether a Scheduled run is due is asked of it at
    each read, so a run due in a minute turns pending without a new query."""

    async def read() -> tuple[UUID, OpenRuns]:
        async with get_client() as client:
            soon = Scheduled(scheduled_time=_at(dt.timedelta(minutes=1)))
            run = await client.create_flow_run_from_deployment(deployment, state=soon)
            try:
                return run.id, await open_runs(client, deployment)
            finally:
                await client.delete_flow_run(run.id)

    made, kept = asyncio.run(read())
    assert kept.busy(_at(NOW)) is None
    due = kept.busy(_at(dt.timedelta(seconds=55)))
    assert due is not None and due.id == made
    assert kept.upcoming is not None and kept.upcoming.id == made

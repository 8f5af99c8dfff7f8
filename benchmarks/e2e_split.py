"""Where one whole run spent its time, from what the Prefect server recorded about it.

Every timestamp is proposed by the flow's own process (state and log timestamps are set
where they happen), and the benchmark's clock is the same machine's wall clock, so a run
can be cut at process start, Running, each task run's start and end, the run's Prefect
event and Completed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

from flows.publish import EVENT_CHANGED
from tests.support.wait import wait_until as wait_for

TASKS = ("fetch-snapshot", "diff-positions", "persist-changes")


def _task_runs(run_id: str) -> dict[str, Any] | None:
    """The three task runs once the server has all of them finished (they arrive as events,
    a moment after the flow run's own state)."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    found = {}
    for run in runs:
        for name in TASKS:
            if run.name.startswith(name) and run.start_time and run.end_time:
                found[name] = run
    return found if len(found) == len(TASKS) else None


def _body_end(run_id: str) -> datetime | None:
    """When the flow emitted its `recon.positions.changed` event: the body's last step that
    Prefect records (`recon sync` logs at WARNING, so the INFO summary line after it is not
    shipped). What follows it is building the summary and the return value."""
    with get_client(sync_client=True) as client:
        page = client.read_events(
            EventFilter(
                event=EventNameFilter(name=[EVENT_CHANGED]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"]),
            ),
            limit=50,  # the server's maximum
        )
    return page.events[0].occurred if page.events else None  # newest first


def split(run_id: str, started_wall: float) -> dict[str, Any]:
    """Seconds per step of one finished flow run; `started_wall` is the process start or the
    trigger (time.time())."""
    tasks = wait_for(lambda: _task_runs(run_id), 60, "the run's task runs", interval=0.25)
    try:
        body_end: datetime | None = wait_for(
            lambda: _body_end(run_id), 30, "the run's event", interval=0.25
        )
    except AssertionError:  # Prefect refused it (too large) or it was lost
        body_end = None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)  # type: ignore[arg-type]
        history = client.read_flow_run_states(run_id)  # type: ignore[arg-type]
    completed = [s.timestamp for s in history if s.type == StateType.COMPLETED]
    running = [s.timestamp for s in history if s.type == StateType.RUNNING]
    if not (completed and running):
        raise AssertionError(f"flow run {run_id} did not complete: {run.state}")
    begin, end = running[0].timestamp(), completed[-1].timestamp()
    fetch, diff, persist = (tasks[name] for name in TASKS)

    def span(a: datetime, b: datetime) -> float:
        return (b - a).total_seconds()

    return {
        "to_running_s": begin - started_wall,
        "setup_s": fetch.start_time.timestamp() - begin,  # upgrade check, sync lock
        "fetch_s": span(fetch.start_time, fetch.end_time),
        "diff_s": span(diff.start_time, diff.end_time),
        "persist_s": span(persist.start_time, persist.end_time),
        # Between the task runs: the flow resolving one task's result into the next call.
        "between_tasks_s": span(fetch.end_time, diff.start_time)
        + span(diff.end_time, persist.start_time),
        # The artifact and the event, then the summary and the return value until Completed.
        "publish_s": span(persist.end_time, body_end) if body_end else None,
        "body_end_to_completed_s": end - body_end.timestamp() if body_end else None,
        "flow_run_s": end - begin,
        "completed_at": end,
    }

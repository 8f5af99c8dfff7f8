"""`GET /api/admin/jobs/status`: the old job's status shape, computed from Prefect and `sync_runs`.

The Prefect reads are kept per replica only until Prefect announces a change
(`api.status_cache`); the rest is read from the database on every call, so a status
survives restarts and agrees across sidecar replicas.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from sqlalchemy.orm import Session, sessionmaker

from api.runs import FAILED, FINISHED, count, first, open_runs, read_deployment, runs_of, ui_url
from api.schemas import JobState, JobStatus
from api.status_cache import PrefectView, StatusCache
from recon.deployment import SCHEDULE_LABEL
from recon.fills.status import read_status
from recon.schemas.accounts import AccountsSummary
from recon.schemas.result import RunChanges
from recon.schemas.stream import StreamState
from recon.settings import Settings
from recon.store.accounts import run_accounts
from recon.store.models import SyncRun
from recon.store.runs import sync_run_of


async def read_view(prefect: PrefectClient) -> PrefectView:
    """The Prefect half of a status: the deployment, then its five queries at once."""
    deployment = await read_deployment(prefect)
    dep_id = deployment.id
    succeeded, failed, skipped, open_, last = await asyncio.gather(
        count(prefect, runs_of(dep_id, [StateType.COMPLETED])),
        count(prefect, runs_of(dep_id, FAILED)),
        count(prefect, runs_of(dep_id, [StateType.CANCELLED])),
        open_runs(prefect, dep_id),
        first(prefect, runs_of(dep_id, FINISHED), FlowRunSort.END_TIME_DESC),
    )
    return PrefectView(deployment, succeeded, failed, skipped, open_, last)


async def job_status(
    prefect: PrefectClient,
    settings: Settings,
    sessions: sessionmaker[Session],
    cache: StatusCache,
) -> tuple[JobStatus, str]:
    """The status, and how its Prefect half was served (a `Cache-Status` value)."""
    view, served = await cache.view(lambda: read_view(prefect))
    deployment, last = view.deployment, view.last
    # The database half, on every call, in one worker-thread trip.
    stream, (sync_run, accounts) = await asyncio.to_thread(
        _rows, sessions, str(last.id) if last else None, settings.source == "broker"
    )
    active, upcoming = view.open.busy(datetime.now(UTC)), view.open.upcoming
    schedules = [s for s in deployment.schedules if s.active]
    # `busy` is a Running/Cancelling run, a Pending one, or one due in seconds.
    running = active is not None and active.state_type in (StateType.RUNNING, StateType.CANCELLING)
    state = JobState(
        enabled=not deployment.paused and bool(schedules),
        schedule=_describe(schedules) if schedules else None,
        is_running=running,
        is_pending=active is not None and not running,
        current_flow_run_id=str(active.id) if active else None,
        last_run_time=_iso(last.start_time) if last else None,
        last_run_duration=_millis(last) if last else None,
        last_run_state=last.state_name if last else None,
        next_run_time=_iso(upcoming.expected_start_time) if upcoming else None,
        total_runs=view.succeeded + view.failed,
        successful_runs=view.succeeded,
        failed_runs=view.failed,
        skipped_runs=view.skipped,
        last_error=_last_error(last, sync_run),
        # Broker mode: one account's changes would mislead; `accounts` has the pass.
        last_result=None if accounts is not None else _last_result(sync_run),
        last_flow_run_id=str(last.id) if last else None,
        last_flow_run_url=ui_url(prefect, settings.prefect_ui_url, last.id) if last else None,
    )
    return JobStatus(position_reconciliation=state, stream=stream, accounts=accounts), served


def _rows(
    sessions: sessionmaker[Session], flow_run_id: str | None, broker: bool
) -> tuple[StreamState, tuple[SyncRun | None, AccountsSummary | None]]:
    """The fill stream's row (every replica agrees), the last run's record and, in broker
    mode, its accounts."""
    stream = read_status(sessions)
    if flow_run_id is None:
        return stream, (None, None)
    sync_run = sync_run_of(sessions, flow_run_id)
    if not broker:
        return stream, (sync_run, None)
    with sessions() as session:
        return stream, (sync_run, run_accounts(session, flow_run_id))


def _last_error(run: FlowRun | None, sync_run: SyncRun | None) -> str | None:
    if run is None or run.state_type == StateType.COMPLETED:
        return None
    if sync_run is not None and sync_run.reason:
        return sync_run.reason
    return (run.state.message if run.state else None) or run.state_name


def _last_result(sync_run: SyncRun | None) -> RunChanges | None:
    if sync_run is None or sync_run.result is None:
        return None
    return RunChanges.model_validate(sync_run.result)


def _describe(schedules: list[Any]) -> str:
    described = [
        f"{getattr(s.schedule, 'cron', '?')} ({getattr(s.schedule, 'timezone', None) or 'UTC'})"
        for s in schedules
    ]
    # The fall-back fill is shown only if the main schedule is gone.
    return SCHEDULE_LABEL if SCHEDULE_LABEL in described else described[0]


def _millis(run: FlowRun) -> int:
    return round(run.total_run_time.total_seconds() * 1000)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None

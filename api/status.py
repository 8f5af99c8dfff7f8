"""`GET /api/admin/jobs/status`: the old job's status shape, computed from Prefect and `sync_runs`.

Nothing is kept in memory, so it survives restarts and agrees across sidecar replicas.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from sqlalchemy import select

from api.runs import FAILED, FINISHED, count, first, in_progress, runs_of, ui_url
from recon.deployment import SCHEDULE_LABEL
from recon.settings import Settings
from recon.store.database import session_factory
from recon.store.models import SyncRun


async def job_status(prefect: PrefectClient, settings: Settings, deployment: Any) -> dict[str, Any]:
    dep_id = deployment.id
    (succeeded, failed, skipped, active, last, upcoming) = await asyncio.gather(
        count(prefect, runs_of(dep_id, [StateType.COMPLETED])),
        count(prefect, runs_of(dep_id, FAILED)),
        count(prefect, runs_of(dep_id, [StateType.CANCELLED])),
        in_progress(prefect, dep_id),
        first(prefect, runs_of(dep_id, FINISHED), FlowRunSort.END_TIME_DESC),
        first(
            prefect,
            runs_of(dep_id, [StateType.SCHEDULED], state_names=["Scheduled"]),
            FlowRunSort.EXPECTED_START_TIME_ASC,
        ),
    )
    sync_run = await asyncio.to_thread(sync_run_of, settings, last.id) if last else None
    schedules = [s for s in deployment.schedules if s.active]
    # `in_progress` returns a Running/Cancelling run, a Pending one, or one due in seconds.
    running = active is not None and active.state_type in (StateType.RUNNING, StateType.CANCELLING)
    return {
        "positionReconciliation": {
            "enabled": not deployment.paused and bool(schedules),
            "schedule": _describe(schedules) if schedules else None,
            "isRunning": running,
            "isPending": active is not None and not running,
            "currentFlowRunId": str(active.id) if active else None,
            "lastRunTime": _iso(last.start_time) if last else None,
            "lastRunDuration": _millis(last) if last else None,
            "lastRunState": last.state_name if last else None,
            "nextRunTime": _iso(upcoming.expected_start_time) if upcoming else None,
            "totalRuns": succeeded + failed,
            "successfulRuns": succeeded,
            "failedRuns": failed,
            "skippedRuns": skipped,
            "lastError": _last_error(last, sync_run),
            "lastResult": _last_result(sync_run),
            "lastFlowRunId": str(last.id) if last else None,
            "lastFlowRunUrl": ui_url(prefect, settings.prefect_ui_url, last.id) if last else None,
        }
    }


def sync_run_of(settings: Settings, flow_run_id: UUID) -> SyncRun | None:
    """The app database's record of a flow run (its result or its reason of failure)."""
    with session_factory(settings.resolved_database_url)() as session:
        query = select(SyncRun).where(SyncRun.flow_run_id == str(flow_run_id))
        return session.scalars(query.order_by(SyncRun.id.desc()).limit(1)).first()


def _last_error(run: FlowRun | None, sync_run: SyncRun | None) -> str | None:
    if run is None or run.state_type == StateType.COMPLETED:
        return None
    if sync_run is not None and sync_run.reason:
        return sync_run.reason
    return (run.state.message if run.state else None) or run.state_name


def _last_result(sync_run: SyncRun | None) -> dict[str, Any] | None:
    if sync_run is None or sync_run.result is None:
        return None
    result = sync_run.result
    keys = ("created", "updated", "removed", "errors", "summary")
    return {k: result.get(k, [] if k != "summary" else {}) for k in keys}


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

"""`GET /api/admin/jobs/runs`: the deployment's latest runs for the console's Runs panel.

State and timing from Prefect; who and what from the run's tags and parameters; the
number of changes from the run's `sync_runs` record (a preview has none).
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.sorting import FlowRunSort
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.runs import runs_of, ui_url
from api.schemas import RunList, RunOut
from recon.deployment import KEY_TAG_PREFIX, TRIGGER_TAGS, is_preview
from recon.schemas.result import RunChanges
from recon.settings import Settings
from recon.store.models import SyncRun


async def recent_runs(
    prefect: PrefectClient,
    settings: Settings,
    sessions: sessionmaker[Session],
    deployment: DeploymentResponse,
    limit: int,
) -> RunList:
    runs = await prefect.read_flow_runs(
        flow_run_filter=runs_of(deployment.id),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=limit,
    )
    changes = await asyncio.to_thread(_changes, sessions, [r.id for r in runs])
    return RunList(
        runs=[_run(r, changes.get(str(r.id)), prefect, settings) for r in runs],
    )


def _changes(sessions: sessionmaker[Session], ids: list[UUID]) -> dict[str, int]:
    if not ids:
        return {}
    query = select(SyncRun.flow_run_id, SyncRun.result).where(
        SyncRun.flow_run_id.in_([str(i) for i in ids])
    )
    with sessions() as session:
        rows = session.execute(query.order_by(SyncRun.id)).all()
    return {
        run_id: RunChanges.model_validate(result).total_changes
        for run_id, result in rows
        if run_id and result
    }


def _run(run: FlowRun, changes: int | None, prefect: PrefectClient, settings: Settings) -> RunOut:
    tags = set(run.tags or [])
    trigger = next((t for t in TRIGGER_TAGS if t in tags), "schedule")
    who = next((t.removeprefix(KEY_TAG_PREFIX) for t in tags if t.startswith(KEY_TAG_PREFIX)), None)
    parameters = run.parameters or {}
    seconds = run.total_run_time.total_seconds() if run.start_time else None
    return RunOut(
        flow_run_id=str(run.id),
        name=run.name,
        state=run.state_name,
        state_type=run.state_type.value if run.state_type else None,
        start_time=run.start_time.isoformat() if run.start_time else None,
        end_time=run.end_time.isoformat() if run.end_time else None,
        duration_seconds=round(seconds, 3) if seconds is not None else None,
        trigger=trigger,
        who=who,
        dry_run=is_preview(parameters),
        allow_mass_removal=bool(parameters.get("allow_mass_removal")),
        total_changes=changes,
        flow_run_url=ui_url(prefect, settings.prefect_ui_url, run.id),
    )

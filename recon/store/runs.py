"""Reading `sync_runs`: the app database's record of each flow run."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from recon.schemas.events import POSITION_UPDATED
from recon.schemas.result import RunReport
from recon.store.models import PositionChange, PositionEvent, SyncRun


def sync_run_of(sessions: sessionmaker[Session], flow_run_id: UUID | str) -> SyncRun | None:
    """The latest record of a flow run (its result or its reason of failure), if any."""
    with sessions() as session:
        query = select(SyncRun).where(SyncRun.flow_run_id == str(flow_run_id))
        return session.scalars(query.order_by(SyncRun.id.desc()).limit(1)).first()


def full_report(sessions: sessionmaker[Session], report: RunReport) -> RunReport:
    """A bounded report made whole again from the journal: the run's record (every symbol)
    and its `position_changes` rows (every detail, in the order the events carried them)."""
    if not report.truncated or report.sync_run_id is None:
        return report
    query = (
        select(PositionChange.asset_id, PositionChange.symbol, PositionChange.change)
        .add_columns(PositionChange.fields)
        .join(PositionEvent, PositionEvent.id == PositionChange.event_id)
        .where(PositionEvent.sync_run_id == report.sync_run_id)
        .where(PositionEvent.type == POSITION_UPDATED)
        .order_by(PositionChange.id)
    )
    with sessions() as session:
        run = session.get(SyncRun, report.sync_run_id)
        rows = session.execute(query).all()
    if run is None or run.result is None:
        return report
    details = [
        {"assetId": asset_id, "symbol": symbol, "change": change, "fields": fields}
        for asset_id, symbol, change, fields in rows
    ]
    return RunReport.model_validate(run.result | {"details": details})

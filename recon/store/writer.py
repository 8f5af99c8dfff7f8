"""Applying a reconciliation: positions, run row and journal in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import pandas as pd
from sqlalchemy import ColumnElement, Table, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from recon.diff import Diff
from recon.position import KEY, MARKET_FIELDS
from recon.schemas.events import PositionUpdated, RunFailed
from recon.schemas.result import RunResult, counts_of
from recon.store.dialects import dialect_for
from recon.store.journal import POSITION_UPDATED, SYSTEM_ERROR, append_event, lock_journal
from recon.store.models import PositionEvent, SyncRun

RUNS = cast(Table, SyncRun.__table__)


def apply_reconciliation(
    sessions: sessionmaker[Session],
    diff: Diff,
    result: RunResult,
    *,
    also: Callable[[Session], None] | None = None,
) -> RunResult:
    """Write everything a successful run changes, or nothing at all; `also` writes its own
    rows in the same transaction (the Broker API event stream's cursor)."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        # Core statements, not the ORM's unit of work: an account of a Broker API pass
        # writes one run row, and the flush of one object cost more than its upsert.
        run_row = insert(RUNS).values(
            flow_run_id=result.flow_run_id,
            account_id=result.account_id,
            status="completed",
            started_at=result.started_at,
            finished_at=now,
            market_open=result.market_open,
            **counts_of(result.summary),
        )
        run_id: int = session.execute(run_row.returning(RUNS.c.id)).scalar_one()
        _upsert(session, pd.concat([diff.created, diff.updated]), now, run_id)
        _refresh(session, diff.refreshed, now, run_id)
        _delete(session, result.account_id, diff.removed.index.tolist())
        event_id = None
        if diff.has_changes:
            # One journal row per part (one SSE message each); `eventId` is the first.
            ids = [
                append_event(
                    session,
                    type=POSITION_UPDATED,
                    payload=message.dump(),
                    account_id=result.account_id,
                    sync_run_id=run_id,
                    flow_run_id=result.flow_run_id,
                    changes=diff.changes[share],
                )
                for message, share in PositionUpdated.parts_of(result, now)
            ]
            event_id = ids[0]
        if also is not None:
            also(session)
        final = result.model_copy(update={"sync_run_id": run_id, "event_id": event_id})
        session.execute(update(RUNS).where(RUNS.c.id == run_id).values(result=final.record()))
    return final


def record_failure(
    sessions: sessionmaker[Session],
    *,
    flow_run_id: str | None,
    started_at: datetime,
    reason: str,
    status: str = "failed",
    account_id: str | None = None,
) -> int | None:
    """Log a failed or crashed run and journal its `system:error`, once per flow run.

    Called from Prefect's failure/crash hooks and, for runs that died before their hook
    could run, by the sidecar; whichever comes second finds the entry and does nothing.
    """
    now = datetime.now(UTC)
    with sessions.begin() as session:
        # Taken before the check: the runner's crash hook and every sidecar replica may
        # report the same run at once, and only the first may write.
        lock_journal(session)
        if flow_run_id is not None and _has_error_event(session, flow_run_id, account_id):
            return None
        # A run's failure goes on its row, whichever account it holds (the trading mode);
        # an account's failure on that account's row.
        query = select(SyncRun.id).where(SyncRun.flow_run_id == flow_run_id)
        if account_id is not None:
            query = query.where(SyncRun.account_id == account_id)
        run_id = session.scalar(query)
        # What the run row and the event payload both say.
        run_fields = {"flow_run_id": flow_run_id, "account_id": account_id, "status": status}
        if run_id is None or flow_run_id is None:
            run = SyncRun(**run_fields, started_at=started_at, finished_at=now, reason=reason)
            session.add(run)
            session.flush()
            run_id = run.id
        payload = RunFailed(**run_fields, error=reason, timestamp=now).dump()
        return append_event(
            session,
            type=SYSTEM_ERROR,
            payload=payload,
            account_id=account_id,
            sync_run_id=run_id,
            flow_run_id=flow_run_id,
        )


def _has_error_event(session: Session, flow_run_id: str, account_id: str | None) -> bool:
    """Reported already? A run's own failure (no account) and each account's, once each."""
    query = select(PositionEvent.id).where(
        PositionEvent.flow_run_id == flow_run_id,
        PositionEvent.type == SYSTEM_ERROR,
        _same_account(PositionEvent.account_id, account_id),
    )
    return session.scalar(query.limit(1)) is not None


def _same_account(column: Any, account_id: str | None) -> ColumnElement[bool]:
    test: ColumnElement[bool] = column.is_(None) if account_id is None else column == account_id
    return test


def _upsert(session: Session, rows: pd.DataFrame, now: datetime, run_id: int) -> None:
    if rows.empty:
        return
    stamps = {"created_at": now, "updated_at": now, "refreshed_at": now, "sync_run_id": run_id}
    dialect_for(session).upsert_positions(session, rows, stamps)


def _refresh(session: Session, rows: pd.DataFrame, now: datetime, run_id: int) -> None:
    """Mark-to-market only: prices move every run, the row's history does not."""
    if rows.empty:
        return
    stamps = {"refreshed_at": now, "sync_run_id": run_id}
    dialect_for(session).refresh_positions(session, rows, [*KEY, *MARKET_FIELDS], stamps)


def _delete(session: Session, account_id: str, asset_ids: list[str]) -> None:
    dialect_for(session).delete_positions(session, account_id, asset_ids)

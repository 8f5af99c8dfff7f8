"""Applying a reconciliation: positions, run row and journal in one transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Table, and_, bindparam, delete, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session, sessionmaker

from recon.diff import Diff
from recon.position import COLUMNS, KEY, MARKET_FIELDS
from recon.result import RunResult
from recon.store.bulk import update_rows, upsert_rows
from recon.store.journal import (
    POSITION_UPDATED,
    SOURCE,
    SYSTEM_ERROR,
    append_event,
    lock_journal,
)
from recon.store.models import Position, PositionEvent, SyncRun

_TABLE: Table = Position.__table__  # type: ignore[assignment]
_CHUNK = 1000


def apply_reconciliation(
    sessions: sessionmaker[Session], diff: Diff, result: RunResult
) -> RunResult:
    """Write everything a successful run changes, or nothing at all."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        run = SyncRun(
            flow_run_id=result.flow_run_id,
            account_id=result.account_id,
            status="completed",
            started_at=result.started_at,
            finished_at=now,
            created_count=len(result.created),
            updated_count=len(result.updated),
            removed_count=len(result.removed),
            unchanged_count=result.unchanged,
            error_count=len(result.errors),
            market_open=result.market_open,
        )
        session.add(run)
        session.flush()
        _upsert(session, pd.concat([diff.created, diff.updated]), now, run.id)
        _refresh(session, diff.refreshed, now, run.id)
        _delete(session, result.account_id, diff.removed.index.tolist())
        event_id = None
        if diff.has_changes:
            event_id = append_event(
                session,
                type=POSITION_UPDATED,
                payload=position_updated_payload(result, now),
                account_id=result.account_id,
                sync_run_id=run.id,
                flow_run_id=result.flow_run_id,
                changes=diff.changes,
            )
        final = dataclasses.replace(result, sync_run_id=run.id, event_id=event_id)
        run.result = final.as_record()
    return final


def position_updated_payload(result: RunResult, at: datetime) -> dict[str, Any]:
    return {
        "type": "reconciliation",
        "created": result.created,
        "updated": result.updated,
        "removed": result.removed,
        "timestamp": at.isoformat(),
        "source": SOURCE,
        "details": result.details,
        "accountId": result.account_id,
        "flowRunId": result.flow_run_id,
    }


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
        if flow_run_id is not None and _has_error_event(session, flow_run_id):
            return None
        run_id = session.scalar(select(SyncRun.id).where(SyncRun.flow_run_id == flow_run_id))
        if run_id is None or flow_run_id is None:
            run = SyncRun(
                flow_run_id=flow_run_id,
                account_id=account_id,
                status=status,
                started_at=started_at,
                finished_at=now,
                reason=reason,
            )
            session.add(run)
            session.flush()
            run_id = run.id
        payload = {
            "message": "Position reconciliation failed",
            "error": reason,
            "timestamp": now.isoformat(),
            "source": SOURCE,
            "flowRunId": flow_run_id,
            "status": status,
        }
        return append_event(
            session,
            type=SYSTEM_ERROR,
            payload=payload,
            account_id=account_id,
            sync_run_id=run_id,
            flow_run_id=flow_run_id,
        )


def _has_error_event(session: Session, flow_run_id: str) -> bool:
    query = select(PositionEvent.id).where(
        PositionEvent.flow_run_id == flow_run_id, PositionEvent.type == SYSTEM_ERROR
    )
    return session.scalar(query.limit(1)) is not None


def _upsert(session: Session, rows: pd.DataFrame, now: datetime, run_id: int) -> None:
    if rows.empty:
        return
    stamps = {"created_at": now, "updated_at": now, "refreshed_at": now, "sync_run_id": run_id}
    keep = {*KEY, "created_at"}
    if _postgres(session):
        upsert_rows(
            session, _TABLE, COLUMNS, _tuples(rows, COLUMNS), key=KEY, keep=keep, constants=stamps
        )
        return
    records = _records(rows, stamps)
    stmt = sqlite.insert(_TABLE)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(KEY),
        set_={c.name: stmt.excluded[c.name] for c in _TABLE.columns if c.name not in keep},
    )
    session.execute(stmt, records)


def _refresh(session: Session, rows: pd.DataFrame, now: datetime, run_id: int) -> None:
    """Mark-to-market only: prices move every run, the row's history does not."""
    if rows.empty:
        return
    fields = [*KEY, *MARKET_FIELDS]
    if _postgres(session):
        stamps = {"refreshed_at": now, "sync_run_id": run_id}
        update_rows(session, _TABLE, fields, _tuples(rows, fields), key=KEY, constants=stamps)
        return
    records = [
        {f"b_{k}": v for k, v in r.items()} | {"b_refreshed_at": now, "b_sync_run_id": run_id}
        for r in rows[fields].to_dict(orient="records")
    ]
    stmt = (
        update(_TABLE)
        .where(and_(*(_TABLE.c[k] == bindparam(f"b_{k}") for k in KEY)))
        .values(
            {
                name: bindparam(f"b_{name}")
                for name in [*MARKET_FIELDS, "refreshed_at", "sync_run_id"]
            }
        )
    )
    session.connection().execute(stmt, records)


def _delete(session: Session, account_id: str, asset_ids: list[str]) -> None:
    for start in range(0, len(asset_ids), _CHUNK):
        chunk = asset_ids[start : start + _CHUNK]
        session.execute(
            delete(_TABLE).where(_TABLE.c.account_id == account_id, _TABLE.c.asset_id.in_(chunk))
        )


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _tuples(rows: pd.DataFrame, names: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    return rows[list(names)].itertuples(index=False, name=None)


def _records(rows: pd.DataFrame, extra: dict[str, Any]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = rows[list(COLUMNS)].to_dict(orient="records")  # type: ignore[assignment]
    return [r | extra for r in records]

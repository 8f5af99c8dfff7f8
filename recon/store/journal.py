"""The append-only change journal. Its ids are SSE event ids: commit order = id order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, insert, select, text
from sqlalchemy.orm import Session

from recon.diff import PositionChange
from recon.store.bulk import copy_rows
from recon.store.database import schema_lock_key
from recon.store.models import PositionChange as ChangeRow
from recon.store.models import PositionEvent
from recon.store.types import dumps

POSITION_UPDATED = "position:updated"
SYSTEM_ERROR = "system:error"
SOURCE = "position-reconciliation-job"

# The same key in every writer of one journal, and a different one per schema.
JOURNAL_LOCK = f"SELECT pg_advisory_xact_lock({schema_lock_key('journal')})"
_CHANGES: Table = ChangeRow.__table__  # type: ignore[assignment]


def append_event(
    session: Session,
    *,
    type: str,
    payload: dict[str, Any],
    account_id: str | None = None,
    sync_run_id: int | None = None,
    flow_run_id: str | None = None,
    changes: Sequence[PositionChange] = (),
) -> int:
    """Append one event (and its per-position rows) inside the caller's transaction."""
    lock_journal(session)
    now = datetime.now(UTC)
    event_id = session.execute(
        insert(PositionEvent)
        .values(
            type=type,
            payload=payload,
            account_id=account_id,
            sync_run_id=sync_run_id,
            flow_run_id=flow_run_id,
            created_at=now,
        )
        .returning(PositionEvent.id)
    ).scalar_one()
    if changes and account_id is not None:
        _insert_changes(session, int(event_id), account_id, changes, now)
    return int(event_id)


def _insert_changes(
    session: Session,
    event_id: int,
    account_id: str,
    changes: Sequence[PositionChange],
    now: datetime,
) -> None:
    constants = {"event_id": event_id, "account_id": account_id, "created_at": now}
    if session.get_bind().dialect.name == "postgresql":
        names = (*constants, "asset_id", "symbol", "change", "fields")
        fixed = tuple(constants.values())
        rows = (
            # COPY's text format: the server parses each document as JSONB.
            (*fixed, c.asset_id, c.symbol, c.kind, dumps(c.fields_dict()))
            for c in changes
        )
        copy_rows(session, _CHANGES, names, rows)
        return
    records = [
        constants
        | {
            "asset_id": c.asset_id,
            "symbol": c.symbol,
            "change": c.kind,
            "fields": c.fields_dict(),
        }
        for c in changes
    ]
    session.execute(insert(ChangeRow), records)


def read_events(session: Session, after_id: int, limit: int = 500) -> list[PositionEvent]:
    query = select(PositionEvent).where(PositionEvent.id > after_id).order_by(PositionEvent.id)
    return list(session.scalars(query.limit(limit)))


def lock_journal(session: Session) -> None:
    """On PostgreSQL, ids come from a sequence when the INSERT runs, not when it commits:
    two overlapping writers could commit id 8 before id 7, and a reader tailing `id > 7`
    would skip 7 for ever. A transaction-scoped advisory lock makes journal writers take
    turns. On SQLite it takes the database's write lock. Re-entrant within a transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(JOURNAL_LOCK))
    else:
        # pysqlite opens a transaction only at the first write, so a check before the first
        # write (record_failure's "already reported?") would run outside it and two
        # reporters could both insert. A write that changes nothing takes SQLite's one
        # write lock now, so the check and the insert happen as one unit.
        session.execute(text("UPDATE position_events SET id = id WHERE id = -1"))

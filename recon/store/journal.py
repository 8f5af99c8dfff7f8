"""The append-only change journal. Its ids are SSE event ids: commit order = id order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from recon.diff import PositionChange
from recon.schemas.events import POSITION_UPDATED, SOURCE, SYSTEM_ERROR
from recon.store.dialects import dialect_for
from recon.store.dialects.base import ChangeRows
from recon.store.models import PositionEvent

# Re-exported: the payloads' names live with their shapes.
__all__ = [
    "POSITION_UPDATED",
    "SOURCE",
    "SYSTEM_ERROR",
    "append_event",
    "lock_journal",
    "read_events",
]


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
        dialect_for(session).insert_changes(
            session, ChangeRows(int(event_id), account_id, now, changes)
        )
    dialect_for(session).notify_journal(session, int(event_id))
    return int(event_id)


def read_events(
    session: Session, after_id: int, limit: int = 500, *, until_id: int | None = None
) -> list[PositionEvent]:
    """Rows with `after_id < id` (and `id <= until_id`, if given), in id order."""
    query = select(PositionEvent).where(PositionEvent.id > after_id).order_by(PositionEvent.id)
    if until_id is not None:
        query = query.where(PositionEvent.id <= until_id)
    return list(session.scalars(query.limit(limit)))


def lock_journal(session: Session) -> None:
    """On PostgreSQL, ids come from a sequence when the INSERT runs, not when it commits:
    two overlapping writers could commit id 8 before id 7, and a reader tailing `id > 7`
    would skip 7 for ever. A transaction-scoped advisory lock makes journal writers take
    turns. On SQLite it takes the database's write lock. Re-entrant within a transaction."""
    dialect_for(session).lock_journal(session)


def last_event_id(session: Session) -> int:
    """The newest journal id (0 for an empty journal): where a new tail starts."""
    return int(session.scalar(select(func.max(PositionEvent.id))) or 0)

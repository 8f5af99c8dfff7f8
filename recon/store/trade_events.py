"""The Broker API event stream's place in the database: its cursor and the events it applied.

Both are written in the transaction that applies the fills (`record_applied`, called by the
writer inside it), so after a crash the cursor never claims a fill the book does not hold,
and the replay after a restart (which starts a little before the cursor: Alpaca orders
events per account only) skips exactly the events already in the book and the journal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from recon.store.models import TradeEventApplied, TradeEventCursor

CURSOR = "broker_trades"


@dataclass(frozen=True)
class AppliedEvent:
    event_id: str
    account_id: str
    execution_id: str


def read_cursor(sessions: sessionmaker[Session], name: str = CURSOR) -> tuple[str, datetime] | None:
    """The last applied event id, and when it was written."""
    with sessions() as session:
        row = session.get(TradeEventCursor, name)
        return (row.last_event_id, row.updated_at) if row is not None else None


def applied_since(sessions: sessionmaker[Session], since: datetime) -> set[str]:
    """The event ids applied at or after `since` (what a replay from then may send again)."""
    with sessions() as session:
        query = select(TradeEventApplied.event_id).where(TradeEventApplied.applied_at >= since)
        return set(session.scalars(query))


def record_applied(session: Session, events: Iterable[AppliedEvent], name: str = CURSOR) -> None:
    """Inside the fills' transaction: the events as applied, and the cursor moved up to the
    newest of them (never back: batches of other accounts may commit out of order)."""
    now = datetime.now(UTC)
    events = list(events)
    if not events:
        return
    known = set(
        session.scalars(
            select(TradeEventApplied.event_id).where(
                TradeEventApplied.event_id.in_([e.event_id for e in events])
            )
        )
    )
    for event in events:
        if event.event_id not in known:
            known.add(event.event_id)
            session.add(
                TradeEventApplied(
                    event_id=event.event_id,
                    account_id=event.account_id,
                    execution_id=event.execution_id,
                    applied_at=now,
                )
            )
    newest = max(e.event_id for e in events)
    moved = session.execute(
        update(TradeEventCursor)
        .where(TradeEventCursor.name == name, TradeEventCursor.last_event_id < newest)
        .values(last_event_id=newest, updated_at=now)
    )
    if moved.rowcount == 0 and session.get(TradeEventCursor, name) is None:  # type: ignore[attr-defined]
        session.add(TradeEventCursor(name=name, last_event_id=newest, updated_at=now))
    session.flush()


def prune_applied(sessions: sessionmaker[Session], before: datetime) -> int:
    """Forget applied events older than any replay can reach."""
    with sessions.begin() as session:
        result = session.execute(
            delete(TradeEventApplied).where(TradeEventApplied.applied_at < before)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

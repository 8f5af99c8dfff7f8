"""What the store asks of a database, whichever it is: one `StoreDialect` per engine.

Everything dialect-specific lives behind these methods (the sync lock, the journal's write
order, the bulk paths of the book); the modules above them (`book`, `writer`, `journal`,
`lock`) hold no `if postgresql` of their own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Insert, Table, and_, bindparam, delete, select, update
from sqlalchemy.orm import Session

from recon.diff import PositionChange
from recon.position import COLUMNS, KEY, frame_records
from recon.store.models import Position
from recon.store.models import PositionChange as ChangeRow


@dataclass(frozen=True)
class ChangeRows:
    """A journal event's per-position change rows: each change, and what every row shares."""

    event_id: int
    account_id: str
    created_at: datetime
    changes: Sequence[PositionChange]

    def constants(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "account_id": self.account_id,
            "created_at": self.created_at,
        }


POSITIONS: Table = Position.__table__  # type: ignore[assignment]
CHANGES: Table = ChangeRow.__table__  # type: ignore[assignment]
# What an upsert never overwrites: the identity, and when the row first appeared.
KEEP = frozenset({*KEY, "created_at"})
_DELETE_CHUNK = 1000
# Every local row of one account, in the column order of `recon.position.COLUMNS`.
BOOK_QUERY = select(*(POSITIONS.c[name] for name in COLUMNS)).where(
    POSITIONS.c.account_id == bindparam("account_id")
)


class StoreDialect(ABC):
    """The store's operations on one engine; made once per engine by `dialect_for`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @abstractmethod
    def sync_lock(
        self, holder: str, ttl: timedelta, *, name: str = "sync"
    ) -> AbstractContextManager[str]:
        """Hold the database-wide sync lock (or the lock `name`, one account's) for a `with`
        body (`recon.store.lock`);
        raise `SyncInProgressError` at once if another holder has it."""

    @abstractmethod
    def lock_journal(self, session: Session) -> None:
        """Make the journal writers of this database take turns until the transaction ends
        (re-entrant), so commit order is id order (`recon.store.journal`)."""

    @abstractmethod
    def read_book(self, session: Session, account_id: str) -> list[tuple[Any, ...]]:
        """`BOOK_QUERY`'s rows as plain tuples, decimals as `Decimal`."""

    @abstractmethod
    def upsert_positions(
        self, session: Session, rows: pd.DataFrame, stamps: Mapping[str, Any]
    ) -> None:
        """Insert `rows` (the `COLUMNS`, plus `stamps` in every row); an existing row of
        the same key takes every column but `KEEP`."""

    @abstractmethod
    def refresh_positions(
        self, session: Session, rows: pd.DataFrame, fields: Sequence[str], stamps: Mapping[str, Any]
    ) -> None:
        """Set `fields` (the key included, to match on) and `stamps` on the existing rows."""

    @abstractmethod
    def insert_changes(self, session: Session, rows: ChangeRows) -> None:
        """One `position_changes` row per change of journal event `rows.event_id`."""

    def notify_journal(self, session: Session, event_id: int) -> None:  # noqa: B027
        """Tell the journal's listeners (the sidecars' relays) that `event_id` is coming,
        inside the entry's transaction; by default nobody listens (SQLite polls)."""

    def delete_positions(self, session: Session, account_id: str, asset_ids: list[str]) -> None:
        # Chunked: SQLite caps the parameters of one statement.
        for start in range(0, len(asset_ids), _DELETE_CHUNK):
            chunk = asset_ids[start : start + _DELETE_CHUNK]
            session.execute(
                delete(POSITIONS).where(
                    POSITIONS.c.account_id == account_id, POSITIONS.c.asset_id.in_(chunk)
                )
            )


def upsert_each(
    session: Session, upsert: Insert, rows: pd.DataFrame, stamps: Mapping[str, Any]
) -> None:
    """`upsert` (an INSERT … ON CONFLICT of `COLUMNS` and `stamps`) run for every row as one
    executemany (SQLAlchemy batches it into multi-row INSERTs)."""
    extra = dict(stamps)
    session.execute(upsert, [r | extra for r in frame_records(rows)])


def refresh_each(
    session: Session, rows: pd.DataFrame, fields: Sequence[str], stamps: Mapping[str, Any]
) -> None:
    """`refresh_positions` as one executemany UPDATE matched on the key."""
    # Bound names differ from the columns': an UPDATE's parameters named like a column
    # would be taken as more SET clauses.
    stamped = {f"b_{k}": v for k, v in stamps.items()}
    records = [{f"b_{k}": v for k, v in r.items()} | stamped for r in frame_records(rows, fields)]
    statement = (
        update(POSITIONS)
        .where(and_(*(POSITIONS.c[k] == bindparam(f"b_{k}") for k in KEY)))
        .values({n: bindparam(f"b_{n}") for n in [*fields, *stamps] if n not in KEY})
    )
    session.connection().execute(statement, records)


def tuples(rows: pd.DataFrame, names: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    return rows[list(names)].itertuples(index=False, name=None)


def busy_message(holder: str) -> str:
    return (
        f"another reconciliation is writing to this database ({holder}); "
        "this run stops without changing anything"
    )

"""Journal retention (`recon db prune`): delete old journal rows in short batches.

What stays, whatever its age:
- each position's latest change (per account and asset) and the event it belongs to, so
  the history of every position still says what it last was;
- the newest `REPLAY_WINDOW_EVENTS` events: the relay drops a connected client that falls
  further behind than that, and the client then replays from its Last-Event-ID, so no
  client still connected can be asking for an older one;
- the runs (`sync_runs`) that a remaining event or a book row points at, and the newest run.

`position_events.sync_run_id` has no index, so the database's own foreign-key check of a
deleted run scans the remaining events once per run. On SQLite the prune's own connection
skips that check for `sync_runs` (it proves the same itself: the runs of the events that
remain, and of every event written since it began, read inside each batch's write lock);
on PostgreSQL runs go in batches of `RUN_BATCH` (nobody waits for them: the rows are old).

Every batch is its own transaction of at most `batch_size` rows of one table, so a sync
waits for at most one batch (SQLite: the write lock; PostgreSQL: deleted rows only, which
no writer touches). Ids only grow and follow time, so each table is walked in id order and
the walk stops at the first batch that reaches the cutoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import ColumnElement, CursorResult, Engine, Table, delete, exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from recon.schemas.retention import PruneResult, TablePrune
from recon.store.models import Position, PositionChange, PositionEvent, SyncRun

# The relay's bound on how far a connected client may lag (api/relay.py MAX_QUEUED).
REPLAY_WINDOW_EVENTS: Final = 10_000
DEFAULT_BATCH: Final = 2_000
RUN_BATCH: Final = 25  # PostgreSQL: each deleted run costs one scan of the events

_CHANGES: Table = PositionChange.__table__  # type: ignore[assignment]
_EVENTS: Table = PositionEvent.__table__  # type: ignore[assignment]
_RUNS: Table = SyncRun.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class _Walk:
    """One table's walk: its id and time columns and what else a deletable row must meet."""

    table: Table
    stamp: str
    keep: Collection[int]
    where: Callable[[], list[ColumnElement[bool]]]


def prune_journal(
    engine: Engine,
    keep_days: float,
    *,
    batch_size: int = DEFAULT_BATCH,
    now: datetime | None = None,
) -> PruneResult:
    """Delete journal rows older than `keep_days` days, except what retention keeps."""
    if keep_days < 0 or batch_size < 1:
        raise ValueError("keep_days must be >= 0 and batch_size >= 1")
    started = time.monotonic()
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    sessions = sessionmaker(engine)
    with sessions() as session:  # reads only: no lock a writer waits for
        newest_event = session.scalar(select(func.max(PositionEvent.id))) or 0
        latest_changes = set(
            session.scalars(
                select(func.max(PositionChange.id)).group_by(
                    PositionChange.account_id, PositionChange.asset_id
                )
            )
        )
    replay_floor = newest_event - REPLAY_WINDOW_EVENTS
    referenced = exists().where(_CHANGES.c.event_id == _EVENTS.c.id)
    tables = [
        _prune(sessions, cutoff, batch_size, _Walk(_CHANGES, "created_at", latest_changes, list)),
        _prune(
            sessions,
            cutoff,
            batch_size,
            _Walk(_EVENTS, "created_at", (), lambda: [_EVENTS.c.id <= replay_floor, ~referenced]),
        ),
    ]
    # After the events: the runs still referenced are those of the events that remain,
    # and (read in each batch's transaction) of any event written since the prune began.
    with sessions() as session:
        kept_runs = _referenced_runs(session)
    late = select(_EVENTS.c.sync_run_id).where(
        _EVENTS.c.id > newest_event, _EVENTS.c.sync_run_id.is_not(None)
    )
    runs = _Walk(_RUNS, "finished_at", kept_runs, lambda: [_RUNS.c.id.not_in(late)])
    if engine.dialect.name == "sqlite":
        tables.append(_prune(sessions, cutoff, batch_size, runs, _unchecked(engine)))
    else:
        tables.append(_prune(sessions, cutoff, min(batch_size, RUN_BATCH), runs))
    return PruneResult(cutoff=cutoff, tables=tables, seconds=time.monotonic() - started)


def _referenced_runs(session: Session) -> set[int]:
    runs: set[int] = set()
    for column in (PositionEvent.sync_run_id, Position.sync_run_id):
        runs.update(session.scalars(select(column).where(column.is_not(None)).distinct()))
    newest = session.scalar(select(func.max(SyncRun.id)))
    if newest is not None:
        runs.add(newest)
    return runs


@contextmanager
def _unchecked(engine: Engine) -> Iterator[Callable[[], AbstractContextManager[Any]]]:
    """SQLite: one connection without foreign-key checks, for `sync_runs` only."""
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # outside any transaction
        connection.commit()
        try:
            yield connection.begin
        finally:
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")  # before it goes back
            connection.commit()


def _prune(
    sessions: sessionmaker[Session],
    cutoff: datetime,
    batch_size: int,
    walk: _Walk,
    writer: AbstractContextManager[Callable[[], AbstractContextManager[Any]]] | None = None,
) -> TablePrune:
    if writer is None:
        return _walk(sessions, cutoff, batch_size, walk, lambda: sessions.begin())
    with writer as begin:
        return _walk(sessions, cutoff, batch_size, walk, begin)


def _walk(
    sessions: sessionmaker[Session],
    cutoff: datetime,
    batch_size: int,
    walk: _Walk,
    begin: Callable[[], AbstractContextManager[Any]],
) -> TablePrune:
    table, ids = walk.table, walk.table.c.id
    stamp = table.c[walk.stamp]
    deleted = batches = 0
    longest = 0.0
    after = 0
    while True:
        with sessions() as session:  # where this batch ends, and whether the walk is done
            edge = session.execute(
                select(ids, stamp).where(ids > after).order_by(ids).offset(batch_size - 1).limit(1)
            ).first()
            last = edge.id if edge else session.scalar(select(func.max(ids)).where(ids > after))
        if last is None:
            break
        kept = [row_id for row_id in walk.keep if after < row_id <= last]
        conditions: list[Any] = [ids > after, ids <= last, stamp < cutoff, *walk.where()]
        if kept:
            conditions.append(ids.not_in(kept))
        began = time.monotonic()
        with begin() as transaction:  # one short write transaction per batch
            target = transaction if isinstance(transaction, Session) else transaction.connection
            outcome = target.execute(delete(table).where(*conditions))
            deleted += cast("CursorResult[Any]", outcome).rowcount or 0
        longest = max(longest, time.monotonic() - began)
        batches += 1
        if edge is None or edge[1] >= cutoff:  # the rest is newer than the cutoff
            break
        after = last
    return TablePrune(
        table=table.name, deleted=deleted, batches=batches, longest_batch_seconds=longest
    )


def oldest_change_at(
    session: Session, asset_ids: Collection[str], accounts: Collection[str] | None = None
) -> datetime | None:
    """When the retained history of these assets begins (older changes were pruned, or
    never happened), in `accounts` only when given."""
    if not asset_ids:
        return None
    query = select(func.min(PositionChange.created_at)).where(
        PositionChange.asset_id.in_(list(asset_ids))
    )
    if accounts is not None:
        query = query.where(PositionChange.account_id.in_(sorted(accounts)))
    return session.scalar(query)

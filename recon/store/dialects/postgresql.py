"""PostgreSQL: advisory locks, and the book's bulk paths through the driver (`driver`).

`executemany` sends one statement per row (pipelined, but each one bound, parsed, planned
and executed apart): 1,200 changed positions are 1,200 upserts of 23 parameters. Here the
rows stream in one `COPY … FROM STDIN` into a staging table, and one `INSERT … SELECT … ON
CONFLICT` or `UPDATE … FROM` (SQLAlchemy statements) applies them; journal change rows are
copied straight into their append-only table.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pandas as pd
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Select,
    Text,
    and_,
    cast,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.sql import column, table

from recon.errors import SyncInProgressError
from recon.position import COLUMNS, KEY
from recon.store.dialects import driver
from recon.store.dialects.base import (
    BOOK_QUERY,
    CHANGES,
    KEEP,
    POSITIONS,
    ChangeRows,
    StoreDialect,
    busy_message,
    refresh_each,
    tuples,
    upsert_each,
)
from recon.store.types import dumps

logger = logging.getLogger("recon.store.lock")


def lock_key(name: str) -> ColumnElement[int]:
    """An advisory-lock key of `name` in the current schema.

    Advisory locks are per database; keying them by schema keeps installations (and test
    suites) that share a database in separate schemas apart. 62 bits: positive, as
    `pg_locks` reports it.
    """
    text = func.current_schema(type_=Text) + literal(f":recon:{name}", Text)
    return func.hashtextextended(text, 0, type_=BigInteger).op("&", return_type=BigInteger)(
        literal(0x3FFFFFFFFFFFFFFF, BigInteger)
    )


# The same key in every writer of one journal, and a different one per schema.
JOURNAL_LOCK: Select[Any] = select(func.pg_advisory_xact_lock(lock_key("journal")))
# The journal's NOTIFY channel is this prefix plus the schema (`api/wakeup.py` listens).
NOTIFY_CHANNEL_PREFIX = "recon_journal_"
NOTIFY = text(f"SELECT pg_notify('{NOTIFY_CHANNEL_PREFIX}' || current_schema(), :id)")
# As SQL text, to hold the lock from outside a session (the tests' stalled writers).
_PG: Any = PGDialect()  # type: ignore[no-untyped-call]
JOURNAL_LOCK_SQL = str(JOURNAL_LOCK.compile(dialect=_PG, compile_kwargs={"literal_binds": True}))
_SYNC_KEY: Select[Any] = select(lock_key("sync"))
# Up to this many rows a write binds them in one executemany (pipelined by the driver); past
# it they are staged by COPY. A staging table is catalog writes each time it is made: for an
# account's few positions (a Broker API pass writes thousands of small books) it costs the
# server more than the rows themselves.
SMALL_WRITE = 200
_UPSERT = postgresql.insert(POSITIONS)
_UPSERT = _UPSERT.on_conflict_do_update(
    index_elements=list(KEY),
    set_={c.name: _UPSERT.excluded[c.name] for c in POSITIONS.columns if c.name not in KEEP},
)
_LOCKS = table(
    "pg_locks",
    column("pid"),
    column("locktype"),
    column("granted"),
    column("classid"),
    column("objid"),
)
_ACTIVITY = table("pg_stat_activity", column("pid"))


def _holder_query(key: int) -> Select[Any]:
    # An advisory lock's 64-bit key is reported as two 32-bit oids.
    high = cast(_LOCKS.c.classid, BigInteger).op("<<", return_type=BigInteger)(literal(32, Integer))
    packed = high + cast(_LOCKS.c.objid, BigInteger)
    return (
        select(_ACTIVITY.c.pid)
        .select_from(_LOCKS.join(_ACTIVITY, _ACTIVITY.c.pid == _LOCKS.c.pid))
        .where(_LOCKS.c.locktype == "advisory", _LOCKS.c.granted, packed == key)
        .limit(1)
    )


class PostgreSQLDialect(StoreDialect):
    @contextlib.contextmanager
    def sync_lock(
        self,
        holder: str,
        ttl: timedelta,  # noqa: ARG002
        *,
        name: str = "sync",
    ) -> Iterator[str]:
        """A session advisory lock on a connection held for the run: if the process dies,
        the connection drops and the lock goes with it. (`ttl` is the lease's, on SQLite.)"""
        # Autocommit: a session lock needs no transaction, and the key and the try are one
        # statement, so taking it is one round trip and giving it back another (a Broker
        # API pass takes one per account).
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            key_of = (_SYNC_KEY if name == "sync" else select(lock_key(name))).subquery()
            query = select(key_of.c[0], func.pg_try_advisory_lock(key_of.c[0]))
            key, got = connection.execute(query).one()
            if not got:
                raise SyncInProgressError(busy_message(self._holder(key)))
            try:
                yield holder
            finally:
                self._unlock(connection, key)

    def _unlock(self, connection: Connection, key: int) -> None:
        try:
            connection.execute(select(func.pg_advisory_unlock(key)))
        except SQLAlchemyError as exc:
            # The run's own error (often the same dropped connection) must surface, not
            # this one. A session lock dies with its connection: close it for good.
            logger.warning("sync lock: unlock failed (%s); closing its connection", exc)
            connection.invalidate()

    def _holder(self, key: int) -> str:
        with self.engine.connect() as connection:
            pid = connection.execute(_holder_query(key)).scalar()
        return f"backend pid {pid}" if pid is not None else "another session"

    def lock_journal(self, session: Session) -> None:
        # Ids come from a sequence when the INSERT runs, not when it commits: two
        # overlapping writers could commit id 8 before id 7, and a reader tailing `id > 7`
        # would skip 7 for ever. A transaction-scoped advisory lock makes them take turns.
        session.execute(JOURNAL_LOCK)

    def notify_journal(self, session: Session, event_id: int) -> None:
        # NOTIFY is transactional: delivered on commit, never for a rolled-back entry.
        # One channel per schema, as for the lock keys (`api/wakeup.py` listens on it).
        session.execute(NOTIFY, {"id": str(event_id)})

    def read_book(self, session: Session, account_id: str) -> list[tuple[Any, ...]]:
        # The driver's fetchall: the same values (the driver makes the Decimals, which
        # ExactDecimal passes through here), without a fetchone() and a Row per position:
        # 66 -> 52 ms at 10k, 640 -> 484 ms at 100k.
        return driver.fetch_all(session, BOOK_QUERY, {"account_id": account_id})

    def upsert_positions(
        self, session: Session, rows: pd.DataFrame, stamps: Mapping[str, Any]
    ) -> None:
        if len(rows) <= SMALL_WRITE:
            upsert_each(session, _UPSERT, rows, stamps)
            return
        with driver.staged(session, POSITIONS, COLUMNS, tuples(rows, COLUMNS)) as stage:
            constants = [literal(v, POSITIONS.c[n].type).label(n) for n, v in stamps.items()]
            source = select(*stage.c, *constants)
            statement = postgresql.insert(POSITIONS).from_select([*COLUMNS, *stamps], source)
            every = [*COLUMNS, *stamps]
            statement = statement.on_conflict_do_update(
                index_elements=list(KEY),
                set_={n: statement.excluded[n] for n in every if n not in KEEP},
            )
            session.connection().execute(statement)

    def refresh_positions(
        self, session: Session, rows: pd.DataFrame, fields: Sequence[str], stamps: Mapping[str, Any]
    ) -> None:
        if len(rows) <= SMALL_WRITE:
            refresh_each(session, rows, fields, stamps)
            return
        with driver.staged(session, POSITIONS, fields, tuples(rows, fields)) as stage:
            statement = (
                update(POSITIONS)
                .where(and_(*(POSITIONS.c[k] == stage.c[k] for k in KEY)))
                .values({n: stage.c[n] for n in fields if n not in KEY} | dict(stamps))
            )
            session.connection().execute(statement)

    def insert_changes(self, session: Session, rows: ChangeRows) -> None:
        constants = rows.constants()
        names = (*constants, "asset_id", "symbol", "change", "fields")
        fixed = tuple(constants.values())
        lines = (
            # COPY's text format: the server parses each document as JSONB.
            (*fixed, c.asset_id, c.symbol, c.kind, dumps(c.fields_dict()))
            for c in rows.changes
        )
        driver.copy_rows(session, CHANGES, names, lines)

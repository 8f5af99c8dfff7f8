"""The database-side guard: at most one reconciliation writes to a database at a time.

The deployment's concurrency limit already keeps scheduled and triggered runs apart; this
lock also covers runs started outside the deployment (`recon sync` by hand). The loser
fails at once with `SyncInProgressError` instead of queueing behind the winner.

PostgreSQL: a session advisory lock on a connection held for the run; if the process
dies the connection drops and the lock goes with it. SQLite has no such thing, so a
lease row is taken with one atomic upsert; a lease whose holder process is gone (same
host) or whose time ran out is taken over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import SQLAlchemyError

from recon.errors import SyncInProgressError
from recon.store.database import schema_lock_key
from recon.store.models import SyncLease

logger = logging.getLogger("recon.store.lock")

LEASE_NAME = "reconcile-positions"
# The advisory key is derived from the schema: installations (and test suites) that share
# one database in separate schemas must not lock each other out.
_ADVISORY_KEY = text(f"SELECT {schema_lock_key('sync')}")


@contextlib.contextmanager
def sync_lock(engine: Engine, *, ttl: timedelta = timedelta(minutes=15)) -> Iterator[str]:
    """Hold the lock for the body of the `with`; yields a description of the holder."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if engine.dialect.name == "postgresql":
        with _advisory(engine, holder) as held:
            yield held
    else:
        with _lease(engine, holder, ttl) as held:
            yield held


@contextlib.contextmanager
def _advisory(engine: Engine, holder: str) -> Iterator[str]:
    with engine.connect() as connection:
        key = connection.execute(_ADVISORY_KEY).scalar_one()
        got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
        connection.commit()
        if not got.scalar_one():
            raise SyncInProgressError(_busy_message(_advisory_holder(engine, key)))
        try:
            yield holder
        finally:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()
            except SQLAlchemyError as exc:
                # The run's own error (often the same dropped connection) must surface, not
                # this one. A session lock dies with its connection: close it for good.
                logger.warning("sync lock: unlock failed (%s); closing its connection", exc)
                connection.invalidate()


def _advisory_holder(engine: Engine, key: int) -> str:
    query = text(
        "SELECT a.pid, a.client_addr, a.application_name FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
        "AND l.granted AND (l.classid::bigint << 32) + l.objid::bigint = :k LIMIT 1"
    )
    with engine.connect() as connection:
        row = connection.execute(query, {"k": key}).first()
    return f"backend pid {row.pid}" if row else "another session"


@contextlib.contextmanager
def _lease(engine: Engine, holder: str, ttl: timedelta) -> Iterator[str]:
    now = datetime.now(UTC)
    values = {"holder": holder, "acquired_at": now, "expires_at": now + ttl}
    with engine.connect() as connection:
        current = connection.execute(
            select(SyncLease.holder, SyncLease.expires_at).where(SyncLease.name == LEASE_NAME)
        ).first()
        connection.rollback()
    # Each write below is one statement in its own transaction: a compare-and-set that,
    # of two racing takers, only the first can win (SQLite runs one writer at a time).
    with engine.begin() as connection:
        if current is None:
            insert = sqlite.insert(SyncLease).values(name=LEASE_NAME, **values)
            connection.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
        elif current.expires_at <= now or _holder_is_dead(current.holder):
            connection.execute(
                update(SyncLease)
                .where(SyncLease.name == LEASE_NAME, SyncLease.holder == current.holder)
                .values(**values)
            )
    with engine.connect() as connection:
        owner = connection.execute(
            select(SyncLease.holder).where(SyncLease.name == LEASE_NAME)
        ).scalar_one()
    if owner != holder:
        raise SyncInProgressError(_busy_message(owner))
    try:
        yield holder
    finally:
        try:
            with engine.begin() as connection:
                connection.execute(
                    delete(SyncLease).where(
                        SyncLease.name == LEASE_NAME, SyncLease.holder == holder
                    )
                )
        except SQLAlchemyError as exc:
            # Never mask the run's own outcome. The lease is taken over once this process
            # has exited, or when it expires.
            logger.warning(
                "sync lock: releasing the lease failed (%s); it expires at %s",
                exc,
                values["expires_at"],
            )


def _holder_is_dead(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _busy_message(holder: str) -> str:
    return (
        f"another reconciliation is writing to this database ({holder}); "
        "this run stops without changing anything"
    )

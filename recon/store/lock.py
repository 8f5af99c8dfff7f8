"""The database-side guard: at most one reconciliation writes to a database at a time.

The deployment's concurrency limit already keeps scheduled and triggered runs apart; this
lock also covers runs started outside the deployment (`recon sync` by hand). The loser
fails at once with `SyncInProgressError` instead of queueing behind the winner.

PostgreSQL: a session advisory lock on a connection held for the run; if the process
dies the connection drops and the lock goes with it. SQLite has no such thing, so a
lease row is taken with one atomic upsert; a lease whose holder process is gone (same
host) or whose time ran out is taken over. (Both in `recon.store.dialects`.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import Engine

from recon.store.dialects import dialect_for


@contextlib.contextmanager
def sync_lock(engine: Engine, *, ttl: timedelta = timedelta(minutes=15)) -> Iterator[str]:
    """Hold the lock for the body of the `with`; yields a description of the holder."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with dialect_for(engine).sync_lock(holder, ttl) as held:
        yield held


@contextlib.contextmanager
def account_lock(
    engine: Engine, account_id: str, *, ttl: timedelta = timedelta(minutes=15)
) -> Iterator[str]:
    """The Broker API mode's lock: one account's book, so accounts proceed in parallel
    while two writers never touch one account. `SyncInProgressError` if it is held."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    name = f"account:{account_id}"
    if len(name) > 64:  # the lease row's name column
        name = "account#" + hashlib.sha256(account_id.encode()).hexdigest()[:56]
    with dialect_for(engine).sync_lock(holder, ttl, name=name) as held:
        yield held

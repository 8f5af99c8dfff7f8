"""Waiting for the sync lock: a fill lands after a running full reconciliation, never beside it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from sqlalchemy import Engine

from recon.errors import SyncInProgressError
from recon.store.lock import account_lock, sync_lock

POLL_SECONDS = 0.02


@contextlib.contextmanager
def wait_for_sync_lock(
    engine: Engine, timeout: float, *, account_id: str | None = None
) -> Iterator[float]:
    """The same lock full runs take, retried until `timeout`; yields the seconds waited.
    With `account_id` (the Broker API mode) that account's lock, as its full pass takes.

    Full runs give up at once when the lock is held (their work is being done); a fill
    cannot, since only its own batch will apply it, so it waits its turn.
    """
    started = time.monotonic()
    while True:
        try:
            held = sync_lock(engine) if account_id is None else account_lock(engine, account_id)
            held.__enter__()
        except SyncInProgressError:
            if time.monotonic() - started >= timeout:
                raise
            time.sleep(POLL_SECONDS)
            continue
        break
    try:
        yield time.monotonic() - started
    except BaseException as exc:
        if not held.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        held.__exit__(None, None, None)

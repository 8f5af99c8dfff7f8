"""The listener's connection state in the database, so every sidecar replica reports the same.

One row per stream. The listener writes it on connect, on every error and after each batch;
`read_status` is what the status endpoint shows. A stream error journals one `system:error`
per episode: the same error again, before a connect succeeded, changes only the row.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from recon.schemas.stream import STREAM, StreamFailed, StreamState
from recon.store.journal import SYSTEM_ERROR, append_event, lock_journal
from recon.store.models import StreamStatus


def _row(session: Session, now: datetime) -> StreamStatus:
    row = session.get(StreamStatus, STREAM)
    if row is None:
        row = StreamStatus(
            name=STREAM, connected=False, fills_applied=0, reconnects=0, updated_at=now
        )
        session.add(row)
    return row


def mark_connected(sessions: sessionmaker[Session], *, account_id: str | None, holder: str) -> bool:
    """Record a (re)connect; True when it is a reconnect (the stream was up before)."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        row = _row(session, now)
        again = row.connected_since is not None
        row.reconnects += int(again)
        row.connected, row.connected_since, row.updated_at = True, now, now
        row.account_id, row.holder = account_id, holder
        return again


def mark_disconnected(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        row = _row(session, now)
        if row.connected:  # `since` is when the state last changed
            row.connected_since = now
        row.connected, row.updated_at = False, now


def record_error(
    sessions: sessionmaker[Session], error: str, *, account_id: str | None
) -> int | None:
    """Mark the stream down with `error`; journal a `system:error` unless this episode has one."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        lock_journal(session)  # one reporter at a time: the check and the insert are one unit
        row = _row(session, now)
        repeat = row.last_error == error and not row.connected
        if row.connected:
            row.connected_since = now
        row.connected, row.last_error, row.last_error_at, row.updated_at = False, error, now, now
        if repeat:
            return None
        payload = StreamFailed(error=error, timestamp=now).dump()
        return append_event(session, type=SYSTEM_ERROR, payload=payload, account_id=account_id)


def record_batch(sessions: sessionmaker[Session], fills: int, last_event_at: datetime) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        row = _row(session, now)
        row.fills_applied += fills
        row.last_event_at, row.updated_at = last_event_at, now


def read_status(sessions: sessionmaker[Session]) -> StreamState:
    """The status endpoint's `stream` object (all null/zero before a listener ever ran)."""
    with sessions() as session:
        row = session.get(StreamStatus, STREAM)
    if row is None:
        return StreamState()
    return StreamState.model_validate(row)

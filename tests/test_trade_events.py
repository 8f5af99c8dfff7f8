"""The Broker API event stream's cursor and applied events, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from recon.store.database import session_factory
from recon.store.trade_events import (
    AppliedEvent,
    applied_since,
    prune_applied,
    read_cursor,
    record_applied,
)


def test_cursor_moves_only_forward_and_repeats_are_recorded_once(database_url: str) -> None:
    sessions = session_factory(database_url)
    assert read_cursor(sessions) is None
    first = [AppliedEvent("01B", "acct-1", "x1"), AppliedEvent("01C", "acct-1", "x2")]
    with sessions.begin() as session:
        record_applied(session, first)
    stored = read_cursor(sessions)
    assert stored is not None and stored[0] == "01C"
    # Another account's batch, committed later with an older id: the cursor stays.
    with sessions.begin() as session:
        record_applied(session, [AppliedEvent("01A", "acct-2", "x0"), first[0]])
    stored = read_cursor(sessions)
    assert stored is not None and stored[0] == "01C"
    long_ago = datetime.now(UTC) - timedelta(days=1)
    assert applied_since(sessions, long_ago) == {"01A", "01B", "01C"}
    # A rolled-back batch leaves neither its events nor the cursor.
    try:
        with sessions.begin() as session:
            record_applied(session, [AppliedEvent("01D", "acct-1", "x3")])
            raise RuntimeError("the batch failed")
    except RuntimeError:
        pass
    stored = read_cursor(sessions)
    assert stored is not None and stored[0] == "01C"
    assert "01D" not in applied_since(sessions, long_ago)
    assert prune_applied(sessions, long_ago) == 0
    assert prune_applied(sessions, datetime.now(UTC) + timedelta(seconds=1)) == 3

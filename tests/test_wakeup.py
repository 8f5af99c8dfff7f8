"""The relay wakes on PostgreSQL's NOTIFY (sent in the journal's transaction); SQLite polls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from itertools import islice

import pytest

from recon.settings import get_settings
from recon.store.database import session_factory
from recon.store.journal import POSITION_UPDATED, append_event
from tests.support import asgi

# Far longer than a notified row may take: only the NOTIFY can explain a fast delivery.
SLOW_POLL = 5.0


@pytest.fixture
def server(env: pytest.MonkeyPatch, database_url: str) -> Iterator[object]:
    env.setenv("RECON_DATABASE_URL", database_url)
    get_settings.cache_clear()
    with ExitStack() as stack:
        app = asgi.stream_app(database_url, poll_interval=SLOW_POLL, ping_interval=15.0)
        yield stack.enter_context(asgi.serve(app))


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgres_relay_wakes_on_notify(server: object, database_url: str) -> None:
    relay = server.relay  # type: ignore[attr-defined]
    asgi.wait_until(lambda: relay._wakeup.listening, 10, "LISTEN")
    token = asgi.make_key(database_url, ["events:read"])
    with asgi.open_stream(server.base_url, headers=asgi.auth(token)) as source:  # type: ignore[attr-defined]
        asgi.wait_until(lambda: relay.subscriber_count == 1, what="the client to subscribe")
        latencies = []
        events = source.iter_sse()
        for _ in range(5):
            sent = time.monotonic()
            [row] = asgi.append_rows(database_url)
            [event] = list(islice(events, 1))
            latencies.append(time.monotonic() - sent)
            assert int(event.id) == row
    assert max(latencies) < 1.0, latencies  # a 5 s poll would have taken seconds
    assert relay._wakeup.notifications >= 5


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_rolled_back_entry_sends_no_notification(server: object, database_url: str) -> None:
    relay = server.relay  # type: ignore[attr-defined]
    asgi.wait_until(lambda: relay._wakeup.listening, 10, "LISTEN")
    before = relay._wakeup.notifications
    with session_factory(database_url)() as session:
        append_event(session, type=POSITION_UPDATED, payload={"seq": 0})
        session.rollback()
    # A committed one after it. Notifications arrive in commit order, so one for the
    # rolled-back row would come first: the first to arrive must name the committed row.
    (committed,) = asgi.append_rows(database_url)
    asgi.wait_until(lambda: relay._wakeup.notifications > before, 10, "the notification")
    assert relay._wakeup.notifications == before + 1
    assert relay._wakeup.last_payload == str(committed)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_relay_keeps_polling(server: object) -> None:
    assert not server.relay._wakeup.listening  # type: ignore[attr-defined]

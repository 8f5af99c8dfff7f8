"""What bounds an open stream, over real HTTP (uvicorn, httpx-sse, SQLite and PostgreSQL):
its key is re-checked while it is open, the streams are capped, a replay is paced, and a
single-use ticket can stand in for the key in the URL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from api.routes import tickets
from api.stream_guard import StreamGuard
from recon.keys import create_key, revoke_key, set_capabilities
from recon.settings import get_settings
from recon.store.database import session_factory
from recon.store.models import StreamTicket
from tests.support.asgi import (
    STREAM_PATH,
    RunningServer,
    append_rows,
    auth,
    make_key,
    open_stream,
    serve,
    stream_app,
    wait_until,
)

PING = 15.0  # the production ping interval: a revoked key's stream must end well within it
CHECK = 0.2  # RECON_STREAM_KEY_CHECK_SECONDS here


@pytest.fixture
def server(env: pytest.MonkeyPatch, database_url: str) -> Iterator[RunningServer]:
    env.setenv("RECON_DATABASE_URL", database_url)
    env.setenv("RECON_STREAM_KEY_CHECK_SECONDS", str(CHECK))
    env.setenv("RECON_STREAM_MAX_CONNECTIONS", "3")
    env.setenv("RECON_STREAM_MAX_CONNECTIONS_PER_KEY", "2")
    get_settings.cache_clear()
    app = stream_app(database_url, poll_interval=0.05, ping_interval=PING, recent_bytes=0)
    app.include_router(tickets.router)
    with ExitStack() as stack:
        yield stack.enter_context(serve(app))


def guard(server: RunningServer) -> StreamGuard:
    found: StreamGuard = server.app.state.stream_guard
    return found


def expire(url: str, key_name: str) -> None:
    """An hour passes, as far as the key is concerned."""
    from recon.store.models import ApiKey

    with session_factory(url).begin() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.name == key_name)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def change(url: str, how: str, name: str) -> None:
    if how == "expired":
        expire(url, name)
        return
    with session_factory(url).begin() as session:
        if how == "revoked":
            revoke_key(session, name)
        else:
            set_capabilities(session, name, ["admin:read"])


def connect_status(server: RunningServer, headers: dict[str, str]) -> int:
    """The status of a new stream connection (closed at once if it opened)."""
    url = server.base_url + STREAM_PATH
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        return response.status_code


def ticket_for(server: RunningServer, token: str) -> dict[str, Any]:
    answer = httpx.post(f"{server.base_url}/api/stream/tickets", headers=auth(token), timeout=10)
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.parametrize("how", ["revoked", "capability removed", "expired"])
@pytest.mark.parametrize("credential", ["header", "ticket"])
def test_a_key_that_stops_qualifying_loses_its_open_stream(
    server: RunningServer, database_url: str, how: str, credential: str
) -> None:
    with session_factory(database_url).begin() as session:
        doomed = create_key(session, "doomed", ["events:read"], expires_in=timedelta(hours=1))
        other = create_key(session, "other", ["events:read"])
    if credential == "ticket":
        doomed_request: dict[str, Any] = {
            "headers": {},  # httpx-sse adds its Accept header to this dict
            "params": {"ticket": ticket_for(server, doomed)["ticket"]},
        }
    else:
        doomed_request = {"headers": auth(doomed)}
    with (
        open_stream(server.base_url, **doomed_request) as lost,
        open_stream(server.base_url, headers=auth(other)) as kept,
    ):
        wait_until(lambda: server.relay.subscriber_count == 2, what="both clients to subscribe")
        lost_events, kept_events = lost.iter_sse(), kept.iter_sse()
        [before] = append_rows(database_url)
        assert int(next(lost_events).id) == before and int(next(kept_events).id) == before
        checks = guard(server).checks
        change(database_url, how, "doomed")
        changed_at = time.monotonic()
        # The body ends (a read would time out after 10 s and fail the test otherwise).
        assert list(lost_events) == []
        ended_after = time.monotonic() - changed_at
        assert guard(server).checks > checks  # ended by a check, not by anything else
        [after] = append_rows(database_url)
        assert int(next(kept_events).id) == after  # the other key's stream goes on
    assert ended_after < PING, f"ended {ended_after:.1f} s after the change"
    print(f"stream ended {ended_after:.2f} s after the key was {how} (check every {CHECK} s)")
    # And it cannot come back (once the keys' 2 s admission cache has let go of it).
    refused = 403 if how == "capability removed" else 401
    wait_until(lambda: connect_status(server, auth(doomed)) == refused, what=f"a {refused}")


def test_streams_are_capped_per_key_and_in_all(server: RunningServer, database_url: str) -> None:
    first, second = (
        make_key(database_url, ["events:read"], "first"),
        make_key(database_url, ["events:read"], "second"),
    )
    url = server.base_url + STREAM_PATH
    with ExitStack() as streams:
        for _ in range(2):
            opened = streams.enter_context(open_stream(server.base_url, headers=auth(first)))
            assert opened.response.status_code == 200
        per_key = httpx.get(url, headers=auth(first), timeout=10)
        assert per_key.status_code == 429
        assert per_key.json() == {
            "error": "too many streams",
            "message": "this API key has 2 open event streams, the most allowed "
            "(RECON_STREAM_MAX_CONNECTIONS_PER_KEY); close one or retry later",
            "limit": 2,
        }
        streams.enter_context(open_stream(server.base_url, headers=auth(second)))
        in_all = httpx.get(url, headers=auth(second), timeout=10)
        assert in_all.status_code == 429
        assert in_all.json()["limit"] == 3
        assert "RECON_STREAM_MAX_CONNECTIONS)" in in_all.json()["message"]
        assert guard(server).open_streams == 3
    wait_until(lambda: guard(server).open_streams == 0, what="every slot to come back")
    with ExitStack() as streams:
        for _ in range(2):
            opened = streams.enter_context(open_stream(server.base_url, headers=auth(first)))
            assert opened.response.status_code == 200
        assert guard(server).open_streams == 2


def test_a_closed_stream_gives_its_slot_back(server: RunningServer, database_url: str) -> None:
    token = make_key(database_url, ["events:read"])
    for _ in range(4):  # twice the per-key cap: a leaked slot would make the third a 429
        with httpx.stream(
            "GET", server.base_url + STREAM_PATH, headers=auth(token), timeout=10
        ) as response:
            assert response.status_code == 200
            assert guard(server).checking
        wait_until(lambda: guard(server).open_streams == 0, what="the slot to come back")
    # With no stream open, the key check stops: an idle sidecar reads no keys.
    wait_until(lambda: not guard(server).checking, what="the key check to stop")


def test_a_replay_from_the_journal_is_paced(server: RunningServer, database_url: str) -> None:
    token = make_key(database_url, ["events:read"])
    written = append_rows(database_url, 2000)
    wait_until(lambda: server.relay.position == written[-1], what="the tail to pass the rows")
    server.relay.replay_rows_per_second = 400
    began = time.monotonic()
    with open_stream(server.base_url, headers=auth(token, 0)) as source:
        received = [int(e.id) for e in islice(source.iter_sse(), len(written))]
    elapsed = time.monotonic() - began
    assert received == written
    # Pages of 500: the first is free, the other three wait for the average of 400 rows/s
    # (1,500 rows after the first page: at least 3.75 s); unpaced it takes a fraction of it.
    assert elapsed >= 1500 / 400, elapsed


def test_a_ticket_opens_one_stream_once(server: RunningServer, database_url: str) -> None:
    token = make_key(database_url, ["events:read"])
    answer = httpx.post(f"{server.base_url}/api/stream/tickets", headers=auth(token), timeout=10)
    assert answer.status_code == 201
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert set(body) == {"ticket", "expiresAt", "expiresIn"} and body["expiresIn"] == 60
    assert body["ticket"].startswith("st_") and token not in answer.text
    expires_in = datetime.fromisoformat(body["expiresAt"]) - datetime.now(UTC)
    assert timedelta(seconds=50) < expires_in <= timedelta(seconds=60)
    with open_stream(server.base_url, {}, {"ticket": body["ticket"]}) as source:
        wait_until(lambda: server.relay.subscriber_count == 1)
        [new] = append_rows(database_url)
        assert int(next(source.iter_sse()).id) == new
        again = httpx.get(
            server.base_url + STREAM_PATH, params={"ticket": body["ticket"]}, timeout=10
        )
    assert again.status_code == 401
    assert again.json() == {
        "error": "unauthorized",
        "message": "invalid, expired or already used stream ticket",
    }


def test_concurrent_uses_of_one_ticket_open_one_stream(
    server: RunningServer, database_url: str
) -> None:
    ticket = ticket_for(server, make_key(database_url, ["events:read"]))["ticket"]

    def use() -> int:
        with httpx.stream(
            "GET", server.base_url + STREAM_PATH, params={"ticket": ticket}, timeout=10
        ) as response:
            return response.status_code

    with ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(lambda _: use(), range(6)))
    assert codes == [200, 401, 401, 401, 401, 401]


def test_a_ticket_expires_and_follows_its_key(server: RunningServer, database_url: str) -> None:
    token = make_key(database_url, ["events:read"], "owner")
    url = server.base_url + STREAM_PATH
    stale = ticket_for(server, token)["ticket"]
    with session_factory(database_url).begin() as session:  # its minute passes
        session.execute(
            update(StreamTicket).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert httpx.get(url, params={"ticket": stale}, timeout=10).status_code == 401
    orphan = ticket_for(server, token)["ticket"]
    with session_factory(database_url).begin() as session:
        revoke_key(session, "owner")
    assert httpx.get(url, params={"ticket": orphan}, timeout=10).status_code == 401
    # Issuing removes expired tickets: the table holds only the last minute's.
    fresh = make_key(database_url, ["events:read"], "fresh")
    ticket_for(server, fresh)
    with session_factory(database_url)() as session:
        assert session.query(StreamTicket).count() == 2  # `orphan` and the new one


@pytest.mark.parametrize(
    ("capabilities", "how", "status"),
    [
        (["admin:read", "admin:write"], "header", 403),
        (["events:read"], "query", 401),  # header only: a ticket keeps keys out of URLs
        (["events:read"], "none", 401),
    ],
)
def test_a_ticket_needs_a_key_with_events_read_in_the_header(
    server: RunningServer, database_url: str, capabilities: list[str], how: str, status: int
) -> None:
    token = make_key(database_url, capabilities)
    headers = auth(token) if how == "header" else {}
    params = {"access_token": token} if how == "query" else {}
    answer = httpx.post(
        f"{server.base_url}/api/stream/tickets", headers=headers, params=params, timeout=10
    )
    assert answer.status_code == status
    assert json.loads(answer.text)["error"] == ("forbidden" if status == 403 else "unauthorized")

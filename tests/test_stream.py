"""The SSE relay over real HTTP: a uvicorn server, httpx-sse clients, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from itertools import islice

import httpx
import pytest
from httpx_sse import aconnect_sse

from api.relay import RECENT_BYTES
from recon.settings import get_settings
from recon.store.database import engine_for
from recon.store.journal import POSITION_UPDATED, SYSTEM_ERROR
from tests.support.asgi import (
    STREAM_PATH as PATH,
)
from tests.support.asgi import (
    RunningServer,
    append_rows,
    auth,
    count_selects,
    make_key,
    open_stream,
    serve,
    stream_app,
)
from tests.support.wait import wait_until

POLL = 0.05
Start = Callable[..., RunningServer]  # start(ping=...) -> a running server
TIMEOUT = httpx.Timeout(10.0)  # a missing event fails the read instead of hanging the test


@pytest.fixture
def start(env: pytest.MonkeyPatch, database_url: str) -> Iterator[Start]:
    env.setenv("RECON_DATABASE_URL", database_url)  # read by the auth dependency
    get_settings.cache_clear()
    with ExitStack() as servers:

        def start(ping: float = 15.0, recent_bytes: int = RECENT_BYTES) -> RunningServer:
            app = stream_app(
                database_url, poll_interval=POLL, ping_interval=ping, recent_bytes=recent_bytes
            )
            return servers.enter_context(serve(app))

        yield start


@pytest.fixture
def token(database_url: str) -> str:
    return make_key(database_url, ["events:read"])


def test_delivers_new_events_with_type_id_and_payload(
    start: Start, database_url: str, token: str
) -> None:
    append_rows(database_url)  # before the server: history, not sent without Last-Event-ID
    server = start()
    [seen] = append_rows(database_url)  # broadcast before the client came: not sent either
    wait_until(lambda: server.relay.position == seen, what="the tail to pass the row")
    with open_stream(server.base_url, headers=auth(token)) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        assert source.response.headers["cache-control"] == "no-store"
        wait_until(lambda: server.relay.subscriber_count == 1, what="the client to subscribe")
        updated = append_rows(database_url, 2)
        sent_at = time.monotonic()
        [error] = append_rows(database_url, type=SYSTEM_ERROR)
        received = list(islice(source.iter_sse(), 3))
        latency = time.monotonic() - sent_at
    assert [(e.event, int(e.id)) for e in received] == [
        (POSITION_UPDATED, updated[0]),
        (POSITION_UPDATED, updated[1]),
        (SYSTEM_ERROR, error),
    ]
    data = json.loads(received[1].data)
    # flowRunId comes from the row when the payload lacks it; decimals stay strings.
    assert data == {"created": [{"symbol": "AAPL", "qty": "1.50"}], "seq": 1, "flowRunId": "flow-7"}
    # Typically one poll interval; the bound is generous (a loaded machine), it only
    # catches a relay that delivers on some later event instead of its poll.
    print(f"row to client: {latency * 1000:.0f} ms (poll {POLL * 1000:.0f} ms)")
    assert latency < 5.0


@pytest.mark.parametrize("how", ["header", "query", "header wins over query"])
def test_resumes_after_disconnect_without_gap_or_duplicate(
    start: Start, database_url: str, token: str, how: str
) -> None:
    server = start()
    with open_stream(server.base_url, headers=auth(token)) as source:
        wait_until(lambda: server.relay.subscriber_count == 1)
        first = append_rows(database_url, 3)
        assert [int(e.id) for e in islice(source.iter_sse(), 3)] == first
    wait_until(lambda: server.relay.subscriber_count == 0, what="the disconnect")
    missed = append_rows(database_url, 2) + append_rows(database_url, 1)
    headers, params = auth(token), {}
    if how != "query":
        headers["Last-Event-ID"] = str(first[-1])
    if how != "header":
        params["lastEventId"] = "0" if how.startswith("header") else str(first[-1])
    with open_stream(server.base_url, headers=headers, params=params) as source:
        events = source.iter_sse()
        assert [int(e.id) for e in islice(events, 3)] == missed
        wait_until(lambda: server.relay.subscriber_count == 1)
        [live] = append_rows(database_url)
        # The next message is the new row: nothing replayed comes a second time.
        assert int(next(events).id) == live


def test_many_clients_share_one_tail(start: Start, database_url: str, token: str) -> None:
    clients, batches = 50, [1, 3, 1, 5, 1, 1, 4, 1]
    server = start()

    async def listen(http: httpx.AsyncClient) -> list[int]:
        ids: list[int] = []
        async with aconnect_sse(http, "GET", PATH, headers=auth(token)) as source:
            async for message in source.aiter_sse():
                ids.append(int(message.id))
                if len(ids) == sum(batches):
                    break
        return ids

    async def main() -> tuple[list[list[int]], list[int], int, float]:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT, limits=limits) as h:
            tasks = [asyncio.create_task(listen(h)) for _ in range(clients)]
            await asyncio.to_thread(wait_until, lambda: server.relay.subscriber_count == clients)
            written: list[int] = []
            # Counted once every client is subscribed: from here on only the tail may read.
            with count_selects(engine_for(database_url), "position_events") as selects:
                began = time.monotonic()
                for size in batches:
                    written += await asyncio.to_thread(append_rows, database_url, size)
                received = list(await asyncio.gather(*tasks))
                elapsed = time.monotonic() - began
            return received, written, len(selects), elapsed

    received, written, reads, elapsed = asyncio.run(main())
    assert len(written) == sum(batches)
    assert received == [written] * clients
    # One tail: its reads are bounded by time / poll interval, whatever the number of
    # clients (a poll loop per client would make 50 times as many; a load-slowed tail polls
    # less often, never more). On PostgreSQL each committed batch's NOTIFY may also wake it
    # early: at most one more read per batch.
    wakeups = len(batches) if database_url.startswith("postgresql") else 0
    assert 1 <= reads <= elapsed / POLL + 2 + wakeups, (reads, elapsed)


def test_replays_recent_rows_from_memory_and_older_ones_from_the_journal(
    start: Start, database_url: str, token: str
) -> None:
    # Room for 5 to 10 of these messages: the relay holds the newest rows, not all twenty.
    server = start(recent_bytes=5 * 300)
    written = append_rows(database_url, 20)
    wait_until(lambda: server.relay.position == written[-1], what="the tail to pass the rows")
    assert server.relay.recent_after(written[2]) is None  # too old: not held any more
    for resume_at, source in ((written[17], "memory"), (written[2], "journal")):
        before = (server.relay.replays_from_memory, server.relay.replays_from_journal)
        with open_stream(server.base_url, headers=auth(token, resume_at)) as stream:
            wait_until(lambda: server.relay.subscriber_count == 1)
            events = stream.iter_sse()
            expected = [i for i in written if i > resume_at]
            assert [int(e.id) for e in islice(events, len(expected))] == expected
            [live] = append_rows(database_url)
            assert int(next(events).id) == live
            written.append(live)
        wait_until(lambda: server.relay.subscriber_count == 0, what="the disconnect")
        from_memory = server.relay.replays_from_memory - before[0]
        from_journal = server.relay.replays_from_journal - before[1]
        assert (from_memory, from_journal) == ((1, 0) if source == "memory" else (0, 1))


@pytest.mark.parametrize("recent_bytes", [RECENT_BYTES, 0], ids=["memory", "journal"])
def test_replay_races_concurrent_writes(
    start: Start, database_url: str, token: str, recent_bytes: int
) -> None:
    """Clients resuming while rows are being committed get every row once, in order, whether
    the relay holds the rows they missed or they must be read from the journal."""
    [base] = append_rows(database_url)
    server = start(recent_bytes=recent_bytes)
    written: list[int] = []

    def writer() -> None:
        for n in range(60):
            written.extend(append_rows(database_url, 1 + n % 3))

    def resume() -> list[int]:
        with open_stream(server.base_url, headers=auth(token, base)) as source:
            return [int(message.id) for message in islice(source.iter_sse(), 120)]

    with ThreadPoolExecutor(9) as pool:
        writing = pool.submit(writer)
        readers = [pool.submit(resume) for _ in range(8)]
        writing.result()
        results = [reader.result(timeout=30) for reader in readers]
    assert len(written) == 120
    assert results == [written] * 8


@pytest.mark.parametrize(
    ("key", "where", "status"),
    [
        (None, "header", 401),
        ("rk_not-a-key", "header", 401),
        ("rk_not-a-key", "query", 401),
        ("admin:read,admin:write", "header", 403),
        ("events:read", "query", 200),  # ?access_token=, for browsers' EventSource
        ("events:read", "header", 200),
    ],
)
def test_needs_a_key_with_events_read(
    start: Start, database_url: str, key: str | None, where: str, status: int
) -> None:
    server = start()
    token = key if key is None or key.startswith("rk_") else make_key(database_url, key.split(","))
    headers = {"Authorization": f"Bearer {token}"} if token and where == "header" else {}
    params = {"access_token": token} if token and where == "query" else {}
    url = server.base_url + PATH
    with httpx.stream("GET", url, headers=headers, params=params, timeout=TIMEOUT) as response:
        assert response.status_code == status
        if status != 200:
            body = response.read().decode()
            assert json.loads(body)["error"] == ("forbidden" if status == 403 else "unauthorized")
            assert token is None or token not in body


@pytest.mark.parametrize(
    ("value", "status"),
    [(v, 400) for v in ["abc", "-1", "1.5", "1 2", "\uff10", "+1", str(2**63), "1" * 40]]
    + [(str(2**63 - 1), 200), ("0", 200)],
)
@pytest.mark.parametrize("where", ["header", "query"])
def test_last_event_id_must_be_a_journal_id(
    start: Start, token: str, value: str, status: int, where: str
) -> None:
    server = start()
    headers = [(k.encode(), v.encode()) for k, v in auth(token).items()]
    params = {}
    if where == "header":
        headers.append((b"Last-Event-ID", value.encode()))  # raw UTF-8, as a client may send
    else:
        params["lastEventId"] = value
    url = server.base_url + PATH
    with httpx.stream("GET", url, headers=headers, params=params, timeout=TIMEOUT) as response:
        assert response.status_code == status
        if status == 400:
            assert json.loads(response.read())["error"] == "invalid request"


def test_keep_alive_ping(start: Start, token: str) -> None:
    server = start(ping=0.2)
    url = server.base_url + PATH
    with httpx.stream("GET", url, headers=auth(token), timeout=TIMEOUT) as response:
        # Raw lines: SSE clients hide comments, and the ping is one.
        comment = next(line for line in response.iter_lines() if line)
    assert comment.startswith(": ping")


def test_shutdown_ends_the_stream_cleanly(start: Start, database_url: str, token: str) -> None:
    server = start()
    with open_stream(server.base_url, headers=auth(token)) as source:
        wait_until(lambda: server.relay.subscriber_count == 1)
        [new] = append_rows(database_url)
        events = source.iter_sse()
        assert int(next(events).id) == new
        server.signal_shutdown()
        # The body ends properly (a cut-off chunked body would raise here) with no more events.
        assert list(events) == []
    server.join()
    assert server.relay.subscriber_count == 0


def test_the_real_app_wires_the_relay(
    prefect_server: None, env: pytest.MonkeyPatch, database_url: str, token: str
) -> None:
    """`api.main.create_app()` (with Prefect and the crash watcher) serves the same stream."""
    env.setenv("RECON_DATABASE_URL", database_url)
    get_settings.cache_clear()  # importing api.main reads (and caches) the settings
    from api.main import create_app

    with (
        serve(create_app()) as server,
        open_stream(server.base_url, headers=auth(token)) as source,
    ):
        wait_until(lambda: server.relay.subscriber_count == 1)
        [new] = append_rows(database_url)
        message = next(source.iter_sse())
        assert (message.event, int(message.id)) == (POSITION_UPDATED, new)

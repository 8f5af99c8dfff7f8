"""Scenario 7: event delivery. 200 SSE clients, 1,000 journal events, random reconnects.

A real uvicorn process serves the real stream route and its real `JournalRelay` (the
sidecar's app minus Prefect, `tests.api_server.stream_app`). Two writer threads commit
1,000 events with `append_event`, as the flow's persist step and the sidecar's failure
reports do, in small transactions: mostly `position:updated`, some `system:error`. The
clients (httpx-sse, one asyncio loop) hang up at random points and reconnect with
`Last-Event-ID` (a few with `?lastEventId=`), some at once, some only after more events
have been committed, which they must then get from the replay. At the end every client
must hold every event exactly once, in id order, with its type and data: the client keeps
whatever the server sent, so a dropped, repeated or reordered event fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from httpx_sse import aconnect_sse
from sqlalchemy import func, select

from recon.store.database import session_factory
from recon.store.journal import POSITION_UPDATED, SOURCE, SYSTEM_ERROR, append_event
from recon.store.models import PositionEvent
from tests.api_server import STREAM_PATH, make_key, stream_app
from tests.live import Process, base_env, free_port, wait_for

CLIENTS = 200
EVENTS = 1_000
WRITERS = 2
SEED = 20261125
POLL = 0.1  # the relay's poll interval
PING = 1.0  # keep-alive pings interleave with the events, as they do in production
# The relay's in-memory replay window, ≈ 400 of these events (production: 8 MiB): clients
# back from a short absence replay from memory, longer ones from the journal, so both
# paths and the handover between them are under test.
RECENT_BYTES = 256 * 1024
LEAVE_AFTER = (1, 600)  # messages a client reads before it hangs up: ≈ 3 reconnects each
HANG_UP_AT_ONCE = 0.03  # share of connections dropped as soon as the headers arrive
PAUSE = 0.6  # share of reconnects that wait until more events are committed first
# Share of those pauses that outlast the replay window (≈ 400 events): a fast machine keeps
# every other client near the head, so without them the journal path might never run.
LONG_PAUSE = 0.1
QUERY_PARAM = 0.2  # share of reconnects that resume with ?lastEventId= instead of the header
DEADLINE = 180.0  # for every client to catch up once the writers are done: a failure, not a wait
ROOT = Path(__file__).resolve().parents[2]


def sidecar_app() -> FastAPI:
    """Run by `uvicorn --factory` in the server process: the stream route with its relay,
    and a probe of the relay's state for the test."""
    app = stream_app(
        os.environ["RECON_DATABASE_URL"],
        poll_interval=POLL,
        ping_interval=PING,
        recent_bytes=RECENT_BYTES,
    )

    @app.get("/_probe/relay")
    async def probe(request: Request) -> dict[str, int | None]:
        relay = request.app.state.relay
        return {
            "subscribers": relay.subscriber_count,
            "position": relay.position,
            "fromMemory": relay.replays_from_memory,
            "fromJournal": relay.replays_from_journal,
        }

    return app


@dataclass
class Journal:
    """What the writers have committed; read by the clients' loop without a lock (ints)."""

    expected: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    committed: int = 0
    head: int = 0  # the highest id committed so far
    final: int | None = None  # the last id, once every writer is done
    lock: threading.Lock = field(default_factory=threading.Lock)


def _event(rng: random.Random, seq: int) -> tuple[str, dict[str, Any], str | None]:
    """A payload shaped like the flow's (`recon.store.writer`); some lack flowRunId, which
    the stream must then take from the row."""
    run = f"run-{seq:04d}-{rng.randrange(16**6):06x}"
    now = datetime.now(UTC).isoformat()
    if rng.random() < 0.15:
        payload: dict[str, Any] = {
            "message": "Position reconciliation failed",
            "error": f"broker unreachable after 3 attempts ({seq}) — «naïve» ✓",
            "timestamp": now,
            "source": SOURCE,
            "flowRunId": run,
            "status": rng.choice(["failed", "crashed"]),
        }
        return SYSTEM_ERROR, payload, run
    details = [
        {
            "assetId": f"00000000-0000-4000-8000-{seq:06d}{i:06d}",
            "symbol": f"S{seq}x{i}",
            "change": "updated",
            "fields": {"qty": {"before": f"{i}.5", "after": f"{i + seq}.25"}},
        }
        for i in range(rng.randint(1, 5))
    ]
    payload = {
        "type": "reconciliation",
        "created": [],
        "updated": [d["symbol"] for d in details],
        "removed": [],
        "timestamp": now,
        "source": SOURCE,
        "details": details,
        "accountId": "acct-delivery",
        "seq": seq,
    }
    if rng.random() < 0.5:
        payload["flowRunId"] = run
    return POSITION_UPDATED, payload, run


def write(url: str, journal: Journal, rng: random.Random, first: int, count: int) -> None:
    """Commit `count` events, one to four per transaction, with short random gaps."""
    sessions = session_factory(url)
    seq = first
    while seq < first + count:
        batch = min(first + count - seq, rng.randint(1, 4))
        rows: list[tuple[int, str, dict[str, Any]]] = []
        with sessions.begin() as session:
            for _ in range(batch):
                kind, payload, run = _event(rng, seq)
                event_id = append_event(
                    session, type=kind, payload=payload, account_id="acct-delivery",
                    flow_run_id=run,
                )  # fmt: skip
                rows.append((event_id, kind, payload | {"flowRunId": run}))
                seq += 1
        with journal.lock:
            for event_id, kind, data in rows:
                journal.expected[event_id] = (kind, data)
            journal.committed += len(rows)
            journal.head = max(journal.head, *(r[0] for r in rows))
        time.sleep(rng.uniform(0, 0.03))  # pacing of the load, not a synchronisation


@dataclass
class Client:
    rng: random.Random
    last_id: str
    messages: list[tuple[str, str, str]] = field(default_factory=list)  # (id, event, data)
    connects: int = 0
    opened: bool = False
    replayed: int = 0
    pings: int = 0
    ended_by_server: int = 0
    errors: list[str] = field(default_factory=list)


async def listen(client: Client, http: httpx.AsyncClient, token: str, journal: Journal) -> None:
    """One EventSource-like client: read, hang up at random, resume from the last id."""
    rng = client.rng
    while True:
        leave_after = 0 if rng.random() < HANG_UP_AT_ONCE else rng.randint(*LEAVE_AFTER)
        headers, params = {"Authorization": f"Bearer {token}"}, {}
        if client.connects and rng.random() < QUERY_PARAM:
            params["lastEventId"] = client.last_id
        else:
            headers["Last-Event-ID"] = client.last_id
        resumed_after, head = int(client.last_id), journal.head
        client.connects += 1
        read = 0
        try:
            async with aconnect_sse(
                http, "GET", STREAM_PATH, headers=headers, params=params
            ) as source:
                assert source.response.status_code == 200, await source.response.aread()
                client.opened = True
                if leave_after:
                    async for message in source.aiter_sse():
                        # httpx-sse turns each `: ping` into a message without data (the
                        # previous id, event "message"); the stream never sends one.
                        if not message.data:
                            client.pings += 1
                        else:
                            client.messages.append((message.id, message.event, message.data))
                            client.last_id = message.id
                            read += 1
                            if client.connects > 1 and resumed_after < int(message.id) <= head:
                                client.replayed += 1  # committed while this client was away
                        if journal.final is not None and int(client.last_id) >= journal.final:
                            return
                        if read >= leave_after:
                            break
                    else:
                        client.ended_by_server += 1
        except httpx.HTTPError as exc:  # an EventSource reconnects; the test still fails
            client.errors.append(repr(exc))
        if rng.random() < PAUSE:  # stay away until more events are committed
            away = rng.randint(450, 650) if rng.random() < LONG_PAUSE else rng.randint(1, 40)
            target = journal.committed + away
            await until(lambda t=target: journal.committed >= t or journal.final is not None)


@dataclass
class Run:
    clients: list[Client]
    journal: Journal
    stuck: int
    elapsed: float


async def deliver(base_url: str, url: str, token: str, base_id: int) -> Run:
    master = random.Random(SEED)
    clients = [Client(random.Random(master.random()), str(base_id)) for _ in range(CLIENTS)]
    journal = Journal()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=httpx.Timeout(30.0), limits=limits
    ) as http:
        tasks = [asyncio.create_task(listen(c, http, token, journal)) for c in clients]
        await until(lambda: all(c.opened for c in clients), 60, "every client to connect")
        started = time.monotonic()
        share = EVENTS // WRITERS
        writers = [
            asyncio.to_thread(write, url, journal, random.Random(master.random()), n * share, share)
            for n in range(WRITERS)
        ]
        await asyncio.gather(*writers)
        final = journal.final = max(journal.expected)
        # Done when every client holds the last event, not when every task returns: a
        # client that got it just before `final` was set and then hung up reconnects to a
        # stream with nothing left to send, and httpx-sse yields nothing for the pings of
        # a connection that has had no event yet, so that task would wait for ever.
        with contextlib.suppress(AssertionError):
            await until(lambda: all(int(c.last_id) >= final for c in clients), DEADLINE)
        elapsed = time.monotonic() - started
        stuck = sum(1 for c in clients if int(c.last_id) < final)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and (failure := task.exception()) is not None:
                raise failure
    return Run(clients, journal, stuck, elapsed)


async def until(condition: Callable[[], bool], limit: float = 120.0, what: str = "") -> None:
    """Poll a condition from the clients' loop; fail (never hang) after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what or condition}")
        await asyncio.sleep(0.01)


def _probe(base_url: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(base_url + "/_probe/relay", timeout=5)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def test_every_client_gets_every_event_once_in_order(database_url: str, tmp_path: Path) -> None:
    with session_factory(database_url)() as session:
        base_id = int(session.scalar(select(func.max(PositionEvent.id))) or 0)
    token = make_key(database_url, ["events:read"])
    port = free_port()
    env = base_env(tmp_path / "home") | {"RECON_DATABASE_URL": database_url}
    server = Process(
        [
            "uvicorn", "tests.reliability.test_event_delivery:sidecar_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--no-access-log", "--timeout-graceful-shutdown", "5",
        ],
        env, tmp_path / "server.log", cwd=ROOT,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.popen.poll() is None and _probe(base_url), 60, "the server")
        run = asyncio.run(deliver(base_url, database_url, token, base_id))
        # Every stream is closed: the relay must have let go of every subscription.
        wait_for(lambda: (_probe(base_url) or {}).get("subscribers") == 0, 30, "no subscribers")
        relay = _probe(base_url) or {}
    finally:
        server.stop()
    log = server.output()

    expected = sorted(run.journal.expected)
    assert len(expected) == EVENTS == run.journal.committed
    wanted = {str(i): run.journal.expected[i] for i in expected}
    lost = duplicates = disorder = wrong = delivered = 0
    for client in run.clients:
        ids = [int(m[0]) for m in client.messages]
        delivered += len(ids)
        lost += len(set(expected) - set(ids))
        duplicates += len(ids) - len(set(ids))
        disorder += sum(1 for a, b in itertools.pairwise(ids) if b < a)
        wrong += sum(
            1 for i, kind, data in client.messages if wanted.get(i) != (kind, json.loads(data))
        )
    reconnects = sum(c.connects - 1 for c in run.clients)
    replayed = sum(c.replayed for c in run.clients)
    errors = [e for c in run.clients for e in c.errors]
    print(
        f"\n[event delivery] db={database_url.split(':')[0].split('+')[0]} clients={CLIENTS} "
        f"events={EVENTS} reconnects={reconnects} replayed={replayed} "
        f"(replays from memory={relay.get('fromMemory')} journal={relay.get('fromJournal')}) "
        f"delivered={delivered} "
        f"lost={lost} duplicates={duplicates} out-of-order={disorder} wrong={wrong} "
        f"errors={len(errors)} stuck={run.stuck} "
        f"ended-by-server={sum(c.ended_by_server for c in run.clients)} "
        f"pings={sum(c.pings for c in run.clients)} elapsed={run.elapsed:.1f}s"
    )
    assert (lost, duplicates, disorder, wrong, run.stuck) == (0, 0, 0, 0, 0), log[-3000:]
    assert not errors, errors[:5]
    assert delivered == CLIENTS * EVENTS
    assert reconnects >= 300 and replayed > 0, (reconnects, replayed)
    assert relay["fromMemory"] > 0 and relay["fromJournal"] > 0, relay
    for client in run.clients:
        received = [(int(i), kind, json.loads(data)) for i, kind, data in client.messages]
        assert received == [(i, *run.journal.expected[i]) for i in expected]
    assert "Traceback" not in log and "fell" not in log, log[-3000:]

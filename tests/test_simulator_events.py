"""The simulator's Broker API event stream (`/v2/events/trades`, SSE) over real HTTP, and the
ULID arithmetic the listener resumes with."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from recon.broker.events import parse_event, resume_from, ulid_at, ulid_ms
from simulator import SimulatorConfig, SimulatorServer
from tests.sim import Sim
from tests.support.wait import wait_until


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(seed=5, accounts=3)) as running:
        yield running


@pytest.fixture
def bsim(server: SimulatorServer) -> Iterator[Sim]:
    handle = Sim.of(server)
    handle.reset()
    yield handle
    handle.reset()


def client(sim: Sim, timeout: float = 10) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, auth=(sim.api_key, sim.secret_key), timeout=timeout)


def read_all(sim: Sim, path: str = "/v2/events/trades", **params: Any) -> list[dict[str, Any]]:
    """A bounded query (`until_id`): the history, then the stream ends with 200."""
    with client(sim) as http, connect_sse(http, "GET", path, params=params) as source:
        assert source.response.status_code == 200
        return [e.json() for e in source.iter_sse() if e.data]


def test_fills_of_every_account_carry_increasing_ulids_and_replay_by_since_id(
    bsim: Sim,
) -> None:
    a, b, _ = bsim.account_ids()
    first = bsim.account_fill(a, "AAPL", "2", "buy", partials=2)
    second = bsim.account_fill(b, "MSFT", "1", "sell")
    random_account = bsim._control("POST", "/fills")["accountId"]
    assert random_account in bsim.account_ids()  # none named: one of the generated accounts
    history = bsim.events_state()
    assert history["events"] == 4
    start = ulid_at(0)
    events = read_all(bsim, since_id=start, until_id=history["lastEventId"])
    assert [e["account_id"] for e in events[:3]] == [a, a, b]
    ids = [e["event_id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 4 and all(len(i) == 26 for i in ids)
    fill = events[1]
    assert fill["event"] == "fill" and fill["order"]["symbol"] == "AAPL"
    assert fill["execution_id"] == first["executions"][1]["execution_id"]
    assert fill["position_qty"] == first["positionQty"]
    assert {"at", "price", "qty", "timestamp"} <= set(fill)
    assert events[2]["execution_id"] == second["executions"][0]["execution_id"]
    # After an id: only what came later.
    later = read_all(bsim, since_id=ids[1], until_id=ids[-1])
    assert [e["event_id"] for e in later] == ids[2:]
    # v1 (the spec's legacy path): the same events, integer ids.
    legacy = read_all(bsim, "/v1/events/trades", since_id="0", until_id="4")
    assert [e["event_id"] for e in legacy][-1] == 4
    # The live position agrees with the event.
    position = bsim.v1(f"/v1/trading/accounts/{a}/positions/{first['assetId']}")
    assert position["qty"] == first["positionQty"]


def test_a_live_stream_gets_new_events_and_drop_resets_it(bsim: Sim) -> None:
    a = bsim.account_ids()[0]
    got: list[dict[str, Any]] = []
    ended: list[BaseException] = []

    def run() -> None:
        try:
            with (
                client(bsim, timeout=30) as http,
                connect_sse(http, "GET", "/v2/events/trades") as source,
            ):
                got.extend(e.json() for e in source.iter_sse() if e.data)
        except httpx.HTTPError as exc:
            ended.append(exc)

    bsim.account_fill(a, "AAPL", "1", "buy")  # before the connection: not sent (no since)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: bsim.events_state()["connections"] == 1, 10, "the stream")
    answer = bsim.account_fill(a, "AAPL", "1", "buy")
    wait_until(lambda: got, 10, "the live event")
    assert [e["execution_id"] for e in got] == [answer["executions"][0]["execution_id"]]
    assert bsim._control("POST", "/stream/drop")["dropped"] == 1
    thread.join(10)
    assert ended and isinstance(ended[0], httpx.HTTPError)  # a reset, not a clean end
    assert bsim.events_state()["connections"] == 0


def test_bad_queries_are_400_and_missing_auth_401(bsim: Sim) -> None:
    with client(bsim) as http:
        assert http.get("/v2/events/trades", params={"since_id": "nope"}).status_code == 400
        both = {"since": "2026-01-01", "since_id": ulid_at(0)}
        answer = http.get("/v2/events/trades", params=both)
        assert answer.status_code == 400 and "since" in answer.json()["message"]
        assert http.get("/v2/events/trades", params={"until_id": ulid_at(0)}).status_code == 400
    unauthenticated = httpx.get(f"{bsim.base_url}/v2/events/trades", timeout=10)
    assert unauthenticated.status_code == 401
    wrong = httpx.get(f"{bsim.base_url}/v2/events/trades", auth=("k", "wrong"), timeout=10)
    assert wrong.status_code == 401


def test_ulid_arithmetic() -> None:
    at = ulid_at(1_796_000_000_123)
    assert len(at) == 26 and ulid_ms(at) == 1_796_000_000_123
    assert resume_from(at, 60) == ulid_at(1_796_000_000_123 - 60_000) < at
    assert resume_from("12345", 60) == "12345"  # not a ULID: used as it is
    assert ulid_ms("not-a-ulid-at-all-not-a-ul") is None
    event = parse_event('{"event_id": "X", "account_id": "a", "event": "fill"}')
    assert event is not None and event.event_id == "X" and event.account_id == "a"
    assert parse_event("[]") is None and parse_event('{"event_id": 1}') is None

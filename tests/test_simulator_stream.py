"""The simulator's `trade_updates` websocket, through alpaca-py's own TradingStream."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from alpaca.trading.stream import TradingStream
from websockets.asyncio.client import connect

from simulator import SimulatorConfig, SimulatorServer
from tests.support.wait import wait_until

KEY, SECRET = "sim-key", "sim-secret"


class Listener:
    """A TradingStream in a thread, collecting every raw message its handler gets."""

    def __init__(self, url: str, key: str = KEY, secret: str = SECRET) -> None:
        self.messages: list[dict[str, Any]] = []
        self.stream = TradingStream(key, secret, raw_data=True, url_override=url)
        self.stream.subscribe_trade_updates(self._on)
        self.thread = threading.Thread(target=self.stream.run, daemon=True)

    async def _on(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def events(self) -> list[dict[str, Any]]:
        return [m["data"] for m in self.messages]

    def stop(self) -> None:
        if self.stream._loop is not None:
            self.stream.stop()
        self.thread.join(10)


@pytest.fixture
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(seed=7)) as running:
        yield running


@pytest.fixture
def control(server: SimulatorServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.config.control_token}"}
    with httpx.Client(base_url=f"{server.base_url}/_sim", headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def ws_url(server: SimulatorServer) -> str:
    return server.base_url.replace("http://", "ws://") + "/stream"


@pytest.fixture
def listen(ws_url: str, control: httpx.Client) -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def start(key: str = KEY, secret: str = SECRET, *, wait: bool = True) -> Listener:
        listener = Listener(ws_url, key, secret)
        listener.thread.start()
        started.append(listener)
        if wait:
            wait_until(lambda: control.get("/stream").json()["listening"] >= 1, what="listening")
        return listener

    yield start
    for listener in started:
        listener.stop()


def position_qty(server: SimulatorServer, symbol: str) -> Decimal | None:
    headers = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
    response = httpx.get(f"{server.base_url}/v2/positions/{symbol}", headers=headers)
    return None if response.status_code == 404 else Decimal(response.json()["qty"])


def test_fill_changes_the_book_and_streams_partials_then_fill(
    server: SimulatorServer, control: httpx.Client, listen: Callable[..., Listener]
) -> None:
    listener = listen()
    before = position_qty(server, "AAPL")
    assert before is not None
    body = {"symbol": "AAPL", "qty": "7", "side": "buy", "partials": 3}
    answer = control.post("/fills", json=body).json()
    assert position_qty(server, "AAPL") == before + 7
    wait_until(lambda: len(listener.messages) == 3, what="three events")
    events = listener.events()
    assert [e["event"] for e in events] == ["partial_fill", "partial_fill", "fill"]
    assert sum(Decimal(e["qty"]) for e in events) == 7
    assert events[-1]["position_qty"] == str(before + 7) == answer["positionQty"]
    assert all(isinstance(e[k], str) for e in events for k in ("price", "qty", "position_qty"))
    assert len({e["execution_id"] for e in events}) == 3
    assert events[-1]["order"]["status"] == "filled"
    assert events[-1]["order"]["filled_qty"] == "7"
    assert events[0]["order"]["asset_id"] == answer["assetId"]
    assert all(e["timestamp"].endswith("Z") for e in events)


def test_closing_fill_removes_the_position_and_reports_zero(
    server: SimulatorServer, control: httpx.Client, listen: Callable[..., Listener]
) -> None:
    listener = listen()
    qty = position_qty(server, "MSFT")
    assert qty is not None and qty > 0
    control.post("/fills", json={"symbol": "MSFT", "qty": str(qty), "side": "sell"})
    assert position_qty(server, "MSFT") is None
    wait_until(lambda: len(listener.messages) == 1)
    assert listener.events()[0]["position_qty"] == "0"


def test_fill_opens_a_new_position_and_rejects_bad_ones(
    server: SimulatorServer, control: httpx.Client
) -> None:
    assert position_qty(server, "JPM") is None
    control.post("/fills", json={"symbol": "JPM", "qty": "3", "side": "sell"})
    assert position_qty(server, "JPM") == -3
    bad = [
        {"symbol": "NOPE", "qty": "1", "side": "buy"},
        {"symbol": "AAPL", "qty": "0.5", "side": "buy"},
        {"symbol": "AAPL", "qty": "-1", "side": "buy"},
        {"symbol": "AAPL", "qty": "1", "side": "hold"},
    ]
    for body in bad:
        assert control.post("/fills", json=body).status_code == 422, body


def test_random_fill_without_body(control: httpx.Client, listen: Callable[..., Listener]) -> None:
    listener = listen()
    answer = control.post("/fills").json()
    wait_until(lambda: len(listener.messages) == len(answer["executions"]))
    assert listener.events()[-1]["position_qty"] == answer["positionQty"]


def test_second_connection_of_a_key_pair_is_refused(
    control: httpx.Client, listen: Callable[..., Listener], ws_url: str
) -> None:
    listen()

    async def second() -> dict[str, Any]:
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"action": "auth", "key": KEY, "secret": SECRET}))
            return dict(json.loads(await ws.recv()))

    reply = asyncio.run(second())
    assert reply["data"]["status"] == "unauthorized"
    assert reply["data"]["error"] == "connection limit exceeded"
    state = control.get("/stream").json()
    assert state["connections"] == 1 and state["max_concurrent"] == 1 and state["refused"] == 1


def test_documented_auth_form_binary_frames_and_listening_ack(ws_url: str) -> None:
    async def session() -> list[Any]:
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"action": "auth", "key": KEY, "secret": SECRET}))
            auth = await ws.recv()
            await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
            ack = await ws.recv()
            return [auth, ack]

    auth, ack = asyncio.run(session())
    assert isinstance(auth, bytes) and isinstance(ack, bytes)  # the paper endpoint's frames
    assert json.loads(auth) == {
        "stream": "authorization",
        "data": {"status": "authorized", "action": "auth"},
    }
    assert json.loads(ack) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}


def test_wrong_keys_and_refuse_auth_fault(control: httpx.Client, ws_url: str) -> None:
    async def auth(key: str) -> str:
        async with connect(ws_url) as ws:
            message = {"action": "authenticate", "data": {"key_id": key, "secret_key": SECRET}}
            await ws.send(json.dumps(message))
            return str(json.loads(await ws.recv())["data"]["status"])

    assert asyncio.run(auth("wrong")) == "unauthorized"
    control.post("/stream/fault", json={"mode": "refuse_auth", "count": 1})
    assert asyncio.run(auth(KEY)) == "unauthorized"
    assert asyncio.run(auth(KEY)) == "authorized"
    assert control.get("/stream").json()["unauthorized"] == 2


def test_drop_closes_and_alpaca_py_reconnects(
    control: httpx.Client, listen: Callable[..., Listener]
) -> None:
    listen()
    assert control.post("/stream/drop").json() == {"dropped": 1}
    wait_until(lambda: control.get("/stream").json()["connects"] == 2, what="a reconnect")
    assert control.get("/stream").json()["max_concurrent"] == 1


def test_duplicate_and_reorder_faults(
    control: httpx.Client, listen: Callable[..., Listener]
) -> None:
    listener = listen()
    control.post("/stream/fault", json={"mode": "duplicate", "count": 1})
    control.post("/fills", json={"symbol": "AAPL", "qty": "1", "side": "buy"})
    wait_until(lambda: len(listener.messages) == 2)
    first, again = listener.events()
    assert first == again
    control.post("/stream/fault", json={"mode": "reorder", "count": 1})
    control.post("/fills", json={"symbol": "AAPL", "qty": "2", "side": "buy", "partials": 2})
    wait_until(lambda: len(listener.messages) == 4)
    assert [e["event"] for e in listener.events()[2:]] == ["fill", "partial_fill"]


def test_delay_and_stall_faults(control: httpx.Client, listen: Callable[..., Listener]) -> None:
    listener = listen()
    control.post("/stream/fault", json={"mode": "delay", "delay": 0.5, "count": 1})
    sent = time.monotonic()
    control.post("/fills", json={"symbol": "AAPL", "qty": "1", "side": "buy"})
    wait_until(lambda: len(listener.messages) == 1)
    assert time.monotonic() - sent >= 0.5
    control.post("/stream/fault", json={"mode": "stall"})
    stalled = control.get("/stream").json()["stalled"]
    control.post("/fills", json={"symbol": "AAPL", "qty": "1", "side": "buy"})
    # The event reached the connection's sender and is held there: nothing arrived.
    wait_until(lambda: control.get("/stream").json()["stalled"] > stalled, what="the stall")
    assert len(listener.messages) == 1
    control.delete("/stream/fault")
    wait_until(lambda: len(listener.messages) == 2)


def test_drifting_book_trades_through_the_stream() -> None:
    config = SimulatorConfig(seed=7, drift_seconds=0.05)
    with SimulatorServer(config) as server:
        listener = Listener(server.base_url.replace("http://", "ws://") + "/stream")
        listener.thread.start()
        try:
            # No REST request is made: the ticker drives the drift while someone listens.
            wait_until(lambda: len(listener.messages) >= 3, what="drift trades on the stream")
            event = listener.events()[-1]
            assert event["event"] == "fill" and Decimal(event["qty"]) > 0
        finally:
            listener.stop()

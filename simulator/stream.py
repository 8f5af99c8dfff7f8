"""`/stream`: Alpaca's `trade_updates` websocket, as the paper endpoint speaks it.

Binary frames holding JSON; both auth forms (`authenticate` with `key_id`/`secret_key`, which
alpaca-py sends, and the documented `auth` with `key`/`secret`); a `listening` ack; no replay.
One connection per key pair: a second one that authenticates while the first is open is
answered `unauthorized` with "connection limit exceeded" and closed, as Alpaca's trading stream
answers it (alpaca-trade-api users reported exactly that error from the auth step).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from simulator.faults import Armed, FaultSwitch

AUTH_TIMEOUT = 10.0
LIMIT_EXCEEDED = "connection limit exceeded"

StreamFaultMode = Literal["refuse_auth", "stall", "duplicate", "reorder", "delay"]


class StreamFault(Armed):
    """One armed stream fault. `count` events (or auths) it applies to; None: until cleared.

    refuse_auth: answer `unauthorized` to good keys; stall: hold every event back until the
    fault is cleared (or `delay` s); duplicate: send each event twice; reorder: send each pair
    of events swapped; delay: hold each event `delay` s before sending it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: StreamFaultMode
    count: int | None = Field(default=None, ge=1)
    delay: float = Field(default=0.0, ge=0.0, le=600.0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.mode == "delay" and self.delay <= 0:
            raise ValueError("mode 'delay' needs a positive delay")
        return self


@dataclass(eq=False)  # identity: each connection is its own member of the set
class Connection:
    websocket: WebSocket
    key: str
    queue: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    listening: bool = False


@dataclass
class StreamStats:
    connects: int = 0  # authorized connections, ever
    refused: int = 0  # second connections of a key pair
    unauthorized: int = 0
    max_concurrent: int = 0
    sent: int = 0
    dropped: int = 0
    stalled: int = 0  # events that reached a connection's sender and were held by a stall


class StreamHub:
    def __init__(
        self,
        credentials: Callable[[], tuple[str, str]],
        *,
        tick: Callable[[], object] | None = None,
        tick_seconds: float = 1.0,
    ) -> None:
        self._credentials = credentials
        # The drifting book advances lazily, on requests; while someone listens, a ticker
        # advances it on time so its trades reach the stream as they happen.
        self._tick = tick
        self._tick_seconds = tick_seconds
        self._ticker: asyncio.Task[None] | None = None
        self._connections: set[Connection] = set()
        self._faults: FaultSwitch[StreamFault] = FaultSwitch()
        self._held: bytes | None = None  # the first of a pair under `reorder`
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self.stats = StreamStats()

    # -- faults -----------------------------------------------------------------------------

    @property
    def _fault(self) -> StreamFault | None:
        return self._faults.current

    def arm(self, fault: StreamFault) -> None:
        self._faults.arm(fault)
        if fault.mode == "stall":
            self._unstalled.clear()

    def clear(self) -> None:
        self._faults.clear()
        self._unstalled.set()
        self._flush_held()

    def _take(self, mode: str) -> StreamFault | None:
        return self._faults.take(lambda fault: fault.mode == mode)

    # -- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        self.clear()
        self.stats = StreamStats(max_concurrent=len(self._connections))

    def describe(self) -> dict[str, Any]:
        return {
            "connections": len(self._connections),
            "listening": sum(c.listening for c in self._connections),
            "fault": None if self._fault is None else self._fault.model_dump(),
            **self.stats.__dict__,
        }

    # -- delivery ---------------------------------------------------------------------------

    def publish(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            frame = json.dumps(message, separators=(",", ":")).encode()
            if self._take("duplicate") is not None:
                self._deliver(frame)
            elif self._fault is not None and self._fault.mode == "reorder":
                if self._held is None:
                    self._held = frame  # sent after the next one
                    continue
                self._take("reorder")
                self._deliver(frame)
                frame, self._held = self._held, None
            self._deliver(frame)

    def _deliver(self, frame: bytes) -> None:
        for connection in self._connections:
            if connection.listening:
                connection.queue.put_nowait(frame)

    def _flush_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._deliver(held)

    async def drop(self) -> int:
        """Close every connection at once, as a broker-side restart would."""
        closing = list(self._connections)
        for connection in closing:
            with contextlib.suppress(Exception):
                await connection.websocket.close(code=1012)
        self.stats.dropped += len(closing)
        return len(closing)

    # -- one connection ---------------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        connection = await self._authenticate(websocket)
        if connection is None:
            return
        sender = asyncio.create_task(self._send_loop(connection))
        try:
            while True:
                request = _parse(await websocket.receive())
                if request is None:
                    break
                if request.get("action") == "listen":
                    await self._listen(connection, request)
        except WebSocketDisconnect:
            pass
        finally:
            self._connections.discard(connection)
            sender.cancel()
            await asyncio.wait({sender})

    async def _authenticate(self, websocket: WebSocket) -> Connection | None:
        try:
            first: Mapping[str, Any] = await asyncio.wait_for(websocket.receive(), AUTH_TIMEOUT)
            request = _parse(first)
        except (TimeoutError, WebSocketDisconnect):
            request = None
        key, secret = _credentials_of(request or {})
        action = (request or {}).get("action") or "authenticate"
        api_key, secret_key = self._credentials()
        good = secrets.compare_digest(key.encode(), api_key.encode()) & secrets.compare_digest(
            secret.encode(), secret_key.encode()
        )
        error: str | None = None
        if not good or self._take("refuse_auth") is not None:
            self.stats.unauthorized += 1
            error = "access key verification failed"
        elif any(c.key == key for c in self._connections):
            self.stats.refused += 1
            error = LIMIT_EXCEEDED
        if error is not None:
            data = {"status": "unauthorized", "action": action, "error": error}
            await _send(websocket, {"stream": "authorization", "data": data})
            with contextlib.suppress(Exception):
                await websocket.close(code=1008)
            return None
        # Checked and registered with no await between: two racing connections cannot both pass.
        connection = Connection(websocket, key)
        self._connections.add(connection)
        self.stats.connects += 1
        self.stats.max_concurrent = max(self.stats.max_concurrent, len(self._connections))
        data = {"status": "authorized", "action": action}
        await _send(websocket, {"stream": "authorization", "data": data})
        return connection

    async def _listen(self, connection: Connection, request: dict[str, Any]) -> None:
        data = request.get("data") if isinstance(request.get("data"), dict) else {}
        wanted = data.get("streams") if isinstance(data, dict) else None
        streams = [s for s in wanted or [] if s == "trade_updates"]
        connection.listening = bool(streams)
        if self._tick is not None and (self._ticker is None or self._ticker.done()):
            self._ticker = asyncio.create_task(self._run_ticker())
        await _send(connection.websocket, {"stream": "listening", "data": {"streams": streams}})

    async def _send_loop(self, connection: Connection) -> None:
        while True:
            frame = await connection.queue.get()
            fault = self._fault
            if fault is not None and fault.mode == "stall":
                self.stats.stalled += 1
                timeout = fault.delay or None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._unstalled.wait(), timeout)
            elif self._take("delay") is not None and fault is not None:
                await asyncio.sleep(fault.delay)
            if connection.websocket.application_state != WebSocketState.CONNECTED:
                return
            try:
                await connection.websocket.send_bytes(frame)
            except Exception:
                return
            self.stats.sent += 1

    async def _run_ticker(self) -> None:
        assert self._tick is not None
        while any(c.listening for c in self._connections):
            self._tick()
            await asyncio.sleep(self._tick_seconds)


def _parse(message: Mapping[str, Any]) -> dict[str, Any] | None:
    if message.get("type") == "websocket.disconnect":
        return None
    raw = message.get("text") or message.get("bytes") or b""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _credentials_of(request: dict[str, Any]) -> tuple[str, str]:
    """Both auth forms in use: alpaca-py's `authenticate` and the documented `auth`."""
    if request.get("action") == "auth":
        return str(request.get("key") or ""), str(request.get("secret") or "")
    data = request.get("data")
    if not isinstance(data, dict):
        data = {}
    return str(data.get("key_id") or ""), str(data.get("secret_key") or "")


async def _send(websocket: WebSocket, message: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_bytes(json.dumps(message, separators=(",", ":")).encode())

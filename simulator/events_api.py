"""`GET /v2/events/trades` (and the legacy `/v1/events/trades`): Server-Sent Events, HTTP Basic.

Query rules as Alpaca's spec states them: `since_id` (a ULID in v2, an integer in v1) replays
the events after it; `until_id` / `until` end the stream (200) once passed; `since` and
`since_id` cannot be combined; without `since…` only new events are sent.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from simulator.broker_api import basic_ok, parse_time
from simulator.events import TradeEvent, is_drop
from simulator.faults import ERROR_BODIES
from simulator.state import Simulator

_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"code": 40010000, "message": message}, status_code=400)


def _event_id(version: str, raw: str | None) -> tuple[str | int | None, str | None]:
    """The parsed id, or an error message."""
    if raw is None:
        return None, None
    if version == "v1":
        return (int(raw), None) if raw.isdigit() else (None, "since_id/until_id: an integer")
    upper = raw.upper()
    return (upper, None) if _ULID.match(upper) else (None, "since_id/until_id: a ULID")


def _after(event: TradeEvent, bound: str | int) -> bool:
    return event.seq > bound if isinstance(bound, int) else event.ulid > bound


def events_router(sim: Simulator) -> APIRouter:
    router = APIRouter()

    @router.get("/{version}/events/trades")
    async def trades(
        request: Request,
        version: str,
        since: str | None = None,
        until: str | None = None,
        since_id: str | None = None,
        until_id: str | None = None,
    ) -> Response:
        entry = sim.log.start(request.method, request.url.path)
        response = _open(sim, request, version, since, until, since_id, until_id)
        sim.log.finish(entry, response.status_code)
        return response

    return router


def _open(
    sim: Simulator,
    request: Request,
    version: str,
    since: str | None,
    until: str | None,
    since_id: str | None,
    until_id: str | None,
) -> Response:
    if version not in ("v1", "v2"):
        return JSONResponse({"code": 40410000, "message": "endpoint not found"}, status_code=404)
    if not basic_ok(request, sim.credentials):
        return JSONResponse(ERROR_BODIES[401], status_code=401)
    admitted, headers = sim.rate_limit.take()
    if not admitted:
        return JSONResponse(ERROR_BODIES[429], status_code=429, headers=headers)
    if since is not None and since_id is not None:
        return _bad("since and since_id can't be used at the same time")
    if (until is not None and since is None) or (until_id is not None and since_id is None):
        return _bad("until needs since, until_id needs since_id")
    start, error = _event_id(version, since_id)
    stop, error2 = _event_id(version, until_id)
    if error or error2:
        return _bad(error or error2 or "")
    since_at, until_at = parse_time(since), parse_time(until)
    if (since is not None and since_at is None) or (until is not None and until_at is None):
        return _bad("since/until: a date (YYYY-MM-DD) or an RFC 3339 time")
    stream = _stream(sim, version, start, stop, since_at, until_at, request)
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def _stream(
    sim: Simulator,
    version: str,
    start: str | int | None,
    stop: str | int | None,
    since_at: dt.datetime | None,
    until_at: dt.datetime | None,
    request: Request,
) -> AsyncIterator[bytes]:
    hub = sim.events
    subscriber, backlog = hub.subscribe(start)
    if since_at is not None:
        backlog = [e for e in hub.history if e.at >= since_at]
    try:
        yield b": connected\n\n"  # headers and a first byte at once, as a live stream does
        for event in backlog:
            if _past(event, stop, until_at):
                return
            yield _frame(event, version)
            hub.stats.sent += 1
        last = backlog[-1] if backlog else None
        if _reached(hub.history, stop, until_at):
            return  # the bound lies in the past: history only, then 200
        while True:
            item = await subscriber.queue.get()
            if is_drop(item):
                reset = request.scope.get("simulator.reset_connection")
                if callable(reset):  # a TCP reset, as when the broker's edge goes away
                    reset()
                return
            assert isinstance(item, TradeEvent)
            if last is not None and not _after(item, last.ulid):
                continue  # queued while the backlog was read: sent already
            if _past(item, stop, until_at):
                return
            yield _frame(item, version)
            hub.stats.sent += 1
    finally:
        hub.unsubscribe(subscriber)


def _reached(
    history: deque[TradeEvent], stop: str | int | None, until_at: dt.datetime | None
) -> bool:
    if until_at is not None and until_at <= dt.datetime.now(dt.UTC):
        return True
    if stop is None or not history:
        return False
    newest = history[-1]
    return newest.seq >= stop if isinstance(stop, int) else newest.ulid >= stop


def _past(event: TradeEvent, stop: str | int | None, until_at: dt.datetime | None) -> bool:
    if stop is not None and _after(event, stop):
        return True
    return until_at is not None and event.at > until_at


def _frame(event: TradeEvent, version: str) -> bytes:
    data: dict[str, Any] = event.payload(version)
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

"""The FastAPI app speaking Alpaca's trading REST API (`/v2/...`) plus the `/_sim` control API."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from simulator.broker_api import broker_control_router, broker_router
from simulator.clock import market_clock
from simulator.control import control_router
from simulator.events_api import events_router
from simulator.faults import DEFAULT_UNKNOWN_ASSET_CLASS, ERROR_BODIES, Fault, error_headers
from simulator.state import Simulator, SimulatorConfig
from simulator.stream_control import stream_control_router

SCOPE_RESET = "simulator.reset_connection"
_OTHER_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def error_response(status: int) -> JSONResponse:
    return JSONResponse(ERROR_BODIES[status], status_code=status, headers=error_headers(status))


def _reset(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns the close into a TCP RST: the client sees "connection reset by peer",
        # as when a proxy or the broker's edge kills the connection mid-request.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class SimulatorApp(FastAPI):
    """FastAPI whose outermost layer can reach the connection, so `drop` can really reset it.

    An exception raised before the response starts is no use: uvicorn answers it with a 500.
    uvicorn's `send` is a method of its request cycle, which owns the transport; middleware
    wraps `send`, so it is captured here, before any middleware runs.
    """

    simulator: Simulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if scope["type"] == "http" and isinstance(transport, asyncio.Transport):
            scope[SCOPE_RESET] = functools.partial(_reset, transport)
        await super().__call__(scope, receive, send)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_app(
    config: SimulatorConfig | None = None,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    now: Callable[[], dt.datetime] = _utcnow,
) -> SimulatorApp:
    """Build a fresh simulated broker; `monotonic` and `now` are injectable for tests."""
    config = config or SimulatorConfig()
    sim = Simulator(config, monotonic)
    app = SimulatorApp(
        title="Simulated Alpaca broker", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.simulator = sim
    app.include_router(control_router(sim))
    app.include_router(stream_control_router(sim))
    app.include_router(broker_router(sim, now))
    app.include_router(broker_control_router(sim))
    app.include_router(events_router(sim))

    @app.websocket("/stream")
    async def stream(websocket: WebSocket) -> None:
        await sim.stream.serve(websocket)

    @app.get("/v2/positions")
    async def positions(request: Request) -> Response:
        return await _serve(sim, request, lambda: sim.portfolio.positions())

    @app.get("/v2/positions/{symbol_or_asset_id:path}")
    async def position(request: Request, symbol_or_asset_id: str) -> Response:
        def build() -> object:
            found = sim.portfolio.position(symbol_or_asset_id)
            return error_response(404) if found is None else found

        return await _serve(sim, request, build)

    @app.get("/v2/account")
    async def account(request: Request) -> Response:
        return await _serve(sim, request, lambda: sim.portfolio.account())

    @app.get("/v2/clock")
    async def clock(request: Request) -> Response:
        return await _serve(sim, request, lambda: market_clock(now()))

    @app.api_route("/v2/{rest:path}", methods=_OTHER_METHODS)
    async def unknown(request: Request) -> Response:
        body = {"code": 40410000, "message": "endpoint not found"}
        return await _serve(sim, request, lambda: JSONResponse(body, status_code=404))

    return app


def _authorized(request: Request, credentials: tuple[str, str]) -> bool:
    key = request.headers.get("APCA-API-KEY-ID", "")
    secret = request.headers.get("APCA-API-SECRET-KEY", "")
    api_key, secret_key = credentials
    return secrets.compare_digest(key.encode(), api_key.encode()) & secrets.compare_digest(
        secret.encode(), secret_key.encode()
    )


async def _serve(sim: Simulator, request: Request, build: Callable[[], object]) -> Response:
    entry = sim.log.start(request.method, request.url.path)
    status: int | None = None
    try:
        response = await _respond(sim, request, entry, build)
        if response is None:
            # The connection is gone; uvicorn discards whatever is sent now.
            return Response(status_code=204)
        status = response.status_code
        return response
    finally:
        sim.log.finish(entry, status)


async def _respond(
    sim: Simulator, request: Request, entry: dict[str, Any], build: Callable[[], object]
) -> Response | None:
    if not _authorized(request, sim.credentials):
        return error_response(401)
    sim.catch_up()
    fault = sim.faults.take(lambda f: f.applies_to(request.url.path))
    if fault is not None:
        sim.log.mark_fault(entry, fault.mode)
        if fault.mode == "stall":
            await _wait_for_disconnect(request, fault.delay)
        elif fault.mode == "status":
            return error_response(fault.status or 500)
        elif fault.mode == "no_code":
            status = fault.status or 500
            message = ERROR_BODIES.get(status, ERROR_BODIES[500])["message"]
            return JSONResponse({"message": message}, status_code=status)
        elif fault.mode in ("echo", "echo_json"):
            return _echo(request, fault)
        elif fault.mode == "drop":
            reset = request.scope.get(SCOPE_RESET)
            if not callable(reset):
                raise RuntimeError("the drop fault needs uvicorn's transport (see SimulatorApp)")
            reset()
            await _wait_for_disconnect(request, 5.0)
            return None
    result = build()
    if isinstance(result, Response):
        return result
    if fault is None or fault.mode == "stall":
        return JSONResponse(result)
    return _corrupt(result, fault)


def _echo(request: Request, fault: Fault) -> Response:
    lines = [f"{request.method} {request.url.path}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    status = fault.status or 502
    if fault.mode == "echo_json":
        body = {"message": "bad gateway", "code": 50210000, "request": lines}
        return JSONResponse(body, status_code=status)
    return Response("\n".join(lines), status_code=status, media_type="text/plain")


async def _wait_for_disconnect(request: Request, seconds: float) -> None:
    """Wait until the client is gone, or `seconds`, whichever comes first.

    A stall ends early when the client gives up: its answer would be lost anyway, and a sleeping
    handler would otherwise hold up server shutdown.
    """

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(disconnected(), seconds)


def _corrupt(payload: object, fault: Fault) -> Response:
    if fault.mode == "malformed_json":
        body = json.dumps(payload).encode()
        return Response(body[: max(1, len(body) // 2)], media_type="application/json")
    if fault.mode == "empty_positions":
        return JSONResponse([])
    records: list[Any] = payload if isinstance(payload, list) else [payload]
    # The middle record, so a client that only inspects the first one is caught out.
    record = records[len(records) // 2] if records else None
    if isinstance(record, dict) and fault.mode == "unknown_enum":
        record["asset_class"] = fault.value or DEFAULT_UNKNOWN_ASSET_CLASS
    elif isinstance(record, dict) and fault.mode == "missing_qty":
        record.pop("qty", None)
    return JSONResponse(payload)

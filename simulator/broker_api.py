"""Alpaca's Broker API (`/v1`, HTTP Basic) for the generated accounts, and its control API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from simulator.accounts import AccountFault
from simulator.clock import market_clock
from simulator.control import control_guards
from simulator.faults import ERROR_BODIES
from simulator.state import Simulator

_NOT_FOUND = {"code": 40410000, "message": "account not found"}


class RateLimitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_minute: int = Field(ge=0)
    burst: int | None = Field(default=None, ge=1)


class StatusRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str
    status: str = Field(min_length=1)


class BrokerStepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=1, ge=1, le=1000)


def basic_ok(request: Request, credentials: tuple[str, str]) -> bool:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        key, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    api_key, secret_key = credentials
    return secrets.compare_digest(key.encode(), api_key.encode()) & secrets.compare_digest(
        secret.encode(), secret_key.encode()
    )


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def broker_router(sim: Simulator, now: Callable[[], dt.datetime]) -> APIRouter:
    router = APIRouter(prefix="/v1")

    async def serve(
        request: Request, build: Callable[[], object], account_id: str | None = None
    ) -> Response:
        entry = sim.log.start(request.method, request.url.path)
        path = request.url.path
        stall = sim.accounts.failing(account_id, "stall", path) if account_id else None
        if stall is not None:  # logged on arrival, answered later
            await asyncio.sleep(stall.delay)
        response = _answer(sim, request, build, account_id)
        sim.log.finish(entry, response.status_code)
        return response

    @router.get("/accounts")
    async def accounts(
        request: Request,
        status: str | None = None,
        sort: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
        created_after: str | None = None,
        created_before: str | None = None,
    ) -> Response:
        return await serve(
            request,
            lambda: sim.accounts.page(
                status=status,
                created_after=parse_time(created_after),
                created_before=parse_time(created_before),
                descending=sort == "desc",
            ),
        )

    @router.get("/trading/accounts/{account_id}/positions")
    async def positions(request: Request, account_id: str) -> Response:
        return await serve(request, lambda: sim.accounts.book(account_id).positions(), account_id)

    @router.get("/trading/accounts/{account_id}/positions/{symbol_or_asset_id:path}")
    async def position(request: Request, account_id: str, symbol_or_asset_id: str) -> Response:
        def build() -> object:
            found = sim.accounts.book(account_id).position(symbol_or_asset_id)
            return JSONResponse(ERROR_BODIES[404], status_code=404) if found is None else found

        return await serve(request, build, account_id)

    @router.get("/trading/accounts/{account_id}/account")
    async def trade_account(request: Request, account_id: str) -> Response:
        return await serve(request, lambda: sim.accounts.trade_account(account_id), account_id)

    @router.get("/clock")
    async def clock(request: Request) -> Response:
        return await serve(request, lambda: market_clock(now()))

    return router


def _answer(
    sim: Simulator, request: Request, build: Callable[[], object], account_id: str | None
) -> Response:
    if not basic_ok(request, sim.credentials):
        return JSONResponse(ERROR_BODIES[401], status_code=401)
    admitted, headers = sim.rate_limit.take()
    if not admitted:
        return JSONResponse(ERROR_BODIES[429], status_code=429, headers=headers)
    if account_id is not None:
        if not sim.accounts.knows(account_id):
            return JSONResponse(_NOT_FOUND, status_code=404, headers=headers)
        fault = sim.accounts.failing(account_id, "fail", request.url.path)
        if fault is not None:
            body = ERROR_BODIES.get(fault.status, {"message": "request failed"})
            return JSONResponse(body, status_code=fault.status, headers=headers)
    result = build()
    if isinstance(result, Response):
        result.headers.update(headers)
        return result
    return JSONResponse(result, headers=headers)


def broker_control_router(sim: Simulator) -> APIRouter:
    router = APIRouter(prefix="/_sim/broker", dependencies=control_guards(sim))

    def state() -> dict[str, Any]:
        return {
            "accounts": len(sim.accounts.ids),
            "rateLimit": {"perMinute": sim.rate_limit.per_minute, "burst": sim.rate_limit.burst},
            "throttled": sim.rate_limit.throttled,
            "faults": [f.model_dump() for f in sim.accounts.faults.values()],
        }

    @router.get("")
    async def read() -> dict[str, Any]:
        return state()

    @router.get("/accounts")
    async def ids() -> list[str]:
        return sim.accounts.ids

    @router.put("/rate-limit")
    async def rate_limit(body: RateLimitRequest) -> dict[str, Any]:
        sim.rate_limit.configure(body.per_minute, body.burst)
        return state()

    @router.post("/fault")
    async def arm(fault: AccountFault) -> dict[str, Any]:
        sim.accounts.faults[fault.account_id] = fault
        return state()

    @router.delete("/fault")
    async def disarm() -> dict[str, Any]:
        sim.accounts.faults.clear()
        return state()

    @router.put("/status")
    async def set_status(body: StatusRequest) -> dict[str, Any]:
        sim.accounts.statuses[body.account_id] = body.status.upper()
        return state()

    @router.post("/step")
    async def step(body: Annotated[BrokerStepRequest | None, Body()] = None) -> dict[str, Any]:
        sim.accounts.advance((body or BrokerStepRequest()).n)
        sim.publish()  # the drift's trades reach /v2/events/trades
        return state()

    return router

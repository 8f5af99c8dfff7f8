"""`/_sim/...`: the control API, answered only to loopback clients with the control token."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from simulator.faults import Fault
from simulator.state import Simulator


class StepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=1, ge=1, le=10_000)


class LoadRequest(BaseModel):
    """Raw Alpaca payloads; records are kept as given, malformed ones included, on purpose."""

    model_config = ConfigDict(extra="forbid")

    positions: list[dict[str, Any]]
    account: dict[str, Any] | None = None


class KeysRequest(BaseModel):
    """The key pair the broker accepts from now on (until the next reset)."""

    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(min_length=1)
    secret_key: str = Field(min_length=1)


def _loopback_only(request: Request) -> None:
    # The control API must stay unreachable even when the broker side is bound to a public
    # interface for a demo.
    host = request.client.host if request.client else ""
    try:
        allowed = ipaddress.ip_address(host).is_loopback
    except ValueError:
        allowed = False
    if not allowed:
        raise HTTPException(status_code=403, detail="the control API answers loopback only")


def _token_checker(token: str) -> Callable[[Request], None]:
    expected = f"Bearer {token}".encode()

    def check(request: Request) -> None:
        given = request.headers.get("Authorization", "").encode()
        if not secrets.compare_digest(given, expected):
            raise HTTPException(
                status_code=401,
                detail="the control API needs Authorization: Bearer <control token>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def control_guards(sim: Simulator) -> list[Any]:
    """What every `/_sim` route requires: a loopback client holding the control token."""
    return [Depends(_loopback_only), Depends(_token_checker(sim.config.control_token))]


def control_router(sim: Simulator) -> APIRouter:
    router = APIRouter(prefix="/_sim", dependencies=control_guards(sim))

    @router.get("/state")
    async def state() -> dict[str, Any]:
        sim.catch_up()
        return sim.state()

    @router.post("/step")
    async def step(body: Annotated[StepRequest | None, Body()] = None) -> dict[str, Any]:
        sim.portfolio.advance((body or StepRequest()).n)
        sim.publish()
        return sim.state()

    @router.put("/positions")
    async def load(body: LoadRequest) -> dict[str, Any]:
        sim.portfolio.load(body.positions, body.account)
        return sim.state()

    @router.delete("/positions")
    async def unload() -> dict[str, Any]:
        sim.portfolio.unload()
        return sim.state()

    @router.post("/fault")
    async def arm(fault: Fault) -> dict[str, Any]:
        sim.faults.arm(fault)
        return sim.state()

    @router.delete("/fault")
    async def disarm() -> dict[str, Any]:
        sim.faults.clear()
        return sim.state()

    @router.put("/keys")
    async def rotate_keys(body: KeysRequest) -> dict[str, Any]:
        sim.credentials = (body.api_key, body.secret_key)
        return sim.state()

    @router.post("/reset")
    async def reset() -> dict[str, Any]:
        sim.reset()
        return sim.state()

    @router.get("/requests")
    async def requests() -> list[dict[str, Any]]:
        return sim.log.entries()

    @router.delete("/requests")
    async def clear_requests() -> dict[str, int]:
        return {"cleared": sim.log.clear()}

    return router

"""`/_sim/fills` and `/_sim/stream/...`: executing fills and misbehaving on the stream."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Body, HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulator.book import render
from simulator.control import control_guards
from simulator.fills import describe
from simulator.state import Simulator
from simulator.stream import StreamFault


class FillRequest(BaseModel):
    """An order executed at the position's current price; `qty` is an exact decimal string.

    Without symbol, qty and side: a random fill. `account_id`: one of the Broker API's
    generated accounts (its events go to `/v2/events/trades`); with accounts generated and
    none named, a random one of them."""

    model_config = ConfigDict(extra="forbid")

    symbol: str | None = Field(default=None, min_length=1, max_length=64)
    qty: Decimal | None = Field(default=None, gt=0, max_digits=30)
    side: Literal["buy", "sell"] | None = None
    partials: int = Field(default=1, ge=1, le=1_000)
    account_id: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _all_or_none(self) -> Self:
        given = [v is not None for v in (self.symbol, self.qty, self.side)]
        if any(given) and not all(given):
            raise ValueError("symbol, qty and side go together (none of them: a random fill)")
        return self


# Which account a fill without one goes to: reproducible draws, not secrecy.
_pick = random.Random(7)  # noqa: S311


def stream_control_router(sim: Simulator) -> APIRouter:
    router = APIRouter(prefix="/_sim", dependencies=control_guards(sim))

    @router.post("/fills")
    async def fill(body: Annotated[FillRequest | None, Body()] = None) -> dict[str, Any]:
        """Execute a fill (a random one without a body); the stream delivers its events."""
        sim.catch_up()
        body = body or FillRequest()
        account_id = body.account_id
        if account_id is None and sim.accounts.ids:
            account_id = _pick.choice(sim.accounts.ids)
        if account_id is not None and not sim.accounts.knows(account_id):
            raise HTTPException(status_code=404, detail=f"no account {account_id}")
        book = sim.portfolio if account_id is None else sim.accounts.book(account_id)
        try:
            if body.symbol is None or body.qty is None or body.side is None:
                executions = book.random_fill()
            else:
                executions = book.fill(body.symbol, body.qty, body.side, body.partials)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        sim.publish()
        last = executions[-1]
        return {
            "accountId": account_id or sim.config.account_id,
            "symbol": last.symbol,
            "assetId": last.asset_id,
            "positionQty": render(last.position_qty),
            "executions": describe(executions),
        }

    @router.get("/stream")
    async def stream_state() -> dict[str, Any]:
        return sim.stream.describe()

    @router.post("/stream/drop")
    async def drop() -> dict[str, int]:
        """Every stream connection: the websocket's and `/v2/events/trades`' alike."""
        return {"dropped": await sim.stream.drop() + sim.events.drop()}

    @router.get("/events")
    async def events_state() -> dict[str, Any]:
        return sim.events.describe()

    @router.post("/stream/fault")
    async def arm(fault: StreamFault) -> dict[str, Any]:
        sim.stream.arm(fault)
        return sim.stream.describe()

    @router.delete("/stream/fault")
    async def disarm() -> dict[str, Any]:
        sim.stream.clear()
        return sim.stream.describe()

    return router

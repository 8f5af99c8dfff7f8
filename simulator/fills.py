"""Executions: how a fill changes a holding, and the `trade_updates` message Alpaca sends for it.

Every fill (a `POST /_sim/fills`, or a trade the drifting book makes on its own) goes through
`execute`, which changes the book the REST endpoints serve and returns the execution the stream
then delivers. Quantities are exact `Decimal`s in the listing's units; prices are the holding's
current price, so the account still ties out with the positions after every execution.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any

from simulator.book import AVG_PRICE, CENT, ZERO, Holding, JSONDict, render


@dataclass(frozen=True)
class Execution:
    """One execution of an order: `qty`/`price` are this execution's, `position_qty` the whole
    position after it (negative when short), as on Alpaca's stream."""

    event: str  # fill | partial_fill
    execution_id: str
    symbol: str
    asset_id: str
    price: Decimal
    qty: Decimal
    position_qty: Decimal
    order: JSONDict
    timestamp: str

    def message(self) -> JSONDict:
        return {
            "stream": "trade_updates",
            "data": {
                "event": self.event,
                "execution_id": self.execution_id,
                "order": self.order,
                "position_qty": render(self.position_qty),
                "price": render(self.price),
                "qty": render(self.qty),
                "timestamp": self.timestamp,
            },
        }


def stamp() -> str:
    """Alpaca's timestamp form: UTC with a `Z` (nanoseconds there; microseconds here)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def split(qty: Decimal, parts: int, unit: Decimal) -> list[Decimal]:
    """`qty` in `parts` executions of whole units, the remainder on the last; never an empty one."""
    units = int(qty / unit)
    parts = max(1, min(parts, units))
    each = (Decimal(units // parts) * unit).quantize(unit, ROUND_DOWN)
    pieces = [each] * (parts - 1)
    return [*pieces, qty - sum(pieces, ZERO)]


def change_holding(holding: Holding, signed_trade: Decimal, price: Decimal) -> Decimal:
    """Apply a signed trade (buy > 0) to `holding`; returns the cash it costs (negative: earns)."""
    before = holding.qty
    after = before + signed_trade
    if before == 0 or (after != 0 and (after > 0) != (before > 0)):
        # A new position or a flip through zero: the entry price is this execution's.
        holding.avg_entry_price = price
        holding.held = ZERO
    elif abs(after) > abs(before):
        total = abs(before) * holding.avg_entry_price + abs(signed_trade) * price
        holding.avg_entry_price = (total / abs(after)).quantize(AVG_PRICE, ROUND_HALF_EVEN)
    holding.qty = after
    holding.held = min(holding.held, abs(after))
    return (signed_trade * price * holding.multiplier).quantize(CENT)


class Order:
    """The `order` object of one fill request, updated as its executions arrive."""

    def __init__(self, holding: Holding, side: str, qty: Decimal) -> None:
        self.id = str(uuid.uuid4())
        self.created_at = stamp()
        self.holding = holding
        self.side = side
        self.qty = qty
        self.filled = ZERO
        self.notional = ZERO

    def record(self, qty: Decimal, price: Decimal) -> JSONDict:
        self.filled += qty
        self.notional += qty * price
        done = self.filled >= self.qty
        average = (self.notional / self.filled).quantize(AVG_PRICE, ROUND_HALF_EVEN)
        now = stamp()
        return {
            "id": self.id,
            "client_order_id": f"sim-{self.id[:8]}",
            "created_at": self.created_at,
            "updated_at": now,
            "submitted_at": self.created_at,
            "filled_at": now if done else None,
            "asset_id": self.holding.asset_id,
            "symbol": self.holding.symbol,
            "asset_class": self.holding.asset_class,
            "qty": render(self.qty),
            "filled_qty": render(self.filled),
            "filled_avg_price": render(average),
            "order_class": "",
            "order_type": "market",
            "type": "market",
            "side": self.side,
            "time_in_force": "day",
            "status": "filled" if done else "partially_filled",
            "extended_hours": False,
        }


def report(order: Order, qty: Decimal, price: Decimal, position_qty: Decimal) -> Execution:
    """The execution of `qty` at `price` on `order`, the position being `position_qty` after it."""
    data = order.record(qty, price)
    return Execution(
        event="fill" if data["status"] == "filled" else "partial_fill",
        execution_id=str(uuid.uuid4()),
        symbol=order.holding.symbol,
        asset_id=order.holding.asset_id,
        price=price,
        qty=qty,
        position_qty=position_qty,
        order=data,
        timestamp=stamp(),
    )


def execute(
    holding: Holding,
    side: str,
    qty: Decimal,
    partials: int,
    pay: Callable[[Decimal], None],
) -> list[Execution]:
    """Fill `qty` of `holding` (buy or sell) in `partials` executions; `pay` takes each cost."""
    order = Order(holding, side, qty)
    unit = Decimal(1).scaleb(-holding.qty_places)
    sign = Decimal(1) if side == "buy" else Decimal(-1)
    price = holding.current_price
    executions = []
    for piece in split(qty, partials, unit):
        pay(change_holding(holding, sign * piece, price))
        executions.append(report(order, piece, price, holding.qty))
    return executions


def describe(executions: list[Execution]) -> list[dict[str, Any]]:
    return [e.message()["data"] for e in executions]

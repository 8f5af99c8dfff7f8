"""One `trade_updates` message, read exactly: numbers are strings on the wire, Decimals here."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from recon.position import RecordError, to_decimal

FILL_EVENTS = frozenset({"fill", "partial_fill"})


@dataclass(frozen=True)
class Fill:
    """An execution: `qty`/`price` are its own, `position_qty` the position after it."""

    event: str
    execution_id: str
    asset_id: str
    symbol: str
    qty: Decimal | None
    price: Decimal | None
    position_qty: Decimal | None
    timestamp: str


def parse_trade_update(message: Any) -> Fill | None:
    """The fill in a raw stream message, or None (another event, or one we cannot use).

    An unusable fill is not an error worth failing for: the REST read is the truth, and a
    fill we cannot parse is caught by the next full run like any missed event.
    """
    data = message.get("data") if isinstance(message, dict) else None
    if not isinstance(data, dict) or data.get("event") not in FILL_EVENTS:
        return None
    order = data.get("order")
    if not isinstance(order, dict):
        return None
    asset_id, execution_id = order.get("asset_id"), data.get("execution_id")
    if not isinstance(asset_id, str) or not asset_id or not isinstance(execution_id, str):
        return None
    return Fill(
        event=str(data["event"]),
        execution_id=execution_id,
        asset_id=asset_id,
        symbol=str(order.get("symbol") or ""),
        qty=_decimal(data.get("qty")),
        price=_decimal(data.get("price")),
        position_qty=_decimal(data.get("position_qty")),
        timestamp=str(data.get("timestamp") or ""),
    )


def _decimal(value: Any) -> Decimal | None:
    """A fill's number as the book parses it; anything unusable counts as absent."""
    try:
        return to_decimal(value, "fill")
    except RecordError:
        return None

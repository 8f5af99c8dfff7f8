"""Builders of raw Alpaca-shaped records and frames for tests (numbers as strings, like Alpaca)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from recon.position import parse_record, positions_frame
from recon.store.models import Position

ACCOUNT_ID = "1d9eed04-be39-4e01-9b84-a48ac5bbafcf"
# The job status fields the TypeScript job's UIs read (its contract, kept).
SEED_STATUS_FIELDS = {
    "enabled", "schedule", "isRunning", "lastRunTime", "lastRunDuration", "nextRunTime",
    "totalRuns", "successfulRuns", "failedRuns", "lastError", "lastResult",
    "lastFlowRunId", "lastFlowRunUrl", "skippedRuns",
}  # fmt: skip


def asset_id(symbol: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"asset/{symbol}"))


def raw_position(
    symbol: str,
    qty: str = "10",
    price: str = "100.00",
    *,
    avg: str | None = None,
    asset: str | None = None,
    asset_class: str = "us_equity",
    exchange: str = "NASDAQ",
    qty_available: str | None = None,
) -> dict[str, Any]:
    q, p = Decimal(qty), Decimal(price)
    a = Decimal(avg) if avg is not None else p
    market_value, cost_basis = q * p, q * a
    return {
        "asset_id": asset or asset_id(symbol),
        "symbol": symbol,
        "exchange": exchange,
        "asset_class": asset_class,
        "asset_marginable": True,
        "qty": qty,
        "avg_entry_price": format(a, "f"),
        "side": "short" if q < 0 else "long",
        "market_value": format(market_value, "f"),
        "cost_basis": format(cost_basis, "f"),
        "unrealized_pl": format(market_value - cost_basis, "f"),
        "unrealized_plpc": "0",
        "unrealized_intraday_pl": "0",
        "unrealized_intraday_plpc": "0",
        "current_price": price,
        "lastday_price": price,
        "change_today": "0",
        "qty_available": qty_available if qty_available is not None else qty,
    }


def account_for(positions: list[dict[str, Any]], cash: str = "10000") -> dict[str, Any]:
    values = [Decimal(p["market_value"]) for p in positions if p.get("market_value") is not None]
    long = sum((v for v in values if v > 0), Decimal(0))
    short = sum((v for v in values if v < 0), Decimal(0))
    equity = Decimal(cash) + long + short
    return {
        "id": ACCOUNT_ID,
        "account_number": "PA123",
        "status": "ACTIVE",
        "currency": "USD",
        "cash": cash,
        "equity": format(equity, "f"),
        "long_market_value": format(long, "f"),
        "short_market_value": format(short, "f"),
    }


def frame(raw: list[dict[str, Any]], account_id: str = ACCOUNT_ID) -> pd.DataFrame:
    return positions_frame([parse_record(r, account_id) for r in raw])


def book_rows(books: dict[str, list[str]], qty: str, now: datetime) -> list[Position]:
    """Stored positions: each account's symbols, `qty` each, as of `now`."""
    return [
        Position(
            **parse_record(raw_position(symbol, qty=qty), account),
            created_at=now,
            updated_at=now,
            refreshed_at=now,
        )
        for account, symbols in books.items()
        for symbol in symbols
    ]

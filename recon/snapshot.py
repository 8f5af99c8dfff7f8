"""From the broker's raw answer to a validated snapshot: a frame of positions plus what failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd

from recon.broker.protocol import RawSnapshot
from recon.errors import BrokerTransientError
from recon.position import RecordError, parse_record, positions_frame, to_decimal


@dataclass(frozen=True)
class SymbolError:
    """A record that could not be used. Its local row, if any, is left as it is."""

    symbol: str
    error: str
    asset_id: str | None = None


@dataclass(frozen=True)
class AccountSummary:
    account_id: str
    long_market_value: Decimal | None
    short_market_value: Decimal | None


@dataclass(frozen=True)
class Snapshot:
    account: AccountSummary
    positions: pd.DataFrame  # one row per asset_id, columns `recon.position.COLUMNS`
    errors: list[SymbolError] = field(default_factory=list)
    # Sums over every record whose market_value reads, failed ones included: the tie-out
    # compares what the broker listed, not what we managed to parse.
    listed_long_value: Decimal = Decimal(0)
    listed_short_value: Decimal = Decimal(0)
    listed_count: int = 0
    market_open: bool | None = None

    @property
    def account_id(self) -> str:
        return self.account.account_id


def parse_snapshot(raw: RawSnapshot) -> Snapshot:
    account = _parse_account(raw.account)
    records: list[dict[str, Any]] = []
    errors: list[SymbolError] = []
    long_value = short_value = Decimal(0)
    for item in raw.positions:
        value = _listed_value(item)
        if value is not None:
            long_value, short_value = (
                (long_value + value, short_value)
                if value >= 0
                else (long_value, short_value + value)
            )
        try:
            records.append(parse_record(item, account.account_id))
        except RecordError as exc:
            errors.append(_record_error(item, str(exc)))
    records, duplicates = _drop_duplicates(records)
    errors.extend(duplicates)
    frame = positions_frame(records)
    clock = raw.clock or {}
    is_open = clock.get("is_open")
    return Snapshot(
        account=account,
        positions=frame,
        errors=errors,
        listed_long_value=long_value,
        listed_short_value=short_value,
        listed_count=len(raw.positions),
        market_open=is_open if isinstance(is_open, bool) else None,
    )


def _parse_account(raw: dict[str, Any]) -> AccountSummary:
    account_id = raw.get("id")
    if not isinstance(account_id, str) or not account_id.strip():
        raise BrokerTransientError("broker returned an account without an id")

    def read(name: str) -> Decimal | None:
        try:
            return to_decimal(raw.get(name), name)
        except RecordError:
            return None

    return AccountSummary(
        account_id=account_id.strip(),
        long_market_value=read("long_market_value"),
        short_market_value=read("short_market_value"),
    )


def _listed_value(item: Any) -> Decimal | None:
    if not isinstance(item, dict):
        return None
    try:
        return to_decimal(item.get("market_value"), "market_value")
    except RecordError:
        return None


def _record_error(item: Any, message: str) -> SymbolError:
    symbol = item.get("symbol") if isinstance(item, dict) else None
    asset_id = item.get("asset_id") if isinstance(item, dict) else None
    return SymbolError(
        symbol=symbol.strip() if isinstance(symbol, str) and symbol.strip() else "?",
        error=message,
        asset_id=str(asset_id) if isinstance(asset_id, str) and asset_id else None,
    )


def _drop_duplicates(
    records: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[SymbolError]]:
    """Two records for one asset_id: we cannot tell which is right, so neither is used."""
    seen: dict[str, int] = {}
    for record in records:
        seen[record["asset_id"]] = seen.get(record["asset_id"], 0) + 1
    if all(count == 1 for count in seen.values()):
        return records, []
    kept = [r for r in records if seen[r["asset_id"]] == 1]
    errors = [
        SymbolError(r["symbol"], "asset_id listed more than once", r["asset_id"])
        for r in records
        if seen[r["asset_id"]] > 1
    ]
    return kept, errors

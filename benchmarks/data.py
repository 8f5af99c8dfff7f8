"""Synthetic books: N positions, and the next snapshot with 10% changed, 1% removed, 1% new.

Records are what `recon.position.parse_record` returns (exact `Decimal`s); `raw()` turns one
back into the Alpaca JSON shape (numbers as strings) for the simulator.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd

from recon.position import positions_frame
from recon.snapshot import AccountSummary, Snapshot

ACCOUNT_ID = "bench-account-0001"
CHANGED_EVERY = 10  # i % 10 == 0: qty moves (a material change)
REMOVED_EVERY = 100  # i % 100 == 1: gone from the snapshot
NEW_SHARE = 100  # N / 100 new positions

Record = dict[str, Any]


def position(i: int, rng: random.Random, account_id: str = ACCOUNT_ID) -> Record:
    qty = Decimal(rng.randint(1, 5_000))
    entry = Decimal(rng.randint(100, 50_000)).scaleb(-2)
    price = Decimal(rng.randint(100, 50_000)).scaleb(-2)
    return _priced(
        {
            "account_id": account_id,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/asset/{i}")),
            "symbol": f"B{i:06d}",
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "side": "long",
            "asset_marginable": True,
            "qty": qty,
            "qty_available": qty,
            "avg_entry_price": entry,
            "current_price": price,
            "lastday_price": price,
            "change_today": Decimal("0"),
            "unrealized_plpc": Decimal("0.0125"),
            "unrealized_intraday_plpc": Decimal("0"),
        }
    )


def _priced(record: Record) -> Record:
    qty, price = record["qty"], record["current_price"]
    record["market_value"] = qty * price
    record["cost_basis"] = qty * record["avg_entry_price"]
    record["unrealized_pl"] = record["market_value"] - record["cost_basis"]
    record["unrealized_intraday_pl"] = record["market_value"] - qty * record["lastday_price"]
    return record


def book(n: int, seed: int = 1, account_id: str = ACCOUNT_ID) -> list[Record]:
    rng = random.Random(seed)  # noqa: S311 (test data)
    return [position(i, rng, account_id) for i in range(n)]


def next_snapshot(records: list[Record], seed: int = 2) -> list[Record]:
    """10% of the rows get a new qty, 1% are dropped and N/100 new ones are appended."""
    n = len(records)
    rng = random.Random(seed)  # noqa: S311 (test data)
    out: list[Record] = []
    for i, record in enumerate(records):
        if i % REMOVED_EVERY == 1:
            continue
        if i % CHANGED_EVERY == 0:
            record = dict(record)
            record["qty"] = record["qty_available"] = record["qty"] + 1
            record = _priced(record)
        out.append(record)
    account_id = records[0]["account_id"] if records else ACCOUNT_ID
    out.extend(position(n + 10 * k + 7, rng, account_id) for k in range(max(1, n // NEW_SHARE)))
    return out


def prices_moved(records: list[Record]) -> list[Record]:
    """The same snapshot a minute later: every price one cent up (mark-to-market only for
    the rows whose qty did not change), as on any run while the market is open."""
    moved = []
    for record in records:
        record = dict(record)
        record["current_price"] += Decimal("0.01")
        moved.append(_priced(record))
    return moved


def frame(records: list[Record]) -> pd.DataFrame:
    """The frame `parse_snapshot` builds."""
    return positions_frame(records)


def snapshot(records: list[Record]) -> Snapshot:
    account_id = records[0]["account_id"] if records else ACCOUNT_ID
    total = sum((r["market_value"] for r in records), Decimal(0))
    summary = AccountSummary(account_id, total, Decimal(0))
    return Snapshot(
        account=summary,
        positions=frame(records),
        listed_long_value=total,
        listed_count=len(records),
        market_open=True,
    )


def raw(record: Record) -> dict[str, Any]:
    """The Alpaca JSON of one record: decimals as plain-notation strings."""
    return {
        k: format(v, "f") if isinstance(v, Decimal) else v
        for k, v in record.items()
        if k != "account_id"
    }


@dataclass(frozen=True)
class Scenario:
    """A book of N rows and the snapshot that follows it, with the expected change counts."""

    book: list[Record]
    after: list[Record]

    @classmethod
    def of(cls, n: int) -> Scenario:
        first = book(n)
        return cls(first, next_snapshot(first))

    @property
    def expected(self) -> tuple[int, int, int]:
        """(created, updated, removed)."""
        n = len(self.book)
        removed = len(range(1, n, REMOVED_EVERY))
        return len(self.after) - (n - removed), len(range(0, n, CHANGED_EVERY)), removed

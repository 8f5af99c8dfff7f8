"""Coalescing: every fill of one asset since the last batch makes one REST read, not one each."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal

from recon.fills.events import Fill


@dataclass
class AssetFills:
    asset_id: str
    symbol: str
    execution_ids: list[str] = field(default_factory=list)
    # From the latest execution by its timestamp, not by arrival: events may come re-ordered.
    position_qty: Decimal | None = None
    timestamp: str = ""

    def add(self, fill: Fill) -> None:
        self.execution_ids.append(fill.execution_id)
        if fill.timestamp >= self.timestamp:
            self.timestamp = fill.timestamp
            self.position_qty = fill.position_qty
            self.symbol = fill.symbol or self.symbol


@dataclass
class Batch:
    assets: dict[str, AssetFills] = field(default_factory=dict)
    # time.time() each fill arrived, by execution id (latency accounting).
    received: dict[str, float] = field(default_factory=dict)

    def add(self, fill: Fill, received: float) -> None:
        self.received[fill.execution_id] = received
        entry = self.assets.get(fill.asset_id)
        if entry is None:
            entry = self.assets[fill.asset_id] = AssetFills(fill.asset_id, fill.symbol)
        entry.add(fill)

    @property
    def execution_ids(self) -> list[str]:
        return [i for entry in self.assets.values() for i in entry.execution_ids]

    def __len__(self) -> int:
        return sum(len(entry.execution_ids) for entry in self.assets.values())


class Dedup:
    """The execution ids seen lately; a repeat (a duplicated event, a replay) is skipped.

    Bounded: an id older than the window would only cost one more REST read of a position
    that is already right, since the read, not the event, decides what is written.
    """

    def __init__(self, size: int = 100_000) -> None:
        self._size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, execution_id: str) -> bool:
        if execution_id in self._seen:
            return False
        self._seen[execution_id] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True

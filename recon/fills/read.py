"""Reading the batch's assets over REST, with the one rule a 404 needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from recon.fills.batch import Batch


class PositionReader(Protocol):
    def fetch_position(self, asset_id: str) -> dict[str, Any] | None: ...


@dataclass
class AssetReads:
    records: list[dict[str, Any]] = field(default_factory=list)  # open positions, raw
    flat: list[str] = field(default_factory=list)  # asset ids the broker confirms closed
    # 404 while the latest fill says the position is not 0: a read that disagrees with the
    # event proves nothing (a lagging read replica, an asset id the broker re-keyed), so
    # these assets are left alone here and a full run settles them.
    unsettled: list[str] = field(default_factory=list)


def read_assets(broker: PositionReader, batch: Batch) -> AssetReads:
    reads = AssetReads()
    for asset_id, fills in batch.assets.items():
        record = broker.fetch_position(asset_id)
        if record is not None:
            reads.records.append(record)
        elif fills.position_qty is not None and fills.position_qty == 0:
            reads.flat.append(asset_id)
        else:
            reads.unsettled.append(asset_id)
    return reads

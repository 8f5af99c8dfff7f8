"""Diff the local book against a snapshot, keyed by `(account_id, asset_id)`, exactly.

Both frames are indexed by asset_id and hold `Decimal` objects in object columns, so every
comparison below is Python's exact `Decimal.__eq__` (`Decimal("1.5") == Decimal("1.50")`),
never a float comparison.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import pandas as pd

from recon.position import COLUMNS, MARKET_FIELDS, MATERIAL_FIELDS, decimal_text
from recon.snapshot import Snapshot

ChangeKind = Literal["created", "updated", "removed"]


@dataclass(frozen=True)
class PositionChange:
    asset_id: str
    symbol: str
    kind: ChangeKind
    # field -> (before, after) as exact text; created rows have before None, removed after None.
    fields: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "assetId": self.asset_id,
            "symbol": self.symbol,
            "change": self.kind,
            "fields": {name: {"before": b, "after": a} for name, (b, a) in self.fields.items()},
        }


@dataclass(frozen=True)
class Diff:
    created: pd.DataFrame  # snapshot rows new to the book
    updated: pd.DataFrame  # snapshot rows whose material fields changed
    refreshed: pd.DataFrame  # snapshot rows whose market fields alone moved
    removed: pd.DataFrame  # book rows gone from the snapshot
    held_back: list[str]  # book rows missing from the snapshot but protected by a failed record
    unchanged: int  # rows in both without a material change (refreshed ones included)
    changes: list[PositionChange]

    @property
    def has_changes(self) -> bool:
        return bool(len(self.created) or len(self.updated) or len(self.removed))

    def symbols(self, kind: ChangeKind) -> list[str]:
        return [c.symbol for c in self.changes if c.kind == kind]


def empty_book() -> pd.DataFrame:
    return pd.DataFrame(columns=list(COLUMNS), dtype=object).set_index("asset_id", drop=False)


def diff_positions(
    book: pd.DataFrame,
    snapshot: pd.DataFrame,
    *,
    protected_ids: Iterable[str] = (),
    protected_symbols: Iterable[str] = (),
) -> Diff:
    """What must change so that `book` equals `snapshot`.

    `protected_*` name records that failed validation: a book row matching one is held
    back, never removed, because its absence from the parsed snapshot proves nothing.
    """
    created_ids = snapshot.index.difference(book.index, sort=False)
    gone_ids = book.index.difference(snapshot.index, sort=False)
    common = snapshot.index.intersection(book.index, sort=False)

    gone = book.loc[gone_ids]
    protect = gone["asset_id"].isin(set(protected_ids)) | gone["symbol"].isin(
        set(protected_symbols)
    )
    removed, held = gone[~protect], gone[protect]

    old, new = book.loc[common], snapshot.loc[common]
    material = {name: ~_same(old[name], new[name]) for name in MATERIAL_FIELDS}
    market = np.logical_or.reduce([~_same(old[name], new[name]) for name in MARKET_FIELDS])
    any_material = np.logical_or.reduce(list(material.values()))

    changes = [_whole_row(row, "created") for row in _records(snapshot.loc[created_ids])]
    changes += _updates(old, new, material, any_material)
    changes += [_whole_row(row, "removed") for row in _records(removed)]
    changes.sort(key=lambda c: (c.symbol, c.kind, c.asset_id))
    return Diff(
        created=snapshot.loc[created_ids],
        updated=new[any_material],
        refreshed=new[~any_material & market],
        removed=removed,
        held_back=sorted(held["symbol"].tolist()),
        unchanged=int((~any_material).sum()),
        changes=changes,
    )


def diff_book(book: pd.DataFrame, snapshot: Snapshot) -> Diff:
    """`diff_positions` with the snapshot's failed records protecting their local rows."""
    return diff_positions(
        book,
        snapshot.positions,
        protected_ids=[e.asset_id for e in snapshot.errors if e.asset_id],
        protected_symbols=[e.symbol for e in snapshot.errors],
    )


def _same(before: pd.Series, after: pd.Series) -> np.ndarray:
    # Object arrays compare element by element with Python ==: exact for Decimal, and
    # None == None is True, unlike pandas' own NaN-aware comparison.
    left = before.to_numpy(dtype=object)
    right = after.to_numpy(dtype=object)
    return np.asarray(left == right, dtype=bool)


def _updates(
    old: pd.DataFrame,
    new: pd.DataFrame,
    material: dict[str, np.ndarray],
    any_material: np.ndarray,
) -> list[PositionChange]:
    ids = new.index[any_material]
    details: dict[str, dict[str, tuple[str | None, str | None]]] = {i: {} for i in ids}
    for name, changed in material.items():
        if not changed.any():
            continue
        for asset_id, before, after in zip(
            new.index[changed], old[name][changed], new[name][changed], strict=True
        ):
            details[asset_id][name] = (_text(before), _text(after))
    symbols = new["symbol"][any_material]
    return [
        PositionChange(asset_id, symbol, "updated", details[asset_id])
        for asset_id, symbol in zip(ids, symbols, strict=True)
    ]


def _whole_row(row: dict[str, Any], kind: ChangeKind) -> PositionChange:
    values = {name: _text(row[name]) for name in MATERIAL_FIELDS if row[name] is not None}
    fields: dict[str, tuple[str | None, str | None]] = {
        n: ((None, v) if kind == "created" else (v, None)) for n, v in values.items()
    }
    return PositionChange(row["asset_id"], row["symbol"], kind, fields)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict(orient="records")  # type: ignore[return-value]


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

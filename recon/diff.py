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

from recon.position import (
    MARKET_FIELDS,
    MATERIAL_FIELDS,
    decimal_text,
    frame_records,
    positions_frame,
)
from recon.snapshot import Snapshot

ChangeKind = Literal["created", "updated", "removed"]


@dataclass(frozen=True)
class PositionChange:
    asset_id: str
    symbol: str
    kind: ChangeKind
    # field -> (before, after) as exact text; created rows have before None, removed after None.
    fields: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def fields_dict(self) -> dict[str, dict[str, str | None]]:
        return {name: {"before": b, "after": a} for name, (b, a) in self.fields.items()}


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
    return positions_frame([])


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
    # Row positions instead of label lookups: each column is compared as one object array.
    # Both indexes are unique (the book's is its primary key, the snapshot's is checked).
    at = book.index.get_indexer(snapshot.index)  # the book row of each snapshot row, or -1
    known = at >= 0
    seen = np.zeros(len(book), dtype=bool)
    seen[at[known]] = True

    gone = book[~seen]
    protect = gone["asset_id"].isin(set(protected_ids)) | gone["symbol"].isin(
        set(protected_symbols)
    )
    removed, held = gone[~protect], gone[protect]

    rows = at[known]
    new = snapshot[known]
    # Each frame read once as one object array (a column lookup per field costs more).
    before, after = _columns(book, rows), _columns(new)

    def moved(name: str) -> np.ndarray:
        return ~_same(before[name], after[name])

    material = {name: moved(name) for name in MATERIAL_FIELDS}
    market = np.logical_or.reduce([moved(name) for name in MARKET_FIELDS])
    any_material = np.logical_or.reduce(list(material.values()))

    created = snapshot[~known]
    changes = [_whole_row(row, "created") for row in frame_records(created)]
    changes += _updates(before, after, new.index.to_numpy(), material, any_material)
    changes += [_whole_row(row, "removed") for row in frame_records(removed)]
    changes.sort(key=lambda c: (c.symbol, c.kind, c.asset_id))
    return Diff(
        created=created,
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


def _same(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    # Object arrays compare element by element with Python ==: exact for Decimal, and
    # None == None is True, unlike pandas' own NaN-aware comparison.
    return np.asarray(left == right, dtype=bool)


def _columns(frame: pd.DataFrame, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """`frame`'s columns (of `rows` only, if given) as object arrays, by name."""
    values = frame.to_numpy(dtype=object)
    if rows is not None:
        values = values[rows]
    return {name: values[:, i] for i, name in enumerate(frame.columns)}


def _updates(
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    ids: np.ndarray,
    material: dict[str, np.ndarray],
    any_material: np.ndarray,
) -> list[PositionChange]:
    details: dict[str, dict[str, tuple[str | None, str | None]]] = {
        i: {} for i in ids[any_material]
    }
    for name, changed in material.items():
        if not changed.any():
            continue
        pairs = zip(ids[changed], before[name][changed], after[name][changed], strict=True)
        for asset_id, b, a in pairs:
            details[asset_id][name] = (_text(b), _text(a))
    symbols = after["symbol"][any_material]
    return [
        PositionChange(asset_id, symbol, "updated", details[asset_id])
        for asset_id, symbol in zip(ids[any_material], symbols, strict=True)
    ]


def _whole_row(row: dict[str, Any], kind: ChangeKind) -> PositionChange:
    values = {name: _text(row[name]) for name in MATERIAL_FIELDS if row[name] is not None}
    fields: dict[str, tuple[str | None, str | None]] = {
        n: ((None, v) if kind == "created" else (v, None)) for n, v in values.items()
    }
    return PositionChange(row["asset_id"], row["symbol"], kind, fields)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

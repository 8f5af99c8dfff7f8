"""The position record: which fields exist, which ones matter, and how one raw record is read."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
from alpaca.trading.models import Position as AlpacaPosition
from pydantic import ValidationError

KEY = ("account_id", "asset_id")

# A change in any of these is a real change to the book: it makes an update and an event.
MATERIAL_FIELDS = (
    "symbol",
    "exchange",
    "asset_class",
    "side",
    "asset_marginable",
    "qty",
    "qty_available",
    "avg_entry_price",
    "cost_basis",
)
# Mark-to-market: refreshed on every run, never a change by itself (prices move all day).
MARKET_FIELDS = (
    "current_price",
    "lastday_price",
    "change_today",
    "market_value",
    "unrealized_pl",
    "unrealized_plpc",
    "unrealized_intraday_pl",
    "unrealized_intraday_plpc",
)
DECIMAL_FIELDS = frozenset(
    {"qty", "qty_available", "avg_entry_price", "cost_basis", *MARKET_FIELDS}
)
REQUIRED_DECIMALS = frozenset({"qty", "avg_entry_price", "cost_basis"})
COLUMNS = (*KEY, *MATERIAL_FIELDS, *MARKET_FIELDS)


# Up to this many records a frame is built from one object array; beyond, by pandas'
# `from_records`, whose fixed cost (inference, then the cast to object) is several times the
# array's for one account's book, but whose per-row cost is lower at a large book's size.
SMALL_FRAME = 1_000
_ROW = itemgetter(*COLUMNS)


def positions_frame(records: list[dict[str, Any]] | list[tuple[Any, ...]]) -> pd.DataFrame:
    """Position records (dicts holding every one of `COLUMNS`, or tuples in their order) as
    the frame the diff and the writer work on, wherever they come from (the broker, the store).

    Object columns, so a `Decimal` stays one (pandas would make floats of them); indexed by
    asset_id, the key across renames, which is kept as a column too.
    """
    names = list(COLUMNS)
    if len(records) > SMALL_FRAME:
        frame = pd.DataFrame.from_records(records, columns=names).astype(object)
    else:
        rows = [_ROW(r) if isinstance(r, dict) else r for r in records]
        values = np.empty((len(rows), len(names)), dtype=object)
        if rows:
            values[:] = rows
        frame = pd.DataFrame(values, columns=names, dtype=object, copy=False)
    return frame.set_index("asset_id", drop=False)


def frame_records(frame: pd.DataFrame, names: Sequence[str] = COLUMNS) -> list[dict[str, Any]]:
    """`frame`'s rows as dicts of the columns `names`, values as they are (the frames here
    are object columns): one array read instead of `to_dict(orient="records")`, which goes
    through pandas' indexing for every row."""
    keys = list(names)
    values = frame.to_numpy(object)
    if list(frame.columns) != keys:  # a selection by positions: `frame[keys]` copies a frame
        at = frame.columns.get_indexer(pd.Index(keys))
        if (at < 0).any():
            raise KeyError(f"no column {keys[int(np.argmin(at))]!r}")
        values = values[:, at]
    return [dict(zip(keys, row, strict=True)) for row in values.tolist()]


class RecordError(ValueError):
    """One raw position record cannot be used; it fails its own symbol only."""


def to_decimal(value: Any, field: str) -> Decimal | None:
    """Alpaca sends decimal strings; a float here would already have lost digits."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RecordError(f"{field} must be a decimal string, got {type(value).__name__}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise RecordError(f"{field} is not a number: {value!r}") from None
    if not number.is_finite():
        raise RecordError(f"{field} is not finite: {value!r}")
    if number.is_zero() and number.is_signed():
        # PostgreSQL NUMERIC has no negative zero; read "-0.00" as "0.00" on every store
        # so both dialects hand back the same string.
        return number.copy_abs()
    return number


def decimal_text(value: Decimal | None) -> str | None:
    """Plain notation, never exponent: `format(Decimal('1E-7'), 'f') == '0.0000001'`."""
    return None if value is None else format(value, "f")


def parse_record(raw: Any, account_id: str) -> dict[str, Any]:
    """Validate one raw record against alpaca-py's own model, then read numbers exactly.

    The SDK model is the schema (enums for exchange, asset_class and side included); its
    string fields are then read straight from the raw JSON into `Decimal`.
    """
    if not isinstance(raw, dict):
        raise RecordError("record is not a JSON object")
    try:
        model = AlpacaPosition.model_validate(raw)
    except ValidationError as exc:
        raise RecordError(_summarize(exc)) from None
    record: dict[str, Any] = {
        "account_id": account_id,
        "asset_id": str(model.asset_id),
        # One documented Alpaca example has "AAPL " with a trailing space; identity is
        # the asset_id, the symbol is a label.
        "symbol": model.symbol.strip(),
        "exchange": model.exchange.value,
        "asset_class": model.asset_class.value,
        "side": model.side.value,
        "asset_marginable": model.asset_marginable,
    }
    for field in DECIMAL_FIELDS:
        record[field] = to_decimal(raw.get(field), field)
    missing = sorted(f for f in REQUIRED_DECIMALS if record[f] is None)
    if missing:
        raise RecordError(f"missing {', '.join(missing)}")
    qty: Decimal = record["qty"]
    if qty == 0 or (qty < 0) != (record["side"] == "short"):
        raise RecordError(f"qty {decimal_text(qty)} does not match side {record['side']}")
    return record


def _summarize(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "record"
        value = err.get("input")
        shown = (
            f" (got {value!r})" if isinstance(value, str | int | None) and where != "record" else ""
        )
        parts.append(f"{where}: {err['msg']}{shown}")
    return "; ".join(parts)

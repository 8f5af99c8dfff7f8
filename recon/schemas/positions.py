"""The answers of `/api/positions`: the local book and one symbol's change history."""

from __future__ import annotations

from pydantic import AliasChoices, ConfigDict, Field

from recon.schemas.base import ExactDecimal, IsoDatetime, Shape
from recon.schemas.result import ChangeKind, FieldChange


class PositionOut(Shape):
    """One row of the book, field for field (`recon.position.COLUMNS`), plus its stamps."""

    model_config = ConfigDict(from_attributes=True)

    account_id: str
    asset_id: str
    symbol: str
    exchange: str | None
    asset_class: str | None
    side: str | None
    asset_marginable: bool | None
    qty: ExactDecimal
    qty_available: ExactDecimal | None
    avg_entry_price: ExactDecimal
    cost_basis: ExactDecimal
    current_price: ExactDecimal | None
    lastday_price: ExactDecimal | None
    change_today: ExactDecimal | None
    market_value: ExactDecimal | None
    unrealized_pl: ExactDecimal | None
    unrealized_plpc: ExactDecimal | None
    unrealized_intraday_pl: ExactDecimal | None
    unrealized_intraday_plpc: ExactDecimal | None
    updated_at: IsoDatetime
    refreshed_at: IsoDatetime


class PositionList(Shape):
    """One page of the book: `count` is this page's length; `next_cursor` resumes after
    it (None on the last page)."""

    positions: list[PositionOut]
    count: int
    next_cursor: str | None = None


class HistoryEntry(Shape):
    model_config = ConfigDict(from_attributes=True)

    event_id: int
    account_id: str
    asset_id: str
    symbol: str
    change: ChangeKind
    fields: dict[str, FieldChange]
    # Read from a `position_changes` row, whose column is `created_at`.
    timestamp: IsoDatetime = Field(validation_alias=AliasChoices("timestamp", "created_at"))


class PositionHistory(Shape):
    """`oldest_retained_at`: how far back the journal still reaches for this symbol (the
    oldest change it holds, beyond `limit`); `recon db prune` deletes older ones, except
    each position's latest change."""

    symbol: str
    history: list[HistoryEntry]
    oldest_retained_at: IsoDatetime | None = None

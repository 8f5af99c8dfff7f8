"""Tables: the book (`positions`), one row per run (`sync_runs`) and the append-only journal."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from recon.store.types import BigId, Document, ExactDecimal, UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {Decimal: ExactDecimal(), datetime: UTCDateTime()}


class Position(Base):
    """The local book: one row per (account, asset). The asset_id is the identity."""

    __tablename__ = "positions"

    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(32))
    asset_class: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    asset_marginable: Mapped[bool | None]
    qty: Mapped[Decimal]
    qty_available: Mapped[Decimal | None]
    avg_entry_price: Mapped[Decimal]
    cost_basis: Mapped[Decimal]
    current_price: Mapped[Decimal | None]
    lastday_price: Mapped[Decimal | None]
    change_today: Mapped[Decimal | None]
    market_value: Mapped[Decimal | None]
    unrealized_pl: Mapped[Decimal | None]
    unrealized_plpc: Mapped[Decimal | None]
    unrealized_intraday_pl: Mapped[Decimal | None]
    unrealized_intraday_plpc: Mapped[Decimal | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]  # last material change
    refreshed_at: Mapped[datetime]  # last run that saw it
    sync_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id"))

    __table_args__ = (Index("ix_positions_account_symbol", "account_id", "symbol"),)


class SyncRun(Base):
    """One row per reconciliation, successful or not; survives restarts (the old stats did not)."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    account_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # completed | failed | crashed
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    created_count: Mapped[int] = mapped_column(default=0)
    updated_count: Mapped[int] = mapped_column(default=0)
    removed_count: Mapped[int] = mapped_column(default=0)
    unchanged_count: Mapped[int] = mapped_column(default=0)
    error_count: Mapped[int] = mapped_column(default=0)
    market_open: Mapped[bool | None]
    result: Mapped[dict[str, Any] | None] = mapped_column(Document)
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_sync_runs_finished_at", "finished_at"),
        Index("ix_sync_runs_account_finished", "account_id", "finished_at"),
    )


class PositionEvent(Base):
    """Append-only journal; the id is the SSE event id, so it only ever grows."""

    __tablename__ = "position_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(32))  # position:updated | system:error
    account_id: Mapped[str | None] = mapped_column(String(64))
    sync_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id"), index=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(Document)
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_position_events_account_id", "account_id", "id"),)


class PositionChange(Base):
    """One row per position per change event: the history of a single position."""

    __tablename__ = "position_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("position_events.id"), index=True)
    account_id: Mapped[str] = mapped_column(String(64))
    asset_id: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(64))
    change: Mapped[str] = mapped_column(String(16))  # created | updated | removed
    fields: Mapped[dict[str, Any]] = mapped_column(Document)
    created_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_position_changes_account_asset", "account_id", "asset_id"),
        Index("ix_position_changes_account_symbol", "account_id", "symbol"),
    )


class SyncLease(Base):
    """The database-side guard against two runs writing at once (see `recon.store.lock`)."""

    __tablename__ = "sync_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class ApiKey(Base):
    """An API key of the sidecar: only a SHA-256 hash of the token is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    capabilities: Mapped[list[str]] = mapped_column(Document)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]  # None: until revoked
    # The accounts the key may read; None: every account.
    accounts: Mapped[list[str] | None] = mapped_column(Document)


class StreamTicket(Base):
    """A single-use ticket for one event-stream connection, valid for a minute (hash only)."""

    __tablename__ = "stream_tickets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[int] = mapped_column(BigId, ForeignKey("api_keys.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class StreamStatus(Base):
    """The fill listener's connection, one row per stream: read by every sidecar replica."""

    __tablename__ = "stream_status"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(64))
    holder: Mapped[str | None] = mapped_column(String(200))
    connected: Mapped[bool]
    connected_since: Mapped[datetime | None]
    last_event_at: Mapped[datetime | None]
    fills_applied: Mapped[int] = mapped_column(BigId, default=0)
    reconnects: Mapped[int] = mapped_column(BigId, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class AuditEntry(Base):
    """Who did what by hand: triggers, previews, overrides, key creation and revocation.
    `actor` is a key's name (never its token), or `cli` for the operator's command line."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(200))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(Document)


class TradeEventCursor(Base):
    """Where the Broker API's trade event stream resumes: its last applied `event_id`."""

    __tablename__ = "trade_event_cursor"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_event_id: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class TradeEventApplied(Base):
    """A trade event already applied (kept a while): a replay skips it."""

    __tablename__ = "trade_events_applied"
    __table_args__ = (Index("ix_trade_events_applied_at", "applied_at"),)

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    execution_id: Mapped[str] = mapped_column(String(64))
    applied_at: Mapped[datetime]

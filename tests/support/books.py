"""The book as stored and as the broker serves it, in forms the scenarios compare; and what
one flow run left in the journal and the run log."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from recon.store.database import session_factory
from recon.store.models import Position, PositionEvent, SyncRun
from tests.sim import Sim

# The fields a reconciliation must carry over exactly (prices move every run).
MATERIAL = ("symbol", "qty", "side", "avg_entry_price", "cost_basis")

Row = dict[str, Any]


def stored_rows(url: str) -> dict[str, Row]:
    """Every column of every stored position, timestamps and writer run included."""
    columns = [c.name for c in Position.__table__.columns]
    with session_factory(url)() as session:
        return {
            p.asset_id: {c: getattr(p, c) for c in columns}
            for p in session.scalars(select(Position))
        }


def material(rows: dict[str, Row]) -> dict[str, tuple[Any, ...]]:
    return {k: tuple(r[f] for f in MATERIAL) for k, r in rows.items()}


def live_material(positions: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """The broker's raw records in the form `material` gives the stored rows."""

    def value(raw: dict[str, Any], name: str) -> Any:
        if name == "symbol":
            return raw["symbol"].strip()
        if name == "side":
            return raw["side"]
        return Decimal(raw[name])

    return {p["asset_id"]: tuple(value(p, f) for f in MATERIAL) for p in positions}


def stored_book(url: str) -> dict[str, Decimal]:
    with session_factory(url)() as session:
        return {p.asset_id: p.qty for p in session.scalars(select(Position))}


def broker_book(sim: Sim) -> dict[str, Decimal]:
    return {row["asset_id"]: Decimal(row["qty"]) for row in sim.broker_positions()}


def events_of(url: str, flow_run_id: str) -> list[PositionEvent]:
    """The journal entries of one flow run, in order."""
    with session_factory(url)() as session:
        query = select(PositionEvent).where(PositionEvent.flow_run_id == flow_run_id)
        return list(session.scalars(query.order_by(PositionEvent.id)))


def runs_of(url: str, flow_run_id: str) -> list[SyncRun]:
    """The run-log rows of one flow run, in order."""
    with session_factory(url)() as session:
        query = select(SyncRun).where(SyncRun.flow_run_id == flow_run_id)
        return list(session.scalars(query.order_by(SyncRun.id)))

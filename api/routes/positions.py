"""The local book and each position's change history, decimals as exact strings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from api.deps import AdminRead, SessionDep
from api.errors import ApiError
from recon.position import COLUMNS, decimal_text
from recon.store.models import Position, PositionChange

router = APIRouter(prefix="/api/positions", tags=["positions"])

Symbol = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9./: _-]+$")


@router.get("")
def list_positions(
    _: AdminRead,
    session: SessionDep,
    account_id: str | None = Query(default=None, max_length=64, alias="accountId"),
) -> dict[str, Any]:
    """Every position in the local book (optionally of one account), ordered by symbol."""
    query = select(Position).order_by(Position.account_id, Position.symbol)
    if account_id:
        query = query.where(Position.account_id == account_id)
    rows = session.scalars(query).all()
    return {"positions": [_position(row) for row in rows], "count": len(rows)}


@router.get("/{symbol}/history", responses={404: {"description": "symbol never held"}})
def position_history(
    _: AdminRead,
    session: SessionDep,
    symbol: str = Symbol,
    limit: int = Query(default=200, ge=1, le=1000),
) -> dict[str, Any]:
    """Every change of the asset(s) ever held under `symbol`, newest first.

    Renames are followed: history is kept per asset_id, so a position renamed FB → META
    shows its FB history under either symbol.
    """
    wanted = symbol.strip().upper()
    assets = select(PositionChange.asset_id).where(PositionChange.symbol == wanted).distinct()
    changes = session.scalars(
        select(PositionChange)
        .where(PositionChange.asset_id.in_(assets))
        .order_by(PositionChange.id.desc())
        .limit(limit)
    ).all()
    if not changes:
        raise ApiError(404, "not found", f"no history for symbol {wanted}")
    return {
        "symbol": wanted,
        "history": [
            {
                "eventId": c.event_id,
                "accountId": c.account_id,
                "assetId": c.asset_id,
                "symbol": c.symbol,
                "change": c.change,
                "fields": c.fields,
                "timestamp": c.created_at.isoformat(),
            }
            for c in changes
        ],
    }


def _position(row: Position) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in COLUMNS:
        value = getattr(row, name)
        out[_camel(name)] = decimal_text(value) if isinstance(value, Decimal) else value
    out["updatedAt"] = row.updated_at.isoformat()
    out["refreshedAt"] = row.refreshed_at.isoformat()
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)

"""The local book and each position's change history, decimals as exact strings."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from api.deps import AccountRead, SessionDep, SettingsDep, account_scope
from api.errors import ApiError
from api.positions_page import read_page
from recon.schemas.positions import HistoryEntry, PositionHistory, PositionList, PositionOut
from recon.store.models import PositionChange
from recon.store.retention import oldest_change_at

router = APIRouter(prefix="/api/positions", tags=["positions"])

Symbol = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9./: _-]+$")


@router.get(
    "",
    responses={
        400: {"description": "a limit above the maximum, or a bad cursor"},
        403: {"description": "the API key may not read that account"},
    },
)
def list_positions(
    principal: AccountRead,
    session: SessionDep,
    settings: SettingsDep,
    account_id: str | None = Query(default=None, max_length=64, alias="accountId"),
    limit: int | None = Query(
        default=None, ge=1, description="Page size (default and maximum: settings)."
    ),
    cursor: str | None = Query(
        default=None, max_length=400, description="`nextCursor` of the previous page."
    ),
) -> PositionList:
    """The local book (optionally of one account; a key scoped to accounts sees only
    theirs), ordered by account and symbol, one page at a time: follow `nextCursor` until
    it is null. `count` is this page's length."""
    if limit is not None and limit > settings.positions_limit_max:
        raise ApiError(
            400, "invalid request", f"limit must be at most {settings.positions_limit_max}"
        )
    size = limit or settings.positions_limit_default
    accounts = account_scope(principal, account_id or None)
    rows, next_cursor = read_page(session, accounts, size, cursor)
    return PositionList(
        positions=[PositionOut.model_validate(r) for r in rows],
        count=len(rows),
        next_cursor=next_cursor,
    )


@router.get("/{symbol}/history", responses={404: {"description": "symbol never held"}})
def position_history(
    principal: AccountRead,
    session: SessionDep,
    symbol: str = Symbol,
    limit: int = Query(default=200, ge=1, le=1000),
    account_id: str | None = Query(default=None, max_length=64, alias="accountId"),
) -> PositionHistory:
    """Every change of the asset(s) ever held under `symbol`, newest first.

    Renames are followed: history is kept per asset_id, so a position renamed FB → META
    shows its FB history under either symbol. `oldestRetainedAt` says how far back the
    retained journal reaches (`recon db prune`).
    """
    wanted = symbol.strip().upper()
    accounts = account_scope(principal, account_id)
    query = select(PositionChange.asset_id).where(PositionChange.symbol == wanted).distinct()
    assets = list(session.scalars(query))
    changes_query = select(PositionChange).where(PositionChange.asset_id.in_(assets))
    if accounts is not None:  # another account's history is simply not there
        changes_query = changes_query.where(PositionChange.account_id.in_(sorted(accounts)))
    changes = session.scalars(changes_query.order_by(PositionChange.id.desc()).limit(limit)).all()
    if not changes:
        raise ApiError(404, "not found", f"no history for symbol {wanted}")
    return PositionHistory(
        symbol=wanted,
        history=[HistoryEntry.model_validate(c) for c in changes],
        oldest_retained_at=oldest_change_at(session, assets, accounts),
    )

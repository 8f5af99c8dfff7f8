"""`GET /api/accounts`: each account the store knows (the Broker API mode)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import AccountRead, SessionDep
from recon.schemas.accounts import AccountInfo
from recon.schemas.base import Shape
from recon.store.accounts import read_accounts

router = APIRouter(prefix="/api/accounts", tags=["accounts"])


class AccountList(Shape):
    accounts: list[AccountInfo]
    count: int
    # The last account id of this page: pass it as `after` for the next (null: last page).
    next_after: str | None


@router.get("")
def list_accounts(
    principal: AccountRead,
    session: SessionDep,
    limit: int = Query(default=1000, ge=1, le=5000),
    after: str | None = Query(default=None, max_length=64, description="`nextAfter`."),
) -> AccountList:
    """Accounts in id order, each with its position count, last applied run and last error
    (while it is newer than the last success). A key scoped to accounts sees only theirs."""
    rows = read_accounts(session, principal.accounts, after=after, limit=limit + 1)
    page = rows[:limit]
    return AccountList(
        accounts=page,
        count=len(page),
        next_after=page[-1].account_id if len(rows) > limit else None,
    )

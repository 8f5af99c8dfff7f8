"""`GET /api/admin/audit`: who triggered, previewed or overrode a sync, who made or revoked
a key; newest first, paged like `/api/positions`. `GET /api/admin/whoami`: the caller."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Query

from api.deps import AdminRead, SessionDep
from api.errors import ApiError
from api.schemas import AuditEntryOut, AuditPage, WhoAmI
from recon.store.audit import read_page

router = APIRouter(prefix="/api/admin", tags=["audit"])

MAX_LIMIT = 500


@router.get("/audit", responses={400: {"description": "a bad cursor"}})
def audit(
    _: AdminRead,
    session: SessionDep,
    limit: int = Query(default=100, ge=1, le=MAX_LIMIT, description="Page size."),
    cursor: str | None = Query(
        default=None, max_length=100, description="`nextCursor` of the previous page."
    ),
    action: str | None = Query(
        default=None,
        max_length=32,
        pattern=r"^[a-z:]+$",
        description="Only this action (sync, preview, override, key:create, key:revoke...).",
    ),
) -> AuditPage:
    """The audit log: each entry names the key (never its token) that did it, or `cli`."""
    rows, last = read_page(session, limit, _decode(cursor) if cursor else None, action)
    return AuditPage(
        entries=[AuditEntryOut.model_validate(r) for r in rows],
        count=len(rows),
        next_cursor=_encode(last) if last is not None else None,
    )


@router.get("/whoami")
def whoami(principal: AdminRead) -> WhoAmI:
    """The key this request was made with: its name and capabilities, never its token."""
    return WhoAmI(name=principal.name, capabilities=sorted(principal.capabilities))


def _encode(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"a{entry_id}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:  # bad base64, non-ASCII text (not binascii.Error), or not UTF-8
        raw = ""
    if not (raw.startswith("a") and raw[1:].isascii() and raw[1:].isdigit() and len(raw) < 20):
        raise ApiError(400, "invalid request", "cursor is not one this API returned")
    return int(raw[1:])

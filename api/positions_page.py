"""One page of the book, in a stable order, and the opaque cursor that resumes after it.

Keyset paging on (account_id, symbol, asset_id), the primary key making the order total:
a page costs one indexed range read however deep it is, and a position written between
two pages is neither skipped nor repeated unless its own key moved past the cursor.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from api.errors import ApiError
from recon.store.models import Position

_ORDER = (Position.account_id, Position.symbol, Position.asset_id)


def read_page(
    session: Session, accounts: frozenset[str] | None, limit: int, cursor: str | None
) -> tuple[Sequence[Position], str | None]:
    """Up to `limit` positions (of `accounts`; None: every account) after `cursor`, and the
    cursor of the next page (None when this page is the last)."""
    query = select(Position).order_by(*_ORDER).limit(limit + 1)
    if accounts is not None:
        query = query.where(Position.account_id.in_(sorted(accounts)))
    if cursor:
        query = query.where(tuple_(*_ORDER) > tuple_(*decode_cursor(cursor)))
    rows = session.scalars(query).all()
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor((last.account_id, last.symbol, last.asset_id))


def encode_cursor(key: tuple[str, str, str]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        key = None
    if not (isinstance(key, list) and len(key) == 3 and all(_column_text(k) for k in key)):
        raise ApiError(400, "invalid request", "cursor is not one this API returned")
    return key[0], key[1], key[2]


def _column_text(value: object) -> bool:
    """Text a key column can hold: JSON can spell lone surrogates and NULs, which no
    driver would send (a 500 instead of this 400)."""
    if not isinstance(value, str) or len(value) > 64 or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True

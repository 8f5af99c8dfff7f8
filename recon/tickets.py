"""Stream tickets: short-lived, single-use stand-ins for an API key in the stream's URL.

Browsers' EventSource cannot send headers, so a key would travel in the query string,
where every proxy and access log keeps it. A ticket is worth one connection within a
minute of its issue: whatever logs it holds nothing reusable by the time anyone reads it.
Only its hash is stored, in the app database, so any replica can redeem it.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from recon.keys import Principal, hash_token, is_live, principal_of
from recon.store.models import ApiKey, StreamTicket

PREFIX: Final = "st_"
TTL: Final = timedelta(seconds=60)
# 192 random bits: as unguessable as a key, for a minute's life.
_TICKET_BYTES: Final = 24


def issue_ticket(session: Session, principal: Principal) -> tuple[str, datetime]:
    """A new ticket for `principal`'s key and when it expires; the ticket exists in clear
    only in this answer."""
    if principal.key_id is None:
        raise ValueError("a ticket needs a stored key")
    now = datetime.now(UTC)
    # Spent and expired tickets are of no further use: the table stays a minute's worth.
    session.execute(delete(StreamTicket).where(StreamTicket.expires_at <= now))
    ticket = PREFIX + secrets.token_urlsafe(_TICKET_BYTES)
    expires_at = now + TTL
    session.add(
        StreamTicket(
            token_hash=hash_token(ticket),
            api_key_id=principal.key_id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return ticket, expires_at


def redeem_ticket(session: Session, ticket: str) -> Principal | None:
    """The principal of the key the ticket was issued to, once: the first redemption
    within its minute wins, every later one (and one after the key was revoked or
    expired) gets None. The caller commits."""
    if not ticket.startswith(PREFIX) or len(ticket) > 100:
        return None
    now = datetime.now(UTC)
    digest = hash_token(ticket)
    # One conditional UPDATE: of two connections racing with the same ticket, exactly one
    # sees a row changed, on SQLite and PostgreSQL alike.
    spent = session.execute(
        update(StreamTicket)
        .where(
            StreamTicket.token_hash == digest,
            StreamTicket.used_at.is_(None),
            StreamTicket.expires_at > now,
        )
        .values(used_at=now)
        .returning(StreamTicket.api_key_id)
    ).scalar_one_or_none()
    if spent is None:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.id == spent))
    if key is None or not is_live(key, now):
        return None
    return principal_of(key)

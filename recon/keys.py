"""API keys with capabilities: created once (the token is shown once), stored as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from recon.errors import ApiKeyError
from recon.store.models import ApiKey

CAPABILITIES: Final = ("admin:read", "admin:write", "events:read")
PREFIX: Final = "rk_"
# A token carries 256 random bits, so an unsalted SHA-256 is enough: there is nothing to
# brute-force, and a hash lookup avoids comparing against every stored key.
_TOKEN_BYTES: Final = 32


@dataclass(frozen=True)
class Principal:
    name: str
    capabilities: frozenset[str]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(session: Session, name: str, capabilities: list[str]) -> str:
    """Store a new key and return its token: the only time the token exists in clear."""
    unknown = sorted(set(capabilities) - set(CAPABILITIES))
    if unknown or not capabilities:
        problem = f"unknown capability {', '.join(unknown)}" if unknown else "no capability"
        raise ApiKeyError(f"{problem} (choose from {', '.join(CAPABILITIES)})")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ApiKeyError(f"a key named {name!r} exists; revoke it or pick another name")
    token = PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
    session.add(
        ApiKey(
            name=name,
            token_hash=hash_token(token),
            capabilities=sorted(set(capabilities)),
            created_at=datetime.now(UTC),
        )
    )
    return token


def revoke_key(session: Session, name: str) -> None:
    key = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if key is None:
        raise ApiKeyError(f"no key named {name!r}")
    # Renamed on revocation so the name can be reused; the row stays for the record.
    key.revoked_at = datetime.now(UTC)
    key.name = f"{name}#revoked-{key.id}"


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def authenticate(session: Session, token: str) -> Principal | None:
    """The key's principal, or None for an unknown, malformed or revoked token."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    key = session.scalar(select(ApiKey).where(ApiKey.token_hash == digest))
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.token_hash, digest):  # constant time, belt and braces
        return None
    return Principal(key.name, frozenset(key.capabilities))

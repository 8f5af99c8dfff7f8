"""API keys with capabilities: created once (the token is shown once), stored as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from recon.errors import ApiKeyError
from recon.store.audit import CLI_ACTOR, record
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
    # The row's id: stable across revocation's rename, so open streams can be re-checked.
    key_id: int | None = None
    # The accounts the key may read (`--account`); None: every account.
    accounts: frozenset[str] | None = None

    def may_read(self, account_id: str | None) -> bool:
        """Whether a row of `account_id` is this key's to see (a row of no account, a whole
        run's failure, is not an account-scoped key's)."""
        return self.accounts is None or (account_id is not None and account_id in self.accounts)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(
    session: Session,
    name: str,
    capabilities: list[str],
    *,
    expires_in: timedelta | None = None,
    accounts: list[str] | None = None,
    actor: str = CLI_ACTOR,
) -> str:
    """Store a new key and return its token: the only time the token exists in clear.
    With `expires_in`, the key stops working that long from now; with `accounts`, it reads
    only those accounts' positions, history and events. Audited (by name)."""
    _check_capabilities(capabilities)
    scope = sorted({a.strip() for a in accounts or [] if a.strip()}) or None
    if accounts is not None and scope is None:
        raise ApiKeyError("an account scope needs at least one account id")
    if scope is not None and any(len(a) > 64 for a in scope):
        raise ApiKeyError("an account id is at most 64 characters")
    if expires_in is not None and expires_in <= timedelta(0):
        raise ApiKeyError("the expiry must be in the future")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ApiKeyError(f"a key named {name!r} exists; revoke it or pick another name")
    token = PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
    now = datetime.now(UTC)
    session.add(
        ApiKey(
            name=name,
            token_hash=hash_token(token),
            capabilities=sorted(set(capabilities)),
            created_at=now,
            expires_at=None if expires_in is None else now + expires_in,
            accounts=scope,
        )
    )
    detail: dict[str, Any] = {"capabilities": sorted(set(capabilities))}
    if expires_in is not None:
        detail["expiresAt"] = (now + expires_in).isoformat()
    if scope is not None:
        detail["accounts"] = scope
    record(session, actor=actor, action="key:create", subject=name, detail=detail)
    return token


def _check_capabilities(capabilities: list[str]) -> None:
    unknown = sorted(set(capabilities) - set(CAPABILITIES))
    if unknown or not capabilities:
        problem = f"unknown capability {', '.join(unknown)}" if unknown else "no capability"
        raise ApiKeyError(f"{problem} (choose from {', '.join(CAPABILITIES)})")


def set_capabilities(
    session: Session, name: str, capabilities: list[str], *, actor: str = CLI_ACTOR
) -> None:
    """Replace a key's capabilities: requests and open streams lose what it no longer holds."""
    _check_capabilities(capabilities)
    key = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if key is None:
        raise ApiKeyError(f"no key named {name!r}")
    key.capabilities = sorted(set(capabilities))
    record(
        session,
        actor=actor,
        action="key:caps",
        subject=name,
        detail={"capabilities": key.capabilities},
    )


def revoke_key(session: Session, name: str, *, actor: str = CLI_ACTOR) -> None:
    key = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if key is None:
        raise ApiKeyError(f"no key named {name!r}")
    # Renamed on revocation so the name can be reused; the row stays for the record.
    key.revoked_at = datetime.now(UTC)
    key.name = f"{name}#revoked-{key.id}"
    record(session, actor=actor, action="key:revoke", subject=name)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def authenticate(session: Session, token: str) -> Principal | None:
    """The key's principal, or None for an unknown, malformed or revoked token."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    key = session.scalar(select(ApiKey).where(ApiKey.token_hash == digest))
    if key is None or not is_live(key):
        return None
    if not hmac.compare_digest(key.token_hash, digest):  # constant time, belt and braces
        return None
    return principal_of(key)


def principal_of(key: ApiKey) -> Principal:
    accounts = frozenset(key.accounts) if key.accounts is not None else None
    return Principal(key.name, frozenset(key.capabilities), key.id, accounts)


def is_live(key: ApiKey, now: datetime | None = None) -> bool:
    """Neither revoked nor past its expiry."""
    if key.revoked_at is not None:
        return False
    return key.expires_at is None or key.expires_at > (now or datetime.now(UTC))


def live_capabilities(session: Session, key_ids: set[int]) -> dict[int, frozenset[str]]:
    """What each of these keys may do now; a revoked, expired or deleted key is absent.
    One indexed read however many keys (the open streams' periodic re-check)."""
    if not key_ids:
        return {}
    now = datetime.now(UTC)
    keys = session.scalars(select(ApiKey).where(ApiKey.id.in_(key_ids)))
    return {key.id: frozenset(key.capabilities) for key in keys if is_live(key, now)}

"""The `audit` table: every manual trigger, preview, override, key creation and revocation,
with the name of the key (or `cli`) that did it. Never a token."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from recon.store.models import AuditEntry

AuditAction = Literal["sync", "preview", "override", "key:create", "key:revoke", "key:caps"]
# What the command line records as the actor: it holds the database, not an API key.
CLI_ACTOR: Final = "cli"


def record(
    session: Session,
    *,
    actor: str,
    action: AuditAction,
    subject: str | None = None,
    flow_run_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add one entry to `session` (committed with the caller's transaction)."""
    entry = AuditEntry(
        at=datetime.now(UTC),
        actor=actor,
        action=action,
        subject=subject,
        flow_run_id=flow_run_id,
        detail=detail or {},
    )
    session.add(entry)
    return entry


def read_page(
    session: Session, limit: int, before: int | None, action: str | None = None
) -> tuple[Sequence[AuditEntry], int | None]:
    """Up to `limit` entries, newest first, older than the id `before`; and the id the
    next page starts before (None when this page is the last)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    if action:
        query = query.where(AuditEntry.action == action)
    rows = session.scalars(query).all()
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], rows[limit - 1].id

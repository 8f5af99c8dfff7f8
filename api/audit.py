"""Recording the sidecar's manual actions in the `audit` table (by the key's name)."""

from __future__ import annotations

import asyncio
from uuid import UUID

from sqlalchemy.orm import Session, sessionmaker

from recon.store.audit import AuditAction, record


async def audit_trigger(
    sessions: sessionmaker[Session],
    actor: str,
    flow_run_id: UUID,
    *,
    dry_run: bool,
    allow_mass_removal: bool,
) -> None:
    action: AuditAction = "preview" if dry_run else "override" if allow_mass_removal else "sync"
    detail = {"dryRun": dry_run, "allowMassRemoval": allow_mass_removal, "via": "api"}

    def write() -> None:
        with sessions.begin() as session:
            record(
                session,
                actor=actor,
                action=action,
                subject="sync-positions",
                flow_run_id=str(flow_run_id),
                detail=detail,
            )

    await asyncio.to_thread(write)

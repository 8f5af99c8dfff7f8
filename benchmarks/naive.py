"""The plain cron-job way: one ORM object per row, selected one by one, compared, saved.

Written the way a simple script does it, not made slow on purpose: one session, one
transaction, the ORM's own unit of work (which batches the INSERTs and UPDATEs it can), and
the same journal rows as ours (one event, one change row per position).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from benchmarks.data import Record
from recon.position import MARKET_FIELDS, MATERIAL_FIELDS, decimal_text
from recon.store.database import engine_for
from recon.store.journal import POSITION_UPDATED, SOURCE
from recon.store.models import Position, PositionChange, PositionEvent, SyncRun


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return decimal_text(value) if not isinstance(value, str) else value


def run_naive(url: str, account_id: str, snapshot: list[Record]) -> tuple[int, int, int]:
    """Make the table equal `snapshot`; returns (created, updated, removed)."""
    now = datetime.now(UTC)
    changes: list[tuple[Record | Position, str, dict[str, Any]]] = []
    with Session(engine_for(url)) as session, session.begin():
        run = SyncRun(account_id=account_id, status="completed", started_at=now, finished_at=now)
        session.add(run)
        session.flush()
        seen: set[str] = set()
        for record in snapshot:
            seen.add(record["asset_id"])
            row = session.get(Position, (account_id, record["asset_id"]))
            if row is None:
                stamps = {"created_at": now, "updated_at": now, "refreshed_at": now}
                session.add(Position(**record, **stamps, sync_run_id=run.id))
                fields = {f: [None, _text(record[f])] for f in MATERIAL_FIELDS}
                changes.append((record, "created", fields))
                continue
            fields = {
                f: [_text(getattr(row, f)), _text(record[f])]
                for f in MATERIAL_FIELDS
                if getattr(row, f) != record[f]
            }
            moved = [f for f in MARKET_FIELDS if getattr(row, f) != record[f]]
            for name in [*fields, *moved]:
                setattr(row, name, record[name])
            if fields:
                row.updated_at = now
                changes.append((record, "updated", fields))
            if fields or moved:
                row.refreshed_at, row.sync_run_id = now, run.id
        for row in session.scalars(select(Position).where(Position.account_id == account_id)):
            if row.asset_id not in seen:
                fields = {f: [_text(getattr(row, f)), None] for f in MATERIAL_FIELDS}
                changes.append((row, "removed", fields))
                session.delete(row)
        _journal(session, account_id, run.id, changes, now)
        counts = [sum(1 for _, kind, _ in changes if kind == k) for k in ("created", "updated")]
        run.created_count, run.updated_count = counts
        run.removed_count = len(changes) - sum(counts)
    return counts[0], counts[1], len(changes) - sum(counts)


def _journal(
    session: Session,
    account_id: str,
    run_id: int,
    changes: list[tuple[Record | Position, str, dict[str, Any]]],
    now: datetime,
) -> None:
    if not changes:
        return

    def symbol(item: Record | Position) -> str:
        return str(item["symbol"] if isinstance(item, dict) else item.symbol)

    def asset(item: Record | Position) -> str:
        return str(item["asset_id"] if isinstance(item, dict) else item.asset_id)

    payload = {
        kind: [symbol(item) for item, k, _ in changes if k == kind]
        for kind in ("created", "updated", "removed")
    } | {"type": "reconciliation", "timestamp": now.isoformat(), "source": SOURCE}
    event = PositionEvent(
        type=POSITION_UPDATED,
        account_id=account_id,
        sync_run_id=run_id,
        payload=payload,
        created_at=now,
    )
    session.add(event)
    session.flush()
    for item, kind, fields in changes:
        session.add(
            PositionChange(
                event_id=event.id,
                account_id=account_id,
                asset_id=asset(item),
                symbol=symbol(item),
                change=kind,
                fields={f: {"before": b, "after": a} for f, (b, a) in fields.items()},
                created_at=now,
            )
        )

"""The store per account (the Broker API mode): what `GET /api/accounts` and the status's
`accounts` summary show, and an account's failure as the pass records it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from recon.schemas.accounts import (
    MAX_OUTCOMES,
    AccountInfo,
    AccountOutcome,
    AccountsSummary,
    FailedAccount,
)
from recon.schemas.result import Summary, counts_of
from recon.store.database import store_errors
from recon.store.models import Position, SyncRun
from recon.store.writer import record_failure


def read_accounts(
    session: Session, accounts: frozenset[str] | None, *, after: str | None, limit: int
) -> list[AccountInfo]:
    """Accounts in id order (after `after`), each with its position count, last applied
    run and last error; only `accounts` when given."""
    known = (
        select(Position.account_id.label("account_id"))
        .union(select(SyncRun.account_id).where(SyncRun.account_id.is_not(None)))
        .subquery()
    )
    ids_query = select(known.c.account_id).order_by(known.c.account_id).limit(limit)
    if after is not None:
        ids_query = ids_query.where(known.c.account_id > after)
    if accounts is not None:
        ids_query = ids_query.where(known.c.account_id.in_(sorted(accounts)))
    ids = [str(i) for i in session.scalars(ids_query)]
    if not ids:
        return []
    counted = session.execute(
        select(Position.account_id, func.count())
        .where(Position.account_id.in_(ids))
        .group_by(Position.account_id)
    ).all()
    counts = {str(account_id): int(n) for account_id, n in counted}
    applied = _latest(session, ids, "completed")
    failed = _latest(session, ids, None)
    out = []
    for account_id in ids:
        ok, bad = applied.get(account_id), failed.get(account_id)
        # The last error only while it is newer than the last success.
        if bad is not None and ok is not None and ok.finished_at >= bad.finished_at:
            bad = None
        out.append(
            AccountInfo(
                account_id=account_id,
                positions=int(counts.get(account_id, 0)),
                last_applied_at=ok.finished_at if ok else None,
                last_applied_flow_run_id=ok.flow_run_id if ok else None,
                last_error=bad.reason if bad else None,
                last_error_at=bad.finished_at if bad else None,
            )
        )
    return out


def _latest(session: Session, ids: list[str], status: str | None) -> dict[str, SyncRun]:
    """Each account's newest run row: completed ones, or (status None) failed/crashed."""
    wanted = (
        SyncRun.status == status
        if status is not None
        else SyncRun.status.in_(["failed", "crashed"])
    )
    newest = (
        select(SyncRun.account_id, func.max(SyncRun.id).label("id"))
        .where(SyncRun.account_id.in_(ids), wanted)
        .group_by(SyncRun.account_id)
        .subquery()
    )
    rows = session.scalars(select(SyncRun).join(newest, SyncRun.id == newest.c.id))
    return {str(r.account_id): r for r in rows}


def run_accounts(session: Session, flow_run_id: str) -> AccountsSummary | None:
    """How the accounts of one flow run fared (None if it reconciled none)."""
    rows = session.execute(
        select(SyncRun.account_id, SyncRun.status, SyncRun.reason).where(
            SyncRun.flow_run_id == flow_run_id, SyncRun.account_id.is_not(None)
        )
    ).all()
    if not rows:
        return None
    failed = [r for r in rows if r.status != "completed"]
    return AccountsSummary(
        total=len(rows),
        applied=len(rows) - len(failed),
        failed=len(failed),
        failed_accounts=[
            FailedAccount(account_id=str(r.account_id), error=r.reason or r.status)
            for r in failed[:MAX_OUTCOMES]
        ],
    )


def run_totals(session: Session, flow_run_id: str) -> Summary:
    """The changes of one flow run summed over its applied accounts (their run rows)."""
    results = session.scalars(
        select(SyncRun.result).where(
            SyncRun.flow_run_id == flow_run_id,
            SyncRun.account_id.is_not(None),
            SyncRun.status == "completed",
        )
    )
    totals = dict.fromkeys(Summary.model_fields, 0)
    for result in results:
        summary = Summary.model_validate((result or {}).get("summary") or totals)
        for name in totals:
            totals[name] += getattr(summary, name)
    return Summary(**totals)


def run_outcomes(
    session: Session, flow_run_id: str | None, account_ids: list[str]
) -> dict[str, AccountOutcome]:
    """The outcome of each of these accounts in one flow run, from its run rows."""
    rows = session.scalars(
        select(SyncRun)
        .where(SyncRun.flow_run_id == flow_run_id, SyncRun.account_id.in_(account_ids))
        .order_by(SyncRun.id)
    )
    out: dict[str, AccountOutcome] = {}
    for row in rows:  # the newest row of an account wins
        applied = row.status == "completed"
        out[str(row.account_id)] = AccountOutcome(
            account_id=str(row.account_id),
            status="applied" if applied else "failed",
            sync_run_id=row.id,
            error=None if applied else (row.reason or row.status),
            **counts_of(row),
        )
    return out


def record_account_failure(
    sessions: sessionmaker[Session],
    *,
    flow_run_id: str | None,
    started_at: datetime,
    account_id: str,
    reason: str,
) -> AccountOutcome:
    """An account that did not apply: its failed run row and `system:error` (with its
    `accountId`), and the outcome the pass reports for it."""
    with store_errors("journaling an account's failure"):
        record_failure(
            sessions,
            flow_run_id=flow_run_id,
            started_at=started_at,
            reason=reason,
            account_id=account_id,
        )
    return AccountOutcome(account_id=account_id, status="failed", error=reason)

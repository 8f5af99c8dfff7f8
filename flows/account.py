"""One account of a Broker API run, as its own unit: fetch, parse, the safety checks against
that account's own values, diff, and persist in its own transaction under its own lock.

Two task shapes run it. `reconcile-accounts` takes a batch: each account is still its own
unit (its transaction, its lock, its journal entries, its failure), but a task run is
Prefect's unit of bookkeeping, and the server records every task run's states: one task
run per account cost the Prefect server more CPU than everything else in the pass together.
An account whose error may go away (`BrokerTransientError`) is handed back and retried
alone in `reconcile-account`, with the task's declared retries and backoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.publish import publish_account_changed
from flows.retries import retry_transient
from recon.broker.broker_api import BrokerApi
from recon.broker.protocol import RawSnapshot
from recon.diff import diff_book
from recon.errors import BrokerRejectedError, BrokerTransientError
from recon.logfmt import line
from recon.safety import check_removals, check_snapshot
from recon.schemas.accounts import AccountOutcome
from recon.schemas.result import RunResult
from recon.settings import get_settings
from recon.snapshot import parse_snapshot
from recon.store.book import load_book
from recon.store.database import engine_for, session_factory, store_errors
from recon.store.lock import account_lock
from recon.store.writer import apply_reconciliation


@dataclass
class Batch:
    """What a batch did: the applied accounts' outcomes, the accounts that failed for good,
    and those to retry alone (a transient error); both of the last by id, with the reason."""

    applied: list[AccountOutcome] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retry: dict[str, str] = field(default_factory=dict)


def reconcile_one(
    account_id: str,
    clock: dict[str, Any] | None,
    allow_mass_removal: bool,
    started_at: datetime,
    flow_run_id: str | None,
    trigger: str,
) -> AccountOutcome:
    """Fetch, parse, check, diff and persist one account; nothing of it outlives the call
    but its small outcome, so memory stays flat in the number of accounts."""
    raw = BrokerApi.for_thread(get_settings()).broker_for(account_id, clock).fetch_snapshot()
    return apply_snapshot(account_id, raw, allow_mass_removal, started_at, flow_run_id, trigger)


def apply_snapshot(
    account_id: str,
    raw: RawSnapshot,
    allow_mass_removal: bool,
    started_at: datetime,
    flow_run_id: str | None,
    trigger: str,
) -> AccountOutcome:
    """Parse, check, diff and persist one account's fetched snapshot."""
    settings = get_settings()
    logger = get_run_logger()
    snapshot = parse_snapshot(raw)
    if snapshot.account_id != account_id:
        raise BrokerRejectedError(
            f"the broker answered account {snapshot.account_id} for {account_id}"
        )
    for error in snapshot.errors:
        logger.error(line("Position skipped", accountId=account_id, symbol=error.symbol))
    check_snapshot(snapshot, settings)  # the tie-out against this account's own values
    url = settings.resolved_database_url
    with store_errors("reconciling the account"), account_lock(engine_for(url), account_id):
        with session_factory(url)() as session:
            book = load_book(session, account_id)
        diff = diff_book(book, snapshot)
        check_removals(diff, len(book), settings, allow=allow_mass_removal)
        result = RunResult.from_diff(
            snapshot, diff, started_at=started_at, flow_run_id=flow_run_id
        ).model_copy(update={"trigger": trigger})
        final = apply_reconciliation(session_factory(url), diff, result)
    try:
        publish_account_changed(final)
    except Exception as exc:  # committed already: the account stays applied
        logger.warning(line("Publishing the event failed", accountId=account_id, error=str(exc)))
    return AccountOutcome.applied(final)


# One account as its own task run: what a batch hands back to retry.
reconcile_account = task(
    name="reconcile-account",
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)(reconcile_one)


@task(name="reconcile-accounts", cache_policy=NO_CACHE)
def reconcile_batch(
    account_ids: list[str],
    clock: dict[str, Any] | None,
    allow_mass_removal: bool,
    started_at: datetime,
    flow_run_id: str | None,
    trigger: str,
) -> Batch:
    """Each account of the batch in turn, each its own unit: one account's error is that
    account's alone, and the batch goes on. The snapshots are fetched a few accounts at a
    time (RECON_BROKER_FETCH_GROUP) on one rate-limit acquisition: each acquisition costs
    the Prefect server a write, and they were the largest single part of its share."""
    settings = get_settings()
    api = BrokerApi.for_thread(settings)
    size = api.group_size(settings.broker_fetch_group)
    batch = Batch()
    for start in range(0, len(account_ids), size):
        group = account_ids[start : start + size]
        for account_id, fetched in zip(group, api.fetch_snapshots(group, clock), strict=True):
            try:
                if isinstance(fetched, Exception):
                    raise fetched
                outcome = apply_snapshot(
                    account_id, fetched, allow_mass_removal, started_at, flow_run_id, trigger
                )
            except BrokerTransientError as exc:
                batch.retry[account_id] = _reason(exc)
            except Exception as exc:
                batch.failed[account_id] = _reason(exc)
            else:
                batch.applied.append(outcome)
    return batch


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__

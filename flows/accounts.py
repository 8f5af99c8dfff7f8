"""The Broker API mode of `reconcile-positions`: list the accounts, then reconcile each as
its own unit (`flows/account.py`: its own transaction under its own lock), in batches
mapped with Prefect's task mapping."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State as PrefectState
from prefect.futures import PrefectFuture
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import unmapped
from prefect.utilities.asyncutils import run_coro_as_sync

from flows.account import Batch, reconcile_account, reconcile_batch
from flows.publish import publish_accounts
from flows.retries import retry_transient
from flows.shards import run_shards
from flows.trigger import run_trigger
from recon.broker.broker_api import BrokerApi
from recon.broker.pacing import RATE_LIMIT_NAME, ensure_rate_limit
from recon.broker.slots import acquisitions
from recon.logfmt import line
from recon.schemas.accounts import AccountOutcome, BrokerRunResult
from recon.settings import Settings, get_settings
from recon.store.accounts import record_account_failure
from recon.store.database import session_factory


@task(
    name="list-accounts",
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def list_accounts(given: list[str] | None) -> tuple[list[str], dict[str, Any] | None]:
    """`given` (a shard's), RECON_ACCOUNT_IDS, else every ACTIVE account; and the market
    clock, read once for the run."""
    settings = get_settings()
    api = BrokerApi(settings)
    ids = given if given is not None else (settings.account_ids or api.account_ids())
    return ids, api.clock()


def reconcile_accounts(
    allow_mass_removal: bool,
    flow_run_id: str | None,
    *,
    account_ids: list[str] | None = None,
    parent_flow_run_id: str | None = None,
) -> dict[str, Any] | PrefectState[Any]:
    """The run: Completed with every account's outcome, Failed only when the list cannot be
    read (raised) or every account failed. With RECON_SHARDS > 1 the accounts go to child
    runs of the shard deployment (`flows/shards.py`); a shard's rows are its parent's."""
    logger = get_run_logger()
    settings = get_settings()
    run_coro_as_sync(ensure_rate_limit(settings))
    retries = settings.fetch_retries
    delays = exponential_backoff(settings.fetch_backoff_seconds)
    listing = list_accounts.with_options(retries=retries, retry_delay_seconds=delays)
    ids, clock = listing(account_ids)
    logger.info(line("Reconciling accounts", accounts=len(ids)))
    started_at = datetime.now(UTC)
    trips = acquisitions(RATE_LIMIT_NAME)
    trigger = run_trigger()
    record_as = parent_flow_run_id or flow_run_id
    if account_ids is None and settings.shards > 1 and len(ids) > 1:
        outcomes = run_shards(ids, settings.shards, allow_mass_removal, record_as, started_at)
    else:
        outcomes = _map_accounts(ids, clock, allow_mass_removal, record_as, started_at, trigger)
    result = BrokerRunResult.of(
        outcomes,
        flow_run_id=flow_run_id,
        trigger=trigger,
        started_at=started_at,
        finished_at=datetime.now(UTC),
    )
    publish_accounts(result)
    counts = result.accounts
    logger.info(
        line(
            "Accounts reconciled",
            total=counts.total,
            applied=counts.applied,
            failed=counts.failed,
            rateLimitAcquisitions=acquisitions(RATE_LIMIT_NAME) - trips,
        )
    )
    if counts.total and counts.applied == 0:
        return Failed(message=f"every account failed ({counts.failed}); see the journal")
    return result.dump()


def _map_accounts(
    ids: list[str],
    clock: dict[str, Any] | None,
    allow_mass_removal: bool,
    flow_run_id: str | None,
    started_at: datetime,
    trigger: str,
) -> list[AccountOutcome]:
    """Batches of accounts mapped on this run's threads (`reconcile-accounts`), then each
    account a batch handed back, alone and with the task's retries (`reconcile-account`).
    The outcomes in the listing's order."""
    settings = get_settings()
    sessions = session_factory(settings.resolved_database_url)
    outcomes: dict[str, AccountOutcome] = {}
    retry: dict[str, str] = {}
    given = {
        "clock": unmapped(clock),
        "allow_mass_removal": unmapped(allow_mass_removal),
        "started_at": unmapped(started_at),
        "flow_run_id": unmapped(flow_run_id),
        "trigger": unmapped(trigger),
    }

    def fail(account_id: str, reason: str) -> AccountOutcome:
        """A failed account, journaled as its own `system:error`."""
        get_run_logger().error(line("Account failed", accountId=account_id, error=reason))
        return record_account_failure(
            sessions,
            flow_run_id=flow_run_id,
            started_at=started_at,
            account_id=account_id,
            reason=reason,
        )

    def settle(batches: list[list[str]], futures: list[PrefectFuture[Any]]) -> None:
        for batch_ids, future in zip(batches, futures, strict=True):
            future.wait()
            if future.state.is_completed():
                batch: Batch = future.state.result()
                outcomes.update((o.account_id, o) for o in batch.applied)
                for account_id, reason in batch.failed.items():
                    outcomes[account_id] = fail(account_id, reason)
                retry.update(batch.retry)
            else:
                # The batch itself failed (its thread died mid-way, say): which of its
                # accounts applied is unknown, so each is tried again alone; one that did
                # apply finds nothing left to change.
                retry.update((account_id, _reason(future)) for account_id in batch_ids)

    pool: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(settings.broker_parallelism)
    with pool as runner:
        # A window of batches is mapped before the previous one is settled, so the threads
        # never idle waiting for a window's slowest batch, and at most two windows' futures
        # (each holding its task run's state and result) are held at once: memory stays
        # flat in the number of accounts.
        held: tuple[list[list[str]], list[PrefectFuture[Any]]] | None = None
        for window in _windows(ids, _batch_size(len(ids), settings), settings.broker_map_window):
            futures = list(runner.map(reconcile_batch, {"account_ids": window, **given}))
            if held is not None:
                settle(*held)
            held = (window, futures)
        if held is not None:
            settle(*held)
            del held
        if retry and settings.fetch_retries > 0:
            # The batch made the first attempt: the retries left, with their backoff.
            task = reconcile_account.with_options(
                retries=settings.fetch_retries - 1,
                retry_delay_seconds=exponential_backoff(settings.fetch_backoff_seconds),
            )
            again = list(retry)
            futures = list(runner.map(task, {"account_id": again, **given}))
            for account_id, future in zip(again, futures, strict=True):
                future.wait()
                done = future.state.is_completed()
                outcome = future.state.result() if done else fail(account_id, _reason(future))
                outcomes[account_id] = outcome
        else:  # no retries configured: a transient error fails the account as it is
            for account_id, reason in retry.items():
                outcomes[account_id] = fail(account_id, reason)
    return [outcomes[account_id] for account_id in ids]


def _batch_size(accounts: int, settings: Settings) -> int:
    """RECON_BROKER_BATCH_SIZE, or fewer, so a small pass still spreads over every thread."""
    spread = math.ceil(accounts / settings.broker_parallelism)
    return max(1, min(settings.broker_batch_size, spread))


def _windows(ids: list[str], size: int, window: int) -> Iterator[list[list[str]]]:
    """`ids` in batches of `size`, `window` batches at a time."""
    batches = [ids[i : i + size] for i in range(0, len(ids), size)]
    for start in range(0, len(batches), window):
        yield batches[start : start + window]


def _reason(future: PrefectFuture[Any]) -> str:
    state = future.state
    error = state.result(raise_on_failure=False)
    reason = str(error) if isinstance(error, Exception) else (state.message or state.name)
    return reason or "failed"

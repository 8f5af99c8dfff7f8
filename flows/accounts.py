"""The Broker API mode of `reconcile-positions`: list the accounts, then reconcile each as
its own unit (Prefect task mapping), each in its own transaction under its own lock."""

from __future__ import annotations

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

from flows.publish import publish_account_changed, publish_accounts
from flows.retries import retry_transient
from flows.shards import run_shards
from flows.trigger import run_trigger
from recon.broker.broker_api import BrokerApi
from recon.broker.pacing import ensure_rate_limit
from recon.diff import diff_book
from recon.errors import BrokerRejectedError
from recon.logfmt import line
from recon.safety import check_removals, check_snapshot
from recon.schemas.accounts import AccountOutcome, BrokerRunResult
from recon.schemas.result import RunResult
from recon.settings import get_settings
from recon.snapshot import parse_snapshot
from recon.store.accounts import record_account_failure
from recon.store.book import load_book
from recon.store.database import engine_for, session_factory, store_errors
from recon.store.lock import account_lock
from recon.store.writer import apply_reconciliation


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


@task(
    name="reconcile-account",
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def reconcile_account(
    account_id: str,
    clock: dict[str, Any] | None,
    allow_mass_removal: bool,
    started_at: datetime,
    flow_run_id: str | None,
    trigger: str,
) -> AccountOutcome:
    """Fetch, parse, check, diff and persist one account; nothing of it outlives the task
    but its small outcome, so memory stays flat in the number of accounts."""
    settings = get_settings()
    logger = get_run_logger()
    raw = BrokerApi(settings).broker_for(account_id, clock).fetch_snapshot()
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
            "Accounts reconciled", total=counts.total, applied=counts.applied, failed=counts.failed
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
    """One `reconcile-account` task run per account, mapped on this run's threads."""
    settings = get_settings()
    retries = settings.fetch_retries
    delays = exponential_backoff(settings.fetch_backoff_seconds)
    sessions = session_factory(settings.resolved_database_url)
    outcomes: list[AccountOutcome] = []
    pool: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(settings.broker_parallelism)
    task = reconcile_account.with_options(retries=retries, retry_delay_seconds=delays)
    with pool as runner:
        # Mapped a window at a time: a settled window's futures (each holding its task
        # run's state and result) are dropped before the next is mapped, so memory stays
        # flat in the number of accounts instead of growing with every future kept.
        # RECON_BROKER_MAP_WINDOW is many times the threads, so a window's slowest account
        # rarely leaves them idle.
        step = settings.broker_map_window
        for start in range(0, len(ids), step):
            window = ids[start : start + step]
            futures = runner.map(
                task,
                {
                    "account_id": window,
                    "clock": unmapped(clock),
                    "allow_mass_removal": unmapped(allow_mass_removal),
                    "started_at": unmapped(started_at),
                    "flow_run_id": unmapped(flow_run_id),
                    "trigger": unmapped(trigger),
                },
            )
            for account_id, future in zip(window, futures, strict=True):
                outcomes.append(_settle(account_id, future, sessions, flow_run_id, started_at))
            del futures
    return outcomes


def _settle(
    account_id: str,
    future: PrefectFuture[Any],
    sessions: Any,
    flow_run_id: str | None,
    started_at: datetime,
) -> AccountOutcome:
    """The account's outcome; a failed one journaled as its own `system:error`."""
    future.wait()
    state = future.state
    if state.is_completed():
        outcome: AccountOutcome = state.result()
        return outcome
    error = state.result(raise_on_failure=False)
    reason = str(error) if isinstance(error, Exception) else (state.message or state.name)
    reason = reason or "failed"
    get_run_logger().error(line("Account failed", accountId=account_id, error=reason))
    return record_account_failure(
        sessions,
        flow_run_id=flow_run_id,
        started_at=started_at,
        account_id=account_id,
        reason=reason,
    )

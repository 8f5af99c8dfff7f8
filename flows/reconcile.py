"""The `reconcile-positions` flow: fetch → diff → persist; Prefect retries and reports."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.objects import State as PrefectState
from prefect.flows import Flow
from prefect.logging.loggers import flow_run_logger
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelled
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import opaque

from flows.preview import preview_snapshot, publish_preview
from flows.publish import publish_changes
from flows.retries import retry_transient
from flows.trigger import run_trigger
from recon.broker import AlpacaTradingBroker
from recon.deployment import FLOW_NAME, is_preview
from recon.diff import Diff, diff_book
from recon.errors import BrokerTransientError, ConfigurationError, SyncInProgressError
from recon.logfmt import line
from recon.safety import check_removals, check_snapshot
from recon.schemas.result import RunResult
from recon.settings import get_settings
from recon.snapshot import Snapshot, parse_snapshot
from recon.store.book import load_book
from recon.store.database import engine_for, session_factory, store_errors, upgrade
from recon.store.lock import sync_lock
from recon.store.writer import apply_reconciliation, record_failure

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    snapshot: Snapshot
    diff: Diff


# Retry count and backoff come from the settings (RECON_FETCH_*), applied where the flow
# calls this task; only what does not vary is declared here.
@task(
    name="fetch-snapshot",
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def fetch_snapshot() -> Snapshot:
    logger = get_run_logger()
    try:
        snapshot = parse_snapshot(AlpacaTradingBroker(get_settings()).fetch_snapshot())
    except BrokerTransientError as exc:
        logger.warning(line("Broker fetch failed, will retry if attempts remain", error=str(exc)))
        raise
    for error in snapshot.errors:
        logger.error(line("Position skipped", symbol=error.symbol, error=error.error))
    logger.info(
        line(
            "Fetched snapshot",
            accountId=snapshot.account_id,
            positions=len(snapshot.positions),
            errors=len(snapshot.errors),
            marketOpen=snapshot.market_open,
        )
    )
    return snapshot


@task(name="diff-positions", cache_policy=NO_CACHE)
def diff_snapshot(snapshot: Snapshot, allow_mass_removal: bool) -> Plan:
    settings = get_settings()
    check_snapshot(snapshot, settings)
    with (
        store_errors("loading the book"),
        session_factory(settings.resolved_database_url)() as session,
    ):
        book = load_book(session, snapshot.account_id)
    diff = diff_book(book, snapshot)
    check_removals(diff, len(book), settings, allow=allow_mass_removal)
    logger = get_run_logger()
    for symbol in diff.held_back:
        logger.warning(line("Removal held back: its record failed validation", symbol=symbol))
    if len(diff.removed):
        logger.warning(line("Removing positions", symbols=diff.symbols("removed")))
    return Plan(snapshot=snapshot, diff=diff)


@task(name="persist-changes", cache_policy=NO_CACHE)
def persist_changes(plan: Plan, started_at: datetime) -> RunResult:
    settings = get_settings()
    result = RunResult.from_diff(
        plan.snapshot, plan.diff, started_at=started_at, flow_run_id=_flow_run_id()
    )
    result = result.model_copy(update={"trigger": run_trigger()})
    with store_errors("persisting the changes"):
        final = apply_reconciliation(
            session_factory(settings.resolved_database_url), plan.diff, result
        )
    # Bounded from here on (the task result, the artifact, the event, the flow's return
    # value): every change is in the journal now.
    return final.bounded()


def report_failure(flow: Flow[Any, Any], flow_run: FlowRun, state: PrefectState[Any]) -> None:
    """Failure/crash hook: record the run and journal a `system:error`, whatever killed it."""
    reason = state.message or state.name or "unknown failure"
    status = "crashed" if state.is_crashed() else "failed"
    logger = flow_run_logger(flow_run, flow)
    if is_preview(flow_run.parameters):
        # A preview writes nothing, its failure included: the run's state says why.
        logger.error(line("Preview failed, nothing recorded", error=reason))
        return
    logger.error(line("Reconciliation failed", error=reason))
    settings = get_settings()
    upgrade(settings.resolved_database_url)
    record_failure(
        session_factory(settings.resolved_database_url),
        flow_run_id=str(flow_run.id),
        started_at=flow_run.start_time or datetime.now(UTC),
        reason=reason,
        status=status,
    )


@flow(
    name=FLOW_NAME,
    on_failure=[report_failure],
    on_crashed=[report_failure],
    timeout_seconds=600,
)
def reconcile_positions(
    allow_mass_removal: bool = False,
    dry_run: bool = False,
    account_ids: list[str] | None = None,
    parent_flow_run_id: str | None = None,
) -> dict[str, Any] | PrefectState[Any]:
    """Make the local positions table equal to what the broker says, and journal the changes.

    With `dry_run`, only report what it would do (`flows.preview`): nothing is written.
    `account_ids` and `parent_flow_run_id` are the Broker API mode's shard runs' (set by
    the parent run): these accounts only, recorded under the parent's run."""
    logger = get_run_logger()
    settings = get_settings()
    url = settings.resolved_database_url
    upgrade(url)
    if settings.source == "broker":
        if dry_run:
            raise ConfigurationError("a preview (dry run) covers the Trading API mode only")
        # Many accounts: each under its own lock, in its own transaction (flows/accounts.py).
        # Imported here: the trading mode's processes do not load the Broker API's client.
        from flows.accounts import reconcile_accounts

        return reconcile_accounts(
            allow_mass_removal,
            _flow_run_id(),
            account_ids=account_ids,
            parent_flow_run_id=parent_flow_run_id,
        )
    if dry_run:
        return _preview(allow_mass_removal)
    with contextlib.ExitStack() as held:
        try:
            with store_errors("taking the sync lock"):
                held.enter_context(sync_lock(engine_for(url)))
        except SyncInProgressError as exc:
            # Not a failure: another sync is doing this run's work. Cancelled is how Prefect
            # (and the status endpoint's skippedRuns) already shows a concurrency skip.
            logger.warning(line("Reconciliation skipped", reason=str(exc)))
            return Cancelled(message=f"Skipped: {exc}")
        # Taken once the lock is held: two runs' [started_at, finished_at] never overlap.
        started_at = datetime.now(UTC)
        snapshot = fetch_snapshot.with_options(
            retries=settings.fetch_retries,
            retry_delay_seconds=exponential_backoff(settings.fetch_backoff_seconds),
        )()
        # `opaque`: Prefect links the task runs (the value is a known task result) without
        # walking every field of the snapshot and plan (≈ 0.1 s per 1,000 changes).
        plan = diff_snapshot(_opaque(snapshot), allow_mass_removal)
        result = persist_changes(_opaque(plan), started_at)
    try:
        publish_changes(result)
    except Exception as exc:  # committed already: the run stays Completed
        # The artifact and the event are copies for the Prefect UI; the changes are in the
        # book and the journal, so nothing new is journaled and the state says the truth.
        logger.warning(
            line(
                "Publishing the artifact/event failed; the changes are committed",
                error=_one_line(exc),
            )
        )
    summary = result.summary.dump()
    if result.total_changes:
        logger.info(line("Reconciliation completed with changes", **summary))
    else:
        logger.info(line("Reconciliation completed, no changes", **summary))
    return result.dump()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _preview(allow_mass_removal: bool) -> dict[str, Any]:
    """The same fetch and diff, no lock (a preview writes nothing), reported not applied."""
    settings = get_settings()
    started_at = datetime.now(UTC)
    snapshot = fetch_snapshot.with_options(
        retries=settings.fetch_retries,
        retry_delay_seconds=exponential_backoff(settings.fetch_backoff_seconds),
    )()
    preview = preview_snapshot(_opaque(snapshot), allow_mass_removal, started_at)
    publish_preview(preview)
    return preview.dump()


def _opaque(value: T) -> T:
    """`opaque(value)`, typed as the value: Prefect unwraps it before the task runs."""
    return cast(T, opaque(value))


def _flow_run_id() -> str | None:
    run_id = current_flow_run.get_id()
    return str(run_id) if run_id else None

"""The `reconcile-positions` flow: fetch → diff → persist; Prefect retries and reports."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.client.schemas.objects import State as PrefectState
from prefect.flows import Flow
from prefect.logging.loggers import flow_run_logger
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelled
from prefect.tasks import Task, exponential_backoff
from prefect.utilities.annotations import opaque

from flows.publish import publish_changes
from recon.broker import AlpacaTradingBroker
from recon.diff import Diff, diff_book
from recon.errors import BrokerTransientError, SyncInProgressError
from recon.logfmt import line
from recon.result import RunResult
from recon.safety import check_removals, check_snapshot
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
    book_size: int


def retry_transient(task: Task[Any, Any], task_run: TaskRun, state: PrefectState[Any]) -> bool:
    """Retry timeouts, resets, 429 and 5xx; never 401/403 or a bad request."""
    try:
        state.result()
    except BrokerTransientError:
        return True
    except Exception:
        return False
    return False


@task(
    name="fetch-snapshot",
    retries=4,
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
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
    return Plan(snapshot=snapshot, diff=diff, book_size=len(book))


@task(name="persist-changes", cache_policy=NO_CACHE)
def persist_changes(plan: Plan, started_at: datetime) -> RunResult:
    settings = get_settings()
    result = RunResult.from_diff(
        plan.snapshot, plan.diff, started_at=started_at, flow_run_id=_flow_run_id()
    )
    with store_errors("persisting the changes"):
        return apply_reconciliation(
            session_factory(settings.resolved_database_url), plan.diff, result
        )


def report_failure(flow: Flow[Any, Any], flow_run: FlowRun, state: PrefectState[Any]) -> None:
    """Failure/crash hook: record the run and journal a `system:error`, whatever killed it."""
    reason = state.message or state.name or "unknown failure"
    status = "crashed" if state.is_crashed() else "failed"
    flow_run_logger(flow_run, flow).error(line("Reconciliation failed", error=reason))
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
    name="reconcile-positions",
    on_failure=[report_failure],
    on_crashed=[report_failure],
    timeout_seconds=600,
)
def reconcile_positions(
    allow_mass_removal: bool = False,
) -> dict[str, Any] | PrefectState[Any]:
    """Make the local positions table equal to what the broker says, and journal the changes."""
    logger = get_run_logger()
    settings = get_settings()
    url = settings.resolved_database_url
    upgrade(url)
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
    publish_changes(result)
    summary = result.summary()
    if result.total_changes:
        logger.info(line("Reconciliation completed with changes", **summary))
    else:
        logger.info(line("Reconciliation completed, no changes", **summary))
    return result.as_dict()


def _opaque(value: T) -> T:
    """`opaque(value)`, typed as the value: Prefect unwraps it before the task runs."""
    return cast(T, opaque(value))


def _flow_run_id() -> str | None:
    run_id = current_flow_run.get_id()
    return str(run_id) if run_id else None

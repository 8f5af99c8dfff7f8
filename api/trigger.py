"""`POST /api/admin/jobs/sync-positions`: trigger the deployment, never two syncs at once.

The deployment's concurrency limit (CANCEL_NEW) is the guarantee, across every replica
and the schedule; the check below, under a per-process lock, is the courtesy that turns
the common case into a 409 instead of a run that gets cancelled.
"""

from __future__ import annotations

import asyncio

import anyio
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.flow_runs import wait_for_flow_run
from sqlalchemy.orm import Session, sessionmaker

from api.preview import read_preview
from api.runs import in_progress, ui_url
from api.schemas import (
    RunTotals,
    SyncAccepted,
    SyncCompleted,
    SyncCompletedAccounts,
    SyncPreviewed,
)
from recon.deployment import KEY_TAG_PREFIX, OVERRIDE_TAG, PREVIEW_TAG
from recon.errors import RunFailedError, RunInProgressError
from recon.schemas.accounts import AccountsSummary
from recon.schemas.result import RunChanges, Summary
from recon.settings import Settings
from recon.store.accounts import run_accounts, run_totals
from recon.store.runs import sync_run_of

# What a completed run without a record answers (its result is unknown, not "no changes").
_NO_RECORD = RunChanges(
    summary=Summary(
        total_changes=0,
        created_count=0,
        updated_count=0,
        removed_count=0,
        error_count=0,
        unchanged_count=0,
    )
)


async def trigger(
    prefect: PrefectClient,
    lock: asyncio.Lock,
    deployment: DeploymentResponse,
    *,
    actor: str,
    dry_run: bool = False,
    allow_mass_removal: bool = False,
) -> FlowRun:
    """A run of the deployment now, tagged with who asked (the key's name) and what."""
    tags = ["manual", "api", f"{KEY_TAG_PREFIX}{actor}"]
    tags += [PREVIEW_TAG] if dry_run else []
    tags += [OVERRIDE_TAG] if allow_mass_removal else []
    parameters = {"dry_run": dry_run, "allow_mass_removal": allow_mass_removal}
    async with lock:
        busy = await in_progress(prefect, deployment.id)
        if busy is not None:
            raise RunInProgressError(str(busy.id), f"flow run {busy.name} is {busy.state_name}")
        return await prefect.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, tags=tags
        )


async def wait_for_result(
    prefect: PrefectClient,
    run: FlowRun,
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    dry_run: bool = False,
) -> SyncCompleted | SyncCompletedAccounts | SyncPreviewed | SyncAccepted:
    """Wait (bounded) for the run's final state; answer as the old job did (a dry run with
    its preview, read back from the run's artifact)."""
    url = ui_url(prefect, settings.prefect_ui_url, run.id)
    with anyio.move_on_after(settings.trigger_wait_seconds):
        run = await wait_for_flow_run(run.id, timeout=None, client=prefect)
    if not (run.state and run.state.is_final()):
        return accepted(run, url, f"still running after {settings.trigger_wait_seconds:g} s")
    message = run.state.message or run.state_name or ""
    if run.state_type == StateType.CANCELLED:
        # Lost the race to a run the check could not see (another replica, a cron run).
        raise RunInProgressError(str(run.id), message)
    if dry_run and run.state_type == StateType.COMPLETED:
        preview = await read_preview(prefect, run.id)
        if preview is None:
            raise RunFailedError(str(run.id), url, "the preview's artifact is missing")
        verdict = f"refused: {preview.refused.reason}" if preview.refused else "would apply"
        return SyncPreviewed(
            message=(
                f"Preview, nothing written: {preview.summary.total_changes} changes, {verdict}"
            ),
            preview=preview,
            flow_run_id=str(run.id),
            flow_run_url=url,
        )
    sync_run = await asyncio.to_thread(sync_run_of, sessions, run.id)
    if run.state_type != StateType.COMPLETED:
        reason = sync_run.reason if sync_run and sync_run.reason else message
        raise RunFailedError(str(run.id), url, reason)
    if settings.source == "broker":  # one account's row would mislead: the whole pass
        return await asyncio.to_thread(_accounts_answer, sessions, str(run.id), url)
    record = sync_run.result if sync_run else None
    result = RunChanges.model_validate(record) if record else _NO_RECORD
    return SyncCompleted(
        message=f"Position sync completed: {result.summary.total_changes} changes",
        result=result,
        flow_run_id=str(run.id),
        flow_run_url=url,
    )


def _accounts_answer(
    sessions: sessionmaker[Session], flow_run_id: str, url: str
) -> SyncCompletedAccounts:
    with sessions() as session:
        accounts = run_accounts(session, flow_run_id) or AccountsSummary(
            total=0, applied=0, failed=0
        )
        totals = run_totals(session, flow_run_id)
    return SyncCompletedAccounts(
        message=(
            f"Position sync completed: {totals.total_changes} changes over "
            f"{accounts.total} accounts ({accounts.applied} applied, {accounts.failed} failed)"
        ),
        result=RunTotals(summary=totals),
        accounts=accounts,
        flow_run_id=flow_run_id,
        flow_run_url=url,
    )


def accepted(run: FlowRun, url: str, message: str) -> SyncAccepted:
    return SyncAccepted(message=message, flow_run_id=str(run.id), flow_run_url=url)

"""The old job's admin endpoints, same paths and shapes: status and on-demand sync."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from api.audit import audit_trigger
from api.deps import (
    AdminRead,
    AdminWrite,
    DeploymentDep,
    PrefectDep,
    SessionsDep,
    SettingsDep,
    StatusCacheDep,
    TriggerLockDep,
)
from api.recent_runs import recent_runs
from api.runs import ui_url
from api.schemas import (
    ErrorBody,
    JobStatus,
    RunList,
    SyncAccepted,
    SyncCompleted,
    SyncCompletedAccounts,
    SyncPreviewed,
)
from api.status import job_status
from api.trigger import accepted, trigger, wait_for_result

router = APIRouter(prefix="/api/admin/jobs", tags=["jobs"])


@router.get("/status", responses={503: {"model": ErrorBody, "description": "not deployed"}})
async def status(
    _: AdminRead,
    prefect: PrefectDep,
    settings: SettingsDep,
    sessions: SessionsDep,
    cache: StatusCacheDep,
    response: Response,
) -> JobStatus:
    """Counts by final state, the latest run and its result, the next run, whether one is
    running. Cancelled runs (the concurrency limit's skips) are `skippedRuns`, never failures.
    `Cache-Status` (RFC 9211) says whether Prefect was read or this replica's copy served."""
    body, response.headers["Cache-Status"] = await job_status(prefect, settings, sessions, cache)
    return body


@router.post(
    "/sync-positions",
    response_model=SyncCompleted,
    responses={
        200: {
            "model": SyncCompleted | SyncCompletedAccounts | SyncPreviewed,
            "description": "completed: its result (Broker API mode: the totals over every "
            "account and `accounts`), or with `dryRun=true` its `preview`",
        },
        202: {
            "model": SyncAccepted,
            "description": "triggered (`?wait=false`, or still running when the wait ended)",
        },
        409: {"model": ErrorBody, "description": "a sync is already running or pending"},
        500: {"model": ErrorBody, "description": "the run failed; `message` says why"},
        503: {"model": ErrorBody, "description": "the deployment is not on the server yet"},
    },
)
async def sync_positions(
    principal: AdminWrite,
    prefect: PrefectDep,
    settings: SettingsDep,
    sessions: SessionsDep,
    lock: TriggerLockDep,
    deployment: DeploymentDep,
    cache: StatusCacheDep,
    wait: bool = Query(default=True, description="Wait (bounded) for the run's result."),
    dry_run: bool = Query(
        default=False,
        alias="dryRun",
        description="Preview: fetch, check and diff, write nothing; answer what it would do.",
    ),
    allow_mass_removal: bool = Query(
        default=False,
        alias="allowMassRemoval",
        description="Apply a removal over the cap (RECON_MAX_REMOVALS/_PCT); audited.",
    ),
) -> JSONResponse:
    """Trigger the deployment now; by default wait for the run and answer with its result.
    The run is tagged `key:<name>` with the key's name, and the trigger is audited."""
    run = await trigger(
        prefect,
        lock,
        deployment,
        actor=principal.name,
        dry_run=dry_run,
        allow_mass_removal=allow_mass_removal,
    )
    # This replica knows of the new run now; the event reaches the others in milliseconds.
    cache.invalidate()
    await audit_trigger(
        sessions, principal.name, run.id, dry_run=dry_run, allow_mass_removal=allow_mass_removal
    )
    if not wait:
        url = ui_url(prefect, settings.prefect_ui_url, run.id)
        message = "Position preview triggered" if dry_run else "Position sync triggered"
        return JSONResponse(accepted(run, url, message).dump(), status_code=202)
    answer = await wait_for_result(prefect, run, settings, sessions, dry_run=dry_run)
    cache.invalidate()
    code = 202 if isinstance(answer, SyncAccepted) else 200
    return JSONResponse(answer.dump(), status_code=code)


@router.get("/runs", responses={503: {"model": ErrorBody, "description": "not deployed"}})
async def runs(
    _: AdminRead,
    prefect: PrefectDep,
    settings: SettingsDep,
    sessions: SessionsDep,
    deployment: DeploymentDep,
    limit: int = Query(default=20, ge=1, le=100),
) -> RunList:
    """The deployment's latest runs, newest first: state, duration, what triggered them,
    who (the key's name for a sidecar trigger), whether a preview, and their changes."""
    return await recent_runs(prefect, settings, sessions, deployment, limit)

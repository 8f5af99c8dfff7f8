"""The old job's admin endpoints, same paths and shapes: status and on-demand sync."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.deps import AdminRead, AdminWrite, PrefectDep, SettingsDep
from api.runs import read_deployment, ui_url
from api.status import job_status
from api.trigger import accepted, trigger, wait_for_result

router = APIRouter(prefix="/api/admin/jobs", tags=["jobs"])


@router.get("/status")
async def status(_: AdminRead, prefect: PrefectDep, settings: SettingsDep) -> dict[str, Any]:
    """Counts by final state, the latest run and its result, the next run, whether one is
    running. Cancelled runs (the concurrency limit's skips) are `skippedRuns`, never failures."""
    return await job_status(prefect, settings, await read_deployment(prefect))


@router.post(
    "/sync-positions",
    responses={
        202: {"description": "triggered (`?wait=false`, or still running when the wait ended)"},
        409: {"description": "a sync is already running or pending"},
        500: {"description": "the run failed; `message` says why"},
    },
)
async def sync_positions(
    _: AdminWrite,
    request: Request,
    prefect: PrefectDep,
    settings: SettingsDep,
    wait: bool = Query(default=True, description="Wait (bounded) for the run's result."),
) -> JSONResponse:
    """Trigger the deployment now; by default wait for the run and answer with its result."""
    run = await trigger(prefect, request.app.state.trigger_lock, settings)
    if not wait:
        url = ui_url(prefect, settings.prefect_ui_url, run.id)
        return JSONResponse(accepted(run, url, "Position sync triggered"), status_code=202)
    code, body = await wait_for_result(prefect, run, settings)
    return JSONResponse(body, status_code=code)

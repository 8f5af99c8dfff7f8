"""`POST /api/admin/jobs/sync-positions`: trigger the deployment, never two syncs at once.

The deployment's concurrency limit (CANCEL_NEW) is the guarantee, across every replica
and the schedule; the check below, under a per-process lock, is the courtesy that turns
the common case into a 409 instead of a run that gets cancelled.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType

from api.errors import ApiError
from api.runs import in_progress, read_deployment, ui_url
from api.status import sync_run_of
from recon.settings import Settings

IN_PROGRESS = "Position sync already in progress"
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


async def trigger(prefect: PrefectClient, lock: asyncio.Lock, settings: Settings) -> FlowRun:
    async with lock:
        deployment = await read_deployment(prefect)
        busy = await in_progress(prefect, deployment.id)
        if busy is not None:
            raise _conflict(busy.id, f"flow run {busy.name} is {busy.state_name}")
        return await prefect.create_flow_run_from_deployment(deployment.id, tags=["manual", "api"])


async def wait_for_result(
    prefect: PrefectClient, run: FlowRun, settings: Settings
) -> tuple[int, dict[str, Any]]:
    """Poll the run to a final state (bounded); answer as the old job did."""
    deadline = time.monotonic() + settings.trigger_wait_seconds
    url = ui_url(prefect, settings.prefect_ui_url, run.id)
    while run.state_type not in FINAL:
        if time.monotonic() >= deadline:
            return 202, accepted(
                run, url, f"still running after {settings.trigger_wait_seconds:g} s"
            )
        await asyncio.sleep(0.5)
        run = await prefect.read_flow_run(run.id)
    message = (run.state.message if run.state else None) or run.state_name or ""
    if run.state_type == StateType.CANCELLED:
        # Lost the race to a run the check could not see (another replica, a cron run).
        raise _conflict(run.id, message)
    if run.state_type != StateType.COMPLETED:
        sync_run = await asyncio.to_thread(sync_run_of, settings, run.id)
        reason = sync_run.reason if sync_run and sync_run.reason else message
        raise ApiError(
            500,
            "Position sync failed",
            reason,
            success=False,
            flowRunId=str(run.id),
            flowRunUrl=url,
        )
    sync_run = await asyncio.to_thread(sync_run_of, settings, run.id)
    result = (sync_run.result if sync_run else None) or {}
    summary = result.get("summary", {})
    return 200, {
        "success": True,
        "message": f"Position sync completed: {summary.get('totalChanges', 0)} changes",
        "result": {k: result.get(k, []) for k in ("created", "updated", "removed", "errors")}
        | {"summary": summary},
        "flowRunId": str(run.id),
        "flowRunUrl": url,
    }


def accepted(run: FlowRun, url: str, message: str) -> dict[str, Any]:
    return {"success": True, "message": message, "flowRunId": str(run.id), "flowRunUrl": url}


def _conflict(flow_run_id: UUID, detail: str) -> ApiError:
    return ApiError(
        409,
        IN_PROGRESS,
        f"a position sync is already in progress ({detail}); try again when it has finished",
        flowRunId=str(flow_run_id),
    )

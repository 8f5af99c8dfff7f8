"""Journal a `system:error` for runs that died without writing one (e.g. crashed by the
zombie automation, when no process was left to run the flow's crash hook); never for a
preview (`dry_run`), which writes nothing."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.sorting import FlowRunSort
from sqlalchemy.orm import Session, sessionmaker

from api.runs import FAILED, read_deployment, runs_of
from recon.deployment import is_preview
from recon.errors import DeploymentNotFoundError
from recon.store.writer import record_failure

logger = logging.getLogger("recon.api.watcher")
LOOK_BACK = timedelta(hours=24)


async def watch_crashed_runs(
    prefect: PrefectClient, sessions: sessionmaker[Session], interval: float = 5.0
) -> None:
    handled: set[str] = set()  # only saves queries; the journal itself is the record
    while True:
        try:
            await sweep(prefect, sessions, handled)
        except DeploymentNotFoundError:
            pass  # not deployed yet
        except Exception:
            logger.warning("crashed-run sweep failed; retrying", exc_info=True)
        await asyncio.sleep(interval)


async def sweep(prefect: PrefectClient, sessions: sessionmaker[Session], handled: set[str]) -> None:
    """One pass: journal each failed or crashed run of the last day not yet journaled."""
    deployment = await read_deployment(prefect)
    since = datetime.now(UTC) - LOOK_BACK
    runs = await prefect.read_flow_runs(
        flow_run_filter=runs_of(deployment.id, FAILED, ended_after=since),
        sort=FlowRunSort.END_TIME_DESC,
        limit=50,
    )
    for run in runs:
        # A preview writes nothing, its failure included: the 500 and Prefect say it failed.
        if str(run.id) in handled or is_preview(run.parameters):
            continue
        written = await asyncio.to_thread(
            record_failure,
            sessions,
            flow_run_id=str(run.id),
            started_at=run.start_time or run.expected_start_time or datetime.now(UTC),
            reason=(run.state.message if run.state else None) or run.state_name or "crashed",
            status="crashed" if run.state_name == "Crashed" else "failed",
        )
        if written is not None:
            logger.warning("journaled system:error for %s run %s", run.state_name, run.id)
        handled.add(str(run.id))

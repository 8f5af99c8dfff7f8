"""Scale-out of the Broker API mode: a pass split into shards, each a child run of the
`reconcile-positions/shard` deployment, so any runner or worker serving it takes a share.

A shard records under its parent's flow run id; the parent reads every outcome back from
`sync_runs` (nothing is passed between processes but ids). A shard that ends without
having reconciled some of its accounts (crashed, killed, cancelled) leaves those accounts
untouched (each account's write is one transaction) and the parent journals each as a
`system:error`: the next pass covers them."""

from __future__ import annotations

import math
from datetime import datetime
from uuid import UUID

from prefect import get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.flow_runs import wait_for_flow_run
from prefect.utilities.asyncutils import run_coro_as_sync

from recon.deployment import SHARD_FULL_NAME
from recon.logfmt import line
from recon.schemas.accounts import AccountOutcome
from recon.settings import get_settings
from recon.store.accounts import record_account_failure, run_outcomes
from recon.store.database import session_factory

# A shard's run is bounded by the parent's own timeout (the flow's 600 s).
SHARD_WAIT_SECONDS = 590


def split(ids: list[str], shards: int) -> list[list[str]]:
    """Contiguous slices of about equal size, never an empty one."""
    size = math.ceil(len(ids) / max(1, min(shards, len(ids))))
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def run_shards(
    ids: list[str],
    shards: int,
    allow_mass_removal: bool,
    flow_run_id: str | None,
    started_at: datetime,
) -> list[AccountOutcome]:
    logger = get_run_logger()
    slices = split(ids, shards)
    runs: list[FlowRun] = []
    for number, share in enumerate(slices, 1):
        run = run_deployment(  # sync here (a sync flow): the FlowRun, not a coroutine
            SHARD_FULL_NAME,
            parameters={
                "allow_mass_removal": allow_mass_removal,
                "account_ids": share,
                "parent_flow_run_id": flow_run_id,
            },
            timeout=0,
            as_subflow=True,
            tags=["shard"],
            flow_run_name=f"shard-{number}-of-{len(slices)}",
        )
        assert isinstance(run, FlowRun)
        runs.append(run)
    logger.info(line("Shards started", shards=len(runs), accounts=len(ids)))
    sessions = session_factory(get_settings().resolved_database_url)
    outcomes: list[AccountOutcome] = []
    for run, share in zip(runs, slices, strict=True):
        final = run_coro_as_sync(_wait(run.id))
        state = final.state.name if final is not None and final.state else "unknown"
        with sessions() as session:
            found = run_outcomes(session, flow_run_id, share)
        for account_id in share:
            outcome = found.get(account_id)
            if outcome is None:
                outcome = record_account_failure(
                    sessions,
                    flow_run_id=flow_run_id,
                    started_at=started_at,
                    account_id=account_id,
                    reason=f"shard run {run.id} ended {state} before reconciling this account",
                )
            outcomes.append(outcome)
    return outcomes


async def _wait(flow_run_id: UUID) -> FlowRun | None:
    try:
        return await wait_for_flow_run(flow_run_id, timeout=SHARD_WAIT_SECONDS, log_states=False)
    except Exception:  # a shard that never finishes is reported, not raised
        return None

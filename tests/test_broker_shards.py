"""Scale-out of the Broker API mode (RECON_SHARDS): a served stack (`recon serve`, `recon
api`, a Prefect server of its own) splits a pass into child runs of
`reconcile-positions/shard`, each reconciling its slice, recorded under the parent run."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import StateType
from sqlalchemy import select

from flows.publish import EVENT_CHANGED
from recon.store.database import session_factory
from recon.store.journal import SYSTEM_ERROR
from recon.store.models import Position
from simulator.server import SimulatorConfig, SimulatorServer
from tests.sim import Sim
from tests.support.databases import app_database
from tests.support.prefect import default_api
from tests.support.process import flow_process_of
from tests.support.stack import Stack, served_stack
from tests.support.wait import wait_until

ACCOUNTS = 6


@pytest.fixture(scope="module")
def broker_server() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(seed=41, accounts=ACCOUNTS)) as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    broker_server: SimulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("shards")
    sim = Sim.of(broker_server)
    settings = {
        **sim.broker_mode(),
        "RECON_SHARDS": "2",
        "RECON_BROKER_RATE_LIMIT": "6000",
        "RECON_FETCH_RETRIES": "1",
    }
    with (
        app_database("sqlite", root) as url,
        served_stack(root, db="sqlite", url=url, simulator=broker_server, settings=settings) as s,
        default_api(s.prefect_url),
    ):
        yield s


def accounts_in(url: str) -> set[str]:
    with session_factory(url)() as session:
        return set(session.scalars(select(Position.account_id).distinct()))


def test_a_pass_runs_as_shards_recorded_under_the_parent(
    stack: Stack, broker_server: SimulatorServer, tmp_path: Path
) -> None:
    sim = Sim.of(broker_server)
    failing = sim.account_ids()[-1]
    sim.account_fault(failing, "fail", status=403)
    parent = stack.wait_final(stack.schedule_run().id, timeout=240)
    assert parent.state is not None and parent.state.is_completed(), parent.state
    with stack.prefect() as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])
            )
        )
        shard_deployment = client.read_deployment_by_name("reconcile-positions/shard")
    shards = [c for c in children if c.deployment_id == shard_deployment.id]
    assert len(shards) == 2
    assert all(c.state is not None and c.state.is_completed() for c in shards)
    assert sorted(len(c.parameters["account_ids"]) for c in shards) == [3, 3]
    # Every account's rows are the parent's; the failing one failed alone.
    rows = stack.sync_runs()
    assert {r.flow_run_id for r in rows} == {str(parent.id)}
    assert sorted(r.account_id for r in rows if r.status == "completed") == sorted(
        sim.account_ids()[:-1]
    )
    assert [r.account_id for r in rows if r.status == "failed"] == [failing]
    assert accounts_in(stack.url) == set(sim.account_ids()[:-1])
    with stack.api() as client:
        status = client.get("/api/admin/jobs/status").json()
    assert status["accounts"]["total"] == ACCOUNTS
    assert status["accounts"]["applied"] == ACCOUNTS - 1
    assert status["accounts"]["failedAccounts"][0]["accountId"] == failing


def test_a_shard_killed_midway_leaves_its_accounts_untouched_and_reported(
    stack: Stack, broker_server: SimulatorServer
) -> None:
    sim = Sim.of(broker_server)
    sim.reset()
    before = {r.id for r in stack.sync_runs()}
    sim.broker_rate_limit(120, burst=1)  # two requests a second: a shard takes seconds
    parent = stack.schedule_run()

    def running_shard() -> tuple[str, int] | None:
        with stack.prefect() as client:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])
                )
            )
        for child in children:
            if child.state is not None and child.state.is_running():
                pid = flow_process_of(stack.runner.pid, str(child.id))
                if pid is not None:
                    return str(child.id), pid
        return None

    shard_id, pid = wait_until(running_shard, 120, "a shard to be running")
    os.kill(pid, signal.SIGKILL)
    final = stack.wait_final(parent.id, timeout=240)
    assert final.state is not None and final.state.is_completed(), final.state
    assert stack.flow_run(shard_id).state_type == StateType.CRASHED
    # The accounts' rows (the killed shard's own crash is also recorded, as its run's).
    rows = [r for r in stack.sync_runs() if r.id not in before and r.account_id is not None]
    reported = [r for r in rows if r.status == "failed"]
    # The killed shard's accounts that it had not finished: failed, and why.
    assert reported, rows
    assert all(f"shard run {shard_id} ended" in (r.reason or "") for r in reported), [
        (r.account_id, r.flow_run_id, r.status, r.reason) for r in rows
    ]
    assert all(r.flow_run_id == str(parent.id) for r in rows)
    # Each account has exactly one outcome of this pass: applied or reported.
    assert sorted(r.account_id for r in rows) == sorted(sim.account_ids())
    errors = [
        e for e in stack.journal() if e.type == SYSTEM_ERROR and e.flow_run_id == str(parent.id)
    ]
    assert {e.account_id for e in errors} >= {r.account_id for r in reported}


def changed_events(prefect_url: str) -> list[dict[str, Any]]:
    """Every `recon.positions.changed` the Prefect server stored (its events API)."""
    body = {"filter": {"event": {"name": [EVENT_CHANGED]}}, "limit": 50}  # newest first
    answer = httpx.post(f"{prefect_url}/events/filter", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()["events"]  # type: ignore[no-any-return]


def test_the_trigger_answers_the_pass_and_each_changed_account_emits_its_event(
    stack: Stack, broker_server: SimulatorServer
) -> None:
    sim = Sim.of(broker_server)
    sim.reset()
    # A book moves only once it exists (one not read yet starts at step 0 when it is): read
    # every account's, then move them all; the pass after an earlier test's then changes.
    for account in sim.account_ids():
        read = httpx.get(
            f"{sim.base_url}/v1/trading/accounts/{account}/positions",
            auth=(sim.api_key, sim.secret_key),
            timeout=10,
        )
        assert read.status_code == 200, read.text
    sim.v1_step(3)  # most accounts change
    answer = stack.trigger(wait=True)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    run_id = body["flowRunId"]
    rows = [r for r in stack.sync_runs() if r.flow_run_id == run_id]
    assert len(rows) == ACCOUNTS and all(r.status == "completed" for r in rows)
    summaries = {str(r.account_id): (r.result or {})["summary"] for r in rows}
    totals = {k: sum(s[k] for s in summaries.values()) for k in body["result"]["summary"]}
    assert body["result"] == {"summary": totals}
    assert body["accounts"] == {
        "total": ACCOUNTS,
        "applied": ACCOUNTS,
        "failed": 0,
        "failedAccounts": [],
    }
    assert body["message"] == (
        f"Position sync completed: {totals['totalChanges']} changes over {ACCOUNTS} accounts"
        f" ({ACCOUNTS} applied, 0 failed)"
    )
    changed = {a for a, s in summaries.items() if s["totalChanges"]}
    assert changed, summaries
    ours = {r.id for r in rows}

    def emitted() -> list[dict[str, Any]] | None:
        found = [e for e in changed_events(stack.prefect_url) if e["payload"]["syncRunId"] in ours]
        return found if len(found) >= len(changed) else None

    events = wait_until(emitted, 60, "one event per changed account", interval=0.5)
    assert sorted(e["payload"]["accountId"] for e in events) == sorted(changed)
    for event in events:
        account = event["payload"]["accountId"]
        assert event["resource"]["prefect.resource.id"] == f"recon.account.{account}"
        assert event["resource"]["recon.account-id"] == account
        assert event["payload"]["summary"] == summaries[account]

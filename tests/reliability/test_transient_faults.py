"""Scenario 1: transient broker faults. 50 runs under a random fault mix, on SQLite and PostgreSQL.

Every run ends Completed or Failed in bounded time; the book always equals the last
snapshot that was applied; no journal entry is written twice; retries show in the logs.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from flows.reconcile import reconcile_positions
from recon.store.database import session_factory
from recon.store.journal import read_events
from tests.sim import Sim
from tests.support.books import broker_book, stored_book
from tests.support.wait import wait_until as wait_for

pytestmark = pytest.mark.usefixtures("prefect_server")
RUNS = 50
RETRIES = 3
FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("status", {"status": 429}),
    ("status", {"status": 500}),
    ("status", {"status": 502}),
    ("status", {"status": 503}),
    ("status", {"status": 504}),
    ("drop", {}),
    ("stall", {"delay": 2.0}),  # past the 1 s timeout below
]
PATHS = ["/v2/positions", "/v2/account", "/v2/clock"]


def test_fifty_runs_under_random_transient_faults(
    configured: str, sim: Sim, env: pytest.MonkeyPatch
) -> None:
    env.setenv("RECON_FETCH_RETRIES", str(RETRIES))
    env.setenv("RECON_HTTP_TIMEOUT_SECONDS", "1")
    chaos = random.Random(20261124)
    applied: dict[str, Decimal] = {}
    outcomes = {"Completed": 0, "Failed": 0}
    injected = retried = 0
    slowest = 0.0
    for _ in range(RUNS):
        sim.step()
        expected = broker_book(sim)  # read before arming: a fault applies to any client
        sim.reset_log()
        faults = chaos.choice([0, 1, 1, 2, 2, 3, 4, 5])  # > RETRIES + 1 attempts: must fail
        if faults:
            mode, options = chaos.choice(FAULTS)
            sim.fault(mode, path=chaos.choice(PATHS), count=faults, **options)
        started = time.monotonic()
        state = reconcile_positions(return_state=True)
        slowest = max(slowest, time.monotonic() - started)
        sim.clear_fault()
        outcomes[state.type.value.title()] += 1
        attempts = len(sim.requests("/v2/positions"))  # every attempt starts there
        injected += faults
        retried += max(0, attempts - 1)
        # Each fault spoils one attempt: a run survives exactly RETRIES of them, and makes
        # one attempt per fault plus the one that succeeds, never more than 1 + RETRIES.
        assert state.is_completed() == (faults <= RETRIES), (faults, state.message)
        assert attempts == min(faults, RETRIES) + 1, (faults, attempts, state.message)
        if state.is_completed():
            applied = expected
        else:
            assert "broker" in (state.message or "") or "JSON" in (state.message or "")
        assert stored_book(configured) == applied
        if faults and state.is_completed():
            run_id = state.state_details.flow_run_id
            # Logs reach the API in batches: wait for the retry line, do not sleep.
            wait_for(lambda r=run_id: _logged_retry(r), 15, "the retry in the run's logs")
    with session_factory(configured)() as session:
        events = read_events(session, 0, limit=10_000)
    keys = [(e.type, e.flow_run_id) for e in events]
    assert len(keys) == len(set(keys)), "a journal entry was written twice"
    assert outcomes["Completed"] >= RUNS // 2 and outcomes["Failed"] >= 1
    print(
        f"\n[transient faults] runs={RUNS} faults injected={injected} retries={retried} "
        f"completed={outcomes['Completed']} failed={outcomes['Failed']} "
        f"slowest run={slowest:.1f} s lost rows=0 duplicate entries=0"
    )


def _logged_retry(flow_run_id: Any) -> bool:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return any("will retry" in log.message or "Retrying" in log.message for log in logs)

"""Figure 9: one Broker API account's path without Prefect, stage by stage, in CPU time.

The steps of `flows/account.reconcile_one` (fetch, parse and check, lock and load the book,
diff, write with the journal) for every account of a simulator, each timed with
`time.thread_time()`: the CPU of this thread only. The simulator answers from its own
thread in this process, so its work is not counted; PostgreSQL's is not either. What is
left is what a flow-run process spends per account before Prefect's own part (the task
runs, the event), which figure 8 shows whole.

Two passes: the first load (every position created) and, after the simulator moved every
book one step, the pass again (what a pass of a quiet day looks like).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import database, median
from recon.broker.broker_api import BrokerApi
from recon.diff import diff_book
from recon.safety import check_removals, check_snapshot
from recon.schemas.accounts import AccountOutcome
from recon.schemas.events import PositionsChanged
from recon.schemas.result import RunResult
from recon.settings import Settings
from recon.snapshot import parse_snapshot
from recon.store.book import load_book
from recon.store.database import engine_for, session_factory
from recon.store.lock import account_lock
from recon.store.writer import apply_reconciliation
from simulator.server import SimulatorConfig, SimulatorServer
from tests.sim import Sim

log = logging.getLogger("benchmarks")
ACCOUNTS = 500
QUICK_ACCOUNTS = 100
WARM = 20  # accounts reconciled before the timing: imports, the pool, statement caches
STAGES = ("fetch", "parse", "load", "diff", "write")


def bench_account(dialect: str, accounts: int, root: Path) -> list[dict[str, Any]]:
    config = SimulatorConfig(seed=61, accounts=accounts + WARM, drift_seconds=0)
    with SimulatorServer(config) as served, database(dialect, root, "account") as db:
        sim = Sim.of(served)
        settings = Settings(  # type: ignore[call-arg]
            RECON_SOURCE="broker",
            ALPACA_BROKER_BASE_URL=sim.base_url,
            ALPACA_BROKER_API_KEY=sim.api_key,
            ALPACA_BROKER_SECRET_KEY=sim.secret_key,
            RECON_DATABASE_URL=db.url,
        )
        api = BrokerApi(settings, limit_name=None)  # no Prefect: no global rate limit
        ids, clock = api.account_ids(), api.clock()
        rows = []
        for name in ("first load", "again, one step later"):
            if rows:
                sim.v1_step(1)
            row = _pass(api, settings, ids, clock, db.url)
            rows.append({"figure": "account", "dialect": dialect, "pass": name} | row)
            log.info("account path %s %s: %.1f ms CPU/account", dialect, name, row["total_ms"])
        return rows


def _pass(
    api: BrokerApi, settings: Settings, ids: list[str], clock: Any, url: str
) -> dict[str, Any]:
    spent: dict[str, list[float]] = {stage: [] for stage in STAGES}
    changed = 0
    started = time.perf_counter()
    for i, account_id in enumerate(ids):
        stage = _Stages()
        with stage("fetch"):
            raw = api.broker_for(account_id, clock).fetch_snapshot()
        with stage("parse"):
            snapshot = parse_snapshot(raw)
            check_snapshot(snapshot, settings)
        lock = account_lock(engine_for(url), account_id)
        with stage("load"):
            lock.__enter__()
        try:
            with stage("load"), session_factory(url)() as session:
                book = load_book(session, account_id)
            with stage("diff"):
                diff = diff_book(book, snapshot)
                check_removals(diff, len(book), settings, allow=False)
                planned = RunResult.from_diff(
                    snapshot, diff, started_at=datetime.now(UTC), flow_run_id=None
                )
            with stage("write"):
                final = apply_reconciliation(session_factory(url), diff, planned)
        finally:
            with stage("write"):
                lock.__exit__(None, None, None)
        with stage("write"):  # what the flow hands on: the outcome, the event's payload
            AccountOutcome.applied(final)
            if final.total_changes:
                PositionsChanged.of(final).dump()
        if i >= WARM:
            changed += bool(final.total_changes)
            for name in STAGES:
                spent[name].append(stage.times[name])
    counted = len(ids) - WARM
    row: dict[str, Any] = {
        "accounts": counted,
        "changed": changed,
        "wall_s": time.perf_counter() - started,
    }
    for name in STAGES:
        row[f"{name}_ms"] = 1000 * sum(spent[name]) / counted
    row["total_ms"] = sum(row[f"{name}_ms"] for name in STAGES)
    totals = [sum(spent[name][i] for name in STAGES) for i in range(counted)]
    row["median_ms"] = 1000 * (median(totals) or 0.0)
    return row


class _Stages:
    """One account's CPU time (this thread's) by stage."""

    def __init__(self) -> None:
        self.times = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        before = time.thread_time()
        try:
            yield
        finally:
            self.times[stage] += time.thread_time() - before

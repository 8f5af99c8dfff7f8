"""Figure 8: a full Broker API pass over many accounts at the rate limit, on 1, 2 and 4 workers.

The simulator's Broker API with N generated accounts (≈ 10 positions each), limited to
6,000 requests a minute, and `RECON_BROKER_RATE_LIMIT` the same; each configuration on a
new Prefect server, a new app database (so every pass is a first load: every account's
positions created), `recon serve` and, with K > 1, `RECON_SHARDS=K` and K process workers
(`benchmarks/broker_procs.py`). Measured per pass:

- **wall**: the parent run's start → Completed, as Prefect recorded it;
- **floor**: the `/v1` requests the pass made (counted at the simulator, 429s excluded) ÷
  the limit: no client can finish sooner;
- **429s**: the simulator's answers over its limit; failed accounts (and why) from `sync_runs`;
- **fetch → commit**: per account, its last request's arrival at the simulator → its
  `sync_runs` row's commit (with RECON_BROKER_FETCH_GROUP > 1 it includes waiting for the
  group's earlier accounts to apply), median; **DB share**: PostgreSQL's part of the CPU;
- **peak RSS** of each flow-run process (VmHWM polled from /proc): of the shards' processes
  on the workers, and of the parent's on the runner;
- **CPU** per account, by where it was spent (`benchmarks/cpu.py`): the flow-run
  processes, the Prefect server, PostgreSQL (the app's and, on PostgreSQL, the Prefect
  server's database), this process (the simulator); and the machine's busy share during
  the pass, so a pass slower than its floor shows whether it waited or ran out of cores.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterTextSearch
from sqlalchemy import select

from benchmarks.broker_procs import Peaks, pass_stack
from benchmarks.common import Database, database, median, ratio
from benchmarks.cpu import Machine, postgres_seconds, tree_seconds
from recon.settings import Settings
from recon.store.database import session_factory
from recon.store.models import SyncRun
from simulator.faults import RequestLog
from simulator.server import SimulatorConfig, SimulatorServer
from tests.support.env import stack_env
from tests.support.wait import wait_until

log = logging.getLogger("benchmarks")
PER_MINUTE = 6_000
SIZES = [1_000, 10_000]
QUICK_SIZES = [100]
WORKERS = [1, 2, 4]
QUICK_WORKERS = [1, 2]
PARALLELISM = [8]  # RECON_BROKER_PARALLELISM, its default: threads per flow-run process
ACCOUNT_IN_PATH = re.compile(r"^/v1/trading/accounts/([^/]+)/")
ACQUISITIONS = re.compile(r"\"rateLimitAcquisitions\": (\d+)")
FETCH_GROUP_DEFAULT = Settings.model_fields["broker_fetch_group"].default


def bench_broker(dialect: str, args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n in args.broker_accounts:
        config = SimulatorConfig(seed=53, accounts=n, broker_rate_limit=PER_MINUTE)
        with SimulatorServer(config) as served:
            # Our own simulator, in this process: a request log long enough for a pass.
            served.app.simulator.log = RequestLog(limit=4 * n + 1_000)
            for workers in args.broker_workers:
                for threads in args.broker_parallelism:
                    name = f"{n}-{workers}-{threads}"
                    try:
                        row = _pass(n, workers, threads, served, dialect, root, args)
                    finally:  # the processes' logs, kept beside the JSON
                        for found in (root / f"broker-{dialect}-{name}").glob("*.log"):
                            shutil.copy(found, args.out.parent / f"broker-{name}-{found.name}")
                    log.info(
                        "broker n=%d workers=%d threads=%d: %.1f s (floor %.1f s), %d 429s",
                        n,
                        workers,
                        threads,
                        row["wall_s"],
                        row["floor_s"],
                        row["throttled"],
                    )
                    rows.append(row)
    return rows


def _settings(served: SimulatorServer, workers: int, threads: int) -> dict[str, str]:
    return {
        "RECON_SOURCE": "broker",
        "ALPACA_BROKER_BASE_URL": served.base_url,
        "ALPACA_BROKER_API_KEY": served.config.api_key,
        "ALPACA_BROKER_SECRET_KEY": served.config.secret_key,
        "RECON_BROKER_RATE_LIMIT": str(PER_MINUTE),
        "RECON_SHARDS": str(workers),
        "RECON_BROKER_PARALLELISM": str(threads),
        "RECON_FETCH_RETRIES": "2",
        # A first load creates every position: no removals, but no cap in the way either.
        "RECON_MAX_REMOVALS": "1000000",
        # As `recon up` runs it (the CLI's own default is WARNING): the runs' INFO lines,
        # the acquisitions among them, reach the Prefect API.
        "PREFECT_LOGGING_LEVEL": "INFO",
    }


def _pass(
    n: int,
    workers: int,
    threads: int,
    served: SimulatorServer,
    dialect: str,
    root: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    home = root / f"broker-{dialect}-{n}-{workers}-{threads}"
    home.mkdir()
    sim = served.app.simulator
    with database(dialect, root, f"broker{n}x{workers}x{threads}") as db:
        env = stack_env(home, "", served, db.url) | _settings(served, workers, threads)
        if args.broker_fetch_group:
            env["RECON_BROKER_FETCH_GROUP"] = str(args.broker_fetch_group)
        with pass_stack(home, env, workers, args.broker_prefect_db) as stack:
            watched = [w.pid for w in stack.workers] or [stack.runner.pid]
            peaks = Peaks([*watched, stack.runner.pid])
            peaks.start()
            seq0 = max((e["seq"] for e in sim.log.entries()), default=0)
            throttled0 = sim.rate_limit.throttled
            before = _cpu(stack.prefect.pid)
            try:
                with stack.client() as client:
                    run = client.create_flow_run_from_deployment(stack.deployment_id)  # type: ignore[arg-type]
                final = wait_until(
                    lambda: _final(stack.client(), str(run.id)), 1_800, "the pass", 1.0
                )
            finally:
                peaks.stop()
            cpu = _cpu_since(before, _cpu(stack.prefect.pid), peaks, n)
            cpu["acquisitions"] = _acquisitions(stack.client, 1 + (workers if workers > 1 else 0))
        entries = [e for e in sim.log.entries() if e["seq"] > seq0]
        throttled = sim.rate_limit.throttled - throttled0
        row = _measure(n, workers, threads, db, final, entries, throttled)
    shard_peaks = [mb for pid in watched for mb in peaks.flow_runs(pid)] if workers > 1 else []
    parent_peaks = peaks.flow_runs(stack.runner.pid)
    return (
        row
        | cpu
        | {
            "dialect": dialect,
            "prefect_db": args.broker_prefect_db,
            # The pass's own environment has no RECON_* of this shell's: unset is the default.
            "fetch_group": args.broker_fetch_group or FETCH_GROUP_DEFAULT,
            "worker_peak_rss_mb": max(shard_peaks or parent_peaks, default=None),
            "shard_peaks_mb": shard_peaks,
            # Workers that ran at least one shard (each runs one at a time: `--limit 1`).
            "workers_used": sum(1 for pid in watched if peaks.flow_runs(pid)) if workers > 1 else 1,
            "parent_peak_rss_mb": max(parent_peaks, default=None),
        }
    )


def _acquisitions(client: Callable[[], SyncPrefectClient], runs: int) -> int:
    """The pass's rate-limit acquisitions, as each of its `runs` flow runs (the parent and
    every shard) logged its own; the server is the pass's own, so every such log is."""
    query = LogFilter(text=LogFilterTextSearch(query="rateLimitAcquisitions"))

    def logged() -> list[int] | None:
        with client() as prefect:
            found = [
                int(m)
                for log in prefect.read_logs(query)
                for m in ACQUISITIONS.findall(log.message)
            ]
        return found if len(found) >= runs else None

    return sum(wait_until(logged, 60, "the runs' acquisition logs", 0.5))


def _cpu(prefect_pid: int) -> dict[str, Any]:
    return {
        "machine": Machine.now(),
        "prefect": tree_seconds(prefect_pid),
        "postgres": postgres_seconds(),
        "simulator": time.process_time(),  # this process: the simulator's threads, mostly
    }


def _cpu_since(
    before: dict[str, Any], after: dict[str, Any], peaks: Peaks, n: int
) -> dict[str, Any]:
    """CPU milliseconds per account by where they went, and the machine's busy share."""
    spent = {key: after[key] - before[key] for key in ("prefect", "postgres", "simulator")}
    spent["flow"] = sum(peaks.cpu.values())
    per_account = {f"cpu_{key}_ms": seconds * 1000 / n for key, seconds in spent.items()}
    total = sum(spent.values())
    return per_account | {
        "cpu_total_ms": total * 1000 / n,
        # The database's share: PostgreSQL's CPU (the app's and the Prefect server's) of all.
        "db_share": spent["postgres"] / total if total else None,
        "machine_busy": after["machine"].share_since(before["machine"]),
    }


def _final(client: SyncPrefectClient, run_id: str) -> Any:
    with client:
        run = client.read_flow_run(run_id)  # type: ignore[arg-type]
    return run if run.state is not None and run.state.is_final() else None


def _measure(
    n: int,
    workers: int,
    threads: int,
    db: Database,
    run: Any,
    entries: list[dict[str, Any]],
    throttled: int,
) -> dict[str, Any]:
    v1 = [e for e in entries if e["path"].startswith("/v1/")]
    admitted = [e for e in v1 if e["status"] != 429]
    last_request: dict[str, datetime] = {}
    for entry in admitted:
        found = ACCOUNT_IN_PATH.match(entry["path"])
        if found:
            at = datetime.fromisoformat(entry["time"])
            last_request[found[1]] = max(last_request.get(found[1], at), at)
    with session_factory(db.url)() as session:
        query = select(SyncRun).where(SyncRun.flow_run_id == str(run.id))
        rows = list(session.scalars(query))
    applied = [r for r in rows if r.status == "completed" and r.account_id]
    failed = [r for r in rows if r.status != "completed" and r.account_id]
    db_seconds = [
        (_utc(r.finished_at) - last_request[r.account_id]).total_seconds()
        for r in applied
        if r.account_id in last_request
    ]
    wall = (run.end_time - run.start_time).total_seconds() if run.end_time else None
    floor = len(admitted) / (PER_MINUTE / 60)
    positions = sum(r.created_count + r.updated_count + r.unchanged_count for r in applied)
    return {
        "figure": "broker",
        "accounts": n,
        "workers": workers,
        "state": run.state.name if run.state else None,
        "positions_per_account": positions / len(applied) if applied else None,
        "requests": len(admitted),
        "floor_s": floor,
        "wall_s": wall,
        "wall_over_floor": ratio(wall, floor),
        "throttled": throttled,
        "applied": len(applied),
        "failed": len(failed),
        "failed_429": sum("429" in (r.reason or "") or "rate" in (r.reason or "") for r in failed),
        "failed_reasons": sorted({(r.reason or "")[:200] for r in failed})[:5],
        "db_median_ms": (median(db_seconds) or 0) * 1000,
        "parallelism": threads,
    }


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)

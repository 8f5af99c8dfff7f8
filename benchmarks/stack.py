"""The served stack (Prefect server, `recon serve`, `recon api`, simulator) and figure 3:
trigger to event. The stack is the tests' own (`tests.support.stack`)."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy.engine import make_url

from benchmarks import data
from benchmarks.common import PG_ADMIN_URL, Database, database, median, percentile
from benchmarks.e2e_procs import Listener
from simulator.server import SimulatorConfig, SimulatorServer
from tests.sim import Sim
from tests.support.env import base_env
from tests.support.prefect import PrefectServer
from tests.support.stack import Stack, served_stack
from tests.support.wait import wait_until

log = logging.getLogger("benchmarks")
STREAM = "/api/stream/events"
TRIGGER_SIZE = 100  # positions in the simulator for the trigger runs


@contextmanager
def prefect_server(
    root: Path, backend: str = "sqlite", settings: dict[str, str] | None = None
) -> Iterator[PrefectServer]:
    """`prefect server start` on its default SQLite file (as `recon up` runs it), or on a
    PostgreSQL database of its own (what Prefect recommends for production); `settings`:
    more of its environment."""
    if backend == "sqlite":
        home = root / "prefect-home"
        server = PrefectServer(home, root, base_env(home) | (settings or {}))
        try:
            yield server
        finally:
            server.stop()
        return
    name = f"bench_prefect_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    home = root / "prefect-home-postgresql"
    logs = root / "prefect-postgresql"
    logs.mkdir(exist_ok=True)
    env = base_env(home) | {
        "PREFECT_API_DATABASE_CONNECTION_URL": url.render_as_string(hide_password=False)
    }
    env |= settings or {}
    try:
        server = PrefectServer(home, logs, env)
        try:
            yield server
        finally:
            server.stop()
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def simulator_server() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(seed=7, drift_seconds=0)) as server:
        yield server


@contextmanager
def simulator() -> Iterator[Sim]:
    with simulator_server() as server:
        yield Sim.of(server)


def _idle(client: httpx.Client) -> bool:
    job = client.get("/api/admin/jobs/status").json()["positionReconciliation"]
    return not (job["isRunning"] or job.get("isPending"))


def _trigger(client: httpx.Client, flip: Callable[[], None]) -> tuple[str, float, float]:
    """POST until accepted; returns (run id, t0s). A 409 means the cron run (every five
    minutes) holds the slot: once it is over it has synced what the simulator serves, so
    the other state is loaded before trying again, and our run still has changes."""
    for _ in range(10):
        t0, wall = time.monotonic(), time.time()
        response = client.post("/api/admin/jobs/sync-positions", params={"wait": "false"})
        if response.status_code == 202:
            return response.json()["flowRunId"], t0, wall
        if response.status_code != 409:
            raise AssertionError(f"trigger answered {response.status_code}: {response.text}")
        log.info("trigger: busy (a scheduled run); waiting for it")
        wait_until(partial(_idle, client), 120, "the scheduled run", interval=0.5)
        flip()
    raise AssertionError("the deployment stayed busy")


def import_seconds(runs: int = 5) -> float | None:
    """Median time a new Python process takes to import Prefect's engine and the flow module:
    the part of trigger → Running that each flow run's fresh process spends before it starts."""
    code = (
        "import time; t = time.perf_counter(); import prefect.engine, flows.reconcile; "
        "print(time.perf_counter() - t)"
    )
    command = [sys.executable, "-c", code]
    root = Path(__file__).resolve().parents[1]
    samples = []
    for _ in range(runs):
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)  # noqa: S603 (our own interpreter)
        samples.append(float(done.stdout))
    return median(samples)


def _finished(run_id: str) -> bool:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state  # type: ignore[arg-type]
    return bool(state and state.is_final())


def trigger_runs(base: str, tokens: dict[str, str], sim: Sim, runs: int) -> dict[str, Any]:
    first = data.book(TRIGGER_SIZE)
    states = [[data.raw(r) for r in first], [data.raw(r) for r in data.next_snapshot(first)]]
    listener = Listener(base, tokens["events"])
    listener.start()
    assert listener.connected.wait(15), "the SSE listener did not connect"
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    latencies, to_pending, to_running, running_to_event, totals = [], [], [], [], []
    details: list[dict[str, Any]] = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        loaded = [0]

        def flip() -> None:
            loaded[0] = 1 - loaded[0]
            sim.load(states[loaded[0]])

        for i in range(runs + 1):  # run 0 creates the book: a warm-up, untimed
            flip()
            run_id, t0, wall = _trigger(client, flip)
            first = wait_until(partial(listener.messages.get, run_id), 120, "the event")[0]
            arrived = (first.monotonic, first.wall)
            wait_until(partial(_finished, run_id), 120, "the run to finish", interval=0.25)
            with get_client(sync_client=True) as prefect:
                run = prefect.read_flow_run(run_id)  # type: ignore[arg-type]
                history = prefect.read_flow_run_states(run_id)  # type: ignore[arg-type]
            log.info("trigger #%d: %.2f s to the event", i, arrived[0] - t0)
            if i == 0:
                continue
            latencies.append(arrived[0] - t0)
            detail: dict[str, Any] = {"run": run_id, "event_s": arrived[0] - t0}
            if run.start_time and run.end_time:
                to_running.append(run.start_time.timestamp() - wall)
                # Pending: the runner picked the run up and is about to start its process.
                pending = [st.timestamp for st in history if st.type == StateType.PENDING]
                if pending:
                    to_pending.append(pending[0].timestamp() - wall)
                    detail["pending_s"] = to_pending[-1]
                running_to_event.append(arrived[1] - run.start_time.timestamp())
                totals.append((run.end_time - run.start_time).total_seconds())
                detail |= {"running_s": to_running[-1], "running_to_event_s": running_to_event[-1]}
            details.append(detail)  # which part a slow run spent its time in
    return {
        "runs": len(latencies),
        "median_s": median(latencies),
        "p95_s": percentile(latencies, 95),
        "min_s": min(latencies, default=None),
        "to_pending_s": median(to_pending),
        "to_running_s": median(to_running),
        "running_to_event_s": median(running_to_event),
        "flow_total_s": median(totals),
        "imports_s": import_seconds(),
        "samples": latencies,
        "runs_detail": details,
    }


BENCH_KEYS = {"admin": ["admin:write", "admin:read"], "events": ["events:read"]}


@contextmanager
def bench_stack(
    server: PrefectServer, dialect: str, root: Path, name: str, settings: dict[str, str]
) -> Iterator[tuple[SimulatorServer, Database, Stack]]:
    """A simulator, an app database of `dialect` and the served stack on them (its files in
    `root/name-dialect`), with an `admin` and an `events` key, against Prefect `server`."""
    home = root / f"{name}-{dialect}"
    home.mkdir()
    with (
        simulator_server() as served,
        database(dialect, root, name) as db,
        temporary_settings({PREFECT_API_URL: server.api_url}),
        served_stack(
            home,
            db=dialect,
            url=db.url,
            simulator=served,
            prefect=server,
            keys=BENCH_KEYS,
            settings=settings,
        ) as stack,
    ):
        yield served, db, stack


def bench_served(
    server: PrefectServer, dialect: str, args: argparse.Namespace, root: Path
) -> list[dict[str, Any]]:
    from benchmarks.fanout import bench_fanout

    rows: list[dict[str, Any]] = []
    # The fan-out's clients all share one key: lift the per-key stream cap (500).
    lifted = {
        "RECON_STREAM_MAX_CONNECTIONS": "20000",
        "RECON_STREAM_MAX_CONNECTIONS_PER_KEY": "20000",
    }
    with bench_stack(server, dialect, root, "stack", lifted) as (served, db, stack):
        sim = Sim.of(served)
        if "trigger" in args.only:
            result = trigger_runs(stack.base, stack.tokens, sim, args.trigger_runs)
            rows.append({"figure": "trigger", "dialect": dialect, **result})
        if "fanout" in args.only:
            result = bench_fanout(
                stack.base, stack.tokens["events"], db.url, stack.sidecar.pid, args
            )
            rows.append({"figure": "fanout", "dialect": dialect, **result})
    return rows

"""Figure 5: end to end at scale. A whole run, as an operator starts one, at 10k to 100k positions.

The stack as `recon up` runs it (a Prefect server on its SQLite file, `recon serve`, `recon
api`) and the simulator serving N positions (`PUT /_sim/positions`). Each size is measured
as a *first load* (empty book, N created) and a *change run* (10% re-sized, 1% closed, 1%
opened: `benchmarks/data.py`), two ways: `recon sync --json` (process start → exit), and a
trigger through the sidecar (POST → flow run Completed). Both are also timed to the run's
`position:updated` at an SSE client, and cut by step from what Prefect recorded
(`benchmarks/e2e_split.py`). Beside them, the naive script's whole process on the same data.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from prefect.client.orchestration import get_client

from benchmarks import data
from benchmarks.common import Database
from benchmarks.e2e_procs import Listener, Message, idle, last_json, run_process, trigger
from benchmarks.e2e_split import split
from benchmarks.stack import bench_stack
from recon.store.database import engine_for
from tests.sim import Sim
from tests.support.prefect import PrefectServer
from tests.support.wait import wait_until as wait_for

log = logging.getLogger("benchmarks")
ROOT = Path(__file__).resolve().parents[1]
SIZES = [10_000, 50_000, 100_000]
QUICK_SIZES = [1_000, 5_000]
SYNC = ["-m", "cli", "sync", "--json"]
NAIVE = ["-m", "benchmarks.naive_script"]
FAILED = object()  # the run ended without its event


class SizeBench:
    """The measurements of one size on one database, against one running stack."""

    def __init__(self, n: int, db: Database, sim: Sim, env: dict[str, str], ctx: Context) -> None:
        self.n, self.db, self.sim, self.env, self.ctx = n, db, sim, env, ctx
        first = data.book(n)
        after = data.next_snapshot(first)
        self.states = {"first": [data.raw(r) for r in first], "after": [data.raw(r) for r in after]}
        self.expected = {"first": (n, 0, 0), "change": data.Scenario(first, after).expected}
        self.book: str | None = None  # which state the table holds, when known

    def _prepare(self, kind: str) -> None:
        if kind == "change" and self.book != "first":
            self._prepare("first")  # the book must hold the first state: sync it, untimed
            done = run_process(SYNC, self.env, self.ctx.home / "prep.out", ROOT)
            assert done.returncode == 0, done.stdout[-2000:]
        elif kind == "first":
            # The book only: the journal keeps its rows, as the sidecar's tail expects ids
            # to grow (SQLite would hand out deleted ids again).
            with engine_for(self.db.url).begin() as connection:
                connection.execute(sa.text("DELETE FROM positions"))
        self.book = None
        self.sim.load(self.states["first" if kind == "first" else "after"])

    def _arrived(self, run_id: str) -> list[Message] | object | None:
        """Every part of the run's event, or FAILED once the run ended without one."""
        got = self.ctx.listener.complete(run_id)
        if got:
            return got
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state  # type: ignore[arg-type]
        if state and state.is_final() and not state.is_completed():
            log.info("e2e: run %s ended %s: %s", run_id, state.name, state.message)
            return FAILED
        return None

    def _counts(self, run_id: str) -> tuple[int, ...] | None:
        query = sa.text(
            "SELECT created_count, updated_count, removed_count FROM sync_runs "
            "WHERE flow_run_id = :id AND status = 'completed'"
        )
        with engine_for(self.db.url).connect() as connection:
            row = connection.execute(query, {"id": run_id}).first()
        return tuple(row) if row else None

    def measure(self, mode: str, kind: str) -> dict[str, Any]:
        """One timed run; again (up to 3 times) if the five-minute cron run got in its way."""
        for attempt in range(3):
            self._prepare(kind)
            row = self._once(mode, kind)
            if row is not None:
                self.book = "first" if kind == "first" else "after"
                log.info(
                    "e2e %s n=%d %s %s: %.2f s", self.db.dialect, self.n, kind, mode, row["whole_s"]
                )
                return row
            log.info("e2e %s %s: a scheduled run interfered (#%d), again", mode, kind, attempt)
            wait_for(lambda: idle(self.ctx.client), 300, "the scheduled run", interval=0.5)
        raise AssertionError(f"{mode} {kind} at {self.n}: three attempts interfered with")

    def _once(self, mode: str, kind: str) -> dict[str, Any] | None:
        row: dict[str, Any] = {"figure": "e2e", "dialect": self.db.dialect, "n": self.n}
        row |= {"run": kind, "mode": mode}
        if mode == "naive":
            done = run_process(NAIVE, self.env, self.ctx.home / "naive.out", ROOT)
            assert done.returncode == 0, done.stdout[-2000:]
            got = last_json(done.stdout)
            if (got["created"], got["updated"], got["removed"]) != self.expected[kind]:
                return None
            return row | {"whole_s": done.seconds, "peak_rss_mb": done.peak_rss_mb}
        if mode == "sync":
            command = SYNC
            if self.ctx.profile:
                out = self.ctx.profile / f"{self.db.dialect}-{self.n}-{kind}.prof"
                command = ["-m", "cProfile", "-o", str(out), *SYNC]
            done = run_process(command, self.env, self.ctx.home / "sync.out", ROOT)
            if done.returncode == 3:  # another sync held the lock
                return None
            assert done.returncode == 0, done.stdout[-2000:]
            run_id, wall, start = str(last_json(done.stdout)["flowRunId"]), *done.started_pair
            row |= {"whole_s": done.seconds, "peak_rss_mb": done.peak_rss_mb}
        else:
            accepted = trigger(self.ctx.client)
            if accepted is None:
                return None
            run_id, wall, start = accepted
        messages = wait_for(lambda: self._arrived(run_id), 600, "the run's position:updated")
        if messages is FAILED:
            return None
        if self._counts(run_id) != self.expected[kind]:
            return None
        steps = split(run_id, wall)
        completed = steps.pop("completed_at")
        if mode == "trigger":
            row["whole_s"] = completed - wall  # trigger → Completed
        else:
            row["completed_to_exit_s"] = wall + row["whole_s"] - completed
        return (
            row
            | steps
            | {
                "to_event_s": max(m.monotonic for m in messages) - start,
                "messages": len(messages),
                "largest_message_kb": max(m.size for m in messages) / 1024,
                "details": sum(m.details for m in messages),
            }
        )


class Context:
    def __init__(self, home: Path, client: httpx.Client, listener: Listener, profile: Path | None):
        self.home, self.client, self.listener, self.profile = home, client, listener, profile


def _size(
    n: int, db: Database, sim: Sim, env: dict[str, str], ctx: Context, args: argparse.Namespace
) -> list[dict[str, Any]]:
    bench = SizeBench(n, db, sim, env, ctx)
    rows = [bench.measure(mode, kind) for mode in args.e2e_modes for kind in ("first", "change")]
    if n <= args.e2e_naive_max:
        naive = {kind: bench.measure("naive", kind) for kind in ("first", "change")}
        for row in rows:
            if row["mode"] == "sync":
                row["naive_s"] = naive[row["run"]]["whole_s"]
                row["naive_over_ours"] = row["naive_s"] / row["whole_s"]
        rows += naive.values()
    return rows


def bench_e2e(
    server: PrefectServer, dialect: str, args: argparse.Namespace, root: Path
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    home = root / f"e2e-{dialect}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    settings = {
        "RECON_FETCH_RETRIES": "0",
        "RECON_HTTP_TIMEOUT_SECONDS": "120",
        # The change run closes 1% of the book: 1,000 at 100k, over the default cap of 25
        # removals that an operator of a book this size raises.
        "RECON_MAX_REMOVALS": "1000000",
    }
    with bench_stack(server, dialect, root, "e2e", settings) as (served, db, stack):
        sim, base, env = Sim.of(served), stack.base, stack.env
        headers = {"Authorization": f"Bearer {stack.tokens['admin']}"}
        try:
            listener = Listener(base, stack.tokens["events"])
            listener.start()
            assert listener.connected.wait(15), "the SSE listener did not connect"
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                ctx = Context(home, client, listener, args.profile)
                for n in args.e2e_sizes:
                    rows += _size(n, db, sim, env, ctx, args)
        finally:
            for name in ("runner.log", "sidecar.log"):  # kept beside the JSON for a failed run
                shutil.copy(home / name, args.out.parent / f"e2e-{dialect}-{name}")
    return rows

"""Figure 7: the one-shot `recon sync` (no `recon up`, no PREFECT_API_URL), and the status
endpoint's latency on the served stack.

*One-shot*: `recon sync --json` as a new process on one data directory, against the
simulator (in this process, 100 positions). *Background, first* starts the data
directory's background Prefect server (cli/background.py); *background, again* are the
runs after it, which find it running (the median is the figure). *Temporary server* is
`RECON_BACKGROUND_SERVER=false`: Prefect's temporary server per process, what every
`recon sync` did before. `recon down` stops the server afterwards.

*Status*: `GET /api/admin/jobs/status` against `recon api` on the served stack once the
deployment has runs (triggered, waited for); one client, sequential requests on a kept-alive
connection after a warm-up (the key's admission is cached 2 s, so this is the route). Two
stacks side by side: the default, where the replica keeps its Prefect reads until an event
(`hits`: answers from the kept copy, by `Cache-Status`), and `RECON_STATUS_CACHE_SECONDS=0`,
every call reading Prefect (what every call did before).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks import data
from benchmarks.common import median, percentile
from benchmarks.stack import bench_stack, simulator_server
from tests.sim import Sim
from tests.support.env import OURS, scrubbed_env
from tests.support.prefect import PrefectServer

log = logging.getLogger("benchmarks")
SIZE = 100
STATUS = "/api/admin/jobs/status"


def _sync(env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "sync", "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise AssertionError(f"recon sync exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds


def bench_oneshot(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    home = root / "oneshot"
    home.mkdir()
    data_dir = home / "data"
    with simulator_server() as served:
        sim = Sim.of(served)
        sim.load([data.raw(r) for r in data.book(SIZE)])
        env = scrubbed_env((*OURS, "PREFECT_")) | {
            "RECON_DATA_DIR": str(data_dir),
            "ALPACA_BASE_URL": sim.base_url,
            "ALPACA_API_KEY": sim.api_key,
            "ALPACA_SECRET_KEY": sim.secret_key,
        }
        repeat = max(args.repeat, 5)
        try:
            first = _sync(env, home)
            log.info("one-shot: first (starts the background server) %.2f s", first)
            again = [_sync(env, home) for _ in range(repeat)]
            log.info("one-shot: again %s", ", ".join(f"{s:.2f}" for s in again))
        finally:
            subprocess.run(
                [sys.executable, "-m", "cli", "down"], env=env, cwd=home, capture_output=True
            )
        temporary_env = env | {"RECON_BACKGROUND_SERVER": "false"}
        temporary = [_sync(temporary_env, home) for _ in range(min(repeat, 3))]
        log.info("one-shot: temporary server %s", ", ".join(f"{s:.2f}" for s in temporary))
    return [
        {
            "figure": "oneshot",
            "dialect": "sqlite",
            "how": "background, first",
            "runs": 1,
            "median_s": first,
        },
        {
            "figure": "oneshot",
            "dialect": "sqlite",
            "how": "background, again",
            "runs": len(again),
            "median_s": median(again),
            "max_s": max(again),
            "samples": again,
        },
        {
            "figure": "oneshot",
            "dialect": "sqlite",
            "how": "temporary server (before)",
            "runs": len(temporary),
            "median_s": median(temporary),
            "max_s": max(temporary),
            "samples": temporary,
        },
    ]


# Side by side: the replica's kept copy (the default), and every call reading Prefect.
STATUS_MODES = {
    "kept until an event (default)": {},
    "read every call (0 s)": {"RECON_STATUS_CACHE_SECONDS": "0"},
}


def bench_status(
    server: PrefectServer, dialect: str, args: argparse.Namespace, root: Path
) -> list[dict[str, Any]]:
    requests = 50 if args.quick else 200
    rows = []
    for i, (mode, settings) in enumerate(STATUS_MODES.items()):
        with bench_stack(server, dialect, root, f"status{i}", settings) as (served, _, stack):
            Sim.of(served).load([data.raw(r) for r in data.book(SIZE)])
            headers = {"Authorization": f"Bearer {stack.tokens['admin']}"}
            with httpx.Client(base_url=stack.base, headers=headers, timeout=60) as client:
                for _ in range(3):  # runs to count, a last run with a result
                    client.post("/api/admin/jobs/sync-positions", params={"wait": "true"})
                for _ in range(10):
                    client.get(STATUS).raise_for_status()
                samples, hits = [], 0
                for _ in range(requests):
                    start = time.perf_counter()
                    response = client.get(STATUS).raise_for_status()
                    samples.append(time.perf_counter() - start)
                    hits += response.headers.get("cache-status") == "recon; hit"
        log.info("status on %s, %s: median %.1f ms", dialect, mode, (median(samples) or 0) * 1000)
        rows.append(
            {
                "figure": "status",
                "dialect": dialect,
                "mode": mode,
                "requests": len(samples),
                "hits": hits,
                "median_s": median(samples),
                "p95_s": percentile(samples, 95),
                "min_s": min(samples),
            }
        )
    return rows

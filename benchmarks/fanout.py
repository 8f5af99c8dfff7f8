"""Figure 4: one journal commit to the last of N concurrent SSE clients of one sidecar.

The clients run in another process (`benchmarks.sse_clients`); this process commits the
journal rows, the way a flow run's persist step does, and notes when each commit returned.
Both sides read CLOCK_MONOTONIC, which is one clock for the whole machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import median, percentile, rss_mb
from recon.store.database import session_factory
from recon.store.journal import POSITION_UPDATED, SOURCE, append_event

log = logging.getLogger("benchmarks")


def payload(k: int) -> dict[str, Any]:
    """A reconciliation's `position:updated` data with ten changed positions (~2 KB)."""
    details = [
        {
            "assetId": f"00000000-0000-4000-8000-{i:012d}",
            "symbol": f"B{i:06d}",
            "change": "updated",
            "fields": {"qty": {"before": f"{10 + i}", "after": f"{11 + i}"}},
        }
        for i in range(10)
    ]
    return {
        "type": "reconciliation",
        "created": [],
        "updated": [d["symbol"] for d in details],
        "removed": [],
        "timestamp": datetime.now(UTC).isoformat(),
        "source": SOURCE,
        "details": details,
        "accountId": "bench-account-0001",
        "flowRunId": f"bench-{k}",
    }


def commit(url: str, data: dict[str, Any]) -> tuple[int, float]:
    with session_factory(url).begin() as session:
        event_id = append_event(
            session, type=POSITION_UPDATED, payload=data, account_id="bench-account-0001"
        )
    return event_id, time.monotonic()


def _expect(proc: subprocess.Popen[str], word: str, timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.strip() == word:
                return
            if not line:
                break
    raise AssertionError(f"the SSE clients never reported {word!r}")


def bench_fanout(
    base: str, token: str, url: str, sidecar_pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    rss_idle = rss_mb(sidecar_pid)
    out = Path(tempfile.mkstemp(prefix="recon-fanout-", suffix=".json")[1])
    command = [sys.executable, "-m", "benchmarks.sse_clients", "--base", base, "--token", token]
    command += ["--clients", str(args.clients), "--out", str(out)]
    proc = subprocess.Popen(  # noqa: S603 (our own module, fixed arguments)
        command,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    commits: dict[int, float] = {}
    try:
        _expect(proc, "connected", 180)
        commit(url, payload(-1))  # the warm-up: every client has subscribed once it has it
        _expect(proc, "warm", 60)
        rss_clients = rss_mb(sidecar_pid)
        rng = random.Random(3)  # noqa: S311 (jitter against the relay's poll phase)
        for k in range(args.events):
            time.sleep(0.4 + rng.random() * 0.5)
            event_id, at = commit(url, payload(k))
            commits[event_id] = at
        # Apart from the last timed event: if both came in one poll, each client's task
        # would send both before the next client's turn, and the clients would hang up
        # (1,000 disconnects to handle) while the last event is still being fanned out.
        time.sleep(1.0)
        commit(url, payload(-2) | {"benchStop": True})
        proc.wait(120)
        result = json.loads(out.read_text())
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        out.unlink(missing_ok=True)
    receipts = {int(k): v for k, v in result["receipts"].items()}
    last, every, short, extra = [], [], 0, 0
    for event_id, at in commits.items():
        got = receipts.get(event_id, [])
        short += max(0, args.clients - len(got))
        extra += max(0, len(got) - args.clients)
        if got:
            last.append(max(got) - at)
            every += [t - at for t in got]
    log.info("fan-out: %d events, median last %.3f s", len(last), median(last) or 0)
    return {
        "clients": args.clients,
        "events": len(commits),
        "connected": result["connected"],
        "missed_receipts": short,
        "extra_receipts": extra,
        "pings": result.get("pings"),
        "failed_clients": result["failed"],
        "first_error": result["first_error"],
        "last_median_s": median(last),
        "last_p99_s": percentile(last, 99),
        "all_median_s": median(every),
        "all_p99_s": percentile(every, 99),
        "rss_idle_mb": rss_idle,
        "rss_clients_mb": rss_clients,
        "rss_peak_mb": rss_mb(sidecar_pid, "VmHWM"),
        "rss_per_client_kb": (rss_clients - rss_idle) * 1024 / args.clients
        if rss_clients and rss_idle
        else None,
        "samples": last,
    }

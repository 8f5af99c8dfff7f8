"""The machine, the Markdown tables printed at the end, the JSON written next to them."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sqlite3
import timeit
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.common import PG_ADMIN_URL


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": _cpuinfo("model name"),
        "memory_gb": round(_meminfo_kb("MemTotal") / 1024**2, 1),
        "python": platform.python_version(),
        # Machines here differ (and are shared): a fixed pure-Python loop to compare them by.
        "reference_loop_s": reference_loop(),
        # Each flow run is a new process; without cached bytecode it compiles its imports.
        "bytecode_compiled": _bytecode_compiled(),
        "sqlite": sqlite3.sqlite_version,
        "packages": {
            p: version(p) for p in ("prefect", "pandas", "sqlalchemy", "psycopg", "alpaca-py")
        },
    }
    try:
        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect() as connection:
            info["postgresql"] = connection.execute(sa.text("SHOW server_version")).scalar()
        engine.dispose()
    except sa.exc.OperationalError:
        info["postgresql"] = None
    return info


def reference_loop() -> float:
    """Best of five: the sum of 10**6 squares in a generator (≈ 0.05 s on a fast core)."""
    return round(min(timeit.repeat("sum(i * i for i in range(10**6))", number=1, repeat=5)), 4)


def _bytecode_compiled() -> bool:
    import prefect.flow_engine as module

    cached = importlib.util.cache_from_source(module.__file__ or "")
    return Path(cached).exists()


def _cpuinfo(key: str) -> str | None:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(key):
            return line.split(":", 1)[1].strip()
    return None


def _meminfo_kb(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def num(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    if value >= 100:
        return f"{value:,.0f}{unit}"
    if value >= 10:
        return f"{value:.1f}{unit}"
    return f"{value:.{digits}f}{unit}" if value >= 0.01 else f"{value:.4f}{unit}"


def ms(value: float | None) -> str:
    return num(None if value is None else value * 1000, " ms", 1)


# (column header, row key, formatter) per figure
COLUMNS: dict[str, list[tuple[str, str, Any]]] = {
    "core": [
        ("db", "dialect", str),
        ("N", "n", num),
        ("changes", "changes", num),
        ("ours", "ours_s", lambda v: num(v, " s", 3)),
        ("ours, all prices moved", "ours_mtm_s", lambda v: num(v, " s", 3)),
        ("naive ORM", "naive_s", lambda v: num(v, " s", 3)),
        ("driver floor", "floor_s", lambda v: num(v, " s", 3)),
        ("naive/ours", "naive_over_ours", lambda v: num(v, "x", 1)),
        ("ours/floor", "ours_over_floor", lambda v: num(v, "x", 2)),
        ("ours peak", "ours_peak_mb", lambda v: num(v, " MB", 1)),
        ("naive peak", "naive_peak_mb", lambda v: num(v, " MB", 1)),
        ("floor peak", "floor_peak_mb", lambda v: num(v, " MB", 1)),
        ("parse N raw", "parse_s", lambda v: num(v, " s", 3)),
    ],
    "flow": [
        ("db", "dialect", str),
        ("Prefect server on", "prefect_db", str),
        ("N", "n", num),
        ("plain calls", "plain_s", lambda v: num(v, " s", 3)),
        ("flow, heartbeat off", "flow_s", lambda v: num(v, " s", 3)),
        ("flow, heartbeat 30 s", "flow_hb_s", lambda v: num(v, " s", 3)),
        ("empty flow, same shape", "skeleton_s", lambda v: num(v, " s", 3)),
        ("flow/plain", "flow_over_plain", lambda v: num(v, "x", 2)),
        ("flow+hb/plain", "flow_hb_over_plain", lambda v: num(v, "x", 2)),
    ],
    "trigger": [
        ("db", "dialect", str),
        ("runs", "runs", num),
        ("median", "median_s", lambda v: num(v, " s", 2)),
        ("p95", "p95_s", lambda v: num(v, " s", 2)),
        ("min", "min_s", lambda v: num(v, " s", 2)),
        ("trigger → Pending", "to_pending_s", lambda v: num(v, " s", 2)),
        ("trigger → Running", "to_running_s", lambda v: num(v, " s", 2)),
        ("Running → event", "running_to_event_s", lambda v: num(v, " s", 2)),
        ("flow run total", "flow_total_s", lambda v: num(v, " s", 2)),
        ("flow process imports", "imports_s", lambda v: num(v, " s", 2)),
    ],
    "fanout": [
        ("db", "dialect", str),
        ("clients", "clients", num),
        ("events", "events", num),
        ("last client median", "last_median_s", ms),
        ("last client p99", "last_p99_s", ms),
        ("all receipts p99", "all_p99_s", ms),
        ("sidecar RSS idle", "rss_idle_mb", lambda v: num(v, " MB", 1)),
        ("RSS with clients", "rss_clients_mb", lambda v: num(v, " MB", 1)),
        ("per client", "rss_per_client_kb", lambda v: num(v, " KB", 1)),
    ],
    "e2e": [
        ("db", "dialect", str),
        ("N", "n", num),
        ("run", "run", str),
        ("how", "mode", str),
        ("whole", "whole_s", lambda v: num(v, " s", 2)),
        ("→ SSE event", "to_event_s", lambda v: num(v, " s", 2)),
        ("start → Running", "to_running_s", lambda v: num(v, " s", 2)),
        ("setup", "setup_s", lambda v: num(v, " s", 2)),
        ("fetch", "fetch_s", lambda v: num(v, " s", 2)),
        ("diff", "diff_s", lambda v: num(v, " s", 2)),
        ("persist", "persist_s", lambda v: num(v, " s", 2)),
        ("between tasks", "between_tasks_s", lambda v: num(v, " s", 2)),
        ("publish", "publish_s", lambda v: num(v, " s", 2)),
        ("body end → Completed", "body_end_to_completed_s", lambda v: num(v, " s", 2)),
        ("Completed → exit", "completed_to_exit_s", lambda v: num(v, " s", 2)),
        ("peak RSS", "peak_rss_mb", lambda v: num(v, " MB", 0)),
        ("SSE messages", "messages", num),
        ("largest message", "largest_message_kb", lambda v: num(v, " KB", 0)),
        ("naive whole", "naive_s", lambda v: num(v, " s", 2)),
        ("naive/ours", "naive_over_ours", lambda v: num(v, "x", 1)),
    ],
    "fills": [
        ("db", "dialect", str),
        ("fills/s", "rate", num),
        ("fills", "fills", num),
        ("batches", "batches", num),
        ("median", "median_s", ms),
        ("p99", "p99_s", ms),
        ("1st half median", "first_half_median_s", ms),
        ("2nd half median", "second_half_median_s", ms),
        ("stream → listener", "split_stream_s", ms),
        ("waiting for its batch", "split_wait_s", ms),
        ("lock + REST read", "split_lock_read_s", ms),
        ("persist", "split_persist_s", ms),
        ("relay → client", "split_relay_s", ms),
    ],
    "oneshot": [
        ("db", "dialect", str),
        ("how", "how", str),
        ("runs", "runs", num),
        ("whole process, median", "median_s", lambda v: num(v, " s", 2)),
        ("max", "max_s", lambda v: num(v, " s", 2)),
    ],
    "status": [
        ("db", "dialect", str),
        ("requests", "requests", num),
        ("median", "median_s", ms),
        ("p95", "p95_s", ms),
        ("min", "min_s", ms),
    ],
    "fills-trigger": [
        ("db", "dialect", str),
        ("runs", "runs", num),
        ("median", "median_s", lambda v: num(v, " s", 2)),
        ("p99", "p99_s", lambda v: num(v, " s", 2)),
    ],
    "broker": [
        ("db", "dialect", str),
        ("Prefect server on", "prefect_db", str),
        ("accounts", "accounts", num),
        ("workers", "workers", num),
        ("workers used", "workers_used", num),
        ("positions/account", "positions_per_account", lambda v: num(v, "", 1)),
        ("requests", "requests", num),
        ("floor", "floor_s", lambda v: num(v, " s", 1)),
        ("wall", "wall_s", lambda v: num(v, " s", 1)),
        ("wall/floor", "wall_over_floor", lambda v: num(v, "x", 2)),
        ("429s", "throttled", num),
        ("failed accounts", "failed", num),
        ("of them 429", "failed_429", num),
        ("DB summed", "db_sum_s", lambda v: num(v, " s", 1)),
        ("DB per account", "db_median_ms", lambda v: num(v, " ms", 1)),
        ("DB share", "db_share", lambda v: num(None if v is None else v * 100, " %", 1)),
        ("peak RSS per worker", "worker_peak_rss_mb", lambda v: num(v, " MB", 0)),
        ("parent RSS", "parent_peak_rss_mb", lambda v: num(v, " MB", 0)),
    ],
}
TITLES = {
    "core": "1. Reconcile core: read book + diff + persist (one transaction, journal included)",
    "flow": "2. Flow overhead: the whole flow under a Prefect server vs plain calls",
    "trigger": "3. Trigger to event: POST sync-positions?wait=false → position:updated on SSE",
    "fanout": "4. Fan-out: journal commit → last SSE client's receipt, one sidecar process",
    "e2e": "5. End to end: process start or trigger → Completed and → position:updated on SSE",
    "fills": "6. Fill → position:updated at an SSE client (recon listen), sustained rate",
    "oneshot": "7. One-shot `recon sync` (no `recon up`): process start → exit",
    "status": "7b. GET /api/admin/jobs/status on the served stack, one client, sequential",
    "broker": "8. Broker API pass: N accounts at 6,000 requests/min, K workers (shards = K)",
    "fills-trigger": "6b. The same change through a manual trigger (fill → event)",
}


def tables(rows: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for figure, columns in COLUMNS.items():
        mine = [r for r in rows if r["figure"] == figure and "error" not in r]
        if not mine:
            continue
        out += [f"### {TITLES[figure]}", ""]
        out.append("| " + " | ".join(h for h, _, _ in columns) + " |")
        out.append("|" + "---|" * len(columns))
        for row in mine:
            out.append("| " + " | ".join(f(row.get(k)) for _, k, f in columns) + " |")
        out.append("")
    failed = [r for r in rows if "error" in r]
    out += [f"**{r['figure']} on {r['dialect']} failed:** {r['error']}" for r in failed]
    return "\n".join(out)


def write(path: Path, rows: list[dict[str, Any]], options: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "options": options,
        "results": rows,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")

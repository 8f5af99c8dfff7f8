"""`python -m benchmarks [--quick] [--sizes …] [--repeat N] [--out PATH] [--only …]`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Prefect reads its settings at import: isolate its home (and quiet its console) first.
_HOME = Path(tempfile.mkdtemp(prefix="recon-bench-"))
os.environ["PREFECT_HOME"] = str(_HOME / "prefect-client")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "ERROR"
os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL"] = "ERROR"
os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL"] = "ERROR"
os.environ.pop("PREFECT_API_URL", None)
from tests.support.env import is_ours  # noqa: E402 (imports nothing of Prefect's)

for _name in list(os.environ):
    if is_ours(_name):
        del os.environ[_name]

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks.report import tables, write  # noqa: E402

FIGURES = (
    "core",
    "flow",
    "trigger",
    "fanout",
    "e2e",
    "fills",
    "oneshot",
    "status",
    "broker",
    "account",
    "prefect",
)


def _ints(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes and few runs")
    parser.add_argument("--sizes", type=_ints, help="core sizes (default 1000,10000,100000)")
    parser.add_argument("--flow-sizes", type=_ints, help="flow sizes (default 100,1000)")
    parser.add_argument("--repeat", type=int, help="repeats per measurement (default 3)")
    parser.add_argument("--naive-max", type=int, default=10_000, help="largest N for naive")
    parser.add_argument("--trigger-runs", type=int, help="trigger runs (default 20)")
    parser.add_argument("--clients", type=int, help="SSE clients (default 1000)")
    parser.add_argument("--events", type=int, help="fan-out events (default 20)")
    parser.add_argument("--databases", default="sqlite,postgresql", help="sqlite,postgresql")
    parser.add_argument(
        "--prefect-databases",
        default="sqlite,postgresql",
        help="the Prefect server's own database for the flow figure (trigger and fan-out use "
        "the first)",
    )
    parser.add_argument("--only", default=",".join(FIGURES), help="subset of " + ",".join(FIGURES))
    parser.add_argument("--e2e-sizes", type=_ints, help="end-to-end N (default 10k,50k,100k)")
    parser.add_argument(
        "--e2e-naive-max",
        type=int,
        default=50_000,
        help="largest N the naive script runs end to end",
    )
    parser.add_argument(
        "--e2e-modes", default="sync,trigger", help="end-to-end runs: sync,trigger (naive by size)"
    )
    parser.add_argument(
        "--profile", type=Path, help="run each end-to-end `recon sync` under cProfile into this dir"
    )
    parser.add_argument(
        "--broker-accounts", type=_ints, help="broker pass accounts (default 1000,10000)"
    )
    parser.add_argument("--broker-workers", type=_ints, help="broker pass workers (default 1,2,4)")
    parser.add_argument(
        "--broker-parallelism",
        type=_ints,
        help="broker pass threads per flow-run process (default 8, RECON_BROKER_PARALLELISM's)",
    )
    parser.add_argument(
        "--broker-fetch-group",
        type=int,
        help="broker pass accounts fetched per rate-limit acquisition (RECON_BROKER_FETCH_GROUP)",
    )
    parser.add_argument(
        "--broker-databases", default="postgresql", help="the broker pass's app database(s)"
    )
    parser.add_argument(
        "--broker-prefect-db",
        default="sqlite",
        choices=["sqlite", "postgresql"],
        help="the broker pass's Prefect server database (default sqlite, as `recon up`)",
    )
    parser.add_argument(
        "--account-accounts", type=int, help="accounts of the account-path figure (default 500)"
    )
    parser.add_argument(
        "--prefect-events", type=int, help="events of the Prefect-costs figure (default 1000)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latest.json"))
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([1_000, 10_000] if quick else [1_000, 10_000, 100_000])
    args.flow_sizes = args.flow_sizes or ([100] if quick else [100, 1_000])
    from benchmarks.e2e import QUICK_SIZES, SIZES

    args.e2e_sizes = args.e2e_sizes or (QUICK_SIZES if quick else SIZES)
    from benchmarks import broker

    args.broker_accounts = args.broker_accounts or (broker.QUICK_SIZES if quick else broker.SIZES)
    args.broker_workers = args.broker_workers or (broker.QUICK_WORKERS if quick else broker.WORKERS)
    args.broker_parallelism = args.broker_parallelism or broker.PARALLELISM
    from benchmarks.account import ACCOUNTS, QUICK_ACCOUNTS

    args.account_accounts = args.account_accounts or (QUICK_ACCOUNTS if quick else ACCOUNTS)
    from benchmarks.prefect_costs import EVENTS, QUICK_EVENTS

    args.prefect_events = args.prefect_events or (QUICK_EVENTS if quick else EVENTS)
    args.repeat = args.repeat or (2 if quick else 3)
    args.trigger_runs = args.trigger_runs or (4 if quick else 20)
    args.clients = args.clients or (200 if quick else 1_000)
    args.events = args.events or (4 if quick else 20)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    args.prefect_databases = [d.strip() for d in args.prefect_databases.split(",") if d.strip()]
    args.broker_databases = [d.strip() for d in args.broker_databases.split(",") if d.strip()]
    args.e2e_modes = [m.strip() for m in args.e2e_modes.split(",") if m.strip()]
    args.only = [f.strip() for f in args.only.split(",") if f.strip()]
    dialects = {"sqlite", "postgresql"}
    unknown = (
        set(args.only) - set(FIGURES)
        or set(args.databases) - dialects
        or set(args.prefect_databases) - dialects
        or set(args.broker_databases) - dialects
    )
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    return args


def _guarded(rows: list[dict[str, Any]], figure: str, dialect: str, call: Any) -> None:
    """One failed figure is reported in the table and the JSON; the others still run."""
    try:
        rows += call()
    except Exception as exc:
        logging.getLogger("benchmarks").exception("%s on %s failed", figure, dialect)
        rows.append({"figure": figure, "dialect": dialect, "error": repr(exc)})


def run(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "core" in args.only:
        from benchmarks.core import bench_core

        for i, dialect in enumerate(args.databases):
            call = partial(
                bench_core, dialect, args.sizes, args.repeat, args.naive_max, root, parse=i == 0
            )
            _guarded(rows, "core", dialect, call)
    if "oneshot" in args.only:
        from benchmarks.oneshot import bench_oneshot

        _guarded(rows, "oneshot", "sqlite", partial(bench_oneshot, args, root))
    if "broker" in args.only:  # its own Prefect server per pass (benchmarks/broker.py)
        from benchmarks.broker import bench_broker

        for dialect in args.broker_databases:
            _guarded(rows, "broker", dialect, partial(bench_broker, dialect, args, root))
    if "account" in args.only:  # no Prefect (benchmarks/account.py)
        from benchmarks.account import bench_account

        for dialect in args.databases:
            call = partial(bench_account, dialect, args.account_accounts, root)
            _guarded(rows, "account", dialect, call)
    if "prefect" in args.only:  # its own Prefect server per database
        from benchmarks.prefect_costs import bench_prefect_costs

        for backend in args.prefect_databases:
            call = partial(bench_prefect_costs, root, backend, args.prefect_events)
            _guarded(rows, "prefect", backend, call)
    if not {"flow", "trigger", "fanout", "e2e", "fills", "status"} & set(args.only):
        return rows
    from benchmarks.flow import bench_flow
    from benchmarks.stack import bench_served, prefect_server

    for i, backend in enumerate(args.prefect_databases):
        with prefect_server(root, backend) as server:
            if "flow" in args.only:
                for dialect in args.databases:
                    call = partial(
                        bench_flow, server, dialect, args.flow_sizes, args.repeat, root, backend
                    )
                    _guarded(rows, "flow", dialect, call)
            if i == 0 and {"trigger", "fanout"} & set(args.only):
                for dialect in args.databases:
                    figures = "+".join(f for f in ("trigger", "fanout") if f in args.only)
                    call = partial(bench_served, server, dialect, args, root)
                    _guarded(rows, figures, dialect, call)
            if i == 0 and "e2e" in args.only:
                from benchmarks.e2e import bench_e2e

                for dialect in args.databases:
                    _guarded(rows, "e2e", dialect, partial(bench_e2e, server, dialect, args, root))
            if i == 0 and "status" in args.only:
                from benchmarks.oneshot import bench_status

                for dialect in args.databases:
                    call = partial(bench_status, server, dialect, args, root)
                    _guarded(rows, "status", dialect, call)
            if i == 0 and "fills" in args.only:
                from benchmarks.fills import bench_fills

                for dialect in args.databases:
                    _guarded(
                        rows, "fills", dialect, partial(bench_fills, server, dialect, args, root)
                    )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    progress = logging.getLogger("benchmarks")
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False
    started = time.monotonic()
    try:
        rows = run(args, _HOME)
    finally:
        shutil.rmtree(_HOME, ignore_errors=True)
    print(tables(rows))
    chosen = {k: v for k, v in vars(args).items() if k != "out"}
    write(args.out, rows, chosen | {"seconds": round(time.monotonic() - started, 1)})
    print(f"wrote {args.out} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

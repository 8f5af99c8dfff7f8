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
for _name in list(os.environ):
    if _name.startswith(("ALPACA_", "RECON_")) and _name != "RECON_TEST_POSTGRES_URL":
        del os.environ[_name]

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks.report import tables, write  # noqa: E402

FIGURES = ("core", "flow", "trigger", "fanout")


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
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latest.json"))
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([1_000, 10_000] if quick else [1_000, 10_000, 100_000])
    args.flow_sizes = args.flow_sizes or ([100] if quick else [100, 1_000])
    args.repeat = args.repeat or (2 if quick else 3)
    args.trigger_runs = args.trigger_runs or (4 if quick else 20)
    args.clients = args.clients or (200 if quick else 1_000)
    args.events = args.events or (4 if quick else 20)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    args.prefect_databases = [d.strip() for d in args.prefect_databases.split(",") if d.strip()]
    args.only = [f.strip() for f in args.only.split(",") if f.strip()]
    dialects = {"sqlite", "postgresql"}
    unknown = (
        set(args.only) - set(FIGURES)
        or set(args.databases) - dialects
        or set(args.prefect_databases) - dialects
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
    if not {"flow", "trigger", "fanout"} & set(args.only):
        return rows
    from benchmarks.flow import bench_flow
    from benchmarks.stack import bench_stack, prefect_server

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
                    call = partial(bench_stack, server, dialect, args, root)
                    _guarded(rows, figures, dialect, call)
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

"""Figure 1: the reconcile core (read book, diff, persist with journal) at N positions,
side by side with the naive ORM script and the driver-only floor, on each dialect."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks import data
from benchmarks.common import (
    Database,
    clear_journal,
    database,
    median,
    peak_memory,
    ratio,
    timed,
    vacuum,
)
from benchmarks.floor import plan, run_floor
from benchmarks.naive import run_naive
from recon.broker.protocol import RawSnapshot
from recon.diff import diff_positions
from recon.schemas.result import RunResult
from recon.snapshot import Snapshot, parse_snapshot
from recon.store.book import load_book
from recon.store.database import engine_for, session_factory
from recon.store.models import Position
from recon.store.writer import apply_reconciliation

log = logging.getLogger("benchmarks")
Counts = tuple[int, int, int]


def seed(db: Database, records: list[data.Record]) -> None:
    """Write the book once through the ORM's types, then keep a copy to restore from."""
    now = datetime.now(UTC)
    rows = [r | {"created_at": now, "updated_at": now, "refreshed_at": now} for r in records]
    engine = engine_for(db.url)
    with engine.begin() as connection:
        connection.execute(sa.insert(Position), rows)
        connection.execute(sa.text("DROP TABLE IF EXISTS bench_seed"))
        connection.execute(sa.text("CREATE TABLE bench_seed AS SELECT * FROM positions"))


def reset(db: Database) -> None:
    clear_journal(db)
    with engine_for(db.url).begin() as connection:
        connection.execute(sa.text("INSERT INTO positions SELECT * FROM bench_seed"))
    vacuum(db)


def run_ours(url: str, snapshot: Snapshot) -> Counts:
    """What the flow's diff and persist tasks do, minus Prefect."""
    sessions = session_factory(url)
    started = datetime.now(UTC)
    with sessions() as session:
        book = load_book(session, snapshot.account_id)
    diff = diff_positions(book, snapshot.positions)
    result = RunResult.from_diff(snapshot, diff, started_at=started, flow_run_id=None)
    final = apply_reconciliation(sessions, diff, result)
    return len(final.created), len(final.updated), len(final.removed)


def bench_core(
    dialect: str, sizes: list[int], repeat: int, naive_max: int, root: Path, parse: bool
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n in sizes:
        scenario = data.Scenario.of(n)
        snapshot = data.snapshot(scenario.after)
        moved = data.snapshot(data.prices_moved(scenario.after))
        with database(dialect, root, f"core{n}") as db:
            seed(db, scenario.book)
            floor_plan = plan(db, scenario.book, scenario.after)
            approaches: dict[str, Callable[[], Any]] = {
                "ours": partial(run_ours, db.url, snapshot),
                "ours_mtm": partial(run_ours, db.url, moved),
                "floor": partial(run_floor, db, floor_plan),
            }
            if n <= naive_max:
                approaches["naive"] = partial(run_naive, db.url, data.ACCOUNT_ID, scenario.after)
            times: dict[str, list[float]] = {k: [] for k in approaches}
            for attempt in range(repeat):
                for name, call in approaches.items():  # interleaved: noise hits all alike
                    reset(db)
                    seconds, counts = timed(call)
                    times[name].append(seconds)
                    if name != "floor" and counts != scenario.expected:
                        raise AssertionError(f"{name} made {counts}, not {scenario.expected}")
                    log.info("core %s n=%d %s #%d: %.3f s", dialect, n, name, attempt, seconds)
            memory = {}
            for name, call in approaches.items():
                reset(db)
                memory[name] = peak_memory(call)
            reset(db)
        ours, naive, floor = (median(times.get(k, [])) for k in ("ours", "naive", "floor"))
        ours_mtm = median(times["ours_mtm"])
        rows.append(
            {
                "figure": "core",
                "dialect": dialect,
                "n": n,
                "changes": sum(scenario.expected),
                "ours_s": ours,
                "naive_s": naive,
                "floor_s": floor,
                "ours_mtm_s": ours_mtm,
                "ours_over_naive": ratio(ours, naive),
                "naive_over_ours": ratio(naive, ours),
                "ours_over_floor": ratio(ours, floor),
                "ours_peak_mb": memory["ours"],
                "naive_peak_mb": memory.get("naive"),
                "floor_peak_mb": memory["floor"],
                "parse_s": _parse_seconds(scenario.after, repeat) if parse else None,
                "repeat": repeat,
                "samples": times,
            }
        )
    return rows


def _parse_seconds(records: list[data.Record], repeat: int) -> float | None:
    """`parse_snapshot` of the same N records as raw JSON (the fetch task's CPU part)."""
    account = {"id": data.ACCOUNT_ID, "long_market_value": "0", "short_market_value": "0"}
    raw = RawSnapshot(account=account, positions=[data.raw(r) for r in records])
    return median([timed(lambda: parse_snapshot(raw))[0] for _ in range(repeat)])

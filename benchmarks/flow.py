"""Figure 2: the whole flow under a real Prefect server vs the same steps as plain calls.

Both fetch from the simulated broker over loopback through alpaca-py, diff, persist and
journal; the flow also reports its runs, task runs, logs, artifact and event to the server.
Two snapshots of N positions are loaded into the simulator alternately (`PUT
/_sim/positions`, untimed), so every run sees 10% changed, 1% removed and 1% new.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    temporary_settings,
)

from benchmarks import data
from benchmarks.common import database, median, ratio, timed
from benchmarks.stack import simulator
from flows.reconcile import reconcile_positions
from recon.broker import AlpacaTradingBroker
from recon.diff import diff_book
from recon.safety import check_removals, check_snapshot
from recon.schemas.result import RunResult
from recon.settings import get_settings
from recon.snapshot import parse_snapshot
from recon.store.book import load_book
from recon.store.database import engine_for, session_factory, upgrade
from recon.store.lock import sync_lock
from recon.store.writer import apply_reconciliation
from tests.support.prefect import PrefectServer

log = logging.getLogger("benchmarks")


def plain() -> dict[str, Any]:
    """`reconcile_positions` step by step, without Prefect (no run, task runs, logs,
    artifact or event)."""
    started = datetime.now(UTC)
    settings = get_settings()
    url = settings.resolved_database_url
    upgrade(url)
    with sync_lock(engine_for(url)):
        snapshot = parse_snapshot(AlpacaTradingBroker(settings).fetch_snapshot())
        check_snapshot(snapshot, settings)
        with session_factory(url)() as session:
            book = load_book(session, snapshot.account_id)
        diff = diff_book(book, snapshot)
        check_removals(diff, len(book), settings, allow=False)
        result = RunResult.from_diff(snapshot, diff, started_at=started, flow_run_id=None)
        result = apply_reconciliation(session_factory(url), diff, result)
    return result.dump()


def reconcile(heartbeat: int | None) -> Callable[[], dict[str, Any]]:
    def call() -> dict[str, Any]:
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: heartbeat}):
            return reconcile_positions()

    return call


@task(name="noop", cache_policy=NO_CACHE)
def _noop(value: int) -> int:
    return value


@flow(name="bench-skeleton", timeout_seconds=600)
def skeleton() -> dict[str, Any]:
    """The flow's shape with no work: three task runs, a table artifact, an event. What
    Prefect alone costs a run of `reconcile-positions` (heartbeat off)."""
    value = _noop(_noop(_noop(1)))
    create_table_artifact(key="bench-skeleton", table=[{"change": "none"}])
    emit_event(event="bench.skeleton", resource={"prefect.resource.id": "bench.skeleton"})
    return {"summary": {"totalChanges": value}}


def _without_heartbeat(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    # Prefect 3.9 defaults to a heartbeat every 180 s, so the default is "on".
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return call()


@contextmanager
def _environment(sim: Any, url: str) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ |= {
        "ALPACA_BASE_URL": sim.base_url,
        "ALPACA_API_KEY": sim.api_key,
        "ALPACA_SECRET_KEY": sim.secret_key,
        "RECON_DATABASE_URL": url,
        "RECON_FETCH_RETRIES": "0",
        "RECON_HTTP_TIMEOUT_SECONDS": "30",
    }
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def bench_flow(
    server: PrefectServer,
    dialect: str,
    sizes: list[int],
    repeat: int,
    root: Path,
    prefect_db: str = "sqlite",
) -> list[dict[str, Any]]:
    rows = []
    with (
        simulator() as sim,
        temporary_settings({PREFECT_API_URL: server.api_url}),
    ):
        for n in sizes:
            first = data.book(n)
            second = data.next_snapshot(first)
            states = [[data.raw(r) for r in first], [data.raw(r) for r in second]]
            db_name = f"flow{n}_{prefect_db}"
            with database(dialect, root, db_name) as db, _environment(sim, db.url):
                calls: dict[str, Callable[[], dict[str, Any]]] = {
                    "plain": plain,
                    "flow": reconcile(None),
                    "flow_hb": reconcile(30),
                    "skeleton": partial(_without_heartbeat, skeleton),
                }
                times: dict[str, list[float]] = {k: [] for k in calls}
                turn = 0
                for attempt in range(repeat + 1):  # the first round warms up, untimed
                    for name, call in calls.items():
                        if name != "skeleton":  # it reads nothing: no state to move on
                            turn += 1
                            sim.load(states[turn % 2])
                        seconds, result = timed(call)
                        if not result["summary"]["totalChanges"]:
                            raise AssertionError(f"{name}: a run without changes")
                        if attempt:
                            times[name].append(seconds)
                        log.info(
                            "flow %s/%s n=%d %s #%d: %.3f s",
                            dialect, prefect_db, n, name, attempt, seconds,
                        )  # fmt: skip
            p, f, h = (median(times[k]) for k in ("plain", "flow", "flow_hb"))
            rows.append(
                {
                    "figure": "flow",
                    "dialect": dialect,
                    "prefect_db": prefect_db,
                    "n": n,
                    "plain_s": p,
                    "flow_s": f,
                    "flow_hb_s": h,
                    "flow_over_plain": ratio(f, p),
                    "flow_hb_over_plain": ratio(h, p),
                    "skeleton_s": median(times["skeleton"]),
                    "repeat": repeat,
                    "samples": times,
                }
            )
        # The runs' events and logs are sent in the background: deliver them to this server
        # before it stops (the next figure may run against another one).
        EventsWorker.drain_all(timeout=30)
        APILogWorker.drain_all(timeout=30)
    return rows

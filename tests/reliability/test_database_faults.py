"""Scenario 4: the database fails in the middle of persist, on PostgreSQL and SQLite.

No patching: the fault is real and deterministic.

- PostgreSQL: the test holds the journal's advisory lock, so the run's persist blocks
  inside its transaction after it has written the run row and the positions; the test
  then terminates that backend (`pg_terminate_backend`) and lets go of the lock.
- SQLite: while the run holds its lease and fetches (a stalled, not timed-out, broker
  answer), the test takes the write lock with its own connection; persist fails with
  "database is locked" after the 5 s busy timeout; the test lets go as soon as Prefect
  reports the persist task Failed, so the lease release and the failure hook can write.

Each time: the transaction is rolled back in full (book as before, no `completed` run
row, no `position:updated` entry from that run), the run is Failed with a clear message,
its `system:error` is journaled, and the next run recovers and applies the broker's book.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    TaskRunFilter,
    TaskRunFilterName,
    TaskRunFilterStartTime,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from flows.reconcile import reconcile_positions
from recon.store.database import make_engine, session_factory
from recon.store.dialects.postgresql import JOURNAL_LOCK_SQL as JOURNAL_LOCK
from recon.store.journal import SYSTEM_ERROR
from recon.store.models import SyncLease, SyncRun
from tests.sim import Sim
from tests.support.books import events_of, live_material, material, runs_of, stored_rows
from tests.support.wait import wait_until

pytestmark = pytest.mark.usefixtures("prefect_server")
REPEATS = 3
STALL_SECONDS = 1.0  # under the 2 s RECON_HTTP_TIMEOUT_SECONDS of the `configured` fixture


def step_until_changed(sim: Sim, url: str) -> dict[str, tuple[Any, ...]]:
    """Drift the broker's book until it differs materially from ours: a run has work to do."""
    stored = material(stored_rows(url))
    for _ in range(100):
        sim.step()
        live = live_material(sim.broker_positions())
        if live != stored:
            return live
    raise AssertionError("the simulator's book did not change in 100 steps")


def completed_runs(url: str) -> int:
    with session_factory(url)() as session:
        query = select(func.count()).select_from(SyncRun).where(SyncRun.status == "completed")
        return int(session.scalar(query) or 0)


class FlowThread:
    """`reconcile_positions` in a thread, so that the test can break things meanwhile."""

    def __init__(self) -> None:
        self.state: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="reconcile", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.state = reconcile_positions(return_state=True)
        except BaseException as exc:
            self.error = exc

    def running(self) -> bool:
        return self._thread.is_alive()

    def result(self, timeout: float = 120) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the flow run did not finish"
        assert self.error is None, repr(self.error)
        return self.state


def _pg_blocked_persist(monitor: Any, holder_pid: int) -> int | None:
    """The backend waiting for the test's journal lock with this schema's tables written to."""
    row = monitor.execute(
        text(
            "SELECT a.pid FROM pg_stat_activity a "
            "WHERE a.wait_event_type = 'Lock' AND a.query LIKE '%pg_advisory_xact_lock%' "
            "AND a.pid <> pg_backend_pid() AND a.pid <> :holder "
            "AND :holder = ANY(pg_blocking_pids(a.pid)) "
            "AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted "
            "AND l.relation = 'sync_runs'::regclass) "
            "AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted "
            "AND l.relation = 'positions'::regclass AND l.mode = 'RowExclusiveLock')"
        ),
        {"holder": holder_pid},
    ).first()
    return int(row.pid) if row else None


def inject_postgres(url: str, sim: Sim) -> tuple[Any, str]:
    """Hold the journal lock, kill the run's backend while it waits in persist."""
    engine = make_engine(url)
    try:
        with engine.connect() as holder, engine.connect() as monitor:
            monitor.execute(text("SELECT 1"))
            monitor.commit()
            holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
            holder.execute(text(JOURNAL_LOCK))
            flow = FlowThread()
            try:

                def blocked() -> int | None:
                    assert flow.running(), "the run finished without reaching the journal"
                    monitor.rollback()  # a fresh pg_stat_activity snapshot on every poll
                    return _pg_blocked_persist(monitor, holder_pid)

                pid = wait_until(blocked, 60, "persist waiting for the journal lock", 0.05)
                killed = monitor.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                assert killed.scalar_one() is True
                monitor.commit()
            finally:
                holder.rollback()  # lets go of the journal lock: the failure hook needs it
        return flow.result(), "terminating connection"
    finally:
        engine.dispose()


def inject_sqlite(url: str, sim: Sim) -> tuple[Any, str]:
    """Take the write lock while the run is fetching; let go once persist has failed."""
    path = make_url(url).database
    assert path
    sim.reset_log()
    sim.fault("stall", path="/v2/positions", count=1, delay=STALL_SECONDS)
    since = datetime.now(UTC)
    flow = FlowThread()
    locker = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        wait_until(lambda: sim.requests("/v2/positions"), 60, "the positions request", 0.02)
        # The run holds its lease and is waiting for the broker's answer.
        with session_factory(url)() as session:
            assert session.scalar(select(func.count()).select_from(SyncLease)) == 1
        locker.execute("BEGIN IMMEDIATE")
        locker.execute("UPDATE positions SET symbol = symbol")
        wait_until(lambda: _task_failed("persist-changes", since), 60, "persist to fail", 0.05)
    finally:
        locker.rollback()
        locker.close()
    return flow.result(), "database is locked"


def _task_failed(name: str, since: datetime) -> bool:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_=name),
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.FAILED])),
                start_time=TaskRunFilterStartTime(after_=since),
            )
        )
    return bool(runs)


INJECT: dict[str, Callable[[str, Sim], tuple[Any, str]]] = {
    "sqlite": inject_sqlite,
    "postgresql": inject_postgres,
}


def test_database_lost_mid_persist_rolls_back_and_the_next_run_recovers(
    configured: str, sim: Sim
) -> None:
    db = make_url(configured).get_backend_name()
    tally: Counter[str] = Counter()
    first = reconcile_positions(return_state=True)
    assert first.is_completed(), first.message
    started = time.monotonic()
    for _ in range(REPEATS):
        live = step_until_changed(sim, configured)
        before = stored_rows(configured)
        completed_before = completed_runs(configured)

        tally["injected"] += 1
        state, reason = INJECT[db](configured, sim)
        sim.clear_fault()
        assert state.is_failed(), state.message
        tally["failed"] += 1
        message = state.message or ""
        assert reason in message, message
        flow_run_id = str(state.state_details.flow_run_id)

        # Rolled back in full: no position row, no completed run, no position:updated.
        after = stored_rows(configured)
        tally["lost"] += sum(1 for k in before if after.get(k) != before[k])
        assert after == before
        assert completed_runs(configured) == completed_before
        (run_row,) = runs_of(configured, flow_run_id)
        assert run_row.status == "failed" and run_row.reason == state.message
        events = events_of(configured, flow_run_id)
        assert [e.type for e in events] == [SYSTEM_ERROR]  # no position:updated from it
        assert events[0].payload["error"] == state.message
        tally["rolled_back"] += 1
        if db == "sqlite":
            with session_factory(configured)() as session:
                assert session.scalar(select(func.count()).select_from(SyncLease)) == 0

        # The next run applies the broker's book.
        recovery: Any = reconcile_positions(return_state=True)
        assert recovery.is_completed(), recovery.message
        assert recovery.result()["summary"]["totalChanges"] > 0
        assert material(stored_rows(configured)) == live == live_material(sim.broker_positions())
        tally["recovered"] += 1
    # Each pass asserted its own rollback; here: every pass got through every step.
    passes = (tally["injected"], tally["failed"], tally["rolled_back"], tally["recovered"])
    assert passes == (REPEATS,) * 4, tally
    print(
        f"\n[database faults] db={db} faults injected={tally['injected']} "
        f"runs failed={tally['failed']} rolled back={tally['rolled_back']} "
        f"recovered={tally['recovered']} rows lost={tally['lost']} "
        f"({time.monotonic() - started:.1f} s)"
    )

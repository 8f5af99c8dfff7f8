"""Scenario 5: the flow's process SIGKILLed at random points, 20 times per database.

Each kill lands in one of four phases, picked at random (seeded): while the process starts,
while it waits for the broker, inside persist's transaction (PostgreSQL: blocked on the
journal lock after writing rows; SQLite: waiting for the write lock), or just after the
commit. After every kill: no partial state (the book is the old one, or the new one with
its journal entry), Prefect shows Crashed, the stream shows `system:error`, the
concurrency slot is free, and the next run through the deployment applies the snapshot.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from prefect.client.schemas.objects import StateType

from recon.store.dialects.postgresql import JOURNAL_LOCK_SQL as JOURNAL_LOCK
from recon.store.journal import POSITION_UPDATED, SYSTEM_ERROR
from tests.sim import Sim
from tests.support.books import broker_book
from tests.support.process import flow_process_of
from tests.support.stack import Stack
from tests.support.wait import wait_until

KILLS = 20
PHASES = ["starting", "fetching", "persisting", "committed"]


@pytest.mark.timeout(1800)  # 20 kills and 20 recovery runs: 4 to 7 min on a loaded 2-core box
def test_twenty_kills_leave_no_partial_state(stack: Stack, sim: Sim) -> None:
    chaos = random.Random(f"crashes-{stack.db}")
    phases: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    recoveries: list[float] = []
    with stack.listen() as listener:
        for _ in range(KILLS):
            before = stack.book()
            while broker_book(sim) == before:  # every run must have quantities to change
                sim.step()
            expected = broker_book(sim)
            head = stack.last_event_id()
            sim.reset_log()
            phase = chaos.choice(PHASES)
            phases[phase] += 1
            run_id, signalled = _run_and_kill(stack, sim, phase, chaos)
            run = stack.wait_final(run_id)
            sim.clear_fault()
            # The signal can find a process that already ended its run (it is still
            # joining threads on its way out), or one a few microseconds from sending
            # Completed: only the process itself can propose Completed, so such a run
            # finished first, and the all-or-nothing checks below still hold for it.
            killed = signalled and run.state_type != StateType.COMPLETED

            # All or nothing: the old book, or the new one with its journal entry.
            book = stack.book()
            updates = [
                e
                for e in stack.journal(head)
                if e.type == POSITION_UPDATED and e.flow_run_id == run_id
            ]
            assert book in (before, expected), "a killed run left a partial book"
            assert (book == expected) == (len(updates) == 1), (phase, len(updates))
            if not killed:  # the run finished before the signal: nothing to check
                assert run.state_type == StateType.COMPLETED, run.state
                outcomes["finished first"] += 1
                continue
            assert run.state_type == StateType.CRASHED, (phase, run.state)
            outcomes["applied before the kill" if book == expected else "rolled back"] += 1
            wait_until(
                lambda r=run_id: listener.of(SYSTEM_ERROR, r), 15, "system:error on the stream"
            )
            assert listener.of(SYSTEM_ERROR, run_id)[0].data["status"] == "crashed"
            assert stack.status()["isRunning"] is False

            # The slot is free and the next run applies the snapshot.
            started = time.monotonic()
            response = stack.trigger(wait=True)
            assert response.status_code == 200, response.text
            recoveries.append(time.monotonic() - started)
            assert stack.book() == expected
    errors = [e for e in stack.journal() if e.type == SYSTEM_ERROR]
    assert len({e.flow_run_id for e in errors}) == len(errors), "a crash was journaled twice"
    assert outcomes["rolled back"] >= KILLS // 2, outcomes
    print(
        f"\n[crashes] db={stack.db} kills={KILLS} phases={dict(phases)} "
        f"outcomes={dict(outcomes)} partial states=0 Crashed+system:error="
        f"{KILLS - outcomes['finished first']} next run applied={len(recoveries)} "
        f"(median {statistics.median(recoveries):.1f} s)"
    )


def _run_and_kill(stack: Stack, sim: Sim, phase: str, chaos: random.Random) -> tuple[str, bool]:
    """Trigger a run, SIGKILL its flow process in `phase`; whether the signal found it."""
    if phase == "fetching":
        sim.fault("stall", delay=30.0, path="/v2/positions", count=1)
    if phase == "persisting" and stack.db == "sqlite":
        # A window to take the write lock in once the run holds its lease and is fetching.
        sim.fault("stall", delay=1.0, path="/v2/positions", count=1)
    head = stack.last_event_id()
    with contextlib.ExitStack() as held:
        if phase == "persisting" and stack.db == "postgresql":
            held.enter_context(_journal_locked(stack))
        response = stack.trigger(wait=False)
        assert response.status_code == 202, response.text
        run_id: str = response.json()["flowRunId"]
        pid = wait_until(
            lambda: flow_process_of(stack.runner.pid, run_id), 30, "the run's flow process"
        )
        if phase == "starting":
            # The kill point itself, not a wait: within the process's imports, which take
            # 1.5 s on a fast 2-core machine and 3-4 s on a slow one.
            time.sleep(chaos.uniform(0.0, 1.0))
        elif phase == "fetching":
            wait_until(lambda: sim.requests("/v2/positions"), 30, "the positions request")
            time.sleep(chaos.uniform(0.0, 0.5))
        elif phase == "persisting" and stack.db == "postgresql":
            _wait_for_blocked_backend(stack)
        elif phase == "persisting":
            wait_until(lambda: sim.requests("/v2/positions"), 30, "the positions request")
            held.enter_context(_write_locked(stack))
            # The fetch ends (the clock is asked last), the diff of a small book takes
            # milliseconds, then persist waits for the write lock (busy_timeout 5 s).
            wait_until(lambda: _answered(sim, "/v2/clock"), 30, "the fetch to end")
            time.sleep(chaos.uniform(0.5, 1.5))
        else:
            wait_until(lambda: _updated(stack, run_id, head), 30, "its commit", interval=0.01)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return run_id, False
    return run_id, True


@contextlib.contextmanager
def _journal_locked(stack: Stack) -> Iterator[None]:
    """PostgreSQL: persist takes the journal lock after writing the run row and positions,
    so holding it stops the run inside its transaction."""
    engine = sa.create_engine(stack.url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(JOURNAL_LOCK))
            yield
            connection.rollback()
    finally:
        engine.dispose()


def _wait_for_blocked_backend(stack: Stack) -> None:
    query = sa.text(
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE '%pg_advisory_xact_lock%' AND pid <> pg_backend_pid()"
    )
    # Autocommit: pg_stat_activity is read once per transaction, then served from a cache.
    engine = sa.create_engine(stack.url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            wait_until(lambda: connection.execute(query).first(), 30, "persist to block")
    finally:
        engine.dispose()


@contextlib.contextmanager
def _write_locked(stack: Stack) -> Iterator[None]:
    """SQLite: hold the write lock (WAL readers go on reading)."""
    connection = sqlite3.connect(stack.url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def _answered(sim: Sim, path: str) -> bool:
    return any(r["status"] for r in sim.requests(path))


def _updated(stack: Stack, run_id: str, head: int) -> bool:
    return any(e.type == POSITION_UPDATED and e.flow_run_id == run_id for e in stack.journal(head))

"""Scenario 6: 50 parallel triggers, a scheduled run and a manual `recon sync`, all at once.

Every request gets 200, 202 or 409; at most one run writes at any instant. The proof is
read back afterwards: the deployment's Running spans (Prefect) never overlap, and the runs
that wrote (sync_runs, journal) hold disjoint lock spans, in commit order.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from uuid import UUID

from prefect.client.schemas.objects import FlowRun, StateType

from recon.store.journal import POSITION_UPDATED
from tests.sim import Sim
from tests.support.books import broker_book
from tests.support.prefect import running_spans
from tests.support.process import Process
from tests.support.stack import FINAL, Stack
from tests.support.wait import wait_until

TRIGGERS = 50


def test_fifty_triggers_schedule_and_manual_sync_never_write_at_once(
    stack: Stack, sim: Sim
) -> None:
    # Earlier scenarios' runs (the fuzzer's triggers, say) must be over: one still queued
    # would make the sidecar answer every trigger 409.
    wait_until(
        lambda: all(r.state_type in FINAL for r in stack.deployment_runs()),
        120,
        "earlier runs to end",
        interval=0.5,
    )
    while broker_book(sim) == stack.book():
        sim.step()
    expected = broker_book(sim)
    head = stack.last_event_id()
    known_runs = {r.id for r in stack.deployment_runs()}
    known_syncs = {r.id for r in stack.sync_runs()}
    # Every fetch takes 1.5 s: the runs have time to collide.
    sim.fault("stall", delay=1.5, path="/v2/positions")

    codes: list[int] = []
    answered: dict[int, set[str]] = {}  # status -> flowRunIds the answers named
    barrier = threading.Barrier(TRIGGERS + 1)

    def post(wait: bool) -> None:
        barrier.wait()
        response = stack.trigger(wait=wait)
        codes.append(response.status_code)
        answered.setdefault(response.status_code, set()).add(response.json().get("flowRunId"))

    threads = [threading.Thread(target=post, args=(n % 2 == 0,)) for n in range(TRIGGERS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    manual = Process(["cli", "sync", "--json"], stack.env, stack.root / "manual-sync.log")
    # The cron slot falls due while the triggered run is starting (created earlier, it
    # would make the sidecar answer every trigger 409).
    wait_until(lambda: _new_runs(stack, known_runs), 30, "the triggered run")
    scheduled = stack.schedule_run(delay=1.0)
    for thread in threads:
        thread.join(180)
    assert manual.popen.wait(180) in (0, 3), manual.output()[-3000:]  # applied, or skipped
    wait_until(
        lambda: all(r.state_type in FINAL for r in stack.deployment_runs()),
        120,
        "every deployment run to end",
        interval=0.5,
    )
    sim.clear_fault()

    assert len(codes) == TRIGGERS and set(codes) <= {200, 202, 409}, Counter(codes)
    runs = _new_runs(stack, known_runs)
    states = Counter(r.state_name for r in runs)
    # The triggers made a run (a second one only once the first had ended); the others
    # were told one was in progress. A waiting trigger whose run then lost the database
    # lock to the manual sync is answered 409 too.
    made = {str(r.id) for r in runs if "api" in r.tags}
    assert made, states
    # Each run a trigger made was named to a caller, and every 200/202 names one of them
    # (a 409 may name the scheduled run instead).
    assert made <= set().union(*answered.values()), (made, answered)
    assert answered.get(200, set()) | answered.get(202, set()) <= made, (made, answered)
    assert scheduled.id in {r.id for r in runs}
    assert all(r.state_type in (StateType.COMPLETED, StateType.CANCELLED) for r in runs), states

    # Prefect: the deployment never had two runs Running at once.
    with stack.prefect() as client:
        spans = running_spans(client, [r.id for r in runs])
    assert spans, "no run entered Running"
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None and start >= end, f"two runs were Running at once: {spans}"
    # The database: the runs that wrote, in commit (journal) order, held the lock one after
    # the other; each position:updated belongs to one of them.
    wrote = [r for r in stack.sync_runs() if r.id not in known_syncs and r.status == "completed"]
    assert wrote, "no run applied the snapshot"
    for earlier, later in itertools.pairwise(wrote):
        assert later.started_at >= earlier.finished_at, "two runs wrote at once"
    events = [e for e in stack.journal(head) if e.type == POSITION_UPDATED]
    # The broker stood still: the first writer made every change, later ones found none.
    assert [e.sync_run_id for e in events] == [wrote[0].id]
    assert stack.book() == expected
    print(
        f"\n[concurrency] db={stack.db} requests={TRIGGERS} answers={dict(Counter(codes))} "
        f"runs triggered={len(made)} deployment runs={dict(states)} "
        f"manual recon sync exit={manual.popen.returncode} "
        f"runs that wrote={len(wrote)} overlapping writers=0"
    )


def _new_runs(stack: Stack, known: set[UUID]) -> list[FlowRun]:
    return [r for r in stack.deployment_runs() if r.id not in known]

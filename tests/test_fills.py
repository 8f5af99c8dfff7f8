"""Fill-driven reconciliation end to end: the simulator's websocket, `recon listen` (alpaca-py's
TradingStream), the served deployment, the sidecar's SSE stream, SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from flows.fills import FLOW_NAME as FILLS_FLOW
from recon.store.database import engine_for
from recon.store.journal import POSITION_UPDATED, SYSTEM_ERROR
from recon.store.lock import sync_lock
from simulator import SimulatorConfig, SimulatorServer
from simulator.book import asset_id_for
from tests.sim import Sim
from tests.support.books import broker_book, stored_book
from tests.support.databases import DATABASES, app_database
from tests.support.process import Process
from tests.support.stack import Stack, served_stack
from tests.support.wait import wait_until as wait_for


class FillStack(Stack):
    listener: Process
    sim: Sim

    def stream_state(self) -> dict[str, Any]:
        return self.sim.stream_state()

    def fill(self, symbol: str, qty: str, side: str, partials: int = 1) -> dict[str, Any]:
        return self.sim.fill(symbol, qty, side, partials)

    def settled(self, timeout: float = 60) -> None:
        """The book equals the broker's (every quantity, exactly)."""
        wait_for(
            lambda: stored_book(self.url) == broker_book(self.sim),
            timeout,
            "the book to equal the broker's",
            interval=0.05,
        )

    def fill_entries(self, after: int = 0) -> list[Any]:
        return [
            e
            for e in self.journal(after)
            if e.type == POSITION_UPDATED and e.payload.get("trigger") == "fill"
        ]

    def running_fill_batches(self, since: dt.datetime) -> list[Any]:
        running = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
            start_time=FlowRunFilterStartTime(after_=since),
        )
        only_batches = FlowFilter(name=FlowFilterName(any_=[FILLS_FLOW]))
        with self.prefect() as client:
            return client.read_flow_runs(flow_run_filter=running, flow_filter=only_batches)


@pytest.fixture(scope="module", params=DATABASES)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FillStack]:
    root = tmp_path_factory.mktemp(f"fills-{request.param}")
    with contextlib.ExitStack() as cleanup:
        simulator = cleanup.enter_context(SimulatorServer(SimulatorConfig(seed=11)))
        url = cleanup.enter_context(app_database(request.param, root))
        served = cleanup.enter_context(
            served_stack(
                root,
                db=request.param,
                url=url,
                simulator=simulator,
                settings={
                    "RECON_FETCH_RETRIES": "2",
                    "RECON_FETCH_BACKOFF_SECONDS": "0.1",
                    "RECON_HTTP_TIMEOUT_SECONDS": "5",
                },
            )
        )
        stack = FillStack(**{f.name: getattr(served, f.name) for f in dataclasses.fields(served)})
        stack.sim = Sim.of(simulator)
        stack.listener = Process(["cli", "listen"], stack.env, root / "listener.log")
        cleanup.callback(lambda: stack.listener.stop())
        # The listener's first connect runs a full reconciliation: the initial book.
        wait_for(lambda: stack.completed_runs("reconnect"), 120, "the first resync run")
        stack.settled()
        yield stack
        # Over the whole module: never two stream connections at once.
        assert stack.stream_state()["max_concurrent"] == 1


def test_fill_reaches_the_book_and_the_sse_stream(stack: FillStack) -> None:
    with stack.listen() as sse:
        sent = time.monotonic()
        answer = stack.fill("AAPL", "5", "buy")
        execution_id = answer["executions"][0]["execution_id"]
        entry = wait_for(
            lambda: next(
                (e for e in sse.events if execution_id in e.data.get("executionIds", [])), None
            ),
            30,
            "the fill's position:updated on the SSE stream",
            interval=0.01,
        )
        latency = time.monotonic() - sent
    assert entry.type == POSITION_UPDATED
    assert entry.data["trigger"] == "fill"
    assert entry.data["updated"] == ["AAPL"]
    [change] = entry.data["details"]
    assert change["fields"]["qty"]["after"] == answer["positionQty"]
    assert stored_book(stack.url)[answer["assetId"]] == Decimal(answer["positionQty"])
    print(f"[fills:{stack.db}] fill -> SSE {latency * 1000:.0f} ms")


def test_burst_of_50_partial_fills_ends_in_one_exact_position(stack: FillStack) -> None:
    after = stack.last_event_id()
    asset_id = asset_id_for("NVDA")
    stack.sim.reset_log()
    answer = stack.fill("NVDA", "5.123456789", "buy", partials=50)
    assert len(answer["executions"]) == 50
    wait_for(
        lambda: stored_book(stack.url).get(asset_id) == Decimal(answer["positionQty"]),
        60,
        "the burst's final position",
    )
    applied = Counter(
        i for e in stack.fill_entries(after) for i in e.payload.get("executionIds", [])
    )
    # A batch whose read finds the position already current writes no entry: its ids are
    # covered by the entry that did change the book.
    assert set(applied) <= {x["execution_id"] for x in answer["executions"]}
    assert max(applied.values()) == 1  # no execution applied twice
    reads = stack.sim.requests(f"/v2/positions/{asset_id}")
    assert len(reads) < 50  # coalesced: one read per batch, not one per fill
    stack.settled()
    entries = len(stack.fill_entries(after))
    print(f"[fills:{stack.db}] 50 partials: {len(reads)} reads, {entries} entries")


def test_fill_that_closes_a_position_removes_it(stack: FillStack) -> None:
    qty = stored_book(stack.url)[asset_id_for("KO")]
    after = stack.last_event_id()
    stack.fill("KO", str(qty), "sell")
    wait_for(lambda: asset_id_for("KO") not in stored_book(stack.url), 30, "KO removed")
    [entry] = stack.fill_entries(after)
    assert entry.payload["removed"] == ["KO"]
    stack.settled()


def test_404_without_position_qty_zero_is_not_flat(stack: FillStack) -> None:
    asset_id = asset_id_for("SPY")
    before = len(stack.completed_runs("fallback"))
    after = stack.last_event_id()
    # The per-asset read answers 404 once although the fill left SPY open.
    stack.sim.fault("status", status=404, path=f"/v2/positions/{asset_id}", count=1)
    answer = stack.fill("SPY", "2", "buy")
    wait_for(lambda: len(stack.completed_runs("fallback")) > before, 90, "the fallback run")
    assert all(
        "SPY" not in e.payload["removed"] for e in stack.journal(after) if e.payload.get("removed")
    )
    assert stored_book(stack.url)[asset_id] == Decimal(answer["positionQty"])
    stack.settled()


def test_fill_during_a_full_reconciliation_waits_for_the_lock(stack: FillStack) -> None:
    after = stack.last_event_id()
    with sync_lock(engine_for(stack.url)):  # what a running full reconciliation holds
        sent = dt.datetime.now(dt.UTC)
        answer = stack.fill("AAPL", "1", "sell")
        # Its batch is under way (a Running reconcile-fills run) and has written nothing:
        # it waits for the lock, rather than failing or going around it.
        wait_for(lambda: stack.running_fill_batches(sent), 60, "the fill's batch to run")
        assert stack.fill_entries(after) == []
        released = time.time()
    wait_for(lambda: stack.fill_entries(after), 30, "the fill after the lock")
    [entry] = stack.fill_entries(after)
    assert entry.created_at.timestamp() >= released
    assert answer["executions"][0]["execution_id"] in entry.payload["executionIds"]
    stack.settled()


def test_duplicate_and_out_of_order_events_are_harmless(stack: FillStack) -> None:
    after = stack.last_event_id()
    stack.sim.stream_fault("duplicate", count=2)
    first = stack.fill("MSFT", "1", "buy", partials=2)
    stack.sim.stream_fault("reorder", count=1)
    second = stack.fill("MSFT", "3", "buy", partials=2)
    ids = {x["execution_id"] for x in first["executions"] + second["executions"]}
    msft = asset_id_for("MSFT")
    wait_for(
        lambda: stored_book(stack.url).get(msft) == Decimal(second["positionQty"]),
        30,
        "the last position",
    )
    wait_for(lambda: stack.stream_state()["fault"] is None, 10, "the faults to be used up")
    applied = Counter(
        i for e in stack.fill_entries(after) for i in e.payload.get("executionIds", [])
    )
    assert set(applied) <= ids and max(applied.values()) == 1  # none applied twice
    stack.settled()


@pytest.mark.timeout(1800)  # 20 full runs through the deployment, a new process each
def test_20_forced_disconnects_lose_nothing(stack: FillStack) -> None:
    # 20 on SQLite; 5 on PostgreSQL, which shares the listener's gap logic and differs only in
    # the lock and the relay's wake-up (each gap costs a full run, a new process: 10 s here).
    gaps = 20 if stack.db == "sqlite" else 5
    after = stack.last_event_id()
    applied_before = stack.fill_entries(after)
    for gap in range(gaps):
        connects = stack.stream_state()["connects"]
        reconnect_runs = len(stack.completed_runs("reconnect"))
        stack.sim.stream_drop()
        # Sent while nobody listens: only the full run after the reconnect can bring it in.
        stack.fill("AAPL", "1", "buy" if gap % 2 else "sell")
        wait_for(lambda c=connects: stack.stream_state()["connects"] > c, 60, "the reconnect")
        stack.fill("TSLA", "1", "buy")  # during the resync: the fill path, after the lock
        wait_for(
            lambda n=reconnect_runs: len(stack.completed_runs("reconnect")) > n,
            120,
            f"the resync run after disconnect {gap + 1}",
        )
        stack.settled()
    applied = Counter(
        i for e in stack.fill_entries(after) for i in e.payload.get("executionIds", [])
    )
    assert not applied_before and max(applied.values()) == 1
    assert stack.stream_state()["max_concurrent"] == 1
    with stack.api() as client:
        status = client.get("/api/admin/jobs/status").json()["stream"]
    assert status["connected"] is True and status["reconnects"] >= gaps
    print(f"[fills:{stack.db}] {gaps} forced disconnects: book equal after each")


def test_refused_stream_gives_one_system_error_and_shows_in_status(stack: FillStack) -> None:
    after = stack.last_event_id()
    unauthorized = stack.stream_state()["unauthorized"]
    stack.sim.stream_fault("refuse_auth")
    try:
        stack.sim.stream_drop()
        # alpaca-py retries on its own (1-30 s backoff); several refusals, one event.
        wait_for(lambda: stack.stream_state()["unauthorized"] >= unauthorized + 2, 90, "retries")
        errors = [e for e in stack.journal(after) if e.type == SYSTEM_ERROR]
        assert len(errors) == 1, [e.payload for e in errors]
        with stack.api() as client:
            status = client.get("/api/admin/jobs/status").json()["stream"]
        assert status["connected"] is False
        assert "refused" in status["lastError"]
    finally:
        stack.sim.clear_stream_fault()
    wait_for(lambda: stack.stream_state()["listening"] == 1, 90, "the listener back")
    with stack.api() as client:
        wait_for(
            lambda: client.get("/api/admin/jobs/status").json()["stream"]["connected"],
            30,
            "status connected",
        )


def test_wrong_keys_give_one_system_error_and_show_in_status(stack: FillStack) -> None:
    stack.listener.stop()
    after = stack.last_event_id()
    stack.sim.reset_log()
    wrong = stack.env | {"ALPACA_SECRET_KEY": "not-the-secret"}
    bad = Process(["cli", "listen"], wrong, stack.root / "listener-wrong-keys.log")
    try:
        wait_for(lambda: len(stack.sim.requests("/v2/account")) >= 3, 60, "three attempts")
        errors = [e for e in stack.journal(after) if e.type == SYSTEM_ERROR]
        assert len(errors) == 1, [e.payload for e in errors]
        assert "not-the-secret" not in str(errors[0].payload)
        with stack.api() as client:
            status = client.get("/api/admin/jobs/status").json()["stream"]
        assert status["connected"] is False
        assert "401" in status["lastError"]
    finally:
        bad.stop()
    # SIGTERM ended it while it was still retrying the account read (not the SIGKILL after).
    assert bad.popen.returncode == 0, bad.popen.returncode
    stack.listener = Process(["cli", "listen"], stack.env, stack.root / "listener-2.log")
    wait_for(lambda: stack.stream_state()["listening"] == 1, 60, "the listener back")

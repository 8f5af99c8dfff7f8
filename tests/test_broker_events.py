"""`recon listen` in the Broker API mode, end to end: the simulator's `/v2/events/trades` (SSE)
read by the listener over real HTTP, a served deployment on a Prefect server of its own,
SQLite and PostgreSQL. Fills land on the right account, a restart resumes from the stored
cursor without loss or duplicates, a dropped connection comes back."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from recon.store.database import session_factory
from recon.store.journal import POSITION_UPDATED
from recon.store.models import Position, TradeEventApplied
from recon.store.trade_events import read_cursor
from simulator import SimulatorConfig, SimulatorServer
from simulator.book import asset_id_for
from tests.sim import Sim
from tests.support.databases import DATABASES, app_database
from tests.support.process import Process
from tests.support.stack import Stack, served_stack
from tests.support.wait import wait_until

ACCOUNTS = 2


class EventStack:
    def __init__(self, stack: Stack, sim: Sim) -> None:
        self.stack, self.sim = stack, sim
        self.accounts = sim.account_ids()
        self.listener: Process | None = None
        self.starts = 0

    def start_listener(self) -> None:
        self.starts += 1
        log = self.stack.root / f"listener-{self.starts}.log"
        self.listener = Process(["cli", "listen"], self.stack.env, log)

    def stop_listener(self) -> None:
        if self.listener is not None:
            self.listener.stop()

    def stored(self) -> dict[tuple[str, str], Decimal]:
        with session_factory(self.stack.url)() as session:
            return {(p.account_id, p.asset_id): p.qty for p in session.scalars(select(Position))}

    def live(self) -> dict[tuple[str, str], Decimal]:
        out = {}
        for account_id in self.accounts:
            for p in self.sim.v1(f"/v1/trading/accounts/{account_id}/positions"):
                out[(account_id, p["asset_id"])] = Decimal(p["qty"])
        return out

    def settled(self, timeout: float = 60) -> None:
        wait_until(lambda: self.stored() == self.live(), timeout, "every account's book")

    def fill_entries(self, after: int = 0) -> list[Any]:
        return [
            e
            for e in self.stack.journal(after)
            if e.type == POSITION_UPDATED and e.payload.get("trigger") == "fill"
        ]

    def applied(self, after: int = 0) -> Counter[str]:
        """How many fill entries name each execution id."""
        return Counter(
            i for e in self.fill_entries(after) for i in e.payload.get("executionIds", [])
        )


@pytest.fixture(scope="module", params=DATABASES)
def events(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EventStack]:
    root = tmp_path_factory.mktemp(f"events-{request.param}")
    with contextlib.ExitStack() as cleanup:
        server = cleanup.enter_context(SimulatorServer(SimulatorConfig(seed=29, accounts=ACCOUNTS)))
        sim = Sim.of(server)
        settings = {
            **sim.broker_mode(),
            "RECON_BROKER_RATE_LIMIT": "6000",
            "RECON_FETCH_RETRIES": "1",
            "RECON_FETCH_BACKOFF_SECONDS": "0.1",
            "RECON_HTTP_TIMEOUT_SECONDS": "5",
            "RECON_EVENTS_RESUME_SECONDS": "30",
        }
        url = cleanup.enter_context(app_database(request.param, root))
        stack = cleanup.enter_context(
            served_stack(root, db=request.param, url=url, simulator=server, settings=settings)
        )
        handle = EventStack(stack, sim)
        handle.start_listener()
        cleanup.callback(handle.stop_listener)
        # No cursor yet: the first start brings the book in with a full run.
        wait_until(
            lambda: handle.stack.completed_runs("reconnect"),
            120,
            "the first full run",
            interval=0.5,
        )
        handle.settled()
        yield handle
        # One listener at a time: never two event stream connections at once.
        assert sim.events_state()["max_concurrent"] == 1


def test_fills_on_two_accounts_land_on_their_own_accounts(events: EventStack) -> None:
    a, b = events.accounts
    after = events.stack.last_event_id()
    on_a = events.sim.account_fill(a, "AAPL", "3", "buy")
    on_b = events.sim.account_fill(b, "AAPL", "2", "sell")
    aapl = asset_id_for("AAPL")
    wait_until(
        lambda: (
            events.stored().get((a, aapl)) == Decimal(on_a["positionQty"])
            and events.stored().get((b, aapl)) == Decimal(on_b["positionQty"])
        ),
        30,
        "both fills in the book",
    )
    entries = events.fill_entries(after)
    by_account = {e.account_id: e.payload["executionIds"] for e in entries}
    assert by_account == {
        a: [on_a["executions"][0]["execution_id"]],
        b: [on_b["executions"][0]["execution_id"]],
    }
    events.settled()


def test_a_restart_resumes_from_the_stored_cursor_without_loss_or_duplicates(
    events: EventStack,
) -> None:
    a, b = events.accounts
    after = events.stack.last_event_id()
    before = events.sim.account_fill(a, "MSFT", "1", "buy")  # applied before the stop
    msft = asset_id_for("MSFT")
    wait_until(
        lambda: events.stored().get((a, msft)) == Decimal(before["positionQty"]),
        30,
        "the fill before the stop",
    )
    cursor = wait_until(lambda: read_cursor(session_factory(events.stack.url)), 10, "cursor")
    full_runs = len(events.stack.completed_runs("reconnect"))
    events.stop_listener()
    # While nobody listens: only the replay from the cursor can bring these in.
    missed = [
        events.sim.account_fill(a, "NVDA", "2", "buy"),
        events.sim.account_fill(a, "KO", "1", "sell"),
        events.sim.account_fill(b, "MSFT", "4", "buy"),
    ]
    state = events.sim.events_state()
    connects, sent = state["connects"], state["sent"]
    events.start_listener()
    wait_until(lambda: events.sim.events_state()["connects"] > connects, 60, "the reconnect")
    events.settled()
    applied = events.applied(after)
    wanted = {before["executions"][0]["execution_id"]}
    wanted |= {m["executions"][0]["execution_id"] for m in missed}
    # Every fill exactly once, the one applied before the stop included: the replay started
    # before it (30 s before the cursor) and skipped it by its stored event id.
    assert applied == Counter(dict.fromkeys(wanted, 1))
    # The replay did send the one before the stop again (and the three missed ones).
    assert events.sim.events_state()["sent"] - sent >= 4
    assert (
        len(events.stack.completed_runs("reconnect")) == full_runs
    )  # no full run: the replay did it
    with session_factory(events.stack.url)() as session:
        stored_ids = list(session.scalars(select(TradeEventApplied.execution_id)))
    assert wanted <= set(stored_ids)
    newer = read_cursor(session_factory(events.stack.url))
    assert newer is not None and cursor is not None and newer[0] > cursor[0]
    log = events.listener.output() if events.listener else ""
    assert events.sim.secret_key not in log


def test_a_dropped_connection_reconnects_and_picks_up_what_it_missed(
    events: EventStack,
) -> None:
    a, b = events.accounts
    after = events.stack.last_event_id()
    connects = events.sim.events_state()["connects"]
    assert events.sim._control("POST", "/stream/drop")["dropped"] == 1
    during = events.sim.account_fill(b, "NVDA", "1", "buy")  # likely in the gap
    wait_until(lambda: events.sim.events_state()["connects"] > connects, 30, "the reconnect")
    later = events.sim.account_fill(a, "AAPL", "1", "sell")
    events.settled()
    applied = events.applied(after)
    ids = {x["executions"][0]["execution_id"] for x in (during, later)}
    assert applied == Counter(dict.fromkeys(ids, 1))
    with events.stack.api() as client:
        stream = client.get("/api/admin/jobs/status").json()["stream"]
    assert stream["connected"] is True and stream["reconnects"] >= 1

"""The store on real SQLite and PostgreSQL: exact round trips, one transaction, the lock."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from recon.diff import diff_positions, empty_book
from recon.errors import SyncInProgressError
from recon.schemas.result import RunResult
from recon.snapshot import AccountSummary, Snapshot
from recon.store.book import load_book
from recon.store.database import engine_for, session_factory
from recon.store.journal import POSITION_UPDATED, SYSTEM_ERROR, lock_journal, read_events
from recon.store.lock import sync_lock
from recon.store.models import Position, PositionChange, PositionEvent, SyncRun
from recon.store.writer import apply_reconciliation, record_failure
from tests.factories import ACCOUNT_ID, frame, raw_position
from tests.support.databases import app_database


def snapshot_of(raw: list[dict[str, object]], account_id: str = ACCOUNT_ID) -> Snapshot:
    account = AccountSummary(account_id, Decimal(0), Decimal(0))
    return Snapshot(account=account, positions=frame(raw, account_id))  # type: ignore[arg-type]


def reconcile(url: str, raw: list[dict[str, object]], account_id: str = ACCOUNT_ID) -> RunResult:
    snapshot = snapshot_of(raw, account_id)
    with session_factory(url)() as session:
        book = load_book(session, account_id)
    diff = diff_positions(book, snapshot.positions)
    result = RunResult.from_diff(
        snapshot, diff, started_at=datetime.now(UTC), flow_run_id="manual-test"
    )
    return apply_reconciliation(session_factory(url), diff, result)


def count(url: str, model: type) -> int:
    with session_factory(url)() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


digits = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
    lambda d: d != 0 and abs(d.adjusted()) < 20
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(qty=digits, price=st.decimals(min_value="0.0001", max_value=10**9, allow_nan=False))
def test_decimals_round_trip_as_the_same_string(
    database_url: str, qty: Decimal, price: Decimal
) -> None:
    qty_text, price_text = format(qty, "f"), format(price, "f")
    raw = raw_position("X", qty_text, price_text, asset="00000000-0000-4000-8000-0000000000aa")
    reconcile(database_url, [raw])
    with session_factory(database_url)() as session:
        row = session.get(Position, (ACCOUNT_ID, raw["asset_id"]))
        assert row is not None
        assert format(row.qty, "f") == qty_text
        assert format(row.current_price, "f") == price_text  # type: ignore[arg-type]
        assert format(row.cost_basis, "f") == raw["cost_basis"]


def test_negative_zero_is_read_as_zero(database_url: str) -> None:
    raw = raw_position("TSLA", "-3", "200")
    raw["unrealized_pl"] = "-0.00"
    reconcile(database_url, [raw])
    with session_factory(database_url)() as session:
        row = session.get(Position, (ACCOUNT_ID, raw["asset_id"]))
        assert row is not None and format(row.unrealized_pl, "f") == "0.00"  # type: ignore[arg-type]


def test_thirty_digit_cost_basis_survives(database_url: str) -> None:
    raw = raw_position("AAPL", "2.5132", "156.76")
    raw["cost_basis"] = "393.9945987569474165523984"
    raw["avg_entry_price"] = "156.7700934095764032"
    reconcile(database_url, [raw])
    with session_factory(database_url)() as session:
        row = session.get(Position, (ACCOUNT_ID, raw["asset_id"]))
        assert row is not None and format(row.cost_basis, "f") == "393.9945987569474165523984"
        assert format(row.avg_entry_price, "f") == "156.7700934095764032"


def test_run_row_journal_and_history_are_written_together(database_url: str) -> None:
    first = reconcile(database_url, [raw_position("AAPL", "10"), raw_position("MSFT", "5")])
    assert first.created == ["AAPL", "MSFT"] and first.event_id is not None
    second = reconcile(database_url, [raw_position("AAPL", "12"), raw_position("TSLA", "-3")])
    assert (second.created, second.updated, second.removed) == (["TSLA"], ["AAPL"], ["MSFT"])
    with session_factory(database_url)() as session:
        events = read_events(session, 0)
        assert [e.type for e in events] == [POSITION_UPDATED, POSITION_UPDATED]
        assert events[1].payload["updated"] == ["AAPL"]
        assert events[0].id < events[1].id
        history = session.scalars(
            select(PositionChange)
            .where(PositionChange.symbol == "AAPL")
            .order_by(PositionChange.id)
        ).all()
        assert [h.change for h in history] == ["created", "updated"]
        assert history[1].fields["qty"] == {"before": "10", "after": "12"}
        run = session.get(SyncRun, second.sync_run_id)
        assert run is not None and run.status == "completed" and run.removed_count == 1
        assert run.result is not None and run.result["summary"]["totalChanges"] == 3


@pytest.mark.parametrize("filler", [0, 250], ids=["bound", "staged"])
def test_one_run_creates_updates_refreshes_and_removes_exactly(
    database_url: str, filler: int
) -> None:
    """All four writes in one transaction. On PostgreSQL up to `SMALL_WRITE` (200) rows are
    bound in one executemany, more are staged by COPY: `filler` positions, created and then
    marked to market, take the writes past it."""
    extra = [f"F{i:03d}" for i in range(filler)]
    first = reconcile(
        database_url,
        [raw_position("AAPL", "10"), raw_position("MSFT", "5"), raw_position("NVDA", "2")]
        + [raw_position(symbol, "5") for symbol in extra],
    )
    after = [
        raw_position("AAPL", "10.5"),  # material: qty
        raw_position("MSFT", "5", "101.2500", avg="100.00"),  # mark-to-market only
        raw_position("TSLA", "-3", "200.10"),  # new
    ] + [raw_position(symbol, "5", "101.2500", avg="100.00") for symbol in extra]
    second = reconcile(database_url, after)
    assert (second.created, second.updated, second.removed) == (["TSLA"], ["AAPL"], ["NVDA"])
    with session_factory(database_url)() as session:
        book = load_book(session, ACCOUNT_ID)
        rows = {r.symbol: r for r in session.scalars(select(Position))}
        run = session.get(SyncRun, second.sync_run_id)
        (event,) = read_events(session, first.event_id or 0)
    expected = frame(after, ACCOUNT_ID)
    assert sorted(book.index) == sorted(expected.index)
    for asset_id, row in expected.iterrows():
        for name, value in row.items():  # the same value, and the same text for decimals
            stored = book.at[asset_id, name]
            assert stored == value and str(stored) == str(value), (row["symbol"], name)
    assert rows["MSFT"].refreshed_at > rows["MSFT"].updated_at
    assert rows["MSFT"].sync_run_id == rows["AAPL"].sync_run_id == second.sync_run_id
    assert rows["AAPL"].created_at < rows["AAPL"].updated_at
    # The details live in the journal once; the run row keeps the rest of the result.
    assert run is not None and run.result is not None and "details" not in run.result
    assert run.result["updated"] == ["AAPL"] and run.result["eventId"] == event.id
    assert [d["symbol"] for d in event.payload["details"]] == ["AAPL", "NVDA", "TSLA"]


def test_identical_run_writes_no_position_updated(database_url: str) -> None:
    book = [raw_position("AAPL", "10"), raw_position("BTCUSD", "0.5", "60000.5")]
    reconcile(database_url, book)
    again = reconcile(database_url, book)
    assert again.total_changes == 0 and again.event_id is None
    assert count(database_url, PositionEvent) == 1
    assert count(database_url, SyncRun) == 2


def test_other_accounts_are_never_touched(database_url: str) -> None:
    other = "99999999-0000-4000-8000-000000000000"
    reconcile(database_url, [raw_position("AAPL", "1")], account_id=other)
    reconcile(database_url, [raw_position("MSFT", "1")])
    reconcile(database_url, [])  # this account goes flat
    with session_factory(database_url)() as session:
        assert load_book(session, other)["symbol"].tolist() == ["AAPL"]
        assert load_book(session, ACCOUNT_ID).empty


def test_failed_write_leaves_book_and_journal_untouched(database_url: str) -> None:
    reconcile(database_url, [raw_position("AAPL", "10")])
    bad = [raw_position("AAPL", "11"), raw_position("MSFT", "5")]
    snapshot = snapshot_of(bad)
    with session_factory(database_url)() as session:
        diff = diff_positions(load_book(session, ACCOUNT_ID), snapshot.positions)
    result = RunResult.from_diff(snapshot, diff, started_at=datetime.now(UTC), flow_run_id="x")
    # A row the database rejects (NOT NULL symbol) half-way through the transaction.
    diff.created.loc[diff.created.index[0], "symbol"] = None
    with pytest.raises(IntegrityError):
        apply_reconciliation(session_factory(database_url), diff, result)
    with session_factory(database_url)() as session:
        book = load_book(session, ACCOUNT_ID)
    assert book["qty"].tolist() == [Decimal("10")]
    assert count(database_url, PositionEvent) == 1
    assert count(database_url, SyncRun) == 1


def test_failure_is_recorded_once_per_flow_run(database_url: str) -> None:
    sessions = session_factory(database_url)
    started = datetime.now(UTC)
    first = record_failure(sessions, flow_run_id="fr-1", started_at=started, reason="boom")
    second = record_failure(sessions, flow_run_id="fr-1", started_at=started, reason="boom")
    assert first is not None and second is None
    with sessions() as session:
        (event,) = read_events(session, 0)
        assert event.type == SYSTEM_ERROR
        assert event.payload["message"] == "Position reconciliation failed"
        assert event.payload["error"] == "boom" and event.payload["flowRunId"] == "fr-1"
    assert count(database_url, SyncRun) == 1


def test_second_lock_holder_fails_fast(database_url: str) -> None:
    engine = engine_for(database_url)
    with sync_lock(engine):
        second = sync_lock(engine)
        with pytest.raises(SyncInProgressError, match="another reconciliation"):
            second.__enter__()
    with sync_lock(engine):  # released
        pass


def test_a_lock_released_while_another_takes_it_is_busy_or_taken(database_url: str) -> None:
    """One thread takes and releases the lock over and over while another tries to take it:
    each try is taken or busy, never an error. (On SQLite a release between a taker's look
    at the lease and its write once left no row to read back: a database error, seen when
    a fill waiting for the lock lost its batch under load.)"""
    engine = engine_for(database_url)
    stop = threading.Event()
    outcomes: Counter[str] = Counter()

    def churn() -> None:
        while not stop.is_set():
            with contextlib.suppress(SyncInProgressError), sync_lock(engine):
                pass

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        for _ in range(300):
            try:
                with sync_lock(engine):
                    outcomes["taken"] += 1
            except SyncInProgressError:
                outcomes["busy"] += 1
    finally:
        stop.set()
        churner.join(30)
    assert sum(outcomes.values()) == 300, outcomes


@pytest.mark.postgres
def test_locks_are_per_schema_on_postgresql(tmp_path: Path) -> None:
    """Two installations in one database (two schemas) neither block nor see each other."""
    with (
        app_database("postgresql", tmp_path) as first,
        app_database("postgresql", tmp_path) as second,
    ):
        with sync_lock(engine_for(first)):
            with sync_lock(engine_for(second)):  # another schema: free
                pass
            with pytest.raises(SyncInProgressError):  # this schema: held
                sync_lock(engine_for(first)).__enter__()
        with (
            session_factory(first).begin() as session_one,
            session_factory(second).begin() as session_two,
        ):
            lock_journal(session_one)
            # On a database-wide key this would wait for session_one: fail fast instead.
            session_two.execute(text("SET LOCAL lock_timeout = '5s'"))
            lock_journal(session_two)


def test_empty_book_frame_matches_loaded_shape(database_url: str) -> None:
    with session_factory(database_url)() as session:
        loaded = load_book(session, ACCOUNT_ID)
    assert list(loaded.columns) == list(empty_book().columns)

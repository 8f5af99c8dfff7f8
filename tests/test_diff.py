"""The diff: exact, identity by asset_id, and applying it to the book yields the snapshot."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from recon.diff import Diff, diff_positions, empty_book
from recon.position import (
    COLUMNS,
    DECIMAL_FIELDS,
    MATERIAL_FIELDS,
    SMALL_FRAME,
    frame_records,
    parse_record,
    positions_frame,
)
from recon.schemas.result import RunResult
from recon.snapshot import AccountSummary, Snapshot
from recon.store.book import load_book
from recon.store.database import session_factory
from recon.store.writer import apply_reconciliation
from tests.factories import frame, raw_position

SYMBOLS = [f"S{i}" for i in range(12)]
decimal_text = st.decimals(
    min_value=Decimal("0.000000001"), max_value=Decimal("99999999"), places=9, allow_nan=False
).map(lambda d: format(d.normalize() if d == d.to_integral() else d, "f"))


@st.composite
def books(draw: st.DrawFn) -> list[dict[str, object]]:
    symbols = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=len(SYMBOLS)))
    return [
        raw_position(s, draw(decimal_text), draw(decimal_text), avg=draw(decimal_text))
        for s in symbols
    ]


@settings(max_examples=100, deadline=None)
@given(snapshot=books())
def test_a_snapshot_diffed_with_itself_is_empty(snapshot) -> None:
    s = frame(snapshot)
    diff = diff_positions(s.copy(), s)
    assert not diff.has_changes
    assert diff.changes == []
    assert diff.unchanged == len(s)
    assert diff.refreshed.empty


def test_equal_decimals_with_different_scale_are_not_a_change() -> None:
    book = frame([raw_position("AAPL", "1.5", "10.00")])
    snap = frame([raw_position("AAPL", "1.50", "10.0")])
    diff = diff_positions(book, snap)
    assert not diff.has_changes
    assert diff.unchanged == 1


def test_last_fractional_digit_is_a_change() -> None:
    book = frame([raw_position("NVDA", "0.173011547", "100")])
    snap = frame([raw_position("NVDA", "0.173011548", "100")])
    diff = diff_positions(book, snap)
    assert diff.symbols("updated") == ["NVDA"]
    assert diff.changes[0].fields["qty"] == ("0.173011547", "0.173011548")


def test_rename_keeps_identity_and_is_an_update() -> None:
    book = frame([raw_position("FB", "3", "300", asset="aaaaaaaa-0000-4000-8000-000000000001")])
    snap = frame([raw_position("META", "3", "300", asset="aaaaaaaa-0000-4000-8000-000000000001")])
    diff = diff_positions(book, snap)
    assert diff.symbols("updated") == ["META"]
    assert diff.symbols("created") == diff.symbols("removed") == []
    assert diff.changes[0].fields == {"symbol": ("FB", "META")}


def test_price_moves_refresh_without_a_change() -> None:
    book = frame([raw_position("AAPL", "10", "100.00", avg="90")])
    snap = frame([raw_position("AAPL", "10", "101.25", avg="90")])
    diff = diff_positions(book, snap)
    assert not diff.has_changes
    assert list(diff.refreshed.index) == list(snap.index)


def test_created_removed_and_field_details() -> None:
    book = frame([raw_position("AAPL", "10", "100"), raw_position("MSFT", "5", "300")])
    snap = frame([raw_position("AAPL", "12", "100"), raw_position("TSLA", "-4", "200")])
    diff = diff_positions(book, snap)
    assert diff.symbols("created") == ["TSLA"]
    assert diff.symbols("updated") == ["AAPL"]
    assert diff.symbols("removed") == ["MSFT"]
    aapl = next(c for c in diff.changes if c.symbol == "AAPL")
    assert aapl.fields["qty"] == ("10", "12")
    assert aapl.fields["cost_basis"] == ("1000", "1200")
    tsla = next(c for c in diff.changes if c.symbol == "TSLA")
    assert tsla.fields["side"] == (None, "short")
    assert tsla.fields["qty"] == (None, "-4")


def test_failed_records_protect_their_local_rows() -> None:
    book = frame([raw_position("AAPL", "10", "100"), raw_position("BTCUSD", "1", "50000")])
    snap = frame([raw_position("AAPL", "10", "100")])
    by_id = diff_positions(book, snap, protected_ids=[book.index[1]])
    by_symbol = diff_positions(book, snap, protected_symbols=["BTCUSD"])
    for diff in (by_id, by_symbol):
        assert diff.removed.empty
        assert diff.held_back == ["BTCUSD"]


def test_empty_book_creates_everything() -> None:
    snap = frame([raw_position("AAPL", "10", "100"), raw_position("SPY", "1", "500")])
    diff = diff_positions(empty_book(), snap)
    assert sorted(diff.symbols("created")) == ["AAPL", "SPY"]


# -- the property through the real writer, on a real database --------------------------------
# (It replaces one that checked the diff against a copy of the writer written in this file,
# on books without shorts, zeros or renames, with expectations parsed by the code under test.)

UNIVERSE = 10  # asset i is listed as S<i>, or renamed R<i>
signed_text = st.decimals(
    min_value=Decimal("-99999999"), max_value=Decimal("99999999"), places=9, allow_nan=False
).map(lambda d: format(d, "f"))
zero_or_price = st.one_of(st.sampled_from(["0", "0.00", "0.000000000"]), decimal_text)


@st.composite
def raw_books(draw: st.DrawFn) -> list[dict[str, object]]:
    """Longs and shorts, zero prices and zero qty_available, and either name of an asset."""
    held = draw(st.lists(st.integers(0, UNIVERSE - 1), unique=True, max_size=UNIVERSE))
    records = []
    for i in held:
        qty = draw(signed_text.filter(lambda t: Decimal(t) != 0))  # Alpaca never lists qty 0
        available = draw(st.sampled_from([qty, "0", format(Decimal(qty) / 2, "f")]))
        symbol = draw(st.sampled_from([f"S{i}", f"R{i}"]))
        price, avg = draw(zero_or_price), draw(zero_or_price)
        asset = f"aaaaaaaa-0000-4000-8000-{i:012d}"
        records.append(
            raw_position(symbol, qty, price, avg=avg, asset=asset, qty_available=available)
        )
    return records


def _material(raw: dict[str, object]) -> tuple[object, ...]:
    """A record's material fields read straight from the raw strings, not by recon code."""
    return tuple(
        Decimal(str(raw[name])) if name in DECIMAL_FIELDS else raw[name] for name in MATERIAL_FIELDS
    )


def _write(sessions: sessionmaker[Session], diff: Diff, account: str) -> RunResult:
    """The flow's own path from a diff to the store: the result the flow builds, then the writer."""
    snapshot = Snapshot(
        account=AccountSummary(account, None, None), positions=diff.created, market_open=None
    )
    result = RunResult.from_diff(snapshot, diff, started_at=datetime.now(UTC), flow_run_id=None)
    return apply_reconciliation(sessions, diff, result)


def _assert_stored_equals_raw(sessions: sessionmaker[Session], account: str, raw: list) -> None:  # type: ignore[type-arg]
    with sessions() as session:
        stored = load_book(session, account)
    expected = {r["asset_id"]: r for r in raw}
    assert set(stored.index) == set(expected)
    for asset, record in expected.items():
        row = stored.loc[asset]
        for name in COLUMNS[2:]:
            want, got = record[name], row[name]
            if name in DECIMAL_FIELDS:
                assert isinstance(got, Decimal) and got == Decimal(str(want)), (name, want, got)
            else:
                assert got == want, (name, want, got)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one account per example
)
@given(book=raw_books(), snapshot=raw_books())
def test_the_writer_turns_the_stored_book_into_the_snapshot(
    database_url: str, book: list[dict[str, object]], snapshot: list[dict[str, object]]
) -> None:
    sessions = session_factory(database_url)
    account = str(uuid.uuid4())
    _write(sessions, diff_positions(empty_book(), frame(book, account)), account)
    _assert_stored_equals_raw(sessions, account, book)

    with sessions() as session:
        stored = load_book(session, account)
    diff = diff_positions(stored, frame(snapshot, account))
    result = _write(sessions, diff, account)
    _assert_stored_equals_raw(sessions, account, snapshot)

    # The classification, from the raw strings alone.
    before = {r["asset_id"]: _material(r) for r in book}
    after = {r["asset_id"]: _material(r) for r in snapshot}
    symbol_of = {r["asset_id"]: r["symbol"] for r in snapshot}
    assert sorted(result.created) == sorted(symbol_of[a] for a in after.keys() - before.keys())
    assert sorted(result.removed) == sorted(r["symbol"] for r in book if r["asset_id"] not in after)
    changed = [a for a in after.keys() & before.keys() if after[a] != before[a]]
    assert sorted(result.updated) == sorted(symbol_of[a] for a in changed)
    assert result.unchanged == len(after.keys() & before.keys()) - len(changed)
    assert (result.event_id is not None) == bool(result.total_changes)


def test_a_frame_is_the_same_built_either_way_and_read_back_exactly() -> None:
    # One account's book is built from one object array, a large one by pandas'
    # from_records (SMALL_FRAME): both give the same frame, decimals and None as they were.
    raw = [raw_position(f"S{i}", f"{i}.{i % 7}01", "12.5") for i in range(SMALL_FRAME + 1)]
    raw[3]["unrealized_intraday_pl"] = None
    records = [parse_record(r, "acct") for r in raw]
    rows = [tuple(r[name] for name in COLUMNS) for r in records]
    large = positions_frame(records)  # past SMALL_FRAME: from_records
    assert len(large) == SMALL_FRAME + 1
    for small in (positions_frame(records[:SMALL_FRAME]), positions_frame(rows[:SMALL_FRAME])):
        pd.testing.assert_frame_equal(small, large.iloc[:SMALL_FRAME])
        assert set(small.dtypes) == {np.dtype(object)} and small.index.dtype == object
        assert small.loc[records[3]["asset_id"], "unrealized_intraday_pl"] is None
        assert frame_records(small) == records[:SMALL_FRAME]
        assert frame_records(small) == small.to_dict(orient="records")
    assert frame_records(large, ["symbol", "qty"]) == [
        {"symbol": r["symbol"], "qty": r["qty"]} for r in records
    ]
    assert str(large.loc[records[5]["asset_id"], "qty"]) == "5.501"
    with pytest.raises(KeyError, match="'nope'"):
        frame_records(large, ["qty", "nope"])
    empty = positions_frame([])
    assert list(empty.columns) == list(COLUMNS) and frame_records(empty) == []

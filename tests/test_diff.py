"""The diff: exact, identity by asset_id, and applying it to the book yields the snapshot."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.diff import diff_positions, empty_book
from recon.position import COLUMNS, MARKET_FIELDS
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


def apply(book: pd.DataFrame, diff) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """What the writer does, in pandas: delete removed, upsert created/updated/refreshed."""
    kept = book.drop(index=diff.removed.index)
    for rows in (diff.created, diff.updated):
        kept = pd.concat([kept.drop(index=rows.index, errors="ignore"), rows])
    for asset_id, row in diff.refreshed.iterrows():
        for name in MARKET_FIELDS:
            kept.at[asset_id, name] = row[name]
    return kept


def same_rows(left: pd.DataFrame, right: pd.DataFrame) -> bool:
    if set(left.index) != set(right.index):
        return False
    return all(
        left.loc[i, c] == right.loc[i, c] and str(left.loc[i, c]) == str(right.loc[i, c])
        for i in left.index
        for c in COLUMNS
    )


@settings(max_examples=150, deadline=None)
@given(book=books(), snapshot=books())
def test_applying_the_diff_yields_the_snapshot(book, snapshot) -> None:
    b, s = frame(book), frame(snapshot)
    diff = diff_positions(b, s)
    assert same_rows(apply(b, diff), s)
    assert len(diff.created) + len(diff.updated) + diff.unchanged == len(s)


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

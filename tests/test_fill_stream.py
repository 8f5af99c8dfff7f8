"""The pieces of fill handling that need no stack: settings, parsing, coalescing, dedup, and
the alpaca-py internals `recon/broker/stream.py` relies on."""

from __future__ import annotations

import inspect
from decimal import Decimal

import pytest
from alpaca.trading.stream import TradingStream

from recon.broker import AlpacaTradingBroker
from recon.fills import Batch, Dedup, parse_trade_update
from recon.settings import Settings


def test_alpaca_py_still_has_what_fill_stream_overrides() -> None:
    # FillStream overrides these and reads these attributes; a rename in a new alpaca-py
    # would silently turn the hooks off, so it fails here instead.
    for name in ("_auth", "_dispatch", "close", "_run_forever", "stop_ws"):
        assert inspect.iscoroutinefunction(getattr(TradingStream, name)), name
    stream = TradingStream("k", "s", raw_data=True, url_override="ws://x/stream")
    assert {"_ws", "_api_key", "_secret_key", "_endpoint"} <= set(vars(stream))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "wss://paper-api.alpaca.markets/stream"),
        ({"ALPACA_PAPER": "false"}, "wss://api.alpaca.markets/stream"),
        ({"ALPACA_BASE_URL": "http://127.0.0.1:8765"}, "ws://127.0.0.1:8765/stream"),
        ({"ALPACA_BASE_URL": "https://broker.example/"}, "wss://broker.example/stream"),
        (
            {"ALPACA_BASE_URL": "https://a", "ALPACA_STREAM_URL": "wss://b/stream"},
            "wss://b/stream",
        ),
    ],
)
def test_stream_url_follows_base_url_then_paper(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ALPACA_PAPER", "ALPACA_BASE_URL", "ALPACA_STREAM_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None).resolved_stream_url == expected  # type: ignore[call-arg]


def _message(event: str, execution_id: str, position_qty: str, timestamp: str) -> dict[str, object]:
    return {
        "stream": "trade_updates",
        "data": {
            "event": event,
            "execution_id": execution_id,
            "order": {"asset_id": "asset-1", "symbol": "AAPL"},
            "price": "105.8988475",
            "qty": "1790.86",
            "position_qty": position_qty,
            "timestamp": timestamp,
        },
    }


def test_fill_numbers_are_exact_and_other_events_ignored() -> None:
    fill = parse_trade_update(_message("fill", "e1", "-0.000000001", "2022-04-19T17:45:05Z"))
    assert fill is not None
    assert fill.price == Decimal("105.8988475") and fill.qty == Decimal("1790.86")
    assert fill.position_qty == Decimal("-0.000000001")
    assert parse_trade_update(_message("new", "e2", "0", "t")) is None
    assert parse_trade_update(_message("canceled", "e3", "0", "t")) is None
    assert parse_trade_update({"stream": "trade_updates", "data": {"event": "fill"}}) is None
    assert parse_trade_update("not a message") is None


def test_batch_coalesces_per_asset_and_keeps_the_latest_position_by_timestamp() -> None:
    batch = Batch()
    later = parse_trade_update(_message("fill", "e2", "0", "2026-01-01T00:00:02.000000Z"))
    earlier = parse_trade_update(_message("partial_fill", "e1", "5", "2026-01-01T00:00:01.000000Z"))
    assert later is not None and earlier is not None
    batch.add(later, 2.0)  # delivered out of order
    batch.add(earlier, 3.0)
    [entry] = batch.assets.values()
    assert entry.execution_ids == ["e2", "e1"] and len(batch) == 2
    assert entry.position_qty == Decimal(0)  # the later execution's, not the last delivered


def test_dedup_skips_repeats_within_its_window() -> None:
    dedup = Dedup(size=2)
    assert dedup.first_time("a") and not dedup.first_time("a")
    assert dedup.first_time("b") and dedup.first_time("c")
    assert dedup.first_time("a")  # fell out of the window: costs one more read, no harm


def test_per_asset_read_returns_none_on_404(sim: object, env: pytest.MonkeyPatch) -> None:
    env.setenv("ALPACA_BASE_URL", sim.base_url)  # type: ignore[attr-defined]
    env.setenv("ALPACA_API_KEY", sim.api_key)  # type: ignore[attr-defined]
    env.setenv("ALPACA_SECRET_KEY", sim.secret_key)  # type: ignore[attr-defined]
    broker = AlpacaTradingBroker(Settings())
    [record, *_] = sim.broker_positions()  # type: ignore[attr-defined]
    assert broker.fetch_position(record["asset_id"]) == record
    assert broker.fetch_position("00000000-0000-0000-0000-000000000000") is None
    assert broker.fetch_account_id() == sim.broker("/v2/account")["id"]  # type: ignore[attr-defined]

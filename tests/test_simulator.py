"""The simulated Alpaca broker, exercised over real HTTP with alpaca-py's own TradingClient."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import Portfolio, SimulatorConfig, SimulatorServer
from simulator.app import create_app
from simulator.clock import NEW_YORK, market_clock
from tests.support.wait import wait_until

FIXTURES = Path(__file__).parent / "fixtures" / "alpaca"
KEY, SECRET = "sim-key", "sim-secret"
AUTH = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
CENT = Decimal("0.01")
POSITION_NUMBERS = [
    "qty",
    "avg_entry_price",
    "market_value",
    "cost_basis",
    "unrealized_pl",
    "unrealized_plpc",
    "unrealized_intraday_pl",
    "unrealized_intraday_plpc",
    "current_price",
    "lastday_price",
    "change_today",
    "qty_available",
]
ACCOUNT_NUMBERS = [
    "cash",
    "buying_power",
    "regt_buying_power",
    "options_buying_power",
    "effective_buying_power",
    "non_marginable_buying_power",
    "portfolio_value",
    "equity",
    "last_equity",
    "long_market_value",
    "short_market_value",
    "position_market_value",
    "initial_margin",
    "maintenance_margin",
    "last_maintenance_margin",
    "sma",
    "multiplier",
    "accrued_fees",
]


def control_auth(config: SimulatorConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.control_token}"}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(seed=7)) as running:
        yield running


@pytest.fixture
def client(server: SimulatorServer) -> TradingClient:
    return TradingClient(
        api_key=KEY, secret_key=SECRET, raw_data=True, url_override=server.base_url
    )


@pytest.fixture
def typed_client(server: SimulatorServer) -> TradingClient:
    return TradingClient(api_key=KEY, secret_key=SECRET, url_override=server.base_url)


@pytest.fixture
def control(server: SimulatorServer) -> Iterator[httpx.Client]:
    headers = control_auth(server.config)
    with httpx.Client(base_url=server.base_url + "/_sim", headers=headers, timeout=10) as http:
        yield http


@pytest.fixture
def broker(server: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url + "/v2", headers=AUTH, timeout=10) as http:
        yield http


def arm(control: httpx.Client, **fault: Any) -> None:
    response = control.post("/fault", json=fault)
    assert response.status_code == 200, response.text


def logged(control: httpx.Client) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = control.get("/requests").json()
    return entries


def assert_ties_out(positions: list[dict[str, Any]], account: dict[str, Any]) -> None:
    values = [Decimal(p["market_value"]) for p in positions]
    long = sum((v for v in values if v > 0), Decimal(0))
    short = sum((v for v in values if v < 0), Decimal(0))
    assert Decimal(account["long_market_value"]) == long
    assert Decimal(account["short_market_value"]) == short
    assert Decimal(account["position_market_value"]) == long - short
    equity = Decimal(account["cash"]) + long + short
    assert Decimal(account["equity"]) == Decimal(account["portfolio_value"]) == equity
    for field in ACCOUNT_NUMBERS:
        assert NUMBER.match(account[field]), (field, account[field])


def assert_consistent(p: dict[str, Any]) -> None:
    for field in POSITION_NUMBERS:
        assert NUMBER.match(p[field]), (p["symbol"], field, p[field])
    qty, price = Decimal(p["qty"]), Decimal(p["current_price"])
    avg, lastday = Decimal(p["avg_entry_price"]), Decimal(p["lastday_price"])
    multiplier = 100 if p["asset_class"] == "us_option" else 1

    def money(value: Decimal) -> Decimal:
        return value if p["asset_class"] == "crypto" else value.quantize(CENT)

    market_value, cost_basis = Decimal(p["market_value"]), Decimal(p["cost_basis"])
    assert market_value == money(qty * price * multiplier)
    assert cost_basis == money(qty * avg * multiplier)
    assert Decimal(p["unrealized_pl"]) == market_value - cost_basis
    plpc = (market_value - cost_basis) / abs(cost_basis)
    assert abs(Decimal(p["unrealized_plpc"]) - plpc) <= Decimal("0.000001")
    intraday = market_value - money(qty * lastday * multiplier)
    assert Decimal(p["unrealized_intraday_pl"]) == intraday
    assert abs(Decimal(p["change_today"]) - (price - lastday) / lastday) <= Decimal("0.000001")
    assert p["side"] == ("short" if qty < 0 else "long")
    assert (market_value < 0) == (qty < 0)
    available = Decimal(p["qty_available"])
    assert abs(available) <= abs(qty) and (available == 0 or (available < 0) == (qty < 0))


# -- the generated book ------------------------------------------------------------------------


def test_positions_and_account_tie_out_across_steps(
    client: TradingClient, control: httpx.Client
) -> None:
    seen_symbols: set[str] = set()
    for step in range(21):
        positions = client.get_all_positions()
        account = client.get_account()
        assert account["id"] == SimulatorConfig().account_id
        assert account["status"] == "ACTIVE" and account["currency"] == "USD"
        assert_ties_out(positions, account)
        for position in positions:
            assert_consistent(position)
        seen_symbols |= {p["symbol"] for p in positions}
        assert control.post("/step", json={"n": 1}).json()["step"] == step + 1
    # Twenty steps of drift open something from the pool and perform the first rename.
    assert "META" in seen_symbols and seen_symbols - {p["symbol"] for p in positions} != set()


def test_book_covers_the_shapes_a_reconciler_meets(client: TradingClient) -> None:
    by_symbol = {p["symbol"]: p for p in client.get_all_positions()}
    assert {"AAPL", "MSFT", "SPY", "NVDA", "TSLA", "GME", "BTCUSD", "ETHUSD", "FB"} <= set(
        by_symbol
    )
    for short in ("TSLA", "GME"):
        assert by_symbol[short]["side"] == "short"
        assert Decimal(by_symbol[short]["qty"]) < 0 < -Decimal(by_symbol[short]["market_value"])
    nvda_qty = Decimal(by_symbol["NVDA"]["qty"])
    assert nvda_qty != nvda_qty.to_integral_value() and 0 < nvda_qty < 1
    for coin in ("BTCUSD", "ETHUSD"):
        record = by_symbol[coin]
        assert (record["asset_class"], record["exchange"]) == ("crypto", "CRYPTO")
        assert record["asset_marginable"] is False
    option = by_symbol["AAPL250620C00100000"]
    assert (option["asset_class"], option["exchange"]) == ("us_option", "")
    expected = Decimal(option["qty"]) * Decimal(option["current_price"]) * 100
    assert Decimal(option["market_value"]) == expected
    assert any(Decimal(p["qty_available"]) != Decimal(p["qty"]) for p in by_symbol.values())
    assert set(by_symbol["AAPL"]) == set(
        fixture("position_crypto_btcusd_alpaca_docs_broker_crypto_guide.json")
    )


def test_typed_alpaca_py_models_accept_the_payloads(typed_client: TradingClient) -> None:
    positions = typed_client.get_all_positions()
    account = typed_client.get_account()
    clock = typed_client.get_clock()
    assert len(positions) == 12 and account.status == "ACTIVE"
    assert clock.next_open.tzinfo is not None


def test_account_has_current_fields_and_no_pattern_day_trader_fields(
    client: TradingClient,
) -> None:
    account = client.get_account()
    real = fixture("account_openapi_v2_account_example.json")
    removed = {"pattern_day_trader", "daytrade_count", "daytrading_buying_power", "bod_dtbp"}
    assert not removed & set(account)
    assert set(account) <= set(real) | {"options_approved_level"}


def test_same_seed_same_book_other_seed_other_book() -> None:
    def snapshot(seed: int, steps: int) -> tuple[Any, Any]:
        with (
            SimulatorServer(SimulatorConfig(seed=seed)) as srv,
            httpx.Client(base_url=srv.base_url, timeout=10) as http,
        ):
            http.post("/_sim/step", json={"n": steps}, headers=control_auth(srv.config))
            return http.get("/v2/positions", headers=AUTH).json(), http.get(
                "/v2/account", headers=AUTH
            ).json()

    assert snapshot(11, 15) == snapshot(11, 15)
    assert snapshot(11, 15) != snapshot(12, 15)
    assert snapshot(11, 0) != snapshot(11, 15)


def test_rename_keeps_asset_id(client: TradingClient, control: httpx.Client) -> None:
    fb = client.get_open_position("FB")
    for _ in range(10):
        control.post("/step", json={"n": 1})
        symbols = {p["symbol"] for p in client.get_all_positions()}
        if "META" in symbols:
            break
    assert "META" in symbols and "FB" not in symbols
    meta = client.get_open_position("META")
    assert meta["asset_id"] == fb["asset_id"]
    assert client.get_open_position(fb["asset_id"])["symbol"] == "META"


def test_single_position_lookup_and_404(client: TradingClient) -> None:
    btc = client.get_open_position("BTC/USD")
    assert btc["symbol"] == "BTCUSD"
    assert client.get_open_position(btc["asset_id"]) == btc
    with pytest.raises(APIError) as caught:
        client.get_open_position("ZZZZ")
    assert caught.value.status_code == 404
    assert (caught.value.code, caught.value.message) == (40410000, "position does not exist")


def test_partial_fills_update_average_entry_price() -> None:
    portfolio = Portfolio(seed=3, account_id="acct")
    grew = shrank = 0
    for _ in range(150):
        before = {p["asset_id"]: p for p in portfolio.positions()}
        portfolio.step()
        for after in portfolio.positions():
            old = before.get(after["asset_id"])
            if old is None or old["qty"] == after["qty"]:
                continue
            old_size, new_size = abs(Decimal(old["qty"])), abs(Decimal(after["qty"]))
            assert (Decimal(old["qty"]) < 0) == (Decimal(after["qty"]) < 0)
            if new_size > old_size:
                grew += 1
                total = old_size * Decimal(old["avg_entry_price"]) + (
                    new_size - old_size
                ) * Decimal(after["current_price"])
                expected = (total / new_size).quantize(Decimal("0.000001"))
                assert Decimal(after["avg_entry_price"]) == expected
            else:
                shrank += 1
                assert after["avg_entry_price"] == old["avg_entry_price"]
    assert grew and shrank


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), steps=st.integers(min_value=0, max_value=40))
def test_any_seed_stays_consistent(seed: int, steps: int) -> None:
    portfolio = Portfolio(seed=seed, account_id="acct")
    portfolio.advance(steps)
    positions = portfolio.positions()
    assert_ties_out(positions, portfolio.account())
    for position in positions:
        assert_consistent(position)
    assert len({p["asset_id"] for p in positions}) == len(positions)


def test_drift_advances_lazily_per_elapsed_interval() -> None:
    now = [100.0]
    config = SimulatorConfig(seed=5, drift_seconds=10)
    with (
        SimulatorServer(config, monotonic=lambda: now[0]) as srv,
        httpx.Client(
            base_url=srv.base_url, headers=AUTH | control_auth(config), timeout=10
        ) as http,
    ):
        assert http.get("/_sim/state").json()["step"] == 0
        now[0] = 125.0
        served = http.get("/v2/positions").json()
        assert http.get("/_sim/state").json()["step"] == 2
        expected = Portfolio(seed=5, account_id=config.account_id)
        expected.advance(2)
        assert served == expected.positions()
        now[0] = 129.9
        assert http.get("/_sim/state").json()["step"] == 2
        now[0] = 130.0
        assert http.get("/_sim/state").json()["step"] == 3


# -- clock -------------------------------------------------------------------------------------


def test_clock_over_http_has_alpaca_shape(client: TradingClient) -> None:
    clock = client.get_clock()
    real = fixture("clock_alpaca_docs.json")
    assert set(clock) == set(real) and isinstance(clock["is_open"], bool)
    stamps = {k: dt.datetime.fromisoformat(clock[k]) for k in ("timestamp", "next_open")}
    assert all(stamp.utcoffset() is not None for stamp in stamps.values())
    assert stamps["timestamp"] < stamps["next_open"]


@pytest.mark.parametrize(
    ("local", "is_open", "next_open", "next_close"),
    [
        ("2026-07-01T10:00", True, "2026-07-02T09:30:00-04:00", "2026-07-01T16:00:00-04:00"),
        ("2026-07-01T08:00", False, "2026-07-01T09:30:00-04:00", "2026-07-01T16:00:00-04:00"),
        ("2026-07-03T16:00", False, "2026-07-06T09:30:00-04:00", "2026-07-06T16:00:00-04:00"),
        ("2026-07-04T12:00", False, "2026-07-06T09:30:00-04:00", "2026-07-06T16:00:00-04:00"),
        # Across the switch to daylight saving time (2026-03-08).
        ("2026-03-06T17:00", False, "2026-03-09T09:30:00-04:00", "2026-03-09T16:00:00-04:00"),
    ],
)
def test_market_clock(local: str, is_open: bool, next_open: str, next_close: str) -> None:
    now = dt.datetime.fromisoformat(local).replace(tzinfo=NEW_YORK)
    clock = market_clock(now.astimezone(dt.UTC))
    assert clock == {
        "timestamp": now.isoformat(),
        "is_open": is_open,
        "next_open": next_open,
        "next_close": next_close,
    }


# -- auth and the request log ------------------------------------------------------------------


def test_wrong_keys_get_alpacas_401_and_are_not_retried(
    server: SimulatorServer, control: httpx.Client
) -> None:
    wrong = TradingClient(
        api_key=KEY, secret_key="nope", raw_data=True, url_override=server.base_url
    )
    with pytest.raises(APIError) as caught:
        wrong.get_all_positions()
    assert caught.value.status_code == 401
    assert json.loads(str(caught.value)) == {
        "code": 40110000,
        "message": "request is not authorized",
    }
    assert httpx.get(server.base_url + "/v2/account").status_code == 401
    assert [(e["path"], e["status"]) for e in logged(control)] == [
        ("/v2/positions", 401),
        ("/v2/account", 401),
    ]


def test_rotated_keys_turn_the_configured_ones_into_wrong_ones(
    server: SimulatorServer, client: TradingClient, control: httpx.Client
) -> None:
    assert control.put("/keys", json={"api_key": "new", "secret_key": ""}).status_code == 422
    assert control.put("/keys", json={"api_key": "new", "secret_key": "s2"}).is_success
    with pytest.raises(APIError) as caught:
        client.get_all_positions()
    assert caught.value.status_code == 401
    rotated = TradingClient(
        api_key="new", secret_key="s2", raw_data=True, url_override=server.base_url
    )
    assert isinstance(rotated.get_account(), dict)
    control.post("/reset")
    assert isinstance(client.get_account(), dict)


def test_request_log_counts_and_clears(client: TradingClient, control: httpx.Client) -> None:
    client.get_all_positions()
    client.get_account()
    client.get_clock()
    entries = logged(control)
    assert [(e["method"], e["path"], e["status"]) for e in entries] == [
        ("GET", "/v2/positions", 200),
        ("GET", "/v2/account", 200),
        ("GET", "/v2/clock", 200),
    ]
    assert all(dt.datetime.fromisoformat(e["time"]).tzinfo for e in entries)
    assert control.delete("/requests").json() == {"cleared": 3}
    assert logged(control) == []


# -- faults ------------------------------------------------------------------------------------

ALPACA_ERRORS = {
    401: {"code": 40110000, "message": "request is not authorized"},
    403: {"message": "forbidden."},
    404: {"code": 40410000, "message": "position does not exist"},
    422: {"code": 42210000, "message": "invalid symbol"},
    500: {"code": 50010000, "message": "internal server error occurred, retry later"},
    502: {"code": 50010000, "message": "internal server error occurred, retry later"},
    503: {"code": 50010000, "message": "internal server error occurred, retry later"},
}


@pytest.mark.parametrize("status", sorted(ALPACA_ERRORS))
def test_status_fault_once_then_clears(
    status: int, client: TradingClient, control: httpx.Client
) -> None:
    arm(control, mode="status", status=status, path="/v2/positions", count=1)
    with pytest.raises(APIError) as caught:
        client.get_all_positions()
    assert caught.value.status_code == status
    assert json.loads(str(caught.value)) == ALPACA_ERRORS[status]
    if status == 403:
        with pytest.raises(KeyError):
            _ = caught.value.code
    assert control.get("/state").json()["fault"] is None
    assert len(client.get_all_positions()) == 12
    assert [e["status"] for e in logged(control)] == [status, 200]


@pytest.mark.parametrize("status", [429, 504])
def test_retryable_status_fault_counts_down(
    status: int, broker: httpx.Client, control: httpx.Client
) -> None:
    arm(control, mode="status", status=status, count=2)
    assert broker.get("/account").status_code == status
    assert control.get("/state").json()["fault"]["count"] == 1
    sent = time.time()
    response = broker.get("/account")
    answered = time.time()
    assert response.status_code == status
    assert control.get("/state").json()["fault"] is None
    if status == 429:
        assert response.json() == {"code": 42910000, "message": "rate limit exceeded"}
        assert response.headers["X-RateLimit-Limit"] == "200"
        assert response.headers["X-RateLimit-Remaining"] == "0"
        # Two seconds after the answer, in epoch seconds: bracketed by the request's own
        # send and receive times, however slow the machine.
        reset = int(response.headers["X-RateLimit-Reset"])
        assert int(sent) + 2 <= reset <= int(answered) + 2
    else:
        assert response.json()["code"] == 50010000
    assert broker.get("/account").status_code == 200


def test_fault_without_count_lasts_until_cleared_and_respects_path(
    broker: httpx.Client, control: httpx.Client
) -> None:
    arm(control, mode="status", status=503, path="/v2/account")
    for _ in range(3):
        assert broker.get("/account").status_code == 503
        assert broker.get("/positions").status_code == 200
    assert control.get("/state").json()["fault"]["count"] is None
    assert control.delete("/fault").json()["fault"] is None
    assert broker.get("/account").status_code == 200


def test_no_code_fault(client: TradingClient, broker: httpx.Client, control: httpx.Client) -> None:
    arm(control, mode="no_code", status=502, count=2)
    response = broker.get("/positions")
    assert response.status_code == 502 and set(response.json()) == {"message"}
    with pytest.raises(APIError) as caught:
        client.get_account()
    with pytest.raises(KeyError):
        _ = caught.value.code


def test_malformed_json_fault(
    client: TradingClient, broker: httpx.Client, control: httpx.Client
) -> None:
    arm(control, mode="malformed_json", count=2)
    response = broker.get("/positions")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        client.get_account()


def test_unknown_enum_fault_breaks_one_record(
    client: TradingClient, typed_client: TradingClient, control: httpx.Client
) -> None:
    arm(control, mode="unknown_enum", count=1)
    positions = client.get_all_positions()
    odd = [p for p in positions if p["asset_class"] not in ("us_equity", "us_option", "crypto")]
    assert [p["asset_class"] for p in odd] == ["ipo"] and len(positions) == 12
    # A typed client loses the whole list to that one record.
    arm(control, mode="unknown_enum", count=1)
    with pytest.raises(pydantic.ValidationError):
        typed_client.get_all_positions()
    # "crypto_perp" was once unknown too; alpaca-py 0.44 has since learnt it.
    arm(control, mode="unknown_enum", count=1, value="crypto_perp")
    assert len(typed_client.get_all_positions()) == 12


def test_missing_qty_fault_applies_only_where_positions_are_served(
    client: TradingClient, control: httpx.Client
) -> None:
    arm(control, mode="missing_qty", count=1)
    assert "cash" in client.get_account()
    assert control.get("/state").json()["fault"]["mode"] == "missing_qty"
    positions = client.get_all_positions()
    assert sum("qty" not in p for p in positions) == 1 and len(positions) == 12
    assert control.get("/state").json()["fault"] is None


def test_empty_positions_fault_keeps_account_full(
    client: TradingClient, control: httpx.Client
) -> None:
    arm(control, mode="empty_positions", count=1)
    assert client.get_all_positions() == []
    assert Decimal(client.get_account()["long_market_value"]) > 0
    assert len(client.get_all_positions()) == 12


def test_stall_delays_then_answers(broker: httpx.Client, control: httpx.Client) -> None:
    arm(control, mode="stall", delay=0.3, count=1)
    started = time.monotonic()
    response = broker.get("/positions")
    assert response.status_code == 200 and len(response.json()) == 12
    assert time.monotonic() - started >= 0.3


def test_stall_trips_a_client_timeout(server: SimulatorServer, control: httpx.Client) -> None:
    arm(control, mode="stall", delay=30, count=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.base_url + "/v2/positions", headers=AUTH, timeout=0.2)
    assert logged(control)[0]["fault"] == "stall"


def test_stall_does_not_block_other_requests(
    server: SimulatorServer, broker: httpx.Client, control: httpx.Client
) -> None:
    arm(control, mode="stall", delay=5.0, path="/v2/positions", count=1)
    with ThreadPoolExecutor(max_workers=1) as pool:
        stalled = pool.submit(
            httpx.get, server.base_url + "/v2/positions", headers=AUTH, timeout=30
        )
        wait_until(lambda: any(e["fault"] == "stall" for e in logged(control)))
        assert broker.get("/clock").status_code == 200
        # Answered while the stall still holds its request: no stopwatch needed.
        assert not stalled.done()
        assert stalled.result().status_code == 200


def test_drop_resets_the_connection(
    client: TradingClient, broker: httpx.Client, control: httpx.Client
) -> None:
    arm(control, mode="drop", count=2)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.get_all_positions()
    with pytest.raises(httpx.TransportError):
        broker.get("/account")
    assert [(e["status"], e["fault"]) for e in logged(control)] == [(None, "drop"), (None, "drop")]
    assert len(client.get_all_positions()) == 12


# -- loading real payloads ---------------------------------------------------------------------


def real_positions() -> list[dict[str, Any]]:
    return [
        *fixture("positions_stock_alpaca_py_tests.json"),
        *fixture("positions_fractional_lct_alpaca_docs.json"),
        fixture("position_crypto_btcusd_alpaca_docs_broker_crypto_guide.json"),
        fixture("position_openapi_example1.json"),
        fixture("position_openapi_example2.json"),
        fixture("position_stock_alpaca_docs.json"),
    ]


@pytest.mark.parametrize(
    "account_file",
    [
        "account_openapi_v2_account_example.json",
        "account_alpaca_docs.json",
        "account_alpaca_py_tests.json",
    ],
)
def test_load_serves_real_payloads_verbatim(
    account_file: str, server: SimulatorServer, client: TradingClient, control: httpx.Client
) -> None:
    positions, account = real_positions(), fixture(account_file)
    state = control.put("/positions", json={"positions": positions, "account": account}).json()
    assert state["loaded"] is True and state["positions"] == len(positions)
    raw = httpx.get(server.base_url + "/v2/positions", headers=AUTH)
    assert json.loads(raw.text) == positions
    assert client.get_account() == account
    control.post("/step", json={"n": 5})
    assert client.get_all_positions() == positions and client.get_account() == account
    assert client.get_open_position("AAPL ")["symbol"] == "AAPL "
    assert client.get_open_position("BTCUSD")["exchange"] == "FTXU"
    unloaded = control.delete("/positions").json()
    assert unloaded["loaded"] is False and unloaded["step"] == 5
    assert client.get_all_positions() != positions


def test_load_without_account_builds_one_that_ties_out(
    client: TradingClient, control: httpx.Client
) -> None:
    positions = real_positions()
    broken = {**fixture("position_openapi_example2.json"), "market_value": "n/a"}
    del positions[0]["market_value"]
    control.put("/positions", json={"positions": [*positions, broken]})
    served = client.get_all_positions()
    assert served == [*positions, broken]
    account = client.get_account()
    assert_ties_out(served[1:-1], account)


def test_faults_apply_to_loaded_payloads(client: TradingClient, control: httpx.Client) -> None:
    positions = real_positions()
    control.put("/positions", json={"positions": positions})
    arm(control, mode="missing_qty", count=1)
    served = client.get_all_positions()
    assert "qty" not in served[len(served) // 2]
    assert client.get_all_positions() == positions


# -- control API -------------------------------------------------------------------------------


def test_state_and_step(control: httpx.Client) -> None:
    assert control.get("/state").json() == {
        "step": 0,
        "positions": 12,
        "fault": None,
        "loaded": False,
    }
    assert control.post("/step").json()["step"] == 1
    assert control.post("/step", json={"n": 4}).json()["step"] == 5


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/fault", {"mode": "bogus"}),
        ("POST", "/fault", {"mode": "status", "status": 418}),
        ("POST", "/fault", {"mode": "status"}),
        ("POST", "/fault", {"mode": "stall"}),
        ("POST", "/fault", {"mode": "drop", "path": "/positions"}),
        ("POST", "/fault", {"mode": "drop", "count": 0}),
        ("POST", "/fault", {"mode": "drop", "status": 500}),
        ("POST", "/fault", {"mode": "drop", "colour": "red"}),
        ("POST", "/fault", {"mode": "no_code", "status": 200}),
        ("POST", "/step", {"n": 0}),
        ("POST", "/step", {"n": "many"}),
        ("PUT", "/positions", {"positions": {}}),
        ("PUT", "/positions", {"account": {}}),
        ("PUT", "/positions", {"positions": [1, 2]}),
    ],
)
def test_control_rejects_bad_bodies(
    method: str, path: str, body: dict[str, Any], control: httpx.Client
) -> None:
    response = control.request(method, path, json=body)
    assert response.status_code == 422 and "detail" in response.json()
    assert control.get("/state").json() == {
        "step": 0,
        "positions": 12,
        "fault": None,
        "loaded": False,
    }


def test_control_rejects_invalid_json(control: httpx.Client) -> None:
    response = control.post(
        "/fault", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def _control_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) of the app under /_sim, read from the app's own route table
    (through its OpenAPI document: FastAPI 0.150 nests included routers), not a list here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # /v2/{rest}'s several methods share an operation id
        paths = app.openapi()["paths"]
    found = [
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/_sim")
        for method in operations
    ]
    assert len(found) >= 10, found  # the enumeration itself must not come back empty
    return found


def _asgi_status(app: FastAPI, client: tuple[str, int], method: str, path: str, **kw: Any) -> int:
    """One request through the app's ASGI interface from `client`: a source address no
    socket on this machine could give."""

    async def send() -> int:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
            return (await http.request(method, path, **kw)).status_code

    return asyncio.run(send())


@pytest.mark.parametrize("outsider", ["192.0.2.2", "10.1.2.3", "2001:db8::1"])
def test_every_control_route_refuses_a_non_loopback_client(outsider: str) -> None:
    config = SimulatorConfig(seed=3)
    app = create_app(config)
    for method, path in _control_routes(app):
        # Even with the right token: the address check comes first.
        status = _asgi_status(app, (outsider, 1234), method, path, headers=control_auth(config))
        assert status == 403, (method, path, status)
    assert app.simulator.state()["step"] == 0


def test_every_control_route_needs_the_token_from_loopback() -> None:
    config = SimulatorConfig(seed=3)
    app = create_app(config)
    wrong = {"Authorization": "Bearer not-the-token"}
    for method, path in _control_routes(app):
        for headers in ({}, wrong, {"Authorization": config.control_token}):
            status = _asgi_status(app, ("127.0.0.1", 1234), method, path, headers=headers)
            assert status == 401, (method, path, headers, status)
    # The same client with the token is answered: the 401s above are the token's doing.
    ok = _asgi_status(app, ("::1", 1234), "GET", "/_sim/state", headers=control_auth(config))
    assert ok == 200


def test_unknown_v2_endpoint_is_logged_404(broker: httpx.Client, control: httpx.Client) -> None:
    assert broker.get("/orders").status_code == 404
    assert logged(control)[0]["status"] == 404


# -- server lifecycle --------------------------------------------------------------------------


def test_server_start_stop() -> None:
    srv = SimulatorServer()
    with pytest.raises(RuntimeError):
        _ = srv.base_url
    srv.start()
    url = srv.base_url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert httpx.get(url + "/v2/clock", headers=AUTH).status_code == 200
    srv.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/v2/clock", headers=AUTH)
    with SimulatorServer() as other:
        assert other.base_url != "" and other.config.seed == 42


def test_serve_runs_in_the_foreground_and_announces_its_url() -> None:
    code = "from simulator.server import serve, SimulatorConfig; serve(SimulatorConfig(seed=1))"
    process = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent
    )
    try:
        assert process.stderr is not None
        announced = None
        while announced is None:
            line = process.stderr.readline()
            assert line, "serve() exited before announcing its URL"
            announced = re.search(r"Alpaca simulator on (http://127\.0\.0\.1:\d+)", line)
        url = announced.group(1)
        assert httpx.get(url + "/v2/clock", headers=AUTH, timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
    assert process.returncode == 0

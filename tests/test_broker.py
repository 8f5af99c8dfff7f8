"""The alpaca-py adapter against the simulator over HTTP: timeouts, no stacked retries, errors."""

from __future__ import annotations

import socket
import time

import pytest

from recon.broker import AlpacaTradingBroker
from recon.errors import BrokerRejectedError, BrokerTransientError, ConfigurationError
from recon.settings import Settings
from tests.sim import Sim


def broker(sim: Sim, **overrides: object) -> AlpacaTradingBroker:
    values: dict[str, object] = {
        "ALPACA_API_KEY": sim.api_key,
        "ALPACA_SECRET_KEY": sim.secret_key,
        "ALPACA_BASE_URL": sim.base_url,
        "RECON_HTTP_TIMEOUT_SECONDS": 0.5,
    }
    values.update(overrides)
    return AlpacaTradingBroker(Settings(**values))  # type: ignore[arg-type]


def test_snapshot_is_raw_json_with_string_numbers(sim: Sim) -> None:
    raw = broker(sim).fetch_snapshot()
    assert raw.positions and all(isinstance(p["qty"], str) for p in raw.positions)
    assert isinstance(raw.account["long_market_value"], str)
    assert raw.clock is not None and isinstance(raw.clock["is_open"], bool)


@pytest.mark.parametrize("status", [429, 504])
def test_alpaca_py_does_not_retry_under_prefect(sim: Sim, status: int) -> None:
    """alpaca-py would retry 429/504 three times, 3 s apart; the adapter makes one attempt."""
    sim.fault("status", status=status, path="/v2/positions")
    started = time.monotonic()
    with pytest.raises(BrokerTransientError) as caught:
        broker(sim).fetch_snapshot()
    assert time.monotonic() - started < 2.5
    assert caught.value.status_code == status
    assert len(sim.requests("/v2/positions")) == 1


def test_a_stalled_response_times_out(sim: Sim) -> None:
    sim.fault("stall", delay=5.0, path="/v2/account")
    started = time.monotonic()
    with pytest.raises(BrokerTransientError, match=r"within 0\.5 s"):
        broker(sim).fetch_snapshot()
    assert time.monotonic() - started < 4


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (401, "request is not authorized (code 40110000)"),
        (403, "forbidden."),
        (422, "invalid symbol"),
    ],
)
def test_rejections_carry_alpacas_reason(sim: Sim, status: int, text: str) -> None:
    sim.fault("status", status=status, path="/v2/positions")
    with pytest.raises(BrokerRejectedError) as caught:
        broker(sim).fetch_snapshot()
    assert text in str(caught.value) and caught.value.status_code == status


def test_wrong_keys_are_rejected_and_never_echoed(sim: Sim) -> None:
    with pytest.raises(BrokerRejectedError) as caught:
        broker(sim, ALPACA_SECRET_KEY="wrong-secret-XYZZY").fetch_snapshot()
    assert "XYZZY" not in str(caught.value) and sim.api_key not in str(caught.value)


def test_malformed_json_and_connection_reset_are_transient(sim: Sim) -> None:
    sim.fault("malformed_json", path="/v2/positions", count=1)
    with pytest.raises(BrokerTransientError, match="not valid JSON"):
        broker(sim).fetch_snapshot()
    sim.fault("drop", path="/v2/positions", count=1)
    with pytest.raises(BrokerTransientError, match="connection failed"):
        broker(sim).fetch_snapshot()


def test_nothing_listening_is_transient(sim: Sim) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BrokerTransientError, match="connection failed"):
        broker(sim, ALPACA_BASE_URL=f"http://127.0.0.1:{port}").fetch_snapshot()


def test_missing_keys_are_a_clear_error_not_fake_data(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="ALPACA_API_KEY and ALPACA_SECRET_KEY"):
        AlpacaTradingBroker(Settings(_env_file=None))  # type: ignore[call-arg]

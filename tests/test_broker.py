"""The alpaca-py adapter against the simulator over HTTP: timeouts, no stacked retries, errors."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from pydantic import ValidationError

from recon.broker import AlpacaTradingBroker
from recon.errors import (
    BrokerRateLimitedError,
    BrokerRejectedError,
    BrokerTransientError,
    ConfigurationError,
)
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
    with pytest.raises(BrokerTransientError) as caught:
        broker(sim).fetch_snapshot()
    assert caught.value.status_code == status
    # The simulator's own count, not a stopwatch: a loaded machine cannot fake it.
    assert len(sim.requests("/v2/positions")) == 1


def test_a_429_waits_for_its_reset_before_failing_into_the_retry(sim: Sim) -> None:
    """The 429's X-RateLimit-Reset (two seconds ahead, in whole seconds) is waited for, not
    a blind backoff; still one attempt, the task's retry comes after the reset."""
    sim.fault("status", status=429, path="/v2/positions")
    started = time.monotonic()
    with pytest.raises(BrokerRateLimitedError) as caught:
        broker(sim).fetch_snapshot()
    assert caught.value.reset_after is not None and 0 < caught.value.reset_after <= 2
    assert time.monotonic() - started >= caught.value.reset_after
    assert len(sim.requests("/v2/positions")) == 1


def test_a_stalled_response_times_out(sim: Sim) -> None:
    sim.fault("stall", delay=60.0, path="/v2/account")
    started = time.monotonic()
    with pytest.raises(BrokerTransientError, match=r"within 0\.5 s"):
        broker(sim).fetch_snapshot()
    # 0.5 s timeout against a 60 s stall: generous for a loaded machine, far from the stall.
    assert time.monotonic() - started < 20


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


def test_the_environments_proxy_settings_still_apply(sim: Sim, env: pytest.MonkeyPatch) -> None:
    """The session reads the proxy variables once per origin, not on every request; an
    operator's proxy (and its exceptions) still apply."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    for name in ("HTTP_PROXY", "http_proxy"):
        env.setenv(name, f"http://127.0.0.1:{closed}")
    for name in ("NO_PROXY", "no_proxy"):
        env.delenv(name, raising=False)
    through_proxy = broker(sim)
    with pytest.raises(BrokerTransientError, match="connection failed"):
        through_proxy.fetch_snapshot()
    env.setenv("NO_PROXY", "127.0.0.1")  # the tests' own client goes straight again too
    assert sim.requests("/v2/positions") == []
    # A session made now takes the exception; the one above keeps what it read.
    assert broker(sim).fetch_snapshot().positions
    with pytest.raises(BrokerTransientError, match="connection failed"):
        through_proxy.fetch_snapshot()


def test_missing_keys_are_a_clear_error_not_fake_data(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="ALPACA_API_KEY and ALPACA_SECRET_KEY"):
        AlpacaTradingBroker(Settings(_env_file=None))  # type: ignore[call-arg]


@pytest.mark.parametrize("mode", ["echo", "echo_json"])
def test_a_proxy_echoing_the_key_headers_never_reaches_the_error(sim: Sim, mode: str) -> None:
    """Only the status and Alpaca's `message`/`code` pass: not the echoed request."""
    sim.fault(mode, status=502, path="/v2/positions")
    with pytest.raises(BrokerTransientError) as caught:
        broker(sim).fetch_snapshot()
    text = str(caught.value)
    assert caught.value.status_code == 502 and "HTTP 502" in text
    assert sim.api_key not in text and sim.secret_key not in text
    assert "APCA" not in text and "/v2/positions" not in text.split(":", 1)[1]
    if mode == "echo_json":
        assert text.endswith("bad gateway (code 50210000)")
    else:
        assert "no Alpaca error message" in text
    # The echo really carried the keys: the check above is not vacuous.
    echoed = httpx.get(
        f"{sim.base_url}/v2/positions",
        headers={"APCA-API-KEY-ID": sim.api_key, "APCA-API-SECRET-KEY": sim.secret_key},
        timeout=10,
    )
    assert sim.secret_key in echoed.text


@pytest.mark.parametrize(
    "url",
    [
        "https://paper-api.alpaca.markets",
        "http://127.0.0.1:8765",
        "http://127.9.9.9",
        "http://localhost:1234",
        "http://[::1]:8765",
    ],
)
def test_base_url_https_or_loopback_is_accepted(env: pytest.MonkeyPatch, url: str) -> None:
    assert Settings(ALPACA_BASE_URL=url).alpaca_base_url == url  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "url",
    [
        "http://paper-api.alpaca.markets",
        "http://10.0.0.5:8765",
        "http://user:pw@proxy.example",
        "ftp://127.0.0.1",
        "https://",
        "paper-api.alpaca.markets",
    ],
)
def test_base_url_over_plain_http_elsewhere_is_refused(env: pytest.MonkeyPatch, url: str) -> None:
    with pytest.raises(ValidationError, match="ALPACA_BASE_URL must be https://") as caught:
        Settings(ALPACA_BASE_URL=url)  # type: ignore[call-arg]
    assert "pw@" not in caught.value.errors()[0]["msg"]

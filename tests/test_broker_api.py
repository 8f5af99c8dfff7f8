"""The Broker API: the simulator's `/v1` over HTTP, and the BrokerClient adapter against it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from recon.broker.broker_api import BrokerApi
from recon.broker.protocol import RawSnapshot
from recon.errors import BrokerRateLimitedError, BrokerRejectedError, ConfigurationError
from recon.settings import Settings
from simulator.server import SimulatorConfig, SimulatorServer
from tests.sim import Sim

ACCOUNTS = 5


@pytest.fixture(scope="module")
def broker_server() -> Iterator[SimulatorServer]:
    # Two accounts a page: listing five takes three pages and an empty fourth.
    config = SimulatorConfig(seed=11, accounts=ACCOUNTS, broker_page_size=2)
    with SimulatorServer(config) as server:
        yield server


def settings(sim: Sim, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "RECON_SOURCE": "broker",
        "ALPACA_BROKER_API_KEY": sim.api_key,
        "ALPACA_BROKER_SECRET_KEY": sim.secret_key,
        "ALPACA_BROKER_BASE_URL": sim.base_url,
        "RECON_HTTP_TIMEOUT_SECONDS": 2,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def api(sim: Sim, **overrides: object) -> BrokerApi:
    # No Prefect server here: the global limit is tested in test_broker_flow.py.
    return BrokerApi(settings(sim, **overrides), limit_name=None)


def test_missing_broker_keys_are_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="ALPACA_BROKER_API_KEY and ALPACA_BROKER_SECRET"):
        Settings(RECON_SOURCE="broker").broker_credentials()  # type: ignore[call-arg]


def test_account_ids_are_a_comma_separated_list() -> None:
    chosen = Settings(RECON_ACCOUNT_IDS=" a , b,,c")  # type: ignore[call-arg]
    assert chosen.account_ids == ["a", "b", "c"]


def test_basic_auth_is_required(bsim: Sim) -> None:
    assert httpx.get(f"{bsim.base_url}/v1/accounts").status_code == 401
    wrong = httpx.get(f"{bsim.base_url}/v1/accounts", auth=(bsim.api_key, "nope"))
    assert wrong.status_code == 401
    # The trading API's headers are not the Broker API's auth.
    headers = {"APCA-API-KEY-ID": bsim.api_key, "APCA-API-SECRET-KEY": bsim.secret_key}
    assert httpx.get(f"{bsim.base_url}/v1/accounts", headers=headers).status_code == 401


def test_listing_pages_by_creation_time_and_skips_inactive_accounts(bsim: Sim) -> None:
    ids = bsim.account_ids()
    bsim.account_status(ids[1], "ACCOUNT_CLOSED")
    bsim.reset_log()
    listed = api(bsim).account_ids()
    assert listed == [ids[0], *ids[2:]]
    # Each page starts just before the last one's newest (ties in created_at are not lost):
    # [0, 2], [2, 3], [3, 4], then [4] with nothing new.
    assert len(bsim.requests("/v1/accounts")) == 4


def test_an_account_snapshot_is_raw_json(bsim: Sim) -> None:
    account_id = bsim.account_ids()[0]
    raw = api(bsim).broker_for(account_id).fetch_snapshot()
    assert raw.account["id"] == account_id
    assert raw.positions and all(isinstance(p["qty"], str) for p in raw.positions)
    assert raw.clock is not None and isinstance(raw.clock["is_open"], bool)


def test_one_failing_account_fails_alone(bsim: Sim) -> None:
    first, second, *_ = bsim.account_ids()
    bsim.account_fault(first, "fail", status=403)
    with pytest.raises(BrokerRejectedError, match="HTTP 403"):
        api(bsim).broker_for(first).fetch_snapshot()
    assert api(bsim).broker_for(second).fetch_snapshot().positions


def test_a_group_fetch_keeps_each_accounts_error_its_own(bsim: Sim) -> None:
    first, failing, third, *_ = bsim.account_ids()
    bsim.account_fault(failing, "fail", status=403)
    found = api(bsim).fetch_snapshots([first, failing, third], None)
    assert isinstance(found[1], BrokerRejectedError) and "HTTP 403" in str(found[1])
    assert [f.account["id"] for f in found if isinstance(f, RawSnapshot)] == [first, third]


def test_a_stall_fault_holds_only_the_requests_it_names(bsim: Sim) -> None:
    account_id = bsim.account_ids()[0]
    bsim.account_fault(account_id, "stall", count=2, delay=1.0, only="account")
    started = time.monotonic()
    assert api(bsim).broker_for(account_id).fetch_snapshot().positions
    assert time.monotonic() - started >= 1.0
    # The positions request went by untouched: the summary used one of the two counts.
    assert [f["count"] for f in bsim.broker_state()["faults"]] == [1]


def test_an_unknown_account_is_a_rejection(bsim: Sim) -> None:
    with pytest.raises(BrokerRejectedError, match="HTTP 404"):
        api(bsim).broker_for("00000000-0000-4000-8000-000000000000").fetch_snapshot()
    with pytest.raises(BrokerRejectedError, match="not a UUID"):
        api(bsim).broker_for("not-a-uuid").fetch_snapshot()


def test_rate_limit_answers_429_with_alpacas_headers(bsim: Sim) -> None:
    bsim.broker_rate_limit(60, burst=1)
    auth = (bsim.api_key, bsim.secret_key)
    first = httpx.get(f"{bsim.base_url}/v1/clock", auth=auth)
    second = httpx.get(f"{bsim.base_url}/v1/clock", auth=auth)
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json() == {"code": 42910000, "message": "rate limit exceeded"}
    assert second.headers["X-RateLimit-Limit"] == "60"
    assert second.headers["X-RateLimit-Remaining"] == "0"
    assert 0 <= int(second.headers["X-RateLimit-Reset"]) - time.time() <= 2


def test_a_429_is_waited_out_until_its_reset(bsim: Sim) -> None:
    account_id = bsim.account_ids()[0]
    bsim.broker_rate_limit(60, burst=1)  # one request a second
    bsim.reset_log()
    raw = api(bsim).broker_for(account_id).fetch_snapshot()  # three requests
    assert raw.positions
    log = bsim.requests()
    ok = [r for r in log if r["status"] == 200]
    assert len(ok) == 3
    assert bsim.broker_state()["throttled"] == len(log) - 3
    # Waited for the reset, not hammered: a few 429s at most per request.
    assert len(log) - 3 <= 6


def test_429s_beyond_the_allowed_waits_fail_as_rate_limited(bsim: Sim) -> None:
    bsim.broker_rate_limit(60, burst=1)
    broker = api(bsim, RECON_RATE_LIMIT_MAX_WAITS=0)
    broker.clock()
    with pytest.raises(BrokerRateLimitedError) as caught:
        broker.clock()
    assert caught.value.status_code == 429
    assert caught.value.reset_after is not None


def test_each_thread_keeps_one_client_for_every_account(bsim: Sim) -> None:
    """A pass's thread reuses its client (and the client's kept-alive connection) from one
    account to the next; another thread, or other settings, get their own."""
    chosen = settings(bsim)
    mine = BrokerApi.for_thread(chosen)
    assert BrokerApi.for_thread(chosen) is mine
    with ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(BrokerApi.for_thread, chosen).result()
    assert theirs is not mine
    assert BrokerApi.for_thread(settings(bsim)) is not mine

"""The Broker API mode of the flow: every account its own unit, on a real Prefect API, against
the simulator's `/v1` over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL
from sqlalchemy import select

from flows.reconcile import reconcile_positions
from recon.broker.pacing import RATE_LIMIT_NAME, RESERVATION_SECONDS, Pacer, rate_limit_shape
from recon.broker.slots import SlotQueue, acquisitions
from recon.settings import Settings
from recon.store.database import session_factory
from recon.store.journal import POSITION_UPDATED, SYSTEM_ERROR, read_events
from recon.store.models import Position, SyncRun
from simulator.server import SimulatorConfig, SimulatorServer
from tests.sim import Sim
from tests.support.env import scrubbed_env
from tests.support.process import run_module
from tests.support.wait import wait_until

pytestmark = pytest.mark.usefixtures("prefect_server")
ACCOUNTS = 4
ACCOUNT_PATH = re.compile(r"^/v1/trading/accounts/([^/]+)/(positions|account)$")


@pytest.fixture(scope="module")
def broker_server() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(seed=23, accounts=ACCOUNTS)) as server:
        yield server


@pytest.fixture
def broker_mode(env: pytest.MonkeyPatch, bsim: Sim, database_url: str) -> str:
    env.setenv("RECON_SOURCE", "broker")
    env.setenv("ALPACA_BROKER_BASE_URL", bsim.base_url)
    env.setenv("ALPACA_BROKER_API_KEY", bsim.api_key)
    env.setenv("ALPACA_BROKER_SECRET_KEY", bsim.secret_key)
    env.setenv("RECON_DATABASE_URL", database_url)
    env.setenv("RECON_FETCH_RETRIES", "1")
    env.setenv("RECON_FETCH_BACKOFF_SECONDS", "0.05")
    env.setenv("RECON_HTTP_TIMEOUT_SECONDS", "5")
    env.setenv("RECON_BROKER_RATE_LIMIT", "6000")
    return database_url


def run() -> Any:
    return reconcile_positions(return_state=True)


def books(url: str) -> dict[str, dict[str, str]]:
    """account -> asset -> qty, as stored."""
    out: dict[str, dict[str, str]] = {}
    with session_factory(url)() as session:
        for p in session.scalars(select(Position)):
            out.setdefault(p.account_id, {})[p.asset_id] = format(p.qty, "f")
    return out


def live(sim: Sim, account_id: str) -> dict[str, str]:
    positions = sim.v1(f"/v1/trading/accounts/{account_id}/positions")
    return {p["asset_id"]: p["qty"] for p in positions}


def journal(url: str) -> list[Any]:
    with session_factory(url)() as session:
        return read_events(session, 0, 10_000)


def test_every_account_is_reconciled_as_its_own_unit(broker_mode: str, bsim: Sim) -> None:
    state = run()
    assert state.is_completed(), state.message
    result = state.result()
    assert result["accounts"] == {"total": 4, "applied": 4, "failed": 0, "failedAccounts": []}
    ids = bsim.account_ids()
    stored = books(broker_mode)
    assert set(stored) == set(ids)
    for account_id in ids:
        assert stored[account_id] == live(bsim, account_id)
    updates = [e for e in journal(broker_mode) if e.type == POSITION_UPDATED]
    assert sorted(e.payload["accountId"] for e in updates) == sorted(ids)
    assert all(e.account_id == e.payload["accountId"] for e in updates)
    # One run row per account, each with the flow run's id.
    with session_factory(broker_mode)() as session:
        rows = list(session.scalars(select(SyncRun)))
    assert sorted(r.account_id for r in rows) == sorted(ids)
    assert {r.flow_run_id for r in rows} == {result["flowRunId"]}


def task_runs(flow_run_id: str, expected: int) -> Counter[str]:
    """The run's task runs by task name, once the server has recorded `expected` of them
    (task runs reach it as events, a little after the run ends)."""

    def recorded() -> Counter[str] | None:
        with get_client(sync_client=True) as client:
            found = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        names = Counter(t.name.rsplit("-", 1)[0] for t in found)
        return names if sum(names.values()) >= expected else None

    return wait_until(recorded, 30, f"{expected} task runs")


@pytest.fixture(params=["one-per-task", "one-batch"])
def layout(request: pytest.FixtureRequest, env: pytest.MonkeyPatch) -> str:
    """Each account in a task run of its own, or all four in one batch (one task run)."""
    if request.param == "one-per-task":
        env.setenv("RECON_BROKER_BATCH_SIZE", "1")
    else:
        env.setenv("RECON_BROKER_BATCH_SIZE", str(ACCOUNTS))
        env.setenv("RECON_BROKER_PARALLELISM", "1")
    return str(request.param)


def test_a_failing_account_and_a_refused_snapshot_fail_alone(
    broker_mode: str, bsim: Sim, layout: str
) -> None:
    assert run().is_completed()
    before = books(broker_mode)
    failing, refused, *others = bsim.account_ids()
    bsim.v1_step(3)  # every book moves
    bsim.account_fault(failing, "fail", status=403)
    bsim.account_fault(refused, "tieout")
    state = run()
    assert state.is_completed(), state.message
    result = state.result()
    assert result["accounts"]["total"] == 4
    assert result["accounts"]["applied"] == 2
    failed = {f["accountId"]: f["error"] for f in result["accounts"]["failedAccounts"]}
    assert set(failed) == {failing, refused}
    assert "HTTP 403" in failed[failing]
    assert "but the account reports" in failed[refused]  # the tie-out refused it
    after = books(broker_mode)
    # The failed accounts untouched, the others applied.
    assert after[failing] == before[failing]
    assert after[refused] == before[refused]
    for account_id in others:
        assert after[account_id] == live(bsim, account_id)
    errors = [e for e in journal(broker_mode) if e.type == SYSTEM_ERROR]
    assert sorted(e.payload["accountId"] for e in errors) == sorted([failing, refused])
    assert all(e.account_id == e.payload["accountId"] for e in errors)
    assert all(e.payload["flowRunId"] == result["flowRunId"] for e in errors)
    # Neither failure is transient: nothing is retried alone.
    expected = ACCOUNTS if layout == "one-per-task" else 1
    names = task_runs(result["flowRunId"], 1 + expected)  # the listing, then the accounts
    assert names == Counter({"list-accounts": 1, "reconcile-accounts": expected})


def test_a_transient_error_in_a_batch_is_retried_alone(
    broker_mode: str, bsim: Sim, env: pytest.MonkeyPatch
) -> None:
    """One batch of four: an account whose first request answers 503 is handed back and
    applied by a task run of its own; one that answers 503 every time fails alone after
    its retries, journaled, while the rest of the batch applies."""
    env.setenv("RECON_BROKER_BATCH_SIZE", str(ACCOUNTS))
    env.setenv("RECON_BROKER_PARALLELISM", "1")
    env.setenv("RECON_FETCH_RETRIES", "2")
    flaky, down, *others = bsim.account_ids()
    bsim.account_fault(flaky, "fail", status=503, count=1)
    bsim.account_fault(down, "fail", status=503)
    state = run()
    assert state.is_completed(), state.message
    result = state.result()
    assert result["accounts"]["applied"] == 3
    failed = {f["accountId"]: f["error"] for f in result["accounts"]["failedAccounts"]}
    assert list(failed) == [down] and "503" in failed[down]
    stored = books(broker_mode)
    for account_id in [flaky, *others]:
        assert stored[account_id] == live(bsim, account_id)
    assert down not in stored
    errors = [e for e in journal(broker_mode) if e.type == SYSTEM_ERROR]
    assert [e.payload["accountId"] for e in errors] == [down]
    # The batch, then the two handed back, each in its own task run (with its retries).
    names = task_runs(result["flowRunId"], 4)
    assert names == Counter({"list-accounts": 1, "reconcile-accounts": 1, "reconcile-account": 2})
    # The account that stayed down: the batch's attempt and the task run's two.
    path = f"/v1/trading/accounts/{down}/positions"
    assert len([r for r in bsim.requests() if r["path"] == path]) == 3


def test_the_run_fails_only_when_every_account_failed(broker_mode: str, bsim: Sim) -> None:
    for account_id in bsim.account_ids():
        bsim.account_fault(account_id, "fail", status=403)
    state = run()
    assert state.is_failed()
    assert "every account failed" in (state.message or "")
    errors = [e for e in journal(broker_mode) if e.type == SYSTEM_ERROR]
    per_account = [e for e in errors if "accountId" in e.payload]
    assert len(per_account) == ACCOUNTS
    # And the run's own failure, once, without an account.
    assert len([e for e in errors if "accountId" not in e.payload]) == 1


def test_a_chosen_list_of_accounts(broker_mode: str, bsim: Sim, env: pytest.MonkeyPatch) -> None:
    chosen = bsim.account_ids()[1:3]
    env.setenv("RECON_ACCOUNT_IDS", ",".join(chosen))
    bsim.reset_log()
    assert run().is_completed()
    assert sorted(books(broker_mode)) == sorted(chosen)
    assert not bsim.requests("/v1/accounts")  # not listed: the ids were given


def _per_second(log: list[dict[str, Any]]) -> Counter[int]:
    return Counter(int(datetime.fromisoformat(r["time"]).timestamp()) for r in log)


def test_the_global_rate_limit_is_never_exceeded(
    broker_mode: str, bsim: Sim, env: pytest.MonkeyPatch
) -> None:
    env.setenv("RECON_BROKER_RATE_LIMIT", "240")  # 4 a second, a burst of 4
    bsim.broker_rate_limit(240)
    bsim.reset_log()
    state = run()
    assert state.is_completed(), state.message
    assert state.result()["accounts"]["applied"] == ACCOUNTS
    log = [r for r in bsim.requests() if r["path"].startswith("/v1/")]
    assert len(log) >= 2 * ACCOUNTS + 2
    slots, _ = rate_limit_shape(240)
    # In any one second: the burst plus one second's decay (4 + 4), never more.
    assert max(_per_second(log).values()) <= slots + 4
    assert bsim.broker_state()["throttled"] == 0
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(RATE_LIMIT_NAME)
    assert (limit.limit, limit.slot_decay_per_second) == (4, 4.0)


def test_429s_are_ridden_out(broker_mode: str, bsim: Sim) -> None:
    bsim.broker_rate_limit(120, burst=1)  # the broker allows less than we allow ourselves
    state = run()
    assert state.is_completed(), state.message
    assert state.result()["accounts"]["applied"] == ACCOUNTS
    assert bsim.broker_state()["throttled"] > 0
    assert all(r["status"] in (200, 429) for r in bsim.requests())


def test_recon_sync_prints_the_accounts(broker_mode: str, bsim: Sim, tmp_path: Path) -> None:
    env = scrubbed_env() | {
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "RECON_SOURCE": "broker",
        "ALPACA_BROKER_BASE_URL": bsim.base_url,
        "ALPACA_BROKER_API_KEY": bsim.api_key,
        "ALPACA_BROKER_SECRET_KEY": bsim.secret_key,
        "RECON_DATABASE_URL": broker_mode,
    }
    done = run_module("cli", "sync", "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accounts"]["applied"] == ACCOUNTS
    again = run_module("cli", "sync", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"Reconciled {ACCOUNTS} accounts: {ACCOUNTS} applied, 0 failed" in again.stdout
    assert bsim.secret_key not in done.stdout + done.stderr + again.stdout + again.stderr


def test_reserved_slots_are_spent_in_their_block_and_dropped_after() -> None:
    """`Pacer.reserved(2)` takes both slots from the Prefect limit at once; the two `admit`s
    in the block spend them without asking the server; the next one asks again. What a
    block leaves unspent is dropped with it, and a 429 waited out drops it too: a slot is
    spent only right after its grant."""
    name = "test-reserve"
    with get_client(sync_client=True) as client:
        # Slots that decay far slower than the test runs: what is taken stays visible.
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=20, slot_decay_per_second=0.001)
        )

        def taken() -> int:
            return client.read_global_concurrency_limit_by_name(name).active_slots

        pacer = Pacer(Settings(), limit_name=name)
        with pacer.reserved(2):
            assert taken() == 2
            pacer.admit()
            pacer.admit()
            assert taken() == 2
            pacer.admit()
            assert taken() == 3
        # A block whose requests were not all sent (one of two, say) leaves a slot behind:
        # the next request outside it asks the server again.
        with pacer.reserved(2):
            pacer.admit()
        assert taken() == 5
        pacer.admit()
        assert taken() == 6
        with pacer.reserved(4):
            pacer.admit()
            assert pacer.wait_out(0.0)  # a 429 with its reset already here
            pacer.admit()
        assert taken() == 11
        # A slot not spent within RESERVATION_SECONDS of its grant is dropped too.
        now = [0.0]
        late = Pacer(Settings(), limit_name=name, clock=lambda: now[0])
        with late.reserved(2):
            now[0] += RESERVATION_SECONDS / 2
            late.admit()
            assert taken() == 13
            now[0] += RESERVATION_SECONDS
            late.admit()
            assert taken() == 14
        client.delete_global_concurrency_limit_by_name(name)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the pacing's, not the store's
def test_a_batch_fetches_a_group_of_accounts_on_one_acquisition(
    broker_mode: str, bsim: Sim, env: pytest.MonkeyPatch
) -> None:
    """One batch of four on one thread, RECON_BROKER_FETCH_GROUP=2: the listing's pages and
    the clock take a slot each, then each group of two accounts one acquisition of four
    slots; every account applied."""
    env.setenv("RECON_BROKER_BATCH_SIZE", str(ACCOUNTS))
    env.setenv("RECON_BROKER_PARALLELISM", "1")
    env.setenv("RECON_BROKER_FETCH_GROUP", "2")
    bsim.reset_log()
    before = acquisitions(RATE_LIMIT_NAME)
    state = run()
    assert state.is_completed(), state.message
    assert state.result()["accounts"]["applied"] == ACCOUNTS
    log = [r["path"] for r in bsim.requests() if r["path"].startswith("/v1/")]
    fetched = [m[1] for path in log if (m := ACCOUNT_PATH.match(path))]
    ids = bsim.account_ids()
    assert fetched == [ids[0], ids[0], ids[1], ids[1], ids[2], ids[2], ids[3], ids[3]]
    alone = len(log) - len(fetched)  # the listing's pages and the clock
    assert acquisitions(RATE_LIMIT_NAME) - before == alone + ACCOUNTS // 2
    assert books(broker_mode).keys() == set(ids)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the flow's, not the store's
def test_a_batch_that_fails_whole_hands_its_accounts_back_one_by_one(
    broker_mode: str, bsim: Sim, env: pytest.MonkeyPatch
) -> None:
    """Two batches of two on one thread. While the first batch's last request (its second
    account's summary) is held at the broker, an operator deletes the global rate limit: the second
    batch cannot take its slots, so its task run fails whole, before any account of it.
    Its accounts go to `reconcile-account` one by one, fail there too (the limit is gone),
    and are journaled with the reason; the first batch's applied. The next run (which
    creates the limit again) applies them."""
    env.setenv("RECON_BROKER_BATCH_SIZE", "2")
    env.setenv("RECON_BROKER_PARALLELISM", "1")
    env.setenv("RECON_BROKER_FETCH_GROUP", "2")
    env.setenv("RECON_HTTP_TIMEOUT_SECONDS", "30")  # the hold is not a timeout
    ids = bsim.account_ids()
    held = f"/v1/trading/accounts/{ids[1]}/account"
    # Held long enough for the deletion below on a loaded machine.
    bsim.account_fault(ids[1], "stall", count=1, delay=8.0, only="account")
    states: list[Any] = []
    runner = threading.Thread(target=lambda: states.append(run()))
    runner.start()
    try:
        wait_until(lambda: bsim.requests(held), 60, "the first batch's last request held")
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(RATE_LIMIT_NAME)
    finally:
        runner.join(120)
    assert states and states[0].is_completed(), states
    result = states[0].result()
    assert result["accounts"]["applied"] == 2
    failed = {f["accountId"]: f["error"] for f in result["accounts"]["failedAccounts"]}
    assert list(failed) == ids[2:]
    assert all("must be created" in reason for reason in failed.values()), failed
    assert sorted(books(broker_mode)) == sorted(ids[:2])
    errors = [e for e in journal(broker_mode) if e.type == SYSTEM_ERROR]
    assert sorted(e.payload["accountId"] for e in errors) == sorted(ids[2:])
    names = task_runs(result["flowRunId"], 5)
    assert names == Counter({"list-accounts": 1, "reconcile-accounts": 2, "reconcile-account": 2})

    again = run()
    assert again.is_completed(), again.message
    assert again.result()["accounts"]["applied"] == ACCOUNTS
    assert sorted(books(broker_mode)) == sorted(ids)


def test_accounts_mapped_a_window_at_a_time_are_all_reconciled(
    broker_mode: str, bsim: Sim, env: pytest.MonkeyPatch
) -> None:
    """With a window smaller than the accounts (3 of 4: two windows), every account is
    reconciled once and the outcomes stay in the listing's order."""
    env.setenv("RECON_BROKER_MAP_WINDOW", "3")
    state = run()
    assert state.is_completed(), state.message
    outcomes = state.result()["outcomes"]
    assert [o["accountId"] for o in outcomes] == bsim.account_ids()
    assert all(o["status"] == "applied" for o in outcomes), outcomes


def test_threads_waiting_for_slots_share_one_trip() -> None:
    """Six threads that each want a slot of an emptied limit (3 slots, 3 a second): the
    ones that arrive while an acquisition waits are granted together by the next, so the
    six take fewer than six acquisitions; and a limit that does not exist fails every
    thread waiting on it, not only the one that asked the server."""
    name = "test-shared-trips"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=3, slot_decay_per_second=3.0)
        )
    try:
        queue = SlotQueue(name, 3)
        queue.take(3)  # empty: every later slot waits for the decay
        assert _raised_on_threads(lambda: queue.take(1), 6) == []
        assert 2 <= queue.trips - 1 < 6, queue.trips
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)

    missing = SlotQueue("no-such-limit", 3)
    errors = _raised_on_threads(lambda: missing.take(1), 3)
    assert len(errors) == 3 and all("must be created" in str(e) for e in errors), errors


def _raised_on_threads(call: Callable[[], object], n: int) -> list[BaseException]:
    """Run `call` on `n` threads at once, every one of which must end within 60 s; what
    they raised."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread is still waiting after 60 s"
    return raised

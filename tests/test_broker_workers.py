"""The Broker API rate limit is one budget for every process: two processes reconciling
halves of the accounts at once, against the simulator's `/v1` and a real Prefect API,
never send more than the limit allows (counted at the simulator), and ride out 429s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from recon.broker.pacing import rate_limit_shape
from simulator.server import SimulatorConfig, SimulatorServer
from tests.sim import Sim
from tests.support.env import base_env
from tests.support.process import Process
from tests.support.wait import wait_until

pytestmark = pytest.mark.usefixtures("prefect_server")
ACCOUNTS = 8
PER_MINUTE = 240  # 4 a second, a burst of 4


@pytest.fixture(scope="module")
def bsim() -> Iterator[Sim]:
    with SimulatorServer(SimulatorConfig(seed=31, accounts=ACCOUNTS)) as server:
        yield Sim.of(server)


def run_two_workers(sim: Sim, database_url: str, root: Path) -> list[dict[str, object]]:
    ids = sim.account_ids()
    halves = {"one": ids[: ACCOUNTS // 2], "two": ids[ACCOUNTS // 2 :]}
    processes = []
    for name, share in halves.items():
        env = base_env(root / f"home-{name}", str(PREFECT_API_URL.value())) | {
            **sim.broker_mode(),
            "RECON_DATABASE_URL": database_url,
            "RECON_ACCOUNT_IDS": ",".join(share),
            "RECON_BROKER_RATE_LIMIT": str(PER_MINUTE),
            "RECON_FETCH_RETRIES": "2",
            "RECON_FETCH_BACKOFF_SECONDS": "0.1",
        }
        log = root / f"{name}.log"
        processes.append(Process(["tests.support.broker_child", str(root), name], env, log))
    try:
        for p, name in zip(processes, halves, strict=True):
            wait_until(
                lambda n=name, q=p: (q.assert_alive(), (root / f"{n}.ready").exists())[1],
                120,
                f"worker {name} to be ready",
            )
        sim.reset_log()
        (root / "go").touch()
        for p in processes:
            wait_until(lambda q=p: q.popen.poll() is not None, 180, "a worker to finish")
        outcomes = []
        for p, name in zip(processes, halves, strict=True):
            assert p.popen.returncode == 0, p.output()[-3000:]
            outcomes.append(json.loads((root / f"{name}.json").read_text()))
        return outcomes
    finally:
        for p in processes:
            p.stop()


def arrivals(sim: Sim) -> list[float]:
    log = [r for r in sim.requests() if r["path"].startswith("/v1/")]
    return sorted(datetime.fromisoformat(r["time"]).timestamp() for r in log)


def most_over_budget(times: list[float], slots: int, per_second: float) -> float:
    """The largest number of requests in any window beyond what the budget allows in it
    (a burst of `slots`, then `per_second`)."""
    worst = float("-inf")
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            worst = max(worst, (j - i + 1) - slots - per_second * (times[j] - start))
    return worst


def test_two_processes_share_one_rate_limit(bsim: Sim, database_url: str, tmp_path: Path) -> None:
    bsim.reset()
    bsim.broker_rate_limit(PER_MINUTE)
    outcomes = run_two_workers(bsim, database_url, tmp_path)
    assert [o["result"]["accounts"]["applied"] for o in outcomes] == [4, 4]  # type: ignore[index]
    times = arrivals(bsim)
    assert len(times) >= 2 * ACCOUNTS + 2  # positions + summary each, a clock per process
    slots, per_second = rate_limit_shape(PER_MINUTE)
    # One shared budget: never more in any window than it allows (one request of slack for
    # the log's clock and the network between the limit's grant and the arrival). Two
    # budgets, one per process, would allow twice as many.
    assert most_over_budget(times, slots, per_second) <= 1
    assert bsim.broker_state()["throttled"] <= 2


def test_two_processes_ride_out_429s(bsim: Sim, database_url: str, tmp_path: Path) -> None:
    bsim.reset()
    bsim.broker_rate_limit(PER_MINUTE // 2, burst=1)  # the broker allows half of ours
    outcomes = run_two_workers(bsim, database_url, tmp_path)
    assert [o["state"] for o in outcomes] == ["COMPLETED", "COMPLETED"]
    assert [o["result"]["accounts"]["applied"] for o in outcomes] == [4, 4]  # type: ignore[index]
    assert bsim.broker_state()["throttled"] > 0

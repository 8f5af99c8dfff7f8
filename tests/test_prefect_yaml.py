"""`prefect.yaml` as operators use it: `prefect deploy --all`, a worker, `deployment run`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from flows import deployment as defined
from recon.store.database import upgrade
from tests.live import PrefectServer, Process, base_env, prefect_api, wait_for

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    with prefect_api(tmp_path_factory.mktemp("prefect-yaml")) as live:
        yield live


def prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_prefect_yaml_agrees_with_the_served_deployment() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (entry,) = config["deployments"]
    assert f"reconcile-positions/{entry['name']}" == defined.FULL_NAME
    assert entry["parameters"] == defined.DEFAULT_PARAMETERS
    crons = {(s["cron"], s["timezone"], s.get("day_or", True)) for s in entry["schedules"]}
    assert crons == {(s.cron, s.timezone, s.day_or) for s in defined.schedules()}  # type: ignore[attr-defined]
    limit = entry["concurrency_limit"]
    assert limit["limit"] == defined.CONCURRENCY.limit
    assert limit["collision_strategy"] == defined.CONCURRENCY.collision_strategy.value


def test_deploy_all_then_a_worker_runs_a_cli_triggered_run(
    server: PrefectServer, simulator_server: Any, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(url)
    env = base_env(tmp_path / "home", server.api_url)
    created = prefect("work-pool", "create", "recon-process", "--type", "process", env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = prefect("--no-prompt", "deploy", "--all", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(defined.FULL_NAME)
    assert dep.work_pool_name == "recon-process"
    assert {s.schedule.cron for s in dep.schedules} == {"*/5 * * * *", "*/5 6 1-7 11 0"}  # type: ignore[union-attr]
    assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1

    worker_env = env | {
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "ALPACA_BASE_URL": simulator_server.base_url,
        "ALPACA_API_KEY": simulator_server.config.api_key,
        "ALPACA_SECRET_KEY": simulator_server.config.secret_key,
        "RECON_DATABASE_URL": url,
    }
    worker = Process(
        ["prefect", "worker", "start", "--pool", "recon-process"],
        worker_env,
        tmp_path / "worker.log",
        cwd=ROOT,
    )
    try:
        ran = prefect("deployment", "run", defined.FULL_NAME, env=env)
        assert ran.returncode == 0, ran.stdout + ran.stderr

        def finished() -> Any:
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs()
            done = [r for r in runs if r.state_type in (StateType.COMPLETED, StateType.FAILED)]
            return done or None

        (run,) = wait_for(finished, 120, "the worker to run the deployment", interval=1)
        assert run.state_type == StateType.COMPLETED, worker.output()[-3000:]
    finally:
        worker.stop()

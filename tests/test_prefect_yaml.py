"""`prefect.yaml` as operators use it: `prefect deploy --all`, a worker, `deployment run`."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments.runner import RunnerDeployment

from flows import deployment as defined
from recon.deployment import SHARD_FULL_NAME, WORK_POOL
from recon.store.database import upgrade
from tests.support.env import base_env
from tests.support.prefect import PrefectServer, prefect_api
from tests.support.process import Process, run_module
from tests.support.wait import wait_until

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    with prefect_api(tmp_path_factory.mktemp("prefect-yaml")) as live:
        yield live


def prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_module("prefect", *args, env=env, cwd=ROOT)


def entries() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {f"reconcile-positions/{e['name']}": e for e in config["deployments"]}


def built() -> list[RunnerDeployment]:
    return [asyncio.run(defined.build_deployment()), asyncio.run(defined.build_shard_deployment())]


def test_prefect_yaml_agrees_with_the_served_deployments() -> None:
    found = entries()
    assert set(found) == {defined.FULL_NAME, SHARD_FULL_NAME}
    for deployment in built():
        entry = found[deployment.full_name]
        assert entry["parameters"] == deployment.parameters
        assert entry["tags"] == deployment.tags
        assert entry["description"] == deployment.description
        assert entry["work_pool"]["name"] == WORK_POOL
        crons = {
            (s["cron"], s["timezone"], s.get("day_or", True)) for s in entry.get("schedules", [])
        }
        served = [s.schedule for s in deployment.schedules or []]
        assert crons == {(s.cron, s.timezone, s.day_or) for s in served}  # type: ignore[union-attr]
        limit = entry.get("concurrency_limit")
        if deployment.concurrency_limit is None:  # the shard: the parent's limit governs
            assert limit is None
        else:
            assert deployment.concurrency_options is not None
            assert limit["limit"] == deployment.concurrency_limit
            strategy = deployment.concurrency_options.collision_strategy
            assert limit["collision_strategy"] == strategy.value


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
    with get_client(sync_client=True) as client:
        shard = client.read_deployment_by_name(SHARD_FULL_NAME)
    assert (shard.work_pool_name, shard.schedules, shard.tags) == (
        WORK_POOL,
        [],
        ["recon", "shard"],
    )
    assert shard.global_concurrency_limit is None

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

        (run,) = wait_until(finished, 120, "the worker to run the deployment", interval=1)
        assert run.state_type == StateType.COMPLETED, worker.output()[-3000:]
    finally:
        worker.stop()

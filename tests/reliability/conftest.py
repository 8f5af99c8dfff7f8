"""One served stack per database for the scenarios that need the whole system."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient

from recon.deployment import FULL_NAME
from recon.keys import create_key
from recon.store.database import session_factory
from tests.conftest import DATABASES, app_database
from tests.live import PrefectServer, Process, base_env, free_port, stack_env, wait_for
from tests.reliability.stack import Stack


@pytest.fixture(scope="package", params=DATABASES)
def stack(
    request: pytest.FixtureRequest, simulator_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp(f"reliability-{request.param}")
    with contextlib.ExitStack() as cleanup:
        url = cleanup.enter_context(app_database(request.param, root))
        with session_factory(url).begin() as session:
            token = create_key(session, "ops", ["admin:read", "admin:write", "events:read"])
        server = PrefectServer(
            root / "home",
            root,
            base_env(root / "home") | {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"},
        )
        cleanup.callback(server.stop)
        port = free_port()
        env = stack_env(root, server.api_url, simulator_server, url) | {
            "RECON_FETCH_RETRIES": "2",
            "RECON_FETCH_BACKOFF_SECONDS": "0.1",
            "RECON_HTTP_TIMEOUT_SECONDS": "3",
            "RECON_TRIGGER_WAIT_SECONDS": "60",
        }
        runner = Process(["cli", "serve"], env, root / "runner.log")
        cleanup.callback(runner.stop)
        sidecar = Process(["cli", "api", "--port", str(port)], env, root / "sidecar.log")
        cleanup.callback(sidecar.stop)  # callbacks run last-in first-out: sidecar first
        base = f"http://127.0.0.1:{port}"
        deployment_id = wait_for(
            lambda: _ready(base, server.api_url, runner, sidecar), 120, "the served stack"
        )
        yield Stack(
            db=request.param,
            url=url,
            base=base,
            token=token,
            prefect_url=server.api_url,
            deployment_id=deployment_id,
            runner=runner,
            sidecar=sidecar,
            root=root,
            env=env,
        )


def _ready(base: str, prefect_url: str, runner: Process, sidecar: Process) -> Any:
    for process in (runner, sidecar):
        assert process.popen.poll() is None, process.output()[-3000:]
    try:
        if httpx.get(f"{base}/readyz", timeout=2).status_code != 200:
            return None
    except httpx.HTTPError:
        return None
    with SyncPrefectClient(prefect_url) as client:
        try:
            return client.read_deployment_by_name(FULL_NAME).id
        except Exception:
            return None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Each scenario prints its figures (`[scenario] ...`); collect them at the end of the
    run, so they show in CI's output without `-s`."""
    lines = [
        line
        for report in terminalreporter.stats.get("passed", [])
        if "tests/reliability/" in report.nodeid and report.when == "call"
        for line in report.capstdout.splitlines()
        if line.startswith("[")
    ]
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)

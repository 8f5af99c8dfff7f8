"""One served stack per database for the scenarios that need the whole system."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import SyncPrefectClient

from recon.deployment import FULL_NAME
from recon.keys import create_key
from recon.store.database import engine_for, session_factory, upgrade
from tests.conftest import PG_ADMIN_URL, _postgres_schema_url
from tests.live import PrefectServer, Process, base_env, free_port, stack_env, wait_for
from tests.reliability.stack import Stack


@pytest.fixture(
    scope="package", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def stack(
    request: pytest.FixtureRequest, simulator_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp(f"reliability-{request.param}")
    schema = f"r_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'recon.db'}"
    else:
        with sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT").connect() as admin:
            admin.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = _postgres_schema_url(schema)
    upgrade(url)
    with session_factory(url).begin() as session:
        token = create_key(session, "ops", ["admin:read", "admin:write", "events:read"])
    server = PrefectServer(
        root / "home",
        root,
        base_env(root / "home") | {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"},
    )
    port = free_port()
    env = stack_env(root, server.api_url, simulator_server, url) | {
        "RECON_FETCH_RETRIES": "2",
        "RECON_FETCH_BACKOFF_SECONDS": "0.1",
        "RECON_HTTP_TIMEOUT_SECONDS": "3",
        "RECON_TRIGGER_WAIT_SECONDS": "60",
    }
    runner = Process(["cli", "serve"], env, root / "runner.log")
    sidecar = Process(["cli", "api", "--port", str(port)], env, root / "sidecar.log")
    base = f"http://127.0.0.1:{port}"
    try:
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
    finally:
        sidecar.stop()
        runner.stop()
        server.stop()
        engine_for(url).dispose()
        if request.param == "postgresql":
            with sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT").connect() as admin:
                admin.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


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

"""Shared fixtures: real SQLite files, real PostgreSQL schemas, a real Prefect server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

# Prefect reads its settings at import: isolate its home before anything imports it.
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="recon-test-prefect-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)

from recon.settings import get_settings  # noqa: E402
from tests.support.databases import DATABASES, app_database  # noqa: E402
from tests.support.env import is_ours  # noqa: E402
from tests.support.sidecar import Sidecar, in_process_sidecar  # noqa: E402


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty app database: a SQLite file, or a fresh PostgreSQL schema."""
    with app_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Environment for code that reads `get_settings()`; the cache is cleared around the test."""
    for name in list(os.environ):
        if is_ours(name):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A real Prefect API (uvicorn subprocess, fresh SQLite) for the whole session."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # A deadline, not a wait (the harness polls the server's health): 60 s was passed on
    # a loaded 2-core machine (load 14) while other stacks started beside it.
    with (
        prefect_test_harness(server_startup_timeout=180),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[object]:
    from simulator.server import SimulatorConfig, SimulatorServer

    with SimulatorServer(SimulatorConfig(seed=7, drift_seconds=0)) as server:
        yield server


def _reset_around(server: object) -> Iterator[object]:
    from tests.sim import Sim

    handle = Sim.of(server)
    handle.reset()
    yield handle
    handle.reset()


@pytest.fixture
def sim(simulator_server: object) -> Iterator[object]:
    yield from _reset_around(simulator_server)


@pytest.fixture
def bsim(broker_server: object) -> Iterator[object]:
    """The Broker API simulator of the module's own `broker_server` fixture (its accounts and
    page size are the module's), reset around each test."""
    yield from _reset_around(broker_server)


@pytest.fixture
def configured(env: pytest.MonkeyPatch, sim: object, database_url: str) -> str:
    """Settings pointing the flow at the simulator and the test database, fast retries."""
    env.setenv("ALPACA_BASE_URL", sim.base_url)  # type: ignore[attr-defined]
    env.setenv("ALPACA_API_KEY", sim.api_key)  # type: ignore[attr-defined]
    env.setenv("ALPACA_SECRET_KEY", sim.secret_key)  # type: ignore[attr-defined]
    env.setenv("RECON_DATABASE_URL", database_url)
    env.setenv("RECON_FETCH_BACKOFF_SECONDS", "0.05")
    env.setenv("RECON_HTTP_TIMEOUT_SECONDS", "2")
    return database_url


@pytest.fixture(scope="module")
def deployment(prefect_server: None) -> Iterator[UUID]:
    """The deployment registered (paused: no cron runs) on the session's Prefect server, as
    `recon serve` registers it, with no runner: runs created through it stay Scheduled.

    Per module, and removed afterwards with every run made through it: the session's server
    is shared, and later modules count on a server where nothing is deployed (503s, a crash
    watcher that finds no runs to report)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    from flows.deployment import build_deployment

    async def register() -> UUID:
        return await (await build_deployment(paused=True)).apply()

    deployment_id = asyncio.run(register())
    yield deployment_id
    only_ours = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    with get_client(sync_client=True) as client:
        while runs := client.read_flow_runs(flow_run_filter=only_ours, limit=200):
            for run in runs:
                client.delete_flow_run(run.id)
        client.delete_deployment(deployment_id)


@pytest.fixture(scope="module", params=DATABASES)
def sidecar(
    request: pytest.FixtureRequest, deployment: UUID, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sidecar]:
    """The sidecar app in this process (`tests.support.sidecar`), one per module and
    database, on the session's Prefect server."""
    root = tmp_path_factory.mktemp(f"sidecar-{request.param}")
    with (
        app_database(request.param, root) as url,
        in_process_sidecar(request.param, url) as running,
    ):
        yield running


@pytest.fixture
def no_open_runs(deployment: UUID) -> Iterator[None]:
    """Cancel the runs a test triggered through `deployment` (no runner will run them), so
    the next test finds the concurrency slot free."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.states import Cancelled

    yield
    only_ours = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment]))
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=only_ours):
            if run.state is None or not run.state.is_final():
                client.set_flow_run_state(run.id, Cancelled(), force=True)

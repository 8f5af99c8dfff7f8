"""Shared fixtures: real SQLite files, real PostgreSQL schemas, a real Prefect server."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Prefect reads its settings at import: isolate its home before anything imports it.
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="recon-test-prefect-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)

import sqlalchemy as sa  # noqa: E402

from recon.settings import get_settings  # noqa: E402
from recon.store.database import engine_for, upgrade  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "RECON_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_schema_url(schema: str) -> str:
    return f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"


@contextmanager
def app_database(kind: str, root: Path) -> Iterator[str]:
    """A migrated, empty app database: a SQLite file under `root`, or a fresh PostgreSQL
    schema (dropped afterwards). Yields its URL."""
    if kind == "sqlite":
        url = f"sqlite:///{root / 'recon.db'}"
        upgrade(url)
        try:
            yield url
        finally:
            engine_for(url).dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = _postgres_schema_url(schema)
    try:
        upgrade(url)
        yield url
    finally:
        engine_for(url).dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty app database: a SQLite file, or a fresh PostgreSQL schema."""
    with app_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Environment for code that reads `get_settings()`; the cache is cleared around the test."""
    for name in list(os.environ):
        if name.startswith(("ALPACA_", "RECON_")) and name != "RECON_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A real Prefect API (uvicorn subprocess, fresh SQLite) for the whole session."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=60),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[object]:
    from simulator.server import SimulatorConfig, SimulatorServer

    with SimulatorServer(SimulatorConfig(seed=7, drift_seconds=0)) as server:
        yield server


@pytest.fixture
def sim(simulator_server: object) -> Iterator[object]:
    from tests.sim import Sim

    handle = Sim(
        base_url=simulator_server.base_url,  # type: ignore[attr-defined]
        api_key=simulator_server.config.api_key,  # type: ignore[attr-defined]
        secret_key=simulator_server.config.secret_key,  # type: ignore[attr-defined]
    )
    handle.reset()
    yield handle
    handle.reset()


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

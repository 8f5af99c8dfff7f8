"""The sidecar's startup, in process: what the lifespan leaves behind for the serving loop."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app


@pytest.fixture
def unfrozen() -> Iterator[None]:
    # Other tests may have started a sidecar in this process: start from nothing frozen,
    # and give the collector back everything afterwards.
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("prefect_server", "unfrozen")
def test_startup_objects_are_frozen_out_of_full_collections(
    env: pytest.MonkeyPatch, database_url: str
) -> None:
    env.setenv("RECON_DATABASE_URL", database_url)
    assert gc.get_freeze_count() == 0
    with TestClient(create_app()) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        # The app, its routes and Prefect's modules: far more than a handful of objects.
        assert gc.get_freeze_count() > 50_000

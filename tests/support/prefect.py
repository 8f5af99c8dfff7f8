"""A real `prefect server start` on a free loopback port, and reading runs back from it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.env import base_env
from tests.support.process import Process, free_port
from tests.support.wait import wait_until

NO_SCHEDULER = {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}


class PrefectServer(Process):
    def __init__(self, home: Path, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        super().__init__(
            ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env or base_env(home),
            log_dir / "prefect-server.log",
        )
        # Deadlines, not waits: a loaded 2-core machine (load 14-18, other stacks starting
        # beside it) took over a minute to start a server.
        wait_until(self._healthy, 180, "the Prefect server")

    def _healthy(self) -> bool:
        self.assert_alive()
        try:
            return httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@contextlib.contextmanager
def default_api(api_url: str) -> Iterator[None]:
    """This test process's Prefect client (`get_client()`) pointed at `api_url` meanwhile."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        yield


@contextlib.contextmanager
def prefect_api(root: Path, env: dict[str, str] | None = None) -> Iterator[PrefectServer]:
    """A live server, with this test process's Prefect client pointed at it meanwhile."""
    server = PrefectServer(root / "home", root, env)
    try:
        with default_api(server.api_url):
            yield server
    finally:
        server.stop()


def running_spans(client: Any, run_ids: list[Any]) -> list[tuple[Any, Any]]:
    """Each run's time in Running, from its state history, sorted by start.

    A run's `start_time` is no proof it ran: the server stamps one on a run that the
    deployment's concurrency limit Cancelled before it started, and that zero-length span
    may fall inside another run's. Runs that never entered Running have no span.
    `client` is a SyncPrefectClient for the server the runs live on.
    """
    from prefect.client.schemas.objects import StateType

    spans = []
    for run_id in run_ids:
        history = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
        for i, state in enumerate(history):
            if state.type == StateType.RUNNING:
                end = history[i + 1].timestamp if i + 1 < len(history) else None
                spans.append((state.timestamp, end))
    return sorted(spans)

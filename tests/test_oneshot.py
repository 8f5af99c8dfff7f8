"""`recon sync` with no Prefect API: the background server it starts, reuses and `recon down`
stops. Real processes: `recon sync` and `recon down` as subprocesses, the server they leave."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.background import STATE_FILE, Background, read_state, stop_server
from tests.sim import Sim
from tests.support.env import OURS, scrubbed_env
from tests.support.process import run_module
from tests.support.wait import wait_until


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose background server is stopped afterwards, pass or fail."""
    path = tmp_path / "data"
    yield path
    down = run_module("cli", "down", env=_env(path), cwd=tmp_path)
    left = read_state(path)
    if left is not None:  # `recon down` failed: do not leave a server to the next tests
        with contextlib.suppress(ProcessLookupError):
            os.killpg(left.pid, signal.SIGKILL)
    assert down.returncode == 0, down.stderr


def _env(data_dir: Path, sim: Sim | None = None) -> dict[str, str]:
    # No PREFECT_API_URL and no Prefect home of the test session's: as an operator's shell.
    env = scrubbed_env((*OURS, "PREFECT_")) | {"RECON_DATA_DIR": str(data_dir)}
    if sim is not None:
        env |= {
            "ALPACA_BASE_URL": sim.base_url,
            "ALPACA_API_KEY": sim.api_key,
            "ALPACA_SECRET_KEY": sim.secret_key,
            "RECON_FETCH_BACKOFF_SECONDS": "0.05",
        }
    return env


def _sync(data_dir: Path, sim: Sim) -> subprocess.CompletedProcess[str]:
    # The first run waits for a new Prefect server: on a loaded machine, over a minute.
    return run_module(
        "cli", "sync", "--json", env=_env(data_dir, sim), cwd=data_dir.parent, timeout=240
    )


def _api(data_dir: Path, server: Background) -> httpx.Client:
    auth = (data_dir / "prefect-auth").read_text().strip()
    basic = base64.b64encode(auth.encode()).decode()
    return httpx.Client(base_url=server.api_url, headers={"Authorization": f"Basic {basic}"})


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # exited; its new parent has not reaped it yet


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def test_sync_keeps_a_server_that_the_next_sync_reuses_and_down_stops(
    sim: Sim, data_dir: Path
) -> None:
    first = _sync(data_dir, sim)
    assert first.returncode == 0, first.stderr
    assert "starting a Prefect server in the background" in first.stderr
    server = read_state(data_dir)
    assert server is not None

    second = _sync(data_dir, sim)
    assert second.returncode == 0, second.stderr
    assert "starting a Prefect server" not in second.stderr  # the same one, reused
    assert read_state(data_dir) == server
    run_id = json.loads(second.stdout)["flowRunId"]

    # The run is on the server that outlived both commands (what its UI shows).
    with _api(data_dir, server) as api:
        run = api.get(f"/flow_runs/{run_id}")
        assert run.status_code == 200, run.text
        assert run.json()["state_type"] == "COMPLETED"
        assert api.get(f"/flow_runs/{json.loads(first.stdout)['flowRunId']}").status_code == 200

    down = run_module("cli", "down", env=_env(data_dir), cwd=data_dir.parent)
    assert down.returncode == 0, down.stderr
    assert f"pid {server.pid}" in down.stdout
    wait_until(lambda: _gone(server.pid), 30, "the background server's exit")
    assert not _answers(f"{server.api_url}/health")
    assert not (data_dir / STATE_FILE).exists()
    again = run_module("cli", "down", env=_env(data_dir), cwd=data_dir.parent)
    assert again.returncode == 0 and "Nothing" in again.stdout


def test_a_recorded_pid_that_is_not_the_server_is_never_signalled(tmp_path: Path) -> None:
    """A pid recycled by another process since the server died: the file goes, the
    process (this test's own) is left alone."""
    stale = {"pid": os.getpid(), "url": "http://127.0.0.1:1", "started_at": "2026-01-01"}
    (tmp_path / STATE_FILE).write_text(json.dumps(stale))
    assert stop_server(tmp_path) is None
    assert not (tmp_path / STATE_FILE).exists()

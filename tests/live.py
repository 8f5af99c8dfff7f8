"""A real `prefect server start` and real `recon` processes for the deployment tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll until `condition()` is truthy; the value is returned. Never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def base_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ALPACA_", "RECON_", "PREFECT_"))
    }
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": (
            "prefect.server.concurrency.lease_storage.filesystem"
        ),
    }
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


class Process:
    """A child in its own session, so a test can signal it and everything it started."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", *args],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


class PrefectServer(Process):
    def __init__(self, home: Path, log_dir: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        super().__init__(
            ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env or base_env(home),
            log_dir / "prefect-server.log",
        )
        wait_for(self._healthy, 120, "the Prefect server")

    def _healthy(self) -> bool:
        assert self.popen.poll() is None, self.output()[-3000:]
        try:
            return httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@contextlib.contextmanager
def prefect_api(root: Path, env: dict[str, str] | None = None) -> Iterator[PrefectServer]:
    """A live server, with this test process's Prefect client pointed at it meanwhile."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = PrefectServer(root / "home", root, env)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server
    finally:
        server.stop()


def stack_env(root: Path, api_url: str, simulator: Any, database_url: str) -> dict[str, str]:
    """Environment of a `recon serve` / `recon api` process of a test stack."""
    return base_env(root / "home", api_url) | {
        "ALPACA_BASE_URL": simulator.base_url,
        "ALPACA_API_KEY": simulator.config.api_key,
        "ALPACA_SECRET_KEY": simulator.config.secret_key,
        "RECON_DATABASE_URL": database_url,
        "RECON_DATA_DIR": str(root),
        "RECON_FETCH_RETRIES": "0",
        "RECON_HTTP_TIMEOUT_SECONDS": "30",
    }


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state: an exited child not yet reaped ("Z") cannot be killed.
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def flow_processes(runner_pid: int) -> list[int]:
    """The runner starts each flow run of a served deployment as `python -m prefect.engine`."""
    return [p for p in children_of(runner_pid) if "prefect.engine" in cmdline(p)]


def flow_process_of(runner_pid: int, flow_run_id: str) -> int | None:
    """The process running this flow run: the previous run's process may still be exiting."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for pid in flow_processes(runner_pid):
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid
        except OSError:
            continue
    return None


def processes_with_env(marker: str) -> list[int]:
    """Every live process whose environment holds `marker` (e.g. a unique data dir)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                stat = (environ.parent / "stat").read_text()
                if ") Z " not in stat:  # zombies are already dead
                    found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


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

"""The Prefect server `recon sync` leaves running in the background, and stopping it.

Without a Prefect API (no PREFECT_API_URL, no `recon up` on the data directory), Prefect
starts a temporary server for each process and stops it at exit: ≈ 20 s of every
`recon sync`, nearly all of its time. Instead the first `recon sync` starts `prefect server
start` detached, on a free loopback port, with its home and database under the data
directory and `recon up`'s protections (auth string, CSRF, CORS: cli/stack_env.py), and
records it in `background.json`; later ones find it there (health-checked) and use it.
`recon down` stops it, as does `recon up` (one server per Prefect database).
`RECON_BACKGROUND_SERVER=false` keeps the old behaviour.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import typer

from cli.processes import Children, _kill_group, port_free, wait_until
from cli.stack_env import StackEnv, auth_string
from recon.settings import Settings

STATE_FILE = "background.json"
LOCK_FILE = "background.lock"
SERVER = "background-prefect-server"  # its log: <data dir>/logs/<this>.log


@dataclass(frozen=True)
class Background:
    pid: int
    url: str  # http://127.0.0.1:<port>, the UI; the API is under /api
    started_at: str

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def use_background_server(settings: Settings) -> None:
    """Point this process's Prefect client at the data directory's background server,
    started if need be. Before Prefect is imported (it reads its settings at import)."""
    if "PREFECT_API_URL" in os.environ or not settings.background_server:
        return  # an exported API, or a `recon up` (cli/environment.py), or opted out
    data_dir = settings.data_dir.resolve()
    try:
        server = ensure_server(settings, data_dir)
    except RuntimeError as exc:  # it did not start: its log's tail says why
        typer.secho(f"recon: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    os.environ["PREFECT_API_URL"] = server.api_url
    # The file the server was started with: an exported string of another server would fail.
    os.environ["PREFECT_API_AUTH_STRING"] = auth_string(data_dir)


def ensure_server(settings: Settings, data_dir: Path) -> Background:
    """The running background server of `data_dir`, or a new one (waited for)."""
    with _locked(data_dir):  # two `recon sync` at once start one server
        running = read_state(data_dir)
        if running is not None and _healthy(running):
            return running
        stop_server(data_dir)  # a dead or hung one: its file, and what is left of it
        return _start(settings, data_dir)


def read_state(data_dir: Path) -> Background | None:
    try:
        return Background(**json.loads((data_dir / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def stop_server(data_dir: Path, timeout: float = 20.0) -> Background | None:
    """Stop the data directory's background server; the one stopped, if any was running."""
    state = read_state(data_dir)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    if state is None or not _is_ours(state):
        return None
    _kill_group(state.pid, signal.SIGTERM)  # its own session: the server and its children
    deadline = time.monotonic() + timeout
    while _alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _kill_group(state.pid, signal.SIGKILL)
    return state


def _start(settings: Settings, data_dir: Path) -> Background:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    secret = settings.prefect_database_url
    envs = StackEnv(
        base=dict(os.environ),
        data_dir=data_dir,
        prefect_url=url,
        auth=auth_string(data_dir),
        database_url=settings.resolved_database_url,
        prefect_database_url=secret.get_secret_value() if secret else None,
    )
    args = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    child = Children(log_dir=data_dir / "logs").start(
        SERVER, args, env=envs.server(), detached=True
    )
    typer.secho(
        f"recon: starting a Prefect server in the background at {url} "
        "(kept for the next runs; `recon down` stops it)",
        err=True,
    )
    state = Background(child.process.pid, url, datetime.now(UTC).isoformat())
    try:
        wait_until(lambda: _healthy(state), child=child, timeout=120, what="Prefect server")
    except RuntimeError:
        child.stop()
        raise
    (data_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
    return state


def _free_port() -> int:
    import socket

    for _ in range(20):  # bound then released: another process could take it in between
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port_free(port):
            return port
    raise RuntimeError("no free port on 127.0.0.1 for the background Prefect server")


def _healthy(state: Background) -> bool:
    if not _is_ours(state):
        return False
    try:
        return httpx.get(f"{state.api_url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _is_ours(state: Background) -> bool:
    """The recorded pid is still that server (not a recycled pid of something else)."""
    try:
        argv = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(state.pid) and not Path("/proc").is_dir()  # no /proc: trust the pid
    port = state.url.rsplit(":", 1)[-1].encode()
    return _alive(state.pid) and b"server" in argv and port in argv


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped: we may be its parent's last word) is not alive.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (data_dir / LOCK_FILE).open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield

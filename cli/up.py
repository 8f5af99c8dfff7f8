"""`recon up`: the whole local stack in one command, until Ctrl-C or SIGTERM.

Prefect server (SQLite under the data directory, or RECON_PREFECT_DATABASE_URL), the
deployment served by `recon serve` with a startup reconciliation, and with `--demo` the
simulated broker. One `recon up` per data directory, enforced by an OS file lock that
dies with the process (no stale pid files).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import typer

from cli.processes import Children, answers, port_free, wait_until
from recon.errors import ConfigurationError
from recon.keys import CAPABILITIES, create_key, list_keys, revoke_key
from recon.settings import Settings, get_settings
from recon.store.database import session_factory, upgrade
from simulator.server import SimulatorConfig

STATE_FILE = "up.json"
ADMIN_KEY = "recon-up"
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"


def run_up(*, demo: bool) -> int:
    settings = get_settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _single_instance(data_dir) as state_file:
        if state_file is None:
            return 1
        try:
            return _run(settings, data_dir, state_file, demo=demo)
        except (ConfigurationError, RuntimeError) as exc:
            typer.secho(f"recon up: {exc}", fg="red", err=True)
            return 1


@contextlib.contextmanager
def _single_instance(data_dir: Path) -> Iterator[IO[str] | None]:
    handle = (data_dir / "up.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        _say_already_running(data_dir)
        yield None
        return
    try:
        yield handle
    finally:
        (data_dir / STATE_FILE).unlink(missing_ok=True)
        handle.close()


def _say_already_running(data_dir: Path) -> None:
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        state = {}
    typer.secho(
        f"recon up is already running on {data_dir} (pid {state.get('pid', '?')}):", err=True
    )
    for name, url in state.get("urls", {}).items():
        typer.echo(f"  {name:<10} {url}", err=True)


def _run(settings: Settings, data_dir: Path, state_file: IO[str], *, demo: bool) -> int:
    env = _environment(settings, data_dir)
    if not demo:
        settings.alpaca_credentials()  # a clear error now, not a failed run in 10 s
    for port, what in (
        (settings.prefect_port, "Prefect server"),
        (settings.api_port, "sidecar"),
    ) + (((settings.simulator_port, "simulator"),) if demo else ()):
        if not port_free(port):
            raise RuntimeError(f"port {port} for the {what} is in use (change RECON_*_PORT)")
    upgrade(settings.resolved_database_url)
    children = Children(env=env, log_dir=data_dir / "logs")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        urls = _start(children, settings, env, demo=demo)
        _write_state(state_file, data_dir, urls)
        _print_banner(urls, children, data_dir, demo=demo, token=_admin_token(settings))
        while not stop.wait(1.0):
            dead = children.first_dead()
            if dead is not None:
                typer.secho(
                    f"{dead.name} exited ({dead.process.returncode}); stopping.", fg="red", err=True
                )
                typer.echo(dead.tail(), err=True)
                return 1
        typer.echo("Stopping...")
        return 0
    finally:
        children.stop_all()
        typer.echo("Stopped.")


def _environment(settings: Settings, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RECON_DATA_DIR=str(data_dir),
        RECON_DATABASE_URL=settings.resolved_database_url,
        PREFECT_HOME=str(data_dir / "prefect"),
        PREFECT_API_URL=f"http://127.0.0.1:{settings.prefect_port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # Leases in files survive a server restart; in memory (the default) a restart
        # can leak the deployment's only slot for good.
        PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=LEASE_STORAGE,
        PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED="events,flow_runs",
        PREFECT_LOGGING_LEVEL="INFO",
    )
    if settings.prefect_database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = settings.prefect_database_url
    return env


def _start(
    children: Children, settings: Settings, env: dict[str, str], *, demo: bool
) -> dict[str, str]:
    urls: dict[str, str] = {}
    if demo:
        sim = children.start(
            "simulator", ["cli", "simulator", "--port", str(settings.simulator_port)]
        )
        urls["simulator"] = f"http://127.0.0.1:{settings.simulator_port}"
        wait_until(
            answers(f"{urls['simulator']}/_sim/state"), child=sim, timeout=30, what="simulator"
        )
        demo_keys = SimulatorConfig()
        env.update(
            ALPACA_BASE_URL=urls["simulator"],
            ALPACA_API_KEY=demo_keys.api_key,
            ALPACA_SECRET_KEY=demo_keys.secret_key,
        )
    server = children.start(
        "prefect-server",
        ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(settings.prefect_port)],
    )
    urls["prefect"] = f"http://127.0.0.1:{settings.prefect_port}"
    wait_until(
        answers(f"{urls['prefect']}/api/health"), child=server, timeout=120, what="Prefect server"
    )
    children.start(
        "runner",
        ["cli", "serve", "--startup-delay", str(settings.startup_delay_seconds)],
        to_terminal=True,
    )
    api = children.start("sidecar", ["cli", "api", "--port", str(settings.api_port)])
    urls["sidecar"] = f"http://127.0.0.1:{settings.api_port}"
    wait_until(answers(f"{urls['sidecar']}/healthz"), child=api, timeout=60, what="sidecar")
    return urls


def _write_state(handle: IO[str], data_dir: Path, urls: dict[str, str]) -> None:
    state: dict[str, Any] = {
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(),
        "urls": urls,
    }
    (data_dir / STATE_FILE).write_text(json.dumps(state, indent=2))


def _admin_token(settings: Settings) -> str:
    """A fresh all-capabilities key for this session; the previous session's is revoked."""
    sessions = session_factory(settings.resolved_database_url)
    with sessions.begin() as session:
        if any(key.name == ADMIN_KEY for key in list_keys(session)):
            revoke_key(session, ADMIN_KEY)
        return create_key(session, ADMIN_KEY, list(CAPABILITIES))


def _print_banner(
    urls: dict[str, str], children: Children, data_dir: Path, *, demo: bool, token: str
) -> None:
    typer.secho("recon is up.", fg="green", bold=True)
    typer.echo(f"  Prefect UI  {urls['prefect']}  (deployment reconcile-positions/every-5-minutes)")
    typer.echo(f"  sidecar     {urls['sidecar']}  (API docs at {urls['sidecar']}/docs)")
    typer.echo(f"  admin token {token}")
    typer.echo(f"              export RECON_API_TOKEN={token}  # for recon status/trigger/events")
    if demo:
        typer.echo(f"  simulator   {urls['simulator']}  (simulated Alpaca broker)")
    typer.echo(f"  data        {data_dir}  (logs in {data_dir / 'logs'})")
    for child in children.started:
        typer.echo(f"  process     {child.name:<15} pid {child.process.pid}")
    typer.echo(
        "  A startup reconciliation runs in a few seconds; then every 5 minutes. Ctrl-C stops."
    )

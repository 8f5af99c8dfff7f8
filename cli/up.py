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
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import typer

from cli.background import stop_server
from cli.processes import Children, answers, port_free, wait_until
from cli.stack_env import (
    AUTH_FILE,
    BROKER_PREFIX,
    SIMULATOR_TOKEN_FILE,
    StackEnv,
    auth_string,
    write_secret,
)
from cli.supervise import LISTENER, Supervisor, start_workers
from cli.token_file import write_token_file
from recon.deployment import FULL_NAME, WORK_POOL
from recon.errors import ConfigurationError
from recon.keys import CAPABILITIES, create_key, list_keys, revoke_key
from recon.settings import Settings, get_settings
from recon.store.database import session_factory, upgrade
from simulator.server import SimulatorConfig

STATE_FILE = "up.json"
ADMIN_KEY = "recon-up"


def run_up(*, demo: bool, accounts: int = 0, workers: int = 0) -> int:
    settings = get_settings()  # read (and a bad one refused) by the CLI's callback first
    data_dir = settings.data_dir.resolve()
    # Everything this process and its children create (databases, logs, Prefect's home,
    # the auth string) is readable by this user only.
    os.umask(0o077)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(data_dir)
    with _single_instance(data_dir) as lock:
        if lock is None:  # held by another `recon up` on this data directory
            return 1
        try:
            if accounts:  # the Broker API mode against the simulator's generated accounts
                if not demo:
                    raise ConfigurationError("--accounts needs --demo (the simulated broker)")
                settings = settings.model_copy(update={"source": "broker"})
            if workers and settings.source != "broker":
                raise ConfigurationError(
                    "--workers needs the Broker API mode (RECON_SOURCE=broker, or --accounts)"
                )
            return _run(settings, data_dir, demo=demo, accounts=accounts, workers=workers)
        except (ConfigurationError, RuntimeError) as exc:
            typer.secho(f"recon up: {exc}", fg="red", err=True)
            return 1


def _tighten(data_dir: Path) -> None:
    """Databases made before the umask (an older `recon up`, `recon sync`): 0600 now."""
    for db in [*data_dir.glob("*.db*"), *data_dir.glob("prefect/*.db*")]:
        db.chmod(0o600)
    if data_dir.stat().st_mode & 0o077:
        typer.secho(f"recon up: {data_dir} is readable by other users; `chmod 700` it", fg="yellow")


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


def _run(
    settings: Settings, data_dir: Path, *, demo: bool, accounts: int = 0, workers: int = 0
) -> int:
    prefect_url = f"http://127.0.0.1:{settings.prefect_port}"
    base = dict(os.environ) | ({"RECON_SOURCE": "broker"} if accounts else {})
    if workers and settings.shards == 1:  # K workers share a pass in K shards by default
        base["RECON_SHARDS"] = str(workers)
    envs = StackEnv(
        base=base,
        data_dir=data_dir,
        prefect_url=prefect_url,
        auth=auth_string(data_dir),
        database_url=settings.resolved_database_url,
        prefect_database_url=(
            settings.prefect_database_url.get_secret_value()
            if settings.prefect_database_url
            else None
        ),
    )
    broker = None if demo else _broker_env(settings)  # a clear error now, not in 10 s
    if stop_server(data_dir):  # `recon sync`'s: one server per Prefect database
        typer.echo("Stopped the background Prefect server of `recon sync`.")
    for port, what in (
        (settings.prefect_port, "Prefect server"),
        (settings.api_port, "sidecar"),
    ) + (((settings.simulator_port, "simulator"),) if demo else ()):
        if not port_free(port):
            raise RuntimeError(f"port {port} for the {what} is in use (change RECON_*_PORT)")
    upgrade(settings.resolved_database_url)
    children = Children(log_dir=data_dir / "logs")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    supervisor = Supervisor(children)
    try:
        urls, broker = _start(
            children, settings, envs, broker, accounts=accounts, shard_pool=bool(workers)
        )
        start_workers(supervisor, workers, envs.runner(broker), settings.heartbeat_seconds)
        # The fill listener talks to the broker as the runner does (the trading stream, or
        # the Broker API's event stream of every account); restarted if it dies.
        supervisor.start(LISTENER, env=envs.runner(broker))
        _write_state(data_dir, urls)
        token = _admin_token(settings)
        # Not a terminal: the banner goes to a log, so the token goes to a 0600 file.
        token_file = None if sys.stdout.isatty() else write_token_file(data_dir, token)
        _print_banner(urls, children, envs, demo=demo, token=token, token_file=token_file)
        while not stop.wait(1.0):
            dead = children.first_dead()
            if dead is not None and not supervisor.restart(dead):
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


def _broker_env(settings: Settings) -> dict[str, str]:
    """The runner's broker settings, read once here (the environment or `.env`)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(BROKER_PREFIX)}
    if settings.source == "broker":
        broker_key, broker_secret = settings.broker_credentials()  # a clear error now
        env.update(ALPACA_BROKER_API_KEY=broker_key, ALPACA_BROKER_SECRET_KEY=broker_secret)
        if settings.alpaca_broker_base_url:
            env["ALPACA_BROKER_BASE_URL"] = settings.alpaca_broker_base_url
        return env
    key, secret = settings.alpaca_credentials()
    env.update(
        ALPACA_API_KEY=key, ALPACA_SECRET_KEY=secret, ALPACA_PAPER=str(settings.alpaca_paper)
    )
    if settings.alpaca_base_url:
        env["ALPACA_BASE_URL"] = settings.alpaca_base_url
    return env


def _start(
    children: Children,
    settings: Settings,
    envs: StackEnv,
    broker: dict[str, str] | None,
    *,
    accounts: int = 0,
    shard_pool: bool = False,
) -> tuple[dict[str, str], dict[str, str]]:
    """Start the stack; the URLs, and the broker settings the runner got (the simulator's
    with `--demo`)."""
    urls: dict[str, str] = {}
    if broker is None:
        demo = SimulatorConfig()
        sim = children.start(
            "simulator",
            ["cli", "simulator", "--port", str(settings.simulator_port)]
            + (["--accounts", str(accounts)] if accounts else []),
            env=envs.simulator(demo.control_token),
        )
        urls["simulator"] = f"http://127.0.0.1:{settings.simulator_port}"
        wait_until(
            answers(f"{urls['simulator']}/_sim/state"), child=sim, timeout=30, what="simulator"
        )
        write_secret(envs.data_dir / SIMULATOR_TOKEN_FILE, demo.control_token)
        broker = {
            "ALPACA_BASE_URL": urls["simulator"],
            "ALPACA_API_KEY": demo.api_key,
            "ALPACA_SECRET_KEY": demo.secret_key,
        }
        if accounts:
            broker |= {
                "ALPACA_BROKER_BASE_URL": urls["simulator"],
                "ALPACA_BROKER_API_KEY": demo.api_key,
                "ALPACA_BROKER_SECRET_KEY": demo.secret_key,
            }
    server = children.start(
        "prefect-server",
        ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(settings.prefect_port)],
        env=envs.server(),
    )
    urls["prefect"] = envs.prefect_url
    # /api/health is the one path the auth string leaves open.
    wait_until(
        answers(f"{urls['prefect']}/api/health"), child=server, timeout=120, what="Prefect server"
    )
    children.start(
        "runner",
        ["cli", "serve", "--startup-delay", str(settings.startup_delay_seconds)]
        + (["--shard-pool", WORK_POOL] if shard_pool else []),
        env=envs.runner(broker),
        to_terminal=True,
    )
    api = children.start(
        "sidecar", ["cli", "api", "--port", str(settings.api_port)], env=envs.sidecar()
    )
    urls["sidecar"] = f"http://127.0.0.1:{settings.api_port}"
    wait_until(answers(f"{urls['sidecar']}/healthz"), child=api, timeout=60, what="sidecar")
    return urls, broker


def _write_state(data_dir: Path, urls: dict[str, str]) -> None:
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
    urls: dict[str, str],
    children: Children,
    envs: StackEnv,
    *,
    demo: bool,
    token: str,
    token_file: Path | None = None,
) -> None:
    data_dir = envs.data_dir
    typer.secho("recon is up.", fg="green", bold=True)
    typer.echo(f"  Prefect UI  {urls['prefect']}  (deployment {FULL_NAME})")
    typer.echo(f"              the UI asks for a password: the contents of {data_dir / AUTH_FILE}")
    typer.echo("              for the Prefect CLI in another shell:")
    for export in envs.operator_exports():
        typer.echo(f"              {export}")
    typer.echo(f"  sidecar     {urls['sidecar']}  (API docs at {urls['sidecar']}/docs)")
    typer.echo(f"  console     {urls['sidecar']}/  (sign in with the admin token below)")
    if token_file is not None:
        typer.echo(f"  admin token in {token_file} (mode 0600)")
        typer.echo(f'              export RECON_API_TOKEN="$(cat {token_file})"')
    else:
        typer.echo(f"  admin token {token}")
        typer.echo(f"              export RECON_API_TOKEN={token}  # for status/trigger/events")
    if demo:
        typer.echo(f"  simulator   {urls['simulator']}  (simulated Alpaca broker)")
        typer.echo(f"              /_sim control token in {data_dir / SIMULATOR_TOKEN_FILE}")
    typer.echo(f"  data        {data_dir}  (logs in {data_dir / 'logs'})")
    for child in children.started:
        typer.echo(f"  process     {child.name:<15} pid {child.process.pid}")
    typer.echo(
        "  A startup reconciliation runs in a few seconds; then every 5 minutes. Ctrl-C stops."
    )

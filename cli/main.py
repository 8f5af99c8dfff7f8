"""`recon`: the operator's command line."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.environment import prepare_environment
from cli.keys import app as keys_app

app = typer.Typer(help="Alpaca position reconciliation.", no_args_is_help=True)
db_app = typer.Typer(help="The app database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")

prepare_environment()


@app.command()
def sync(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
    allow_mass_removal: Annotated[
        bool, typer.Option(help="Apply a removal over the cap (RECON_MAX_REMOVALS/_PCT).")
    ] = False,
    demo: Annotated[
        bool, typer.Option(help="Run against a simulated broker started for this command.")
    ] = False,
) -> None:
    """Reconcile once, now, and print what changed. Exit 1 if the run failed, 3 if another
    sync was writing (nothing was done)."""
    from cli.sync import run_sync

    raise typer.Exit(run_sync(as_json=as_json, allow_mass_removal=allow_mass_removal, demo=demo))


@app.command()
def up(
    demo: Annotated[
        bool, typer.Option(help="Also start the simulated broker and reconcile its account.")
    ] = False,
) -> None:
    """Run the whole local stack (Prefect server, scheduled deployment) until Ctrl-C."""
    from cli.up import run_up

    raise typer.Exit(run_up(demo=demo))


@app.command()
def serve(
    startup_delay: Annotated[
        float | None, typer.Option(help="Trigger one run this many seconds after start.")
    ] = None,
) -> None:
    """Serve the deployment from this process (needs PREFECT_API_URL of a running server)."""
    from cli.serve import run_serve

    run_serve(startup_delay)


@app.command()
def api(
    port: Annotated[
        int | None, typer.Option(help="Port on 127.0.0.1 (default RECON_API_PORT).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Serve the FastAPI sidecar (needs PREFECT_API_URL of a running Prefect server)."""
    import uvicorn

    from recon.settings import get_settings

    uvicorn.run(
        "api.main:app",
        host=host,
        port=port or get_settings().api_port,
        proxy_headers=False,
        # Query strings can carry `access_token` (EventSource): keep them out of the log.
        access_log=False,
        timeout_graceful_shutdown=5,
    )


@app.command()
def status() -> None:
    """Print the sidecar's job status (RECON_API_URL, RECON_API_TOKEN)."""
    from cli import client

    raise typer.Exit(client.status())


@app.command()
def trigger(
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the run's result.")
    ] = True,
) -> None:
    """Trigger a sync through the sidecar. Exit 3 if one is already in progress."""
    from cli import client

    raise typer.Exit(client.trigger(wait))


@app.command()
def events(
    last_event_id: Annotated[
        int | None, typer.Option(help="Replay the events after this id first.")
    ] = None,
) -> None:
    """Tail the sidecar's event stream, one line per event."""
    from cli import client

    raise typer.Exit(client.events(last_event_id))


@app.command("prefect-setup")
def prefect_setup() -> None:
    """Create or update the zombie-run automation on the Prefect server (PREFECT_API_URL)."""
    import asyncio

    from flows.zombies import ensure_zombie_automation
    from recon.settings import get_settings

    automation = asyncio.run(ensure_zombie_automation(get_settings().heartbeat_seconds))
    typer.echo(f"automation '{automation.name}' is in place ({automation.id})")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (the commands that need tables do this themselves)."""
    from recon.settings import get_settings
    from recon.store.database import current_revision, upgrade

    url = get_settings().resolved_database_url
    upgrade(url)
    typer.echo(f"database at revision {current_revision(url)}")


@app.command()
def simulator(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    seed: Annotated[int, typer.Option(help="Seed of the generated portfolio.")] = 42,
    drift_seconds: Annotated[
        float, typer.Option(help="Advance the portfolio every N s; 0 = only on request.")
    ] = 30.0,
    api_key: Annotated[str, typer.Option(help="Key the simulator accepts.")] = "sim-key",
    secret_key: Annotated[str, typer.Option(help="Secret it accepts.")] = "sim-secret",  # noqa: S107
) -> None:
    """Serve the simulated Alpaca broker (point ALPACA_BASE_URL at it)."""
    from simulator.server import SimulatorConfig, serve

    serve(
        SimulatorConfig(
            port=port,
            seed=seed,
            drift_seconds=drift_seconds,
            api_key=api_key,
            secret_key=secret_key,
        )
    )

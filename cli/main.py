"""`recon`: the operator's command line."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.db import app as db_app
from cli.environment import prepare_environment
from cli.keys import app as keys_app

app = typer.Typer(help="Alpaca position reconciliation.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")


@app.callback()
def prepare() -> None:
    """Alpaca position reconciliation."""
    # Before any command imports Prefect (which reads its settings at import).
    from pydantic import ValidationError

    from recon.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:  # e.g. an http:// ALPACA_BASE_URL: say what, no traceback
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            typer.secho(f"recon: {message}", fg="red", err=True)
        raise typer.Exit(1) from None
    prepare_environment(settings)


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
    dry_run: Annotated[
        bool,
        typer.Option(help="Preview: fetch, check and diff, print what it would do, write nothing."),
    ] = False,
) -> None:
    """Reconcile once, now, and print what changed. Exit 1 if the run failed, 3 if another
    sync was writing (nothing was done). With --dry-run, exit 0 even if it would be refused."""
    from cli.background import use_background_server
    from recon.settings import get_settings

    use_background_server(get_settings())  # before cli.sync imports Prefect
    from cli.sync import exit_at_once, run_sync

    exit_at_once(
        run_sync(as_json=as_json, allow_mass_removal=allow_mass_removal, demo=demo, dry_run=dry_run)
    )


@app.command()
def up(
    demo: Annotated[
        bool, typer.Option(help="Also start the simulated broker and reconcile its account.")
    ] = False,
    accounts: Annotated[
        int,
        typer.Option(help="With --demo: N simulated Broker API accounts (RECON_SOURCE=broker)."),
    ] = 0,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Broker API mode: K local process workers run the shards "
            "(reconcile-positions/shard on the recon-process work pool); 0: the runner does.",
        ),
    ] = 0,
) -> None:
    """Run the whole local stack (Prefect server, scheduled deployment) until Ctrl-C."""
    from cli.up import run_up

    raise typer.Exit(run_up(demo=demo, accounts=accounts, workers=workers))


@app.command()
def down() -> None:
    """Stop the Prefect server `recon sync` keeps in the background on this data directory."""
    from cli.down import run_down

    raise typer.Exit(run_down())


@app.command()
def serve(
    startup_delay: Annotated[
        float | None, typer.Option(help="Trigger one run this many seconds after start.")
    ] = None,
    shard_pool: Annotated[
        str | None,
        typer.Option(
            help="Broker API mode: deploy reconcile-positions/shard to this process work "
            "pool (created if missing) for its workers, instead of serving it here."
        ),
    ] = None,
) -> None:
    """Serve the deployment from this process (needs PREFECT_API_URL of a running server)."""
    from cli.serve import run_serve

    run_serve(startup_delay, shard_pool=shard_pool)


@app.command()
def listen() -> None:
    """Apply fills from Alpaca's trade_updates stream as they happen (ALPACA_STREAM_URL)."""
    from cli.listen import run_listen

    raise typer.Exit(run_listen())


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
    """Create or update the zombie-run automation and the Broker API's global rate limit
    (RECON_BROKER_RATE_LIMIT) on the Prefect server (PREFECT_API_URL)."""
    import asyncio

    from flows.zombies import ensure_zombie_automation
    from recon.broker.pacing import ensure_rate_limit
    from recon.settings import get_settings

    settings = get_settings()
    automation = asyncio.run(ensure_zombie_automation(settings.heartbeat_seconds))
    typer.echo(f"automation '{automation.name}' is in place ({automation.id})")
    limit = asyncio.run(ensure_rate_limit(settings))
    typer.echo(
        f"rate limit '{limit.name}' is in place ({limit.limit} slots, "
        f"{limit.slot_decay_per_second:g} a second: {settings.broker_rate_limit} a minute)"
    )


@app.command()
def simulator(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    seed: Annotated[int, typer.Option(help="Seed of the generated portfolio.")] = 42,
    drift_seconds: Annotated[
        float, typer.Option(help="Advance the portfolio every N s; 0 = only on request.")
    ] = 30.0,
    api_key: Annotated[str, typer.Option(help="Key the simulator accepts.")] = "sim-key",
    secret_key: Annotated[str, typer.Option(help="Secret it accepts.")] = "sim-secret",  # noqa: S107
    control_token: Annotated[
        str | None,
        typer.Option(envvar="RECON_SIMULATOR_TOKEN", help="Bearer token of /_sim (random)."),
    ] = None,
    accounts: Annotated[
        int, typer.Option(help="Broker API accounts to generate (/v1, HTTP Basic).")
    ] = 0,
    broker_rate_limit: Annotated[
        int,
        typer.Option("--rate-limit", help="Broker API requests per minute before 429s (0: none)."),
    ] = 0,
) -> None:
    """Serve the simulated Alpaca broker (point ALPACA_BASE_URL, or ALPACA_BROKER_BASE_URL for
    the Broker API, at it)."""
    # The options are SimulatorConfig's fields by name; no token given: a random one.
    options = {name: value for name, value in locals().items() if value is not None}
    from simulator.server import SimulatorConfig, serve

    serve(SimulatorConfig(**options), show_token=not control_token)

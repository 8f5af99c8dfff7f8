"""`recon db`: migrations, journal retention and backups of the app database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The app database.", no_args_is_help=True)


@app.command("upgrade")
def upgrade() -> None:
    """Apply the database migrations (the commands that need tables do this themselves)."""
    from recon.settings import get_settings
    from recon.store.database import current_revision
    from recon.store.database import upgrade as apply

    url = get_settings().resolved_database_url
    apply(url)
    typer.echo(f"database at revision {current_revision(url)}")


@app.command("prune")
def prune(
    keep_days: Annotated[
        float, typer.Option(min=0, help="Keep the journal of the last N days (fractions ok).")
    ],
    batch_size: Annotated[
        int, typer.Option(min=1, max=50_000, help="Rows per transaction (one table at a time).")
    ] = 2000,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
) -> None:
    """Delete journal rows (changes, events, runs) older than N days, in short batches,
    keeping each position's latest change and the events a client may still replay."""
    from recon.settings import get_settings
    from recon.store.database import engine_for
    from recon.store.database import upgrade as apply
    from recon.store.retention import prune_journal

    url = get_settings().resolved_database_url
    apply(url)
    result = prune_journal(engine_for(url), keep_days, batch_size=batch_size)
    if as_json:
        typer.echo(json.dumps(result.dump()))
        return
    typer.echo(f"pruned the journal before {result.cutoff.isoformat()}:")
    for table in result.tables:
        typer.echo(f"  {table.table}: {table.deleted} rows in {table.batches} batches")
    typer.echo(
        f"{result.deleted} rows in {result.seconds:.1f} s; "
        f"longest batch {result.longest_batch_seconds * 1000:.0f} ms"
    )


@app.command("backup")
def backup(
    path: Annotated[Path, typer.Argument(help="The backup file to write (must not exist).")],
) -> None:
    """Back up the app database while it is in use: SQLite with VACUUM INTO, PostgreSQL
    with pg_dump (plain SQL, restore with psql). docs/operations.md says how to restore."""
    from recon.errors import ConfigurationError
    from recon.settings import get_settings
    from recon.store.backup import backup_database

    try:
        written = backup_database(get_settings().resolved_database_url, path)
    except ConfigurationError as exc:
        typer.secho(f"recon db backup: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"backup written to {written}")

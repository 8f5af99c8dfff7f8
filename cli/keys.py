"""`recon keys`: create (token printed once), list, revoke."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from recon.errors import ApiKeyError
from recon.keys import CAPABILITIES, create_key, list_keys, revoke_key
from recon.settings import get_settings
from recon.store.database import session_factory, upgrade

app = typer.Typer(help="API keys of the sidecar.", no_args_is_help=True)


def _sessions() -> sessionmaker[Session]:
    url = get_settings().resolved_database_url
    upgrade(url)
    return session_factory(url)


@app.command()
def create(
    name: str,
    cap: Annotated[
        list[str], typer.Option("--cap", help=f"Capability, repeatable: {', '.join(CAPABILITIES)}.")
    ],
) -> None:
    """Create a key and print its token: the only output line, and the only time it is shown."""
    try:
        with _sessions().begin() as session:
            token = create_key(session, name, cap)
    except ApiKeyError as exc:
        typer.secho(f"recon keys: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(token)


@app.command("list")
def list_() -> None:
    """Names, capabilities and dates; never tokens (they are not stored)."""
    with _sessions()() as session:
        for key in list_keys(session):
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            caps = ",".join(key.capabilities)
            typer.echo(f"{key.name:<32} {caps:<36} {key.created_at:%Y-%m-%d %H:%M}  {state}")


@app.command()
def revoke(name: str) -> None:
    """Revoke a key at once: the next request with it gets 401."""
    try:
        with _sessions().begin() as session:
            revoke_key(session, name)
    except ApiKeyError as exc:
        typer.secho(f"recon keys: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"revoked {name}")

"""`recon keys`: create (token printed once, optionally expiring), list, caps, revoke."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from recon.errors import ApiKeyError
from recon.keys import CAPABILITIES, create_key, list_keys, revoke_key, set_capabilities
from recon.settings import get_settings
from recon.store.database import session_factory, upgrade

app = typer.Typer(help="API keys of the sidecar.", no_args_is_help=True)

_DURATION = re.compile(r"([0-9]{1,6})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `12h`, `90d`: a positive whole number and one unit."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 30m, 12h or 90d")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


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
    expires_in: Annotated[
        str | None,
        typer.Option(
            "--expires-in", help="Stop working after this long: 30m, 12h, 90d (default: never)."
        ),
    ] = None,
    account: Annotated[
        list[str] | None,
        typer.Option(
            "--account",
            help="Only this account's positions, history and events (repeatable; "
            "default: every account).",
        ),
    ] = None,
) -> None:
    """Create a key and print its token: the only output line, and the only time it is shown."""
    lifetime = parse_duration(expires_in) if expires_in is not None else None
    try:
        with _sessions().begin() as session:
            token = create_key(session, name, cap, expires_in=lifetime, accounts=account or None)
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
            if key.expires_at and not key.revoked_at:
                state += f", expires {key.expires_at:%Y-%m-%d %H:%M}"
            caps = ",".join(key.capabilities)
            if key.accounts is not None:
                state += f", accounts {','.join(key.accounts)}"
            typer.echo(f"{key.name:<32} {caps:<36} {key.created_at:%Y-%m-%d %H:%M}  {state}")


@app.command()
def caps(
    name: str,
    cap: Annotated[
        list[str], typer.Option("--cap", help=f"Capability, repeatable: {', '.join(CAPABILITIES)}.")
    ],
) -> None:
    """Replace a key's capabilities: its requests and open streams lose the others at once."""
    try:
        with _sessions().begin() as session:
            set_capabilities(session, name, cap)
    except ApiKeyError as exc:
        typer.secho(f"recon keys: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{name}: {','.join(sorted(set(cap)))}")


@app.command()
def revoke(name: str) -> None:
    """Revoke a key at once: the next request with it gets 401, its open streams end."""
    try:
        with _sessions().begin() as session:
            revoke_key(session, name)
    except ApiKeyError as exc:
        typer.secho(f"recon keys: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"revoked {name}")

"""`recon status`, `recon trigger`, `recon events`: the sidecar's API from a terminal."""

from __future__ import annotations

import json
from typing import Any

import httpx
import typer
from httpx_sse import connect_sse

from recon.settings import get_settings


def _client(timeout: float | None = 30.0) -> httpx.Client:
    settings = get_settings()
    if settings.api_token is None:
        typer.secho(
            "recon: set RECON_API_TOKEN (from `recon keys create` or `recon up`'s output)",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    headers = {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}
    return httpx.Client(base_url=settings.api_url, headers=headers, timeout=timeout)


def _fail(response: httpx.Response) -> int:
    try:
        body: Any = response.json()
        text = f"{body.get('error', '')}: {body.get('message', '')}"
    except ValueError:
        text = response.text[:300]
    typer.secho(f"HTTP {response.status_code} {text}", fg="red", err=True)
    return 1


def status() -> int:
    with _client() as client:
        response = client.get("/api/admin/jobs/status")
    if response.status_code != 200:
        return _fail(response)
    typer.echo(json.dumps(response.json(), indent=2))
    return 0


def trigger(wait: bool) -> int:
    settings = get_settings()
    with _client(timeout=settings.trigger_wait_seconds + 30) as client:
        response = client.post("/api/admin/jobs/sync-positions", params={"wait": wait})
    if response.status_code >= 400:
        _fail(response)
        return 3 if response.status_code == 409 else 1
    typer.echo(json.dumps(response.json(), indent=2))
    return 0


def events(last_event_id: int | None) -> int:
    """Tail the stream: one line per event, `<id> <type> <data>`, until Ctrl-C."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    with _client(timeout=None) as client:
        try:
            with connect_sse(client, "GET", "/api/stream/events", headers=headers) as source:
                if source.response.status_code != 200:
                    source.response.read()
                    return _fail(source.response)
                for event in source.iter_sse():
                    if not event.data:  # httpx-sse yields each `: ping` as an empty message
                        continue
                    typer.echo(f"{event.id} {event.event} {event.data}")
        except KeyboardInterrupt:
            return 0
    return 0

"""The sidecar in this process: the app `api.main.create_app` builds, under a real uvicorn
on a loopback port, against the Prefect API this process's client points at (the session's
test server) and a real app database. What the route contract tests use, so that they do
not each pay for a stack of processes (`tests.support.stack`)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest

from recon.keys import create_key, revoke_key
from recon.settings import get_settings
from recon.store.database import session_factory
from tests.support.asgi import serve
from tests.support.env import is_ours
from tests.support.wait import wait_until

EVERY_CAPABILITY = ["admin:read", "admin:write", "events:read"]
# The keys route tests authenticate with; "revoked" was valid once.
KEYS = {
    "admin": EVERY_CAPABILITY,
    "reader": ["admin:read"],
    "events": ["events:read"],
    "revoked": ["admin:read", "admin:write"],
}


@dataclass
class Sidecar:
    db: str  # "sqlite" or "postgresql"
    url: str  # the app database
    base: str  # the sidecar's base URL
    tokens: dict[str, str]  # API keys by name; "admin" holds every capability

    @property
    def token(self) -> str:
        return self.tokens["admin"]

    def api(self, key: str | None = "admin", *, timeout: float = 90) -> httpx.Client:
        """A client of the sidecar with the API key `key` (None: no Authorization)."""
        headers = {"Authorization": f"Bearer {self.tokens[key]}"} if key else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=timeout)


def create_keys(url: str, keys: dict[str, list[str]]) -> dict[str, str]:
    """The tokens of new API keys, by name; a key named "revoked" is revoked at once."""
    with session_factory(url).begin() as session:
        tokens = {name: create_key(session, name, caps) for name, caps in keys.items()}
        if "revoked" in keys:
            revoke_key(session, "revoked")
    return tokens


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def in_process_sidecar(
    db: str,
    url: str,
    keys: dict[str, list[str]] = KEYS,
    *,
    ready: bool = True,
    env: dict[str, str] | None = None,
) -> Iterator[Sidecar]:
    """The sidecar on the app database `url`, with `keys` and the settings `env`, until the
    block ends; with `ready`, once it answers ready (its database and Prefect answered: on a
    loaded machine the first answers of a fresh Prefect server can take longer than
    readiness allows)."""
    from api.main import create_app

    tokens = create_keys(url, keys)
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if is_ours(name):
                patch.delenv(name)
        patch.setenv("RECON_DATABASE_URL", url)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        try:
            with serve(create_app()) as server:
                if ready:
                    wait_until(lambda: _ready(server.base_url), 120, "the sidecar to be ready")
                yield Sidecar(db=db, url=url, base=server.base_url, tokens=tokens)
        finally:
            get_settings.cache_clear()
            # The lifespan froze its startup objects (for a long-lived sidecar); in the
            # test process they must go back to the collector.
            gc.unfreeze()

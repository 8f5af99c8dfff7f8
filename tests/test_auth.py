"""Every route of the real app needs a key, unless it is on the allow-list: the routes are
enumerated from `create_app()`, so a new route without auth fails here. In process
(httpx's ASGI transport, the app's own lifespan), against the real Prefect test server and
real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import update
from starlette.routing import Route

from recon.keys import CAPABILITIES, create_key, revoke_key
from recon.settings import get_settings
from recon.store.database import session_factory
from recon.store.models import ApiKey

# Routes that answer without a key, and why: liveness and readiness probes, the API's
# own description, and the console's static page and files (none holds data: the page
# asks the API with the operator's key).
ALLOWED_WITHOUT_KEY = {
    ("GET", "/"),
    ("GET", "/console/{asset}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
# The capability each protected route requires. A new route must be added here (the test
# says so), and must then answer 401 without a key and 403 without this capability.
CAPABILITY = {
    ("GET", "/api/accounts"): "admin:read",
    ("GET", "/api/admin/jobs/status"): "admin:read",
    ("POST", "/api/admin/jobs/sync-positions"): "admin:write",
    ("GET", "/api/admin/jobs/runs"): "admin:read",
    ("GET", "/api/admin/audit"): "admin:read",
    ("GET", "/api/admin/whoami"): "admin:read",
    ("GET", "/api/positions"): "admin:read",
    ("GET", "/api/positions/{symbol}/history"): "admin:read",
    ("GET", "/api/stream/events"): "events:read",
    ("POST", "/api/stream/tickets"): "events:read",
}
STREAM = ("GET", "/api/stream/events")
T = TypeVar("T")
Call = Callable[[Callable[[httpx.AsyncClient], Awaitable[T]]], T]


@pytest.fixture
def app(prefect_server: None, env: pytest.MonkeyPatch, database_url: str) -> FastAPI:
    env.setenv("RECON_DATABASE_URL", database_url)
    get_settings.cache_clear()  # importing api.main reads (and caches) the settings
    from api.main import create_app

    get_settings.cache_clear()
    return create_app()


@pytest.fixture
def call(app: FastAPI) -> Iterator[Call[Any]]:
    """Run `work(client)` against the app inside its lifespan (relay, Prefect client)."""

    def run(work: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as c:
                    return await work(c)

        return asyncio.run(main())

    yield run


def routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers flattened as
    FastAPI itself does for the OpenAPI schema."""
    found = set()
    for route in iter_route_contexts(app.routes):
        kind = route.original_route
        assert isinstance(kind, Route), f"{kind!r}: a new kind of route; extend this test"
        assert route.path, f"{kind!r} has no path"
        for method in route.methods or ():
            if method != "HEAD":  # Starlette's implicit twin of GET
                found.add((method, route.path))
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "AAPL", path)


def keys(url: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    with session_factory(url).begin() as session:
        for capability in CAPABILITIES:
            others = [c for c in CAPABILITIES if c != capability]
            tokens[f"without {capability}"] = create_key(session, f"no-{capability}", others)
            tokens[f"only {capability}"] = create_key(session, f"only-{capability}", [capability])
        tokens["revoked"] = create_key(session, "revoked", list(CAPABILITIES))
        revoke_key(session, "revoked")
        tokens["expired"] = create_key(
            session, "expired", list(CAPABILITIES), expires_in=timedelta(hours=1)
        )
        session.flush()
        # An hour later, as far as the key is concerned.
        session.execute(
            update(ApiKey)
            .where(ApiKey.name == "expired")
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    return tokens


def test_every_route_needs_a_key_unless_allowed(
    app: FastAPI, call: Call[Any], database_url: str
) -> None:
    tokens = keys(database_url)
    found = routes(app)
    assert found >= ALLOWED_WITHOUT_KEY, "an allow-listed route is gone: shrink the list"
    protected = sorted(found - ALLOWED_WITHOUT_KEY)
    tampered = "Bearer " + tokens["without admin:read"].replace("rk_", "rk_x", 1)
    bad_credentials: list[tuple[dict[str, str], dict[str, str]]] = [
        ({}, {}),
        ({"Authorization": "Bearer"}, {}),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, {}),
        ({"Authorization": "Bearer rk_not-a-real-token"}, {}),
        ({"Authorization": tampered}, {}),
        ({"Authorization": f"Bearer {tokens['revoked']}"}, {}),
        ({"Authorization": f"Bearer {tokens['expired']}"}, {}),
        ({}, {"access_token": "rk_not-a-real-token"}),
        ({}, {"ticket": "st_not-a-real-ticket"}),
    ]

    async def probe(client: httpx.AsyncClient) -> list[str]:
        problems = []
        for method, path in protected:
            cases = list(bad_credentials)
            if (method, path) != STREAM:
                # A valid key in the query string is for the stream only.
                cases.append(({}, {"access_token": tokens["only admin:read"]}))
            for headers, params in cases:
                url = concrete(path)
                answer = await client.request(method, url, headers=headers, params=params)
                if answer.status_code != 401 or answer.json()["error"] != "unauthorized":
                    problems.append(f"{method} {path} {headers} {params}: {answer.status_code}")
        return problems

    assert call(probe) == [], "routes that answer without a valid key"
    assert set(protected) == set(CAPABILITY), "add the new route to CAPABILITY (or the allow-list)"


def test_every_route_needs_its_capability(app: FastAPI, call: Call[Any], database_url: str) -> None:
    tokens = keys(database_url)

    async def probe(client: httpx.AsyncClient) -> dict[tuple[str, str], tuple[int, Any]]:
        answers = {}
        for method, path in sorted(CAPABILITY):
            capability = CAPABILITY[(method, path)]
            headers = {"Authorization": f"Bearer {tokens[f'without {capability}']}"}
            answer = await client.request(method, concrete(path), headers=headers)
            answers[(method, path)] = (answer.status_code, answer.json())
        return answers

    assert call(probe) == {
        route: (
            403,
            {"error": "forbidden", "message": f"this API key lacks the capability {capability}"},
        )
        for route, capability in CAPABILITY.items()
    }


def test_the_capability_alone_is_enough(app: FastAPI, call: Call[Any], database_url: str) -> None:
    """The map is right: a key holding only the listed capability gets past the check (the
    stream is left out: this transport buffers a whole answer, and a stream never ends)."""
    tokens = keys(database_url)

    async def probe(client: httpx.AsyncClient) -> dict[tuple[str, str], int]:
        answers = {}
        for method, path in sorted(set(CAPABILITY) - {STREAM}):
            headers = {"Authorization": f"Bearer {tokens[f'only {CAPABILITY[(method, path)]}']}"}
            # No wait, and no deployment on this Prefect server: a 503, not a run.
            params = {"wait": "false"} if method == "POST" else {}
            answer = await client.request(method, concrete(path), headers=headers, params=params)
            answers[(method, path)] = answer.status_code
        return answers

    answers = call(probe)
    assert answers == {
        ("GET", "/api/accounts"): 200,
        ("GET", "/api/admin/jobs/status"): 503,  # the deployment is not on this server
        ("POST", "/api/admin/jobs/sync-positions"): 503,
        ("GET", "/api/admin/jobs/runs"): 503,
        ("GET", "/api/admin/audit"): 200,
        ("GET", "/api/admin/whoami"): 200,
        ("GET", "/api/positions"): 200,
        ("GET", "/api/positions/{symbol}/history"): 404,  # never held
        ("POST", "/api/stream/tickets"): 201,
    }


def test_account_scoped_keys_reach_only_the_routes_that_filter_by_account(
    app: FastAPI, call: Call[Any], database_url: str
) -> None:
    """A key for one user's UI (`--account`), even holding every capability: the routes
    that serve it its accounts alone admit it; the installation-wide ones answer 403."""
    with session_factory(database_url).begin() as session:
        token = create_key(session, "one-user", list(CAPABILITIES), accounts=["acct-a"])
    headers = {"Authorization": f"Bearer {token}"}

    async def probe(client: httpx.AsyncClient) -> dict[tuple[str, str], int]:
        answers = {}
        for method, path in sorted(set(CAPABILITY) - {STREAM}):
            params = {"wait": "false"} if method == "POST" else {}
            answer = await client.request(method, concrete(path), headers=headers, params=params)
            answers[(method, path)] = answer.status_code
            if answer.status_code == 403:
                assert answer.json()["message"] == "this API key is scoped to accounts"
        return answers

    assert call(probe) == {
        ("GET", "/api/accounts"): 200,
        ("GET", "/api/admin/audit"): 403,
        ("GET", "/api/admin/jobs/runs"): 403,
        ("GET", "/api/admin/whoami"): 403,
        ("GET", "/api/admin/jobs/status"): 403,
        ("POST", "/api/admin/jobs/sync-positions"): 403,
        ("GET", "/api/positions"): 200,
        ("GET", "/api/positions/{symbol}/history"): 404,
        ("POST", "/api/stream/tickets"): 201,
    }

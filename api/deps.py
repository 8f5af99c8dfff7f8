"""Dependencies, as `Annotated` aliases: settings, the database, Prefect, the relay, auth.

App-wide objects are made in the lifespan (`api.main`) and reach routes only through
these aliases, never by reading `request.app.state` in a route.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Final

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.responses import DeploymentResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from api.relay import JournalRelay
from api.runs import read_deployment
from api.status_cache import StatusCache
from recon.keys import Principal, authenticate, hash_token
from recon.settings import Settings, get_settings
from recon.store.database import session_factory

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_sessions(settings: SettingsDep) -> sessionmaker[Session]:
    """The app database's sessionmaker (one per URL per process)."""
    return session_factory(settings.resolved_database_url)


SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]


def get_session(sessions: SessionsDep) -> Iterator[Session]:
    with sessions() as session:
        yield session


# Closed when the route function returns, not after the response: a stream's response
# lasts for hours, and holding a pooled connection per client would exhaust the pool.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_prefect(request: Request) -> PrefectClient:
    """One Prefect client per process, opened in the app's lifespan."""
    client: PrefectClient = request.app.state.prefect
    return client


PrefectDep = Annotated[PrefectClient, Depends(get_prefect)]


async def get_deployment(prefect: PrefectDep) -> DeploymentResponse:
    """The flow's deployment; DeploymentNotFoundError (503) while it is not deployed."""
    return await read_deployment(prefect)


DeploymentDep = Annotated[DeploymentResponse, Depends(get_deployment)]


def get_relay(request: Request) -> JournalRelay:
    """The process's one tail of the journal, started in the lifespan."""
    relay: JournalRelay = request.app.state.relay
    return relay


RelayDep = Annotated[JournalRelay, Depends(get_relay)]


def get_trigger_lock(request: Request) -> asyncio.Lock:
    """Serializes check-then-trigger inside this process (see `api.trigger`)."""
    lock: asyncio.Lock = request.app.state.trigger_lock
    return lock


TriggerLockDep = Annotated[asyncio.Lock, Depends(get_trigger_lock)]


def get_status_cache(request: Request) -> StatusCache:
    """The process's copy of the status's Prefect reads (see `api.status_cache`)."""
    cache: StatusCache = request.app.state.status_cache
    return cache


StatusCacheDep = Annotated[StatusCache, Depends(get_status_cache)]

_bearer = HTTPBearer(auto_error=False, description="An API key from `recon keys create`.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _principal(session: Session, token: str) -> Principal:
    principal = authenticate(session, token)
    if principal is None:
        raise ApiError(401, "unauthorized", "invalid or revoked API key")
    return principal


# A key admitted within the last AUTH_CACHE_SECONDS is admitted again without a database
# read (and the worker-thread trip it needs): a feed's clients reconnect with the same key
# every few seconds. Only admissions are kept, by the token's hash; a revoked key stops
# opening new requests within this many seconds (an open stream was never re-checked).
AUTH_CACHE_SECONDS: Final = 2.0
_admissions: dict[str, tuple[float, Principal]] = {}


def _recently_admitted(token: str) -> Principal | None:
    admitted = _admissions.get(hash_token(token))
    return admitted[1] if admitted and admitted[0] > time.monotonic() else None


def _admitted(token: str, principal: Principal) -> Principal:
    if len(_admissions) >= 1024:  # bounded: many distinct keys only cost reads again
        _admissions.clear()
    _admissions[hash_token(token)] = (time.monotonic() + AUTH_CACHE_SECONDS, principal)
    return principal


def require(
    capability: str, *, query_token: bool = False, scoped: bool = False
) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits keys holding `capability` (401 without a valid key, 403
    without the capability). With `query_token`, `?access_token=` is accepted too, for
    browsers' EventSource, which cannot set headers. Keys scoped to accounts are admitted
    only where `scoped` says the route serves them their accounts alone (403 elsewhere).

    Async, with the lookup in one worker-thread trip: as sync dependencies (settings, the
    session's open and close, the check) a connect made four, and under CPU contention
    each trip could wait long enough to push a stream's headers past 2 s (issue 16)."""

    def admit(token: str) -> Principal:
        with session_factory(get_settings().resolved_database_url)() as session:
            return _principal(session, token)

    async def check(token: str | None) -> Principal:
        if not token:  # no database needed to refuse this one
            raise ApiError(
                401, "unauthorized", "missing API key: send 'Authorization: Bearer <token>'"
            )
        principal = _recently_admitted(token)
        if principal is None:
            principal = _admitted(token, await run_in_threadpool(admit, token))
        if capability not in principal.capabilities:
            raise ApiError(403, "forbidden", f"this API key lacks the capability {capability}")
        if principal.accounts is not None and not scoped:
            raise ApiError(403, "forbidden", "this API key is scoped to accounts")
        return principal

    async def from_header(bearer: BearerDep) -> Principal:
        return await check(bearer.credentials if bearer else None)

    async def from_header_or_query(
        bearer: BearerDep,
        access_token: Annotated[
            str | None, Query(max_length=200, description="API key, for EventSource clients.")
        ] = None,
    ) -> Principal:
        return await check(bearer.credentials if bearer else access_token)

    return from_header_or_query if query_token else from_header


AdminRead = Annotated[Principal, Depends(require("admin:read"))]
# Routes that filter what they read to the key's accounts (`Principal.accounts`).
AccountRead = Annotated[Principal, Depends(require("admin:read", scoped=True))]
AdminWrite = Annotated[Principal, Depends(require("admin:write"))]
EventsRead = Annotated[Principal, Depends(require("events:read", query_token=True, scoped=True))]


def account_scope(principal: Principal, account_id: str | None) -> frozenset[str] | None:
    """The accounts a request reads: `?accountId=` if given (403 outside the key's scope),
    else the key's accounts; None: every account."""
    if account_id is not None:
        if not principal.may_read(account_id):
            raise ApiError(403, "forbidden", "this API key may not read that account")
        return frozenset({account_id})
    return principal.accounts

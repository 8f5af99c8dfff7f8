"""Dependencies, as `Annotated` aliases: settings, a DB session per request, Prefect, auth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prefect.client.orchestration import PrefectClient
from sqlalchemy.orm import Session

from api.errors import ApiError
from recon.keys import Principal, authenticate
from recon.settings import Settings, get_settings
from recon.store.database import session_factory

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_factory(settings.resolved_database_url)() as session:
        yield session


# Closed when the route function returns, not after the response: a stream's response
# lasts for hours, and holding a pooled connection per client would exhaust the pool.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_prefect(request: Request) -> PrefectClient:
    """One Prefect client per process, opened in the app's lifespan."""
    client: PrefectClient = request.app.state.prefect
    return client


PrefectDep = Annotated[PrefectClient, Depends(get_prefect)]

_bearer = HTTPBearer(auto_error=False, description="An API key from `recon keys create`.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _principal(session: Session, token: str | None) -> Principal:
    if not token:
        raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer <token>'")
    principal = authenticate(session, token)
    if principal is None:
        raise ApiError(401, "unauthorized", "invalid or revoked API key")
    return principal


def require(capability: str, *, query_token: bool = False) -> Callable[..., Principal]:
    """A dependency that admits keys holding `capability` (401 without a valid key, 403
    without the capability). With `query_token`, `?access_token=` is accepted too, for
    browsers' EventSource, which cannot set headers."""

    def admit(session: Session, token: str | None) -> Principal:
        principal = _principal(session, token)
        if capability not in principal.capabilities:
            raise ApiError(403, "forbidden", f"this API key lacks the capability {capability}")
        return principal

    def from_header(session: SessionDep, bearer: BearerDep) -> Principal:
        return admit(session, bearer.credentials if bearer else None)

    def from_header_or_query(
        session: SessionDep,
        bearer: BearerDep,
        access_token: Annotated[
            str | None, Query(max_length=200, description="API key, for EventSource clients.")
        ] = None,
    ) -> Principal:
        return admit(session, bearer.credentials if bearer else access_token)

    return from_header_or_query if query_token else from_header


AdminRead = Annotated[Principal, Depends(require("admin:read"))]
AdminWrite = Annotated[Principal, Depends(require("admin:write"))]
EventsRead = Annotated[Principal, Depends(require("events:read", query_token=True))]

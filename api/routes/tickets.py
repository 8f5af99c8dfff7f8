"""`POST /api/stream/tickets`: a one-connection, one-minute ticket for the event stream."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.deps import SessionDep, require
from recon.keys import Principal
from recon.tickets import TTL, issue_ticket

router = APIRouter(tags=["events"])

# Header only: a ticket is how a key stays out of URLs, so it is not bought with one.
# Account-scoped keys too: the ticket's stream carries the key's scope.
StreamKey = Annotated[Principal, Depends(require("events:read", scoped=True))]


@router.post(
    "/api/stream/tickets",
    status_code=201,
    responses={
        201: {"description": "the ticket"},
        401: {"description": "no valid API key"},
        403: {"description": "the API key lacks events:read"},
    },
)
def create_ticket(principal: StreamKey, session: SessionDep) -> JSONResponse:
    """A ticket for one connection to `GET /api/stream/events?ticket=…`, valid for 60 s.

    For browsers' EventSource (which cannot send headers) behind a proxy that logs URLs:
    the ticket in the log is spent, or expired, by the time anyone reads it. The stream
    it opens belongs to the key: it ends when the key is revoked or loses events:read.
    """
    ticket, expires_at = issue_ticket(session, principal)
    session.commit()
    body: dict[str, Any] = {
        "ticket": ticket,
        "expiresAt": expires_at.isoformat(),
        "expiresIn": int(TTL.total_seconds()),
    }
    # Like a token response (RFC 6749 §5.1): no cache may keep it.
    return JSONResponse(body, status_code=201, headers={"Cache-Control": "no-store"})

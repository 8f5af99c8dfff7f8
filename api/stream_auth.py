"""Who may open the event stream: a key (header, or `?access_token=` for old EventSource
UIs) or a single-use ticket from `POST /api/stream/tickets` (`?ticket=`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from starlette.concurrency import run_in_threadpool

from api.deps import BearerDep, require
from api.errors import ApiError
from api.stream_guard import CAPABILITY
from recon.keys import Principal
from recon.settings import get_settings
from recon.store.database import session_factory
from recon.tickets import redeem_ticket

# The keys' own check, with its short admission cache (a feed's clients reconnect with
# the same key every few seconds); open streams are re-checked by api.stream_guard.
# Account-scoped keys are admitted: the stream sends them their accounts' rows only.
_key_reader = require(CAPABILITY, query_token=True, scoped=True)


async def stream_principal(
    bearer: BearerDep,
    access_token: Annotated[
        str | None,
        Query(
            max_length=200,
            description="API key, for EventSource clients (prefer `ticket` behind a proxy).",
        ),
    ] = None,
    ticket: Annotated[
        str | None,
        Query(
            max_length=100,
            description="A ticket from POST /api/stream/tickets: one connection, 60 s.",
        ),
    ] = None,
) -> Principal:
    """The header wins over `access_token`, which wins over `ticket`: a ticket is redeemed
    (spent) only when it is the credential actually used, in one worker-thread trip."""
    if (bearer and bearer.credentials) or access_token or not ticket:
        return await _key_reader(bearer, access_token)
    principal = await run_in_threadpool(_redeem, ticket)
    if principal is None:
        raise ApiError(401, "unauthorized", "invalid, expired or already used stream ticket")
    if CAPABILITY not in principal.capabilities:
        raise ApiError(403, "forbidden", f"this API key lacks the capability {CAPABILITY}")
    return principal


def _redeem(ticket: str) -> Principal | None:
    # Committed whatever follows: a spent ticket stays spent.
    with session_factory(get_settings().resolved_database_url).begin() as session:
        return redeem_ticket(session, ticket)


StreamReader = Annotated[Principal, Depends(stream_principal)]

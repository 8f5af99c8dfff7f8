"""`GET /api/stream/events`: the journal as Server-Sent Events."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated, Final

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from sse_starlette import EventSourceResponse

from api.deps import RelayDep, account_scope
from api.errors import ApiError
from api.relay import JournalRelay
from api.stream_auth import StreamReader
from api.stream_guard import Lease, LeasedResponse, StreamGuard
from api.subscription import Subscription

router = APIRouter(tags=["events"])

_MAX_EVENT_ID: Final = 2**63 - 1  # the journal id is a signed 64-bit integer
_DIGITS: Final = re.compile(r"[0-9]{1,19}")
_SHUTDOWN_GRACE_SECONDS: Final = 2.0


@router.get(
    "/api/stream/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "an endless event stream"},
        400: {"description": "Last-Event-ID is not a journal id"},
        401: {"description": "no valid API key"},
        403: {"description": "the API key lacks events:read, or may not read that account"},
        429: {"description": "too many open streams, for this key or in all"},
    },
)
async def stream_events(
    request: Request,
    principal: StreamReader,
    relay: RelayDep,
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this event id.")
    ] = None,
    last_event_id_query: Annotated[
        str | None,
        Query(
            alias="lastEventId",
            max_length=40,
            description="Resume after this event id (for clients that cannot set headers); "
            "the Last-Event-ID header wins.",
        ),
    ] = None,
    account_id: Annotated[
        str | None,
        Query(alias="accountId", max_length=64, description="Only this account's events."),
    ] = None,
) -> Response:
    """Changes to the book, as Server-Sent Events, one per journal entry.

    - `event: position:updated`: a reconciliation changed positions. `data` is JSON:
      `type`, `created`, `updated`, `removed` (lists of positions, decimals as strings),
      `details`, `timestamp`, `source`, `accountId`, `flowRunId`.
    - `event: system:error`: a run failed or crashed. `data` is JSON: `message`, `error`,
      `status` (`failed` | `crashed`), `timestamp`, `source`, `flowRunId`.

    With `?accountId=`, or with a key scoped to accounts, only those accounts' events are
    sent (a whole run's `system:error`, which has no account, is not).

    Every message's `id` is its journal id. A client that reconnects with `Last-Event-ID`
    (or `?lastEventId=`) receives every event after that id, in order, none twice; without
    it, only events newer than the connection. Comment lines (`: ping`) keep the connection
    alive. A client that falls 10,000 events behind is disconnected and should reconnect.
    """
    after = _event_id(last_event_id_header or last_event_id_query)
    accounts = account_scope(principal, account_id)
    if after is None:
        # "Newer than the connection" means newer than now, not than the moment the body
        # starts (after the headers are sent): pin the position here and replay from it.
        after = relay.position
    shutdown = anyio.Event()
    # Taken last, so nothing between here and the response can leak the slot.
    lease = StreamGuard.of(request).acquire(principal)
    response = EventSourceResponse(
        _messages(relay, after, shutdown, lease, accounts),
        ping=relay.ping_interval,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        # On server shutdown sse-starlette sets the event and waits this long for the
        # generator to end, so the stream ends with a proper last chunk instead of being
        # cut off mid-body (which clients report as an error).
        shutdown_event=shutdown,
        shutdown_grace_period=_SHUTDOWN_GRACE_SECONDS,
    )
    return LeasedResponse(response, lease)


async def _messages(
    relay: JournalRelay,
    after: int | None,
    shutdown: anyio.Event,
    lease: Lease,
    accounts: frozenset[str] | None = None,
) -> AsyncIterator[bytes]:
    async with relay.subscribe(after, accounts) as subscription:
        # Ends the stream when its key is revoked, expires or loses events:read.
        lease.on_revoke(subscription.close)
        # A task, not a task group: a cancel scope must not span the generator's yields.
        closer = asyncio.create_task(_close_on(shutdown, subscription))
        try:
            async for batch in subscription:
                # Encoded once by the relay for every client (sse-starlette sends bytes as
                # is); a batch of rows goes out in one write.
                yield batch
        finally:
            closer.cancel()


async def _close_on(shutdown: anyio.Event, subscription: Subscription) -> None:
    await shutdown.wait()
    subscription.close()


def _event_id(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not _DIGITS.fullmatch(text) or int(text) > _MAX_EVENT_ID:
        raise ApiError(
            400,
            "invalid request",
            f"Last-Event-ID must be an integer from 0 to {_MAX_EVENT_ID}",
        )
    return int(text)

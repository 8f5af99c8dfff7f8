"""The Broker API's trade events: `GET /v2/events/trades`, Server-Sent Events, every account.

alpaca-py 0.44 reaches only the legacy `/v1/events/trades` (its URL follows the client's
`api_version`) and types `since_id` as an integer, so this reads v2 with httpx and httpx-sse
directly: HTTP Basic with the broker key pair, as every Broker API request. Event ids are
ULIDs: they sort as strings, and their first 48 bits are a time in milliseconds, which is
how `resume_from` steps back "a little before" the last applied event (Alpaca orders
events per account only, so an event of another account may carry a slightly older id).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from recon.errors import BrokerError, BrokerRejectedError, BrokerTransientError
from recon.settings import Settings

SANDBOX_URL = "https://broker-api.sandbox.alpaca.markets"
LIVE_URL = "https://broker-api.alpaca.markets"
PATH = "/v2/events/trades"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(frozen=True)
class TradeEvent:
    event_id: str
    account_id: str
    data: dict[str, Any]  # the event as sent (numbers still strings)


def parse_event(raw: str) -> TradeEvent | None:
    """One SSE `data` payload; None for anything without an event id and an account."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    event_id, account_id = data.get("event_id"), data.get("account_id")
    if isinstance(event_id, bool) or not isinstance(event_id, str | int):
        return None
    if not isinstance(account_id, str) or not account_id:
        return None
    return TradeEvent(str(event_id), account_id, data)


def ulid_ms(ulid: str) -> int | None:
    """The millisecond time in a ULID's first ten characters (None if it is not one)."""
    if len(ulid) != 26:
        return None
    value = 0
    for char in ulid[:10].upper():
        digit = _CROCKFORD.find(char)
        if digit < 0:
            return None
        value = value * 32 + digit
    return value


def ulid_at(ms: int) -> str:
    """The smallest ULID of millisecond `ms`: every event of that moment or later is after it."""
    chars = []
    for _ in range(10):
        ms, digit = divmod(ms, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars)) + "0" * 16


def resume_from(event_id: str, seconds: float) -> str:
    """The `since_id` `seconds` before `event_id` (the id itself if it is no ULID)."""
    ms = ulid_ms(event_id)
    return event_id if ms is None else ulid_at(max(0, ms - int(seconds * 1000)))


def events_url(settings: Settings) -> str:
    base = settings.alpaca_broker_base_url or (
        SANDBOX_URL if settings.alpaca_broker_sandbox else LIVE_URL
    )
    return base.rstrip("/") + PATH


class TradeEventSource:
    """One connection at a time to `/v2/events/trades`."""

    def __init__(self, settings: Settings) -> None:
        key, secret = settings.broker_credentials()
        self.url = events_url(settings)
        # Connect within the HTTP timeout; between events the stream may be quiet for long,
        # so a read waits `events_idle_timeout_seconds`, then the connection is renewed.
        timeout = httpx.Timeout(
            settings.http_timeout_seconds, read=settings.events_idle_timeout_seconds
        )
        self._client = httpx.AsyncClient(auth=(key, secret), timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    @contextlib.asynccontextmanager
    async def connect(self, since_id: str | None) -> AsyncIterator[AsyncIterator[TradeEvent]]:
        """The open stream (after `since_id`, or only new events); raises `BrokerError`s."""
        params = {"since_id": since_id} if since_id else {}
        try:
            async with aconnect_sse(self._client, "GET", self.url, params=params) as source:
                response = source.response
                if response.status_code != 200:
                    await response.aread()
                    raise _status_error(response)
                yield _events(source.aiter_sse())
        except httpx.TimeoutException:
            raise BrokerTransientError("trade events: no data within the timeout") from None
        except httpx.HTTPError as exc:
            raise BrokerTransientError(
                f"trade events: connection lost ({type(exc).__name__})"
            ) from None


async def _events(messages: AsyncIterator[Any]) -> AsyncIterator[TradeEvent]:
    async for message in messages:
        if not message.data:
            continue
        event = parse_event(message.data)
        if event is not None:
            yield event


def _status_error(response: httpx.Response) -> BrokerError:
    """HTTP status and Alpaca's own `message` only (a proxy's page may echo the request)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    reason = " ".join(str(message).split())[:200] if isinstance(message, str) else "no message"
    text = f"trade events: broker answered HTTP {status}: {reason}"
    if status in (408, 425, 429) or status >= 500:
        return BrokerTransientError(text, status_code=status)
    return BrokerRejectedError(text, status_code=status)

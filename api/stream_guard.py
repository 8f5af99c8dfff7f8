"""What an open stream owes the rest: a slot under the caps, and its key re-checked.

A key is checked once, when its stream connects, and a stream can last for days. The
guard re-reads every streaming key's state (one indexed query per process, every
`RECON_STREAM_KEY_CHECK_SECONDS`, only while streams are open), and ends the streams of
a key that was revoked, expired or lost the capability: within one ping interval.

It also caps open streams, in all and per key (`RECON_STREAM_MAX_CONNECTIONS`,
`RECON_STREAM_MAX_CONNECTIONS_PER_KEY`): the excess is a 429 before any stream starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.errors import ApiError
from recon.keys import Principal, live_capabilities
from recon.settings import Settings, get_settings
from recon.store.database import session_factory

logger = logging.getLogger("recon.api.stream_guard")

CAPABILITY: Final = "events:read"


class Lease:
    """One open stream's slot; `on_revoke` callbacks run once, when its key stops qualifying."""

    def __init__(self, guard: StreamGuard, principal: Principal) -> None:
        self.principal = principal
        self.revoked = False
        self._guard = guard
        self._callbacks: list[Callable[[], None]] = []
        self._released = False

    def on_revoke(self, callback: Callable[[], None]) -> None:
        if self.revoked:
            callback()
        else:
            self._callbacks.append(callback)

    def revoke(self) -> None:
        if not self.revoked:
            self.revoked = True
            for callback in self._callbacks:
                callback()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._guard.release(self)


class StreamGuard:
    """Per process (one per app): the open streams' slots and the periodic key check."""

    def __init__(self, settings: Settings) -> None:
        self.max_total = settings.stream_max_connections
        self.max_per_key = settings.stream_max_connections_per_key
        self.check_seconds = settings.stream_key_check_seconds
        self.checks = 0  # completed key checks: for tests and metrics
        self._sessions = session_factory(settings.resolved_database_url)
        self._leases: set[Lease] = set()
        self._per_key: Counter[int | str] = Counter()
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def of(request: Request) -> StreamGuard:
        """The app's guard, made on first use (so any app that mounts the stream has one)."""
        guard: StreamGuard | None = getattr(request.app.state, "stream_guard", None)
        if guard is None:
            guard = StreamGuard(get_settings())
            request.app.state.stream_guard = guard
        return guard

    @property
    def open_streams(self) -> int:
        return len(self._leases)

    @property
    def checking(self) -> bool:
        """Whether the periodic key check runs (only while a stream is open)."""
        return self._task is not None and not self._task.done()

    def acquire(self, principal: Principal) -> Lease:
        """A slot for one more stream of `principal`, or a 429 saying which cap is full."""
        key = _key(principal)
        if len(self._leases) >= self.max_total:
            raise _too_many("this sidecar", self.max_total, "RECON_STREAM_MAX_CONNECTIONS")
        if self._per_key[key] >= self.max_per_key:
            raise _too_many(
                "this API key", self.max_per_key, "RECON_STREAM_MAX_CONNECTIONS_PER_KEY"
            )
        lease = Lease(self, principal)
        self._leases.add(lease)
        self._per_key[key] += 1
        if principal.key_id is not None and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._watch(), name="stream-key-check")
        return lease

    def release(self, lease: Lease) -> None:
        self._leases.discard(lease)
        key = _key(lease.principal)
        self._per_key[key] -= 1
        if self._per_key[key] <= 0:
            del self._per_key[key]

    async def _watch(self) -> None:
        # Ends by itself when no stream is open; the next stream starts it again.
        while self._leases:
            await asyncio.sleep(self.check_seconds)
            watched = {lease.principal.key_id for lease in self._leases}
            ids = {key_id for key_id in watched if key_id is not None}
            try:
                live = await asyncio.to_thread(self._read, ids)
            except Exception:
                # A database blip keeps the streams open; the next check decides.
                logger.exception("stream key check: reading the keys failed; retrying")
                continue
            self.checks += 1
            for lease in list(self._leases):
                key_id = lease.principal.key_id
                # Only the keys this read asked about: a stream opened while it ran is
                # judged by the next check, not revoked for missing from this one.
                if key_id in ids and CAPABILITY not in live.get(key_id, frozenset()):
                    lease.revoke()

    def _read(self, ids: set[int]) -> dict[int, frozenset[str]]:
        with self._sessions() as session:
            return live_capabilities(session, ids)


def _key(principal: Principal) -> int | str:
    return principal.key_id if principal.key_id is not None else principal.name


def _too_many(who: str, limit: int, setting: str) -> ApiError:
    return ApiError(
        429,
        "too many streams",
        f"{who} has {limit} open event streams, the most allowed ({setting}); "
        "close one or retry later",
        limit=limit,
    )


class LeasedResponse(Response):
    """Runs the stream's response and gives its slot back however that ends: finished,
    cancelled by a disconnect, a HEAD request that never starts the body, or an error."""

    def __init__(self, inner: Response, lease: Lease) -> None:
        # Not Response.__init__: the inner response owns status, headers and body.
        self.inner = inner
        self.lease = lease
        self.status_code = inner.status_code
        self.raw_headers = inner.raw_headers
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            self.lease.release()

"""One tail of the journal per process, fanned out to every SSE client.

A background task polls `position_events` for ids above the last one it saw and copies each
new row into every subscriber's queue. Each row is encoded as an SSE message once, when it
is read (in the worker thread), so fanning it out costs each client only a queue put and a
socket write. The newest rows also stay in memory (a few MB): a client that reconnects with
a recent Last-Event-ID is replayed from there; only one that was away longer reads the
journal itself.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import func, select
from sse_starlette import ServerSentEvent

from recon.store.database import session_factory
from recon.store.journal import read_events
from recon.store.models import PositionEvent

logger = logging.getLogger("recon.api.relay")

MAX_QUEUED: Final = 10_000
PAGE_SIZE: Final = 500
# Replays from memory cover the rows whose messages fit in this many bytes (≈ 4,000 typical
# `position:updated` messages, or ≈ 20 of a 10,000-position book's first sync).
RECENT_BYTES: Final = 8 * 1024 * 1024


@dataclass(frozen=True)
class JournalEntry:
    """A journal row as the stream sends it, shared by every client: `message` is the
    complete SSE message (`id`, `event`, `data` as compact JSON; CRLF line ends, as
    sse-starlette writes its pings), encoded once per row rather than once per client."""

    id: int
    type: str
    data: dict[str, Any]
    message: bytes


class _Closed:
    """Queued last to tell a subscriber its stream is over (relay stopped, or it fell behind)."""


_CLOSED: Final = _Closed()


class JournalRelay:
    def __init__(
        self,
        database_url: str,
        *,
        poll_interval: float = 0.1,
        ping_interval: float = 15.0,
        recent_bytes: int = RECENT_BYTES,
    ) -> None:
        # A row waits half a poll on average before it is seen (50 ms here, 125 ms at the
        # former 0.25 s). An empty poll is one indexed range read: ten a second cost next
        # to nothing (docs/performance.md, fan-out).
        self.poll_interval = poll_interval
        # Kept here so the stream route and tests configure it in one place.
        self.ping_interval = ping_interval
        self.polls = 0  # completed reads of the tail: a liveness signal for metrics and checks
        self._sessions = session_factory(database_url)
        self._subscribers: set[asyncio.Queue[JournalEntry | _Closed]] = set()
        self._last_id: int | None = None
        self._task: asyncio.Task[None] | None = None
        # Every row with id > _recent_after (up to _last_id) is in _recent, in id order.
        self._recent: deque[JournalEntry] = deque()
        self._recent_after: int | None = None
        self._recent_size = 0
        self._recent_budget = recent_bytes
        self.replays_from_memory = 0  # counters for tests and metrics
        self.replays_from_journal = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def position(self) -> int | None:
        """The last journal id the tail has broadcast (None before `start`)."""
        return self._last_id

    async def start(self) -> None:
        # Start at the head: a client without Last-Event-ID only wants what happens next.
        self._last_id = await asyncio.to_thread(self._max_id)
        self._recent_after = self._last_id
        self._task = asyncio.create_task(self._tail(), name="journal-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # wait() rather than `await task`: the task's CancelledError is not ours to raise.
            await asyncio.wait({self._task})
            self._task = None
        for queue in list(self._subscribers):
            self._close(queue)

    @asynccontextmanager
    async def subscribe(self, last_event_id: int | None = None) -> AsyncIterator[Subscription]:
        """The rows after `last_event_id` (or, without it, after the tail's position now),
        in id order, each once, until the relay stops, the subscription is closed or the
        client falls too far behind."""
        if self._last_id is None or self._task is None:
            raise RuntimeError("the relay is not running")
        queue: asyncio.Queue[JournalEntry | _Closed] = asyncio.Queue(MAX_QUEUED)
        # Registered before the replay query: a row committed meanwhile then reaches the
        # queue or the replay (or both; duplicates are dropped by id), never neither.
        self._subscribers.add(queue)
        try:
            after = self._last_id if last_event_id is None else last_event_id
            yield Subscription(self, queue, after, replay=last_event_id is not None)
        finally:
            self._subscribers.discard(queue)

    async def _tail(self) -> None:
        assert self._last_id is not None
        while True:
            try:
                page = await asyncio.to_thread(self._read, self._last_id)
            except Exception:
                # A database blip must not kill the one tail every client depends on.
                logger.exception("journal relay: reading the journal failed; retrying")
                await asyncio.sleep(max(self.poll_interval, 1.0))
                continue
            self.polls += 1
            # No await between fan-out and moving `_last_id`: a subscriber registered at any
            # await point gets exactly the rows above the `_last_id` it sees.
            for entry in page:
                self._publish(entry)
                self._remember(entry)
            if page:
                self._last_id = page[-1].id
            if len(page) < PAGE_SIZE:  # a full page means more is waiting: read on at once
                await asyncio.sleep(self.poll_interval)

    def _publish(self, entry: JournalEntry) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(entry)
            except asyncio.QueueFull:
                # Blocking here would stall every client for the slowest one; this one is
                # dropped instead and resumes from its Last-Event-ID when it reconnects.
                logger.warning("journal relay: a client fell %d events behind; closing", MAX_QUEUED)
                self._close(queue)

    def _remember(self, entry: JournalEntry) -> None:
        self._recent.append(entry)
        self._recent_size += len(entry.message)
        while self._recent_size > self._recent_budget and len(self._recent) > 1:
            dropped = self._recent.popleft()
            self._recent_size -= len(dropped.message)
            self._recent_after = dropped.id

    def recent_after(self, after: int) -> list[JournalEntry] | None:
        """Every row after `after` that the tail has broadcast, from memory; None when some
        of them are no longer held (the caller then reads the journal)."""
        if self._recent_after is None or after < self._recent_after:
            return None
        start = bisect.bisect_right(self._recent, after, key=lambda entry: entry.id)
        return list(itertools.islice(self._recent, start, None))

    def _close(self, queue: asyncio.Queue[JournalEntry | _Closed]) -> None:
        self._subscribers.discard(queue)
        while not queue.empty():  # make room for the marker; the client replays on reconnect
            queue.get_nowait()
        queue.put_nowait(_CLOSED)

    def _max_id(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.max(PositionEvent.id))) or 0)

    def _read(self, after_id: int) -> list[JournalEntry]:
        with self._sessions() as session:
            return [_entry(row) for row in read_events(session, after_id, PAGE_SIZE)]


def _entry(row: PositionEvent) -> JournalEntry:
    data = dict(row.payload)
    if data.get("flowRunId") is None:  # older rows or hand-written ones may lack it
        data["flowRunId"] = row.flow_run_id
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    message = ServerSentEvent(data=text, event=row.type, id=str(row.id)).encode()
    return JournalEntry(id=row.id, type=row.type, data=data, message=message)


class Subscription:
    """One client's view: a replay from the database, if asked for, then the live rows."""

    def __init__(
        self,
        relay: JournalRelay,
        queue: asyncio.Queue[JournalEntry | _Closed],
        after: int,
        *,
        replay: bool,
    ) -> None:
        self._relay = relay
        self._queue = queue
        self._sent = after  # the last id delivered (or skipped over by the caller's choice)
        self._replaying = replay
        self._pending: deque[JournalEntry] = deque()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> JournalEntry:
        while True:
            if self._pending:
                entry = self._pending.popleft()
                self._sent = entry.id
                return entry
            if self._replaying:
                # No await between this read and the queue: rows the tail broadcasts later
                # reach the queue, which was registered before the replay began.
                held = self._relay.recent_after(self._sent)
                if held is not None:
                    self._relay.replays_from_memory += 1
                    self._replaying = False
                    self._pending.extend(held)
                    continue
                self._relay.replays_from_journal += 1
                page = await asyncio.to_thread(self._relay._read, self._sent)
                if self._replaying:  # unless closed meanwhile
                    self._replaying = len(page) == PAGE_SIZE
                    self._pending.extend(page)
                continue
            item = await self._queue.get()
            if isinstance(item, _Closed):
                raise StopAsyncIteration
            if item.id > self._sent:  # otherwise the replay has sent it already
                self._sent = item.id
                return item

    def close(self) -> None:
        """End the iteration after the entry being delivered now (e.g. on server shutdown)."""
        self._replaying = False
        self._pending.clear()
        self._relay._close(self._queue)

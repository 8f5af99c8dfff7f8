"""One tail of the journal per process, fanned out to every SSE client.

A background task polls `position_events` for ids above the last one it saw and hands each
page of new rows to every subscriber. Each row is encoded as an SSE message once, when it
is read (in the tail's thread), and a page's messages are joined once, so fanning it out
costs each client one append and, for everything queued since its last write, one socket
write. The newest rows also stay in memory (a few MB): a client that reconnects with
a recent Last-Event-ID is replayed from there; only one that was away longer reads the
journal itself.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Final

from api.subscription import Inbox, JournalEntry, Page, Subscription, entry_of
from api.wakeup import JournalWakeup
from recon.store.database import session_factory
from recon.store.journal import last_event_id, read_events
from recon.store.retention import REPLAY_WINDOW_EVENTS

logger = logging.getLogger("recon.api.relay")

# A connected client further behind than this is dropped (it resumes from Last-Event-ID);
# `recon db prune` never deletes these newest events.
MAX_QUEUED: Final = REPLAY_WINDOW_EVENTS
PAGE_SIZE: Final = 500
# Replays from memory cover the rows whose messages fit in this many bytes (≈ 4,000 typical
# `position:updated` messages, or ≈ 20 of a 10,000-position book's first sync).
RECENT_BYTES: Final = 8 * 1024 * 1024


class JournalRelay:
    def __init__(
        self,
        database_url: str,
        *,
        poll_interval: float = 0.1,
        ping_interval: float = 15.0,
        recent_bytes: int = RECENT_BYTES,
        replay_rows_per_second: float = 5000,
    ) -> None:
        # A row waits half a poll on average before it is seen (50 ms here, 125 ms at the
        # former 0.25 s). An empty poll is one indexed range read: ten a second cost next
        # to nothing (docs/performance.md, fan-out).
        self.poll_interval = poll_interval
        # Kept here so the stream route and tests configure it in one place.
        self.ping_interval = ping_interval
        self.replay_rows_per_second = replay_rows_per_second  # per replay (api/pacing.py)
        self._sessions = session_factory(database_url)
        self._wakeup = JournalWakeup(database_url)  # LISTEN/NOTIFY on PostgreSQL
        self._subscribers: set[Inbox] = set()
        self._last_id: int | None = None
        self._task: asyncio.Task[None] | None = None
        # Every row with id > _recent_after (up to _last_id) is in _recent, in id order.
        self._recent: deque[JournalEntry] = deque()
        self._recent_after: int | None = None
        self._recent_size = 0
        self._recent_budget = recent_bytes
        # Own threads, one each: under load a burst of replays queued in the loop's default
        # executor held back the tail's poll, and with it every client's stream (issue 16).
        self._tail_thread = ThreadPoolExecutor(1, thread_name_prefix="journal-tail")
        self._replay_thread = ThreadPoolExecutor(1, thread_name_prefix="journal-replay")
        # One journal read at a time: many at once each hold the GIL to decode and encode
        # their rows, which starved the loop. Those waiting often need the same rows, so
        # the last page read is kept for them.
        self._replay_lock = asyncio.Lock()
        self._replay_after = 0
        self._replay_page: list[JournalEntry] = []
        self.replays_from_memory = 0  # counters for tests and metrics
        self.replays_from_journal = 0
        self.journal_reads = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def position(self) -> int | None:
        """The last journal id the tail has broadcast (None before `start`)."""
        return self._last_id

    async def start(self) -> None:
        # Start at the head: a client without Last-Event-ID only wants what happens next.
        loop = asyncio.get_running_loop()
        self._last_id = await loop.run_in_executor(self._tail_thread, self._max_id)
        self._recent_after = self._last_id
        await self._wakeup.start()
        self._task = asyncio.create_task(self._tail(), name="journal-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # wait() rather than `await task`: the task's CancelledError is not ours to raise.
            await asyncio.wait({self._task})
            self._task = None
        await self._wakeup.stop()
        for subscriber in list(self._subscribers):
            self.release(subscriber)
        self._tail_thread.shutdown(wait=False)
        self._replay_thread.shutdown(wait=False)

    @asynccontextmanager
    async def subscribe(
        self, last_event_id: int | None = None, accounts: frozenset[str] | None = None
    ) -> AsyncIterator[Subscription]:
        """The rows after `last_event_id` (or, without it, after the tail's position now),
        in id order, each once, in batches, until the relay stops, the subscription is
        closed or the client falls too far behind. With `accounts`, only those accounts'
        rows are sent (the others are skipped over, never sent)."""
        if self._last_id is None or self._task is None:
            raise RuntimeError("the relay is not running")
        subscriber = Inbox()
        # Registered before the replay query: a row committed meanwhile then reaches the
        # inbox or the replay (or both; duplicates are dropped by id), never neither.
        self._subscribers.add(subscriber)
        try:
            after = self._last_id if last_event_id is None else last_event_id
            yield Subscription(
                self, subscriber, after, replay=last_event_id is not None, accounts=accounts
            )
        finally:
            self._subscribers.discard(subscriber)

    async def _tail(self) -> None:
        assert self._last_id is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                page = await loop.run_in_executor(self._tail_thread, self._read, self._last_id)
            except Exception:
                # A database blip must not kill the one tail every client depends on.
                logger.exception("journal relay: reading the journal failed; retrying")
                await asyncio.sleep(max(self.poll_interval, 1.0))
                continue
            # No await between fan-out and moving `_last_id`: a subscriber registered at any
            # await point gets exactly the rows above the `_last_id` it sees.
            if page:
                self._publish(page)
                for entry in page:
                    self._remember(entry)
                self._last_id = page[-1].id
            if len(page) < PAGE_SIZE:  # a full page means more is waiting: read on at once
                await self._wakeup.wait(self.poll_interval)

    def _publish(self, entries: list[JournalEntry]) -> None:
        # The page as one batch: one wake-up per client and poll, not one per row.
        page = Page(entries, b"".join(entry.message for entry in entries))
        for subscriber in list(self._subscribers):
            if subscriber.queued + len(entries) > MAX_QUEUED:
                # Blocking here would stall every client for the slowest one; this one is
                # dropped instead and resumes from its Last-Event-ID when it reconnects.
                logger.warning("journal relay: a client fell %d events behind; closing", MAX_QUEUED)
                self.release(subscriber)
                continue
            subscriber.pages.append(page)
            subscriber.queued += len(entries)
            subscriber.wake.set()

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

    async def read_journal(self, after: int) -> tuple[list[JournalEntry], int]:
        """Rows after `after` that memory no longer holds, read off the loop, one read at a
        time; and the id up to which they are complete (no other row lies in between)."""
        async with self._replay_lock:
            until = self._recent_after if self._recent_after is not None else after
            page = self._replay_page
            if page and self._replay_after <= after < page[-1].id:
                # The previous read covers this client's next rows (it was reading nearby).
                start = bisect.bisect_right(page, after, key=lambda entry: entry.id)
                return page[start:], page[-1].id
            loop = asyncio.get_running_loop()
            self.journal_reads += 1
            page = await loop.run_in_executor(self._replay_thread, self._read, after, until)
            self._replay_after, self._replay_page = after, page
            return page, (page[-1].id if len(page) == PAGE_SIZE else max(until, after))

    def release(self, subscriber: Inbox) -> None:
        """Stop fanning out to this inbox and end its subscription."""
        self._subscribers.discard(subscriber)
        subscriber.close()

    def _max_id(self) -> int:
        with self._sessions() as session:
            return last_event_id(session)

    def _read(self, after_id: int, until_id: int | None = None) -> list[JournalEntry]:
        with self._sessions() as session:
            rows = read_events(session, after_id, PAGE_SIZE, until_id=until_id)
            return [entry_of(row) for row in rows]

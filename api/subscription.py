"""What the relay hands each SSE client: the journal's rows as encoded SSE messages, one
client's inbox of fanned-out pages, and the `Subscription` that turns a replay plus the live
pages into socket writes (the relay itself is `api.relay`)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sse_starlette import ServerSentEvent

from api.pacing import ReplayPace
from recon.schemas.events import sse_data
from recon.store.models import PositionEvent

if TYPE_CHECKING:
    from api.relay import JournalRelay

# What one socket write carries at most (unless a single row is larger): one loop turn per
# write, where one per row made a client's catch-up cost hundreds.
BATCH_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class JournalEntry:
    """A journal row as the stream sends it, shared by every client: `message` is the
    complete SSE message (`id`, `event`, `data` as compact JSON; CRLF line ends, as
    sse-starlette writes its pings), encoded once per row rather than once per client."""

    id: int
    message: bytes
    account_id: str | None = None  # whose row: a stream filtered to accounts sends only theirs


@dataclass(frozen=True)
class Page:
    """Rows one poll of the tail read, in id order, with their messages joined once for
    every client: fanning a page out costs each client no work per row."""

    entries: list[JournalEntry]
    message: bytes


class Inbox:
    """One client's inbox: the pages the tail fanned out to it since it subscribed."""

    __slots__ = ("closed", "pages", "queued", "wake")

    def __init__(self) -> None:
        self.pages: deque[Page] = deque()
        self.queued = 0  # rows in `pages`
        self.wake = asyncio.Event()
        self.closed = False  # the relay stopped, the stream ended, or it fell too far behind

    def close(self) -> None:
        self.pages.clear()  # the client replays them when it reconnects
        self.queued = 0
        self.closed = True
        self.wake.set()


def entry_of(row: PositionEvent) -> JournalEntry:
    """A journal row as every client is sent it (encoded once, here)."""
    text = sse_data(row.payload, row.flow_run_id)
    message = ServerSentEvent(data=text, event=row.type, id=str(row.id)).encode()
    return JournalEntry(id=row.id, message=message, account_id=row.account_id)


class Subscription:
    """One client's view: a replay, if asked for, then the live rows; in batches of at
    most BATCH_BYTES (or one larger row), so that a client catching up on hundreds of rows
    costs the loop a few socket writes instead of one per row."""

    def __init__(
        self,
        relay: JournalRelay,
        subscriber: Inbox,
        after: int,
        *,
        replay: bool,
        accounts: frozenset[str] | None = None,
    ) -> None:
        self._relay = relay
        self._accounts = accounts
        self._subscriber = subscriber
        self._sent = after  # the last id delivered (or skipped over by the caller's choice)
        self._replaying = replay
        self._from_journal = False
        self._pending: deque[JournalEntry] = deque()
        self._pace = ReplayPace(relay.replay_rows_per_second)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes:
        """The SSE messages of the next rows, concatenated."""
        inbox = self._subscriber
        while not inbox.closed:
            if batch := self._take(self._pending):
                return batch
            if self._replaying:
                await self._replay()
                continue
            if batch := self._take_pages(inbox):
                return batch
            inbox.wake.clear()
            await inbox.wake.wait()
        raise StopAsyncIteration

    async def _replay(self) -> None:
        # No await between this read and the inbox: rows the tail broadcasts later reach
        # the inbox, which was registered before the replay began.
        held = self._relay.recent_after(self._sent)
        if held is not None:
            if not self._from_journal:
                self._relay.replays_from_memory += 1
            self._replaying = False
            self._pending.extend(held)
            return
        if not self._from_journal:
            self._relay.replays_from_journal += 1
            self._from_journal = True
        await self._pace.before_read()  # waits before the read lock, never holding it
        page, complete_to = await self._relay.read_journal(self._sent)
        self._pace.read(len(page))
        if self._replaying:  # unless closed meanwhile
            self._pending.extend(page)
            # Rows up to `complete_to` are all in `page`; there is none to skip over.
            if not page or page[-1].id < complete_to:
                self._pending.append(JournalEntry(complete_to, b""))  # sends nothing

    def _take(self, source: deque[JournalEntry]) -> bytes:
        batch: list[bytes] = []
        size = 0
        while source and size < BATCH_BYTES:
            entry = source.popleft()
            if entry.id > self._sent:  # otherwise the replay has sent it already
                self._sent = entry.id
                if self._accounts is not None and entry.account_id not in self._accounts:
                    continue  # another account's row (or a whole run's): skipped, not sent
                batch.append(entry.message)
                size += len(entry.message)
        return b"".join(batch)

    def _take_pages(self, inbox: Inbox) -> bytes:
        if self._accounts is not None:
            # Filtered: the shared page's joined message is not this client's; row by row,
            # until some row is this client's or the inbox is empty.
            while inbox.pages:
                page = inbox.pages.popleft()
                inbox.queued -= len(page.entries)
                self._pending.extend(page.entries)
                if mine := self._take(self._pending):
                    return mine
            return b""
        batch: list[bytes] = []
        size = 0
        while inbox.pages and size < BATCH_BYTES:
            page = inbox.pages.popleft()
            inbox.queued -= len(page.entries)
            entries = page.entries
            if entries[-1].id <= self._sent:  # the replay has sent all of it already
                continue
            if entries[0].id > self._sent:
                batch.append(page.message)
                size += len(page.message)
            elif batch:  # overlaps: sent on its own, next time
                inbox.pages.appendleft(page)
                inbox.queued += len(entries)
                break
            else:  # only the first page after a replay can overlap it
                self._pending.extend(entries)
                return self._take(self._pending)
            self._sent = entries[-1].id
        return b"".join(batch) if len(batch) != 1 else batch[0]

    def close(self) -> None:
        """End the iteration after the batch being delivered now (e.g. on server shutdown)."""
        self._replaying = False
        self._pending.clear()
        self._relay.release(self._subscriber)

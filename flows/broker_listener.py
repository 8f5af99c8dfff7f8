"""`recon listen` in the Broker API mode: `/v2/events/trades` (SSE, every account) → per-account
batches → `reconcile-fills` runs, through the single-account listener's own path.

Unlike the websocket, this stream replays: after a drop or a restart it is reopened with
`since_id` a little before the last event seen (`RECON_EVENTS_RESUME_SECONDS`; Alpaca orders
events per account only), and what is replayed twice is skipped by event id (the ids applied
are stored with the fills, in their transaction) and by execution id. A full reconciliation
runs only when nothing can be replayed: the first start (no stored cursor) and a batch it
could not settle. Each account's batch holds that account's lock, as its full pass does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from flows.fills import start_batch
from flows.listener import Listener
from recon.broker.broker_api import BrokerApi
from recon.broker.events import TradeEvent, TradeEventSource, resume_from, ulid_at
from recon.broker.pacing import ensure_rate_limit
from recon.errors import BrokerError, BrokerRejectedError
from recon.fills import Batch, Dedup, Fill, parse_trade_update
from recon.fills import status as stream_status
from recon.logfmt import line
from recon.settings import Settings
from recon.store.database import upgrade
from recon.store.trade_events import (
    AppliedEvent,
    applied_since,
    prune_applied,
    read_cursor,
    record_applied,
)

logger = logging.getLogger("recon.listener")

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
# Applied event ids kept beyond the replay window (clock skew between Alpaca and us).
KEEP_BEYOND = timedelta(hours=1)


@dataclass(frozen=True)
class Pending:
    event: TradeEvent
    fill: Fill
    received: float


class BrokerListener(Listener):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.pending: asyncio.Queue[Pending] = asyncio.Queue()
        self.seen = Dedup(size=1_000_000)  # event ids
        self.latest: str | None = None  # the newest event id received or stored
        self.source = TradeEventSource(settings)  # a clear error now if keys are missing
        self._api: BrokerApi | None = None
        self._stop = asyncio.Event()

    async def run(self) -> None:
        await asyncio.to_thread(upgrade, self.settings.resolved_database_url)
        await self._retry("Creating the rate limit", lambda: ensure_rate_limit(self.settings))
        self._api = BrokerApi(self.settings)
        first_start = await asyncio.to_thread(self._load_cursor)
        self._started_ms = int(time.time() * 1000)
        jobs = (self._read(), self._work(), self._resync_loop())
        tasks = [asyncio.create_task(job) for job in jobs]
        logger.info(line("Listening", url=self.source.url, resumeFrom=self._since()))
        if first_start:  # nothing to replay from: the book comes from a full run
            self.request_resync("reconnect")
        self.listening = True
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.source.aclose()
            await asyncio.to_thread(stream_status.mark_disconnected, self.sessions)

    async def stop(self) -> None:
        self._stop.set()

    def _load_cursor(self) -> bool:
        """The stored cursor and the event ids applied around it; True if there is none."""
        stored = read_cursor(self.sessions)
        if stored is None:
            return True
        self.latest, written = stored
        horizon = written - timedelta(seconds=self.settings.events_resume_seconds) - KEEP_BEYOND
        prune_applied(self.sessions, horizon)
        for event_id in sorted(applied_since(self.sessions, horizon)):
            self.seen.first_time(event_id)
        return False

    def _since(self) -> str:
        seconds = self.settings.events_resume_seconds
        if self.latest is not None:
            return resume_from(self.latest, seconds)
        # Nothing seen yet: from this listener's start (a drop before the first event).
        return ulid_at(max(0, self._started_ms - int(seconds * 1000)))

    async def _retry(self, what: str, make: Callable[[], Awaitable[object]]) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                await make()
                return
            except Exception as exc:
                logger.warning(line(f"{what} failed; retrying", error=str(exc)))
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    # -- the stream -----------------------------------------------------------------------

    async def _read(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            since = self._since()
            try:
                async with self.source.connect(since) as events:
                    delay = BACKOFF_FIRST
                    await self._connected(since)
                    async for event in events:
                        self._on_event(event)
                raise BrokerError("trade events: the broker ended the stream")
            except BrokerRejectedError as exc:  # wrong keys: one system:error per episode
                logger.error(line("Trade events refused the connection", error=str(exc)))
                await asyncio.to_thread(
                    stream_status.record_error, self.sessions, str(exc), account_id=None
                )
            except BrokerError as exc:
                logger.warning(line("Trade events disconnected; reconnecting", error=str(exc)))
                await asyncio.to_thread(stream_status.mark_disconnected, self.sessions)
            # Jittered, so many listeners do not come back in step after a broker restart.
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connected(self, since: str) -> None:
        self.connects += 1
        await asyncio.to_thread(
            stream_status.mark_connected, self.sessions, account_id=None, holder=self.holder
        )
        logger.info(
            line(
                "Trade events connected",
                connects=self.connects,
                sinceId=since,
                skippedSoFar=self.duplicates,  # replayed events already applied
            )
        )

    def _on_event(self, event: TradeEvent) -> None:
        if not self.seen.first_time(event.event_id):
            self.duplicates += 1  # replayed: applied already, or on its way
            return
        if self.latest is None or event.event_id > self.latest:
            self.latest = event.event_id
        fill = parse_trade_update({"data": event.data})
        if fill is None:
            return
        if not self.dedup.first_time(f"{event.account_id}:{fill.execution_id}"):
            self.duplicates += 1
            return
        self.pending.put_nowait(Pending(event, fill, time.time()))

    # -- fills ----------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            waiting = [await self.pending.get()]
            while not self.pending.empty():
                waiting.append(self.pending.get_nowait())
            accounts: dict[str, list[Pending]] = {}
            for item in waiting:
                accounts.setdefault(item.event.account_id, []).append(item)
            for account_id, items in accounts.items():
                await self._apply_account(account_id, items)

    async def _apply_account(self, account_id: str, items: list[Pending]) -> None:
        assert self._api is not None
        batch = Batch()
        for item in items:
            batch.add(item.fill, item.received)
        applied = [AppliedEvent(i.event.event_id, account_id, i.fill.execution_id) for i in items]
        work, _run = start_batch(
            batch,
            account_id,
            reader=self._api.broker_for(account_id),
            per_account=True,
            also=functools.partial(record_applied, events=applied),
        )
        await self.settle(batch, work)

"""`recon listen`: the `trade_updates` stream → coalesced batches → `reconcile-fills` runs.

One asyncio loop holds the websocket (alpaca-py's), a worker that turns whatever fills are
waiting into one batch at a time, and a resync loop that runs a full reconciliation through
the deployment after every connect: the stream never replays, so what was missed while
disconnected (or before this process started) comes from that run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable
from datetime import UTC, datetime

from flows.fills import start_batch
from flows.resync import full_run
from recon.broker import AlpacaTradingBroker
from recon.broker.stream import FillStream
from recon.errors import BrokerError
from recon.fills import Batch, Dedup, Fill, parse_trade_update
from recon.fills import status as stream_status
from recon.fills.apply import BatchOutcome
from recon.logfmt import line
from recon.settings import Settings
from recon.store.database import session_factory, upgrade

logger = logging.getLogger("recon.listener")
timings_logger = logging.getLogger("recon.listener.timings")


class Listener:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions = session_factory(settings.resolved_database_url)
        self.queue: asyncio.Queue[tuple[Fill, float]] = asyncio.Queue()
        self.dedup = Dedup()
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.account_id = ""
        self.connects = 0
        self.duplicates = 0
        self._resync_wanted = asyncio.Event()
        self._resync_tag = "reconnect"
        self._tasks: set[asyncio.Task[None]] = set()
        self.stream: FillStream | None = None
        self.listening = False  # set up and streaming: `stop` then ends it gracefully

    async def run(self) -> None:
        await asyncio.to_thread(upgrade, self.settings.resolved_database_url)
        self.account_id = await self._account_id()
        self.stream = FillStream(
            self.settings,
            on_listening=self._listening,
            on_refused=self._refused,
            on_closed=self._closed,
        )
        self.stream.subscribe_trade_updates(self._on_message)
        for job in (self._work(), self._resync_loop()):
            self._keep(asyncio.create_task(job))
        logger.info(
            line("Listening", url=self.settings.resolved_stream_url, account=self.account_id)
        )
        self.listening = True
        try:
            await self.stream._run_forever()  # type: ignore[no-untyped-call]
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.to_thread(stream_status.mark_disconnected, self.sessions)

    async def stop(self) -> None:
        if self.stream is not None:
            await self.stream.stop_ws()

    async def _account_id(self) -> str:
        broker = AlpacaTradingBroker(self.settings)
        delay = 1.0
        while True:
            try:
                return await asyncio.to_thread(broker.fetch_account_id)
            except BrokerError as exc:
                logger.warning(line("Reading the account failed; retrying", error=str(exc)))
                await asyncio.to_thread(
                    stream_status.record_error, self.sessions, str(exc), account_id=None
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # -- the stream's hooks ---------------------------------------------------------------

    async def _on_message(self, message: object) -> None:
        fill = parse_trade_update(message)
        if fill is None:
            return
        if not self.dedup.first_time(fill.execution_id):
            self.duplicates += 1
            return
        self.queue.put_nowait((fill, time.time()))

    async def _listening(self) -> None:
        self.connects += 1
        await asyncio.to_thread(
            stream_status.mark_connected,
            self.sessions,
            account_id=self.account_id,
            holder=self.holder,
        )
        # "reconnect" for the first connect too: the gap is the time this listener was not
        # there. ("startup" stays `recon serve`'s run; one adopted gains this tag beside its own.)
        tag = "reconnect"
        logger.info(line("Stream connected; resynchronising", connects=self.connects))
        self.request_resync(tag)

    async def _refused(self, reason: str) -> None:
        logger.error(line("Stream refused the connection", reason=reason))
        await asyncio.to_thread(
            stream_status.record_error,
            self.sessions,
            f"trade_updates refused the connection: {reason}",
            account_id=self.account_id,
        )

    async def _closed(self) -> None:
        logger.warning(line("Stream connection closed; alpaca-py reconnects"))
        await asyncio.to_thread(stream_status.mark_disconnected, self.sessions)

    # -- fills ----------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            fill, received = await self.queue.get()
            batch = Batch()
            batch.add(fill, received)
            while not self.queue.empty():
                batch.add(*self.queue.get_nowait())
            await self.apply(batch)

    async def apply(self, batch: Batch) -> None:
        # The run reports on its own loop; the next batch need not wait for it.
        work, _run = start_batch(batch, self.account_id)
        await self.settle(batch, work)

    async def settle(self, batch: Batch, work: Awaitable[BatchOutcome]) -> None:
        """Wait for a started batch; what it could not settle goes to a full run."""
        try:
            outcome = await work
        except Exception as exc:
            # The fills are not lost: a full run reads every position again.
            logger.exception(line("Fill batch failed; resynchronising", error=str(exc)))
            self.request_resync("fallback")
            return
        if outcome.unsettled:
            self.request_resync("fallback")
        _log_timings(batch, outcome)
        # Off the fills' path: the next batch starts while the counters are written.
        self._keep(
            asyncio.create_task(
                asyncio.to_thread(
                    stream_status.record_batch, self.sessions, len(batch), datetime.now(UTC)
                )
            )
        )

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- full runs ------------------------------------------------------------------------

    def request_resync(self, tag: str) -> None:
        """Ask for a full run that starts after now (several asks before it starts: one run)."""
        self._resync_tag = tag
        self._resync_wanted.set()

    async def _resync_loop(self) -> None:
        while True:
            await self._resync_wanted.wait()
            self._resync_wanted.clear()
            try:
                await self._full_run(self._resync_tag)
            except Exception as exc:
                logger.exception(line("Resynchronising failed", error=str(exc)))
                await asyncio.sleep(5)
                self._resync_wanted.set()

    async def _full_run(self, tag: str) -> None:
        run = await full_run(tag)
        if run is None:
            raise RuntimeError("no full reconciliation completed after the gap")


def _log_timings(batch: Batch, outcome: BatchOutcome) -> None:
    """One JSON line per batch on `recon.listener.timings` (DEBUG): where its time went.

    `make bench` turns these into the split of fill → SSE (docs/performance.md)."""
    if not timings_logger.isEnabledFor(logging.DEBUG):
        return
    offset = time.time() - time.monotonic()  # wall = monotonic + offset
    record = {
        "eventId": outcome.result.event_id,
        "received": batch.received,
        "started": outcome.started + offset,
        "committed": outcome.committed + offset,
        **{f"{k}_s": v for k, v in outcome.timings.items()},
    }
    timings_logger.debug(json.dumps(record))


async def listen(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT (the stream stops within alpaca-py's 5 s receive slice).

    RECON_SOURCE=broker: every account's fills from the Broker API's event stream instead
    (`flows/broker_listener.py`)."""
    listener = Listener(settings)
    if settings.source == "broker":
        from flows.broker_listener import BrokerListener  # the trading mode never loads it

        listener = BrokerListener(settings)
    loop = asyncio.get_running_loop()
    running = asyncio.current_task()
    assert running is not None

    async def stop() -> None:
        if listener.listening:
            await listener.stop()
        else:  # still setting up (say, retrying a refused account read): nothing to drain
            running.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: loop.create_task(stop()))
    with contextlib.suppress(asyncio.CancelledError):
        await listener.run()

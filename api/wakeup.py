"""The relay's wake-up: PostgreSQL's LISTEN/NOTIFY, so a committed journal row is read at once.

Writers send `NOTIFY` in the journal entry's own transaction (`recon.store.journal`), so it
is delivered on commit, never for a row that rolled back. One connection per sidecar
listens; the relay then reads the tail as soon as a notification arrives instead of on its
next poll. The poll stays, slower, as the safety net (a dropped LISTEN connection is
re-opened in the background meanwhile). SQLite has no such thing and keeps the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from recon.store.dialects.postgresql import NOTIFY_CHANNEL_PREFIX

logger = logging.getLogger("recon.api.wakeup")

# With notifications flowing, the poll only covers a lost one; a second is plenty.
NOTIFIED_POLL: Final = 1.0
RECONNECT_SECONDS: Final = 1.0


class JournalWakeup:
    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self._conninfo = (
            url.set(drivername="postgresql").render_as_string(hide_password=False)
            if url.get_backend_name() == "postgresql"
            else None
        )
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.listening = False
        self.notifications = 0  # for tests and metrics
        self.last_payload: str | None = None  # the journal id the last notification named

    async def start(self) -> None:
        if self._conninfo is not None:
            self._task = asyncio.create_task(self._listen(self._conninfo), name="journal-wakeup")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None

    async def wait(self, poll_interval: float) -> None:
        """Until a notification (or the poll interval, longer while notifications work)."""
        # Not listening (SQLite, or LISTEN not up yet): the plain poll, but still woken when
        # LISTEN starts, so a row committed just after is not left for a whole poll.
        timeout = max(poll_interval, NOTIFIED_POLL) if self.listening else poll_interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        # Cleared before the caller reads: a row committed during the read notifies again.
        self._event.clear()

    async def _listen(self, conninfo: str) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True
                ) as connection:
                    schema = (
                        await (await connection.execute("SELECT current_schema()")).fetchone()
                        or [""]
                    )[0]
                    channel = sql.Identifier(f"{NOTIFY_CHANNEL_PREFIX}{schema}")
                    await connection.execute(sql.SQL("LISTEN {}").format(channel))
                    self.listening = True
                    self._event.set()  # read once: rows may have landed while not listening
                    async for notify in connection.notifies():
                        self.notifications += 1
                        self.last_payload = notify.payload
                        self._event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "journal wake-up: LISTEN failed (%s); polling meanwhile", type(exc).__name__
                )
            finally:
                self.listening = False
            await asyncio.sleep(RECONNECT_SECONDS)

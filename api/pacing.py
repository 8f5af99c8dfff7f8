"""Paces a replay's journal reads: at most `rate` rows a second per replay.

A client resuming from `lastEventId=0` would otherwise read the whole journal as fast as
the database answers, page after page, for every such connection at once. The first page
is free (an ordinary reconnect reads one short page and never waits); after that each page
waits until the replay's average is back under the rate.
"""

from __future__ import annotations

import asyncio
import time


class ReplayPace:
    def __init__(self, rows_per_second: float) -> None:
        self.rows_per_second = rows_per_second
        self._started: float | None = None
        self._rows = 0
        self.waited = 0.0  # seconds spent waiting: for tests and metrics

    async def before_read(self) -> None:
        now = time.monotonic()
        if self._started is None:
            self._started = now
            return
        due = self._started + self._rows / self.rows_per_second
        if due > now:
            self.waited += due - now
            await asyncio.sleep(due - now)

    def read(self, rows: int) -> None:
        self._rows += rows

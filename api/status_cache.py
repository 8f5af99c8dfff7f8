"""The status endpoint's Prefect reads, kept per replica until Prefect says they changed.

The Prefect half of `GET /api/admin/jobs/status` (the deployment, the counts by final
state, the open runs, the last finished run) changes only when a flow run changes state or
a deployment changes, and the Prefect server announces each as an event
(`prefect.flow-run.<State>`, `prefect.deployment.*`). Every replica follows those events
over Prefect's own event websocket and drops its copy on each one, so replicas agree to
within an event's delivery, not a time-to-live. While the subscription is not connected
nothing is kept: every call reads Prefect, as before the cache. A maximum age
(`RECON_STATUS_CACHE_SECONDS`) bounds what no event announces: the scheduler inserts
future runs without one. The database half (the last run's rows, the fill stream's row)
is read on every call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import PREFECT_API_URL

from api.runs import OpenRuns

logger = logging.getLogger("recon.api.status_cache")

RECONNECT_DELAY = 1.0
# What can change a status: any flow run's state, any deployment. Heartbeats cannot.
CHANGES = EventFilter(
    event=EventNameFilter(
        prefix=["prefect.flow-run.", "prefect.deployment."],
        exclude_name=["prefect.flow-run.heartbeat"],
    )
)


@dataclass(frozen=True)
class PrefectView:
    """What the status reads from Prefect, at one moment."""

    deployment: DeploymentResponse
    succeeded: int
    failed: int
    skipped: int
    open: OpenRuns
    last: FlowRun | None


class StatusCache:
    """One replica's copy of the last `PrefectView`, valid while no change event came since."""

    def __init__(self, max_age: float) -> None:
        self._max_age = max_age
        self._view: PrefectView | None = None
        self._stored_at = 0.0
        # Bumped by every change event: a read that overlapped one is not kept.
        self._generation = 0
        self._following = False

    def invalidate(self) -> None:
        self._generation += 1
        self._view = None

    async def view(self, read: Callable[[], Awaitable[PrefectView]]) -> tuple[PrefectView, str]:
        """The kept view, or `read()`'s (kept if no change event came meanwhile); and how it
        was served, as an RFC 9211 `Cache-Status` value."""
        kept = self._view
        if kept is not None and time.monotonic() - self._stored_at < self._max_age:
            return kept, "recon; hit"
        if not self._following:
            return await read(), "recon; fwd=bypass"
        generation = self._generation
        fresh = await read()
        if generation != self._generation or not self._following:
            return fresh, "recon; fwd=miss"
        self._view, self._stored_at = fresh, time.monotonic()
        return fresh, "recon; fwd=miss; stored"

    async def follow(self) -> None:
        """For the app's life: empty the cache on every change event; keep nothing while the
        subscription is down (Prefect unreachable, restarting), and retry it."""
        if self._max_age == 0 or not PREFECT_API_URL.value():
            # Caching off, or no server to follow (Prefect's subscriber would start a
            # temporary one): never following, every call reads Prefect.
            return
        reported = False
        while True:
            try:
                # No reconnects inside the subscriber: a gap must stop the caching at once.
                async with get_events_subscriber(filter=CHANGES, reconnection_attempts=0) as events:
                    self._following, reported = True, False
                    self.invalidate()
                    async for _ in events:
                        self.invalidate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not reported:  # once per outage, not once a second
                    logger.warning("Prefect's event stream is down (%s); status reads Prefect", exc)
                    reported = True
            finally:
                self._following = False
                self.invalidate()
            await asyncio.sleep(RECONNECT_DELAY)

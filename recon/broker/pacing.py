"""Pacing Broker API requests: one Prefect global rate limit for every process, and 429s
waited out until the broker's `X-RateLimit-Reset` instead of a blind backoff."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from recon.broker.slots import slot_queue
from recon.settings import Settings

if TYPE_CHECKING:
    from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse

# Prefect is imported where it is used: the trading adapter (and every process that loads
# it) needs only `reset_delay` and `Pacer.wait_out`.

# The global concurrency limit (with slot decay) every Broker API request passes.
RATE_LIMIT_NAME = "recon-broker-api"
# A reserved slot not spent this soon after its grant is dropped, not spent late: the
# limit's window bounds when slots are granted, and so when requests arrive only while
# every request follows its grant closely.
RESERVATION_SECONDS = 0.5


def rate_limit_shape(per_minute: int) -> tuple[int, float]:
    """The limit's slots and decay: a burst of one second's worth, then `per_minute` a minute."""
    return max(1, math.ceil(per_minute / 60)), per_minute / 60.0


async def ensure_rate_limit(settings: Settings) -> GlobalConcurrencyLimitResponse:
    """Create the limit, or bring its numbers in line with RECON_BROKER_RATE_LIMIT."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    slots, decay = rate_limit_shape(settings.broker_rate_limit)
    async with get_client() as client:
        try:
            found = await client.read_global_concurrency_limit_by_name(RATE_LIMIT_NAME)
        except ObjectNotFound:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(
                    name=RATE_LIMIT_NAME, limit=slots, slot_decay_per_second=decay
                )
            )
        else:
            if found.limit != slots or found.slot_decay_per_second != decay or not found.active:
                await client.update_global_concurrency_limit(
                    RATE_LIMIT_NAME,
                    GlobalConcurrencyLimitUpdate(
                        limit=slots, slot_decay_per_second=decay, active=True
                    ),
                )
        return await client.read_global_concurrency_limit_by_name(RATE_LIMIT_NAME)


def reset_delay(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds until `X-RateLimit-Reset` (epoch seconds), or None without a usable one."""
    raw = headers.get("X-RateLimit-Reset") or headers.get("x-ratelimit-reset")
    try:
        reset = float(raw) if raw is not None else None
    except ValueError:
        return None
    if reset is None or not math.isfinite(reset):
        return None
    return max(0.0, reset - (time.time() if now is None else now))


class Pacer:
    """What every request of an adapter goes through."""

    def __init__(
        self,
        settings: Settings,
        *,
        limit_name: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit_name = limit_name
        # Never ask for more at once than the limit holds: such a request waits forever.
        self._most = rate_limit_shape(settings.broker_rate_limit)[0]
        self._max_wait = settings.rate_limit_max_wait_seconds
        self.max_waits = settings.rate_limit_max_waits
        self._sleep = sleep
        self._clock = clock
        self.waited = 0  # 429s waited out, for the logs
        # Slots taken ahead by `reserved` and not yet spent by `admit`, and their grant.
        self._banked = 0
        self._banked_at = 0.0
        self._lock = threading.Lock()

    @property
    def most(self) -> int:
        """The most slots one acquisition takes: the limit's size."""
        return self._most

    @contextmanager
    def reserved(self, requests: int) -> Iterator[None]:
        """Take the slots of `requests` requests the block sends back to back (a few
        accounts' positions and summaries) in one acquisition instead of one each; what the
        block leaves unspent (requests that failed before sending) is dropped with it."""
        slots = min(requests, self._most)
        if self._limit_name is None or slots < 1:
            yield
            return
        slot_queue(self._limit_name, self._most).take(slots)
        with self._lock:
            self._banked, self._banked_at = slots, self._clock()
        try:
            yield
        finally:
            self._drop()

    def admit(self) -> None:
        """Block until the global rate limit has room (a no-op without one); a slot
        reserved moments ago is spent first."""
        if self._limit_name is None:
            return
        with self._lock:
            if self._banked and self._clock() - self._banked_at <= RESERVATION_SECONDS:
                self._banked -= 1
                return
            self._banked = 0
        slot_queue(self._limit_name, self._most).take(1)

    def _drop(self) -> None:
        with self._lock:
            self._banked = 0

    def wait_out(self, delay: float | None) -> bool:
        """After a 429: sleep until its reset (a little past it); False if it named none, or
        one further away than RECON_RATE_LIMIT_MAX_WAIT_SECONDS."""
        if delay is None or delay > self._max_wait:
            return False
        # Reset is whole seconds: the limit opens within the second it names. Slots
        # reserved before the wait would be spent long after their grant: dropped.
        self._drop()
        self._sleep(delay + 0.05)
        self.waited += 1
        return True

"""The Broker API's rate limit: a token bucket per correspondent, answered with Alpaca's headers."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimit:
    """`per_minute` requests a minute, at most `burst` at once (default: one second's worth).

    Every answer carries `X-RateLimit-Limit` (per minute), `X-RateLimit-Remaining` and
    `X-RateLimit-Reset` (epoch seconds when the next request will be admitted); over the
    limit the answer is a 429. `per_minute=0` turns the limit off.
    """

    def __init__(
        self,
        per_minute: int = 0,
        burst: int | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self.throttled = 0
        self.configure(per_minute, burst)

    def configure(self, per_minute: int, burst: int | None = None) -> None:
        with self._lock:
            self.per_minute = max(0, per_minute)
            self.burst = max(1, burst if burst is not None else math.ceil(self.per_minute / 60))
            self._tokens = float(self.burst)
            self._at = self._monotonic()
            self.throttled = 0

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def take(self) -> tuple[bool, dict[str, str]]:
        """Admit one request or not, and the headers of its answer."""
        if not self.enabled:
            return True, {}
        rate = self.per_minute / 60.0
        with self._lock:
            now = self._monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * rate)
            self._at = now
            admitted = self._tokens >= 1.0
            if admitted:
                self._tokens -= 1.0
            else:
                self.throttled += 1
            wait = max(0.0, (1.0 - self._tokens) / rate)
            remaining = math.floor(self._tokens)
        headers = {
            "X-RateLimit-Limit": str(self.per_minute),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(self._wall() + wait)),
        }
        return admitted, headers

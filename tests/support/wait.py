"""The one way a test waits: poll a condition until it holds, or fail at a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_POLL = 0.005  # seconds: an in-process condition usually holds within milliseconds


def wait_until(
    condition: Callable[[], T], timeout: float = 10.0, what: str = "", interval: float = 0.2
) -> T:
    """Poll `condition()` until it is truthy and return that value; fail after `timeout`.

    The pause between polls starts at 5 ms and doubles up to `interval`: a condition that
    holds at once costs no latency, one that takes seconds (a process starting, a flow run
    ending) is asked a few times a second, not hundreds (the machine is shared).
    """
    deadline = time.monotonic() + timeout
    pause = min(FIRST_POLL, interval)
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(pause)
        pause = min(pause * 2, interval)

"""Slots of a Prefect rate limit, taken for every thread of a process in shared trips.

Prefect serializes a process's acquisitions of one limit (`ConcurrencySlotAcquisitionService`
runs them one at a time, each a server write and, when the limit is empty, a wait for its
`Retry-After`). A pass's threads each asking for their own slots therefore queue behind one
another, and the pass runs at one acquisition per trip, far under the limit. Here the
requests that arrive while an acquisition is in flight are granted together by the next one
(up to the limit's size): one trip serves every thread that was waiting. Each granted slot
belongs to a thread already waiting to send, so arrivals still follow the grants and the
limit's window still bounds them.
"""

from __future__ import annotations

import threading
from collections import deque

_registry: dict[tuple[str, int], SlotQueue] = {}
_registry_lock = threading.Lock()


def slot_queue(name: str, most: int) -> SlotQueue:
    """The process's queue for limit `name` (batches of at most `most` slots)."""
    with _registry_lock:
        queue = _registry.get((name, most))
        if queue is None:
            queue = _registry[(name, most)] = SlotQueue(name, most)
        return queue


def acquisitions(name: str) -> int:
    """The acquisitions this process has made of limit `name`, for the logs."""
    with _registry_lock:
        return sum(q.trips for (found, _), q in _registry.items() if found == name)


class _Batch:
    """Requests granted by one acquisition."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.done = False
        self.error: BaseException | None = None


class SlotQueue:
    """Batches of slot requests, acquired one batch at a time, oldest first."""

    def __init__(self, name: str, most: int) -> None:
        self.name = name
        self._most = max(1, most)
        self._cond = threading.Condition()
        self._waiting: deque[_Batch] = deque()  # not yet being acquired
        self._busy = False  # a batch is being acquired
        self.trips = 0  # acquisitions made, for the tests and the logs

    def take(self, slots: int) -> None:
        """Block until `slots` (capped at the batch size) are granted to this thread."""
        slots = min(max(1, slots), self._most)
        with self._cond:
            batch = self._join(slots)
            while True:
                if batch.done:
                    if batch.error is not None:
                        raise batch.error
                    return
                if not self._busy and self._waiting[0] is batch:
                    # The oldest batch and nobody acquiring: this thread does it for all.
                    self._busy = True
                    self._waiting.popleft()
                    break
                self._cond.wait()
        try:
            self._acquire(batch.slots)
        except BaseException as exc:  # every member of the batch gets the same failure
            batch.error = exc
        with self._cond:
            batch.done = True
            self._busy = False
            self.trips += 1
            self._cond.notify_all()
        if batch.error is not None:
            raise batch.error

    def _join(self, slots: int) -> _Batch:
        """Add to the newest waiting batch if it has room, else start a new one."""
        if self._waiting and self._waiting[-1].slots + slots <= self._most:
            batch = self._waiting[-1]
            batch.slots += slots
        else:
            batch = _Batch(slots)
            self._waiting.append(batch)
        return batch

    def _acquire(self, slots: int) -> None:
        from prefect.concurrency.sync import rate_limit

        rate_limit(self.name, occupy=slots, strict=True)

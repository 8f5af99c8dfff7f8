"""The Broker API's trade events (`GET /v2/events/trades`, SSE): every account's executions.

Each event gets a ULID `event_id` (v2), monotonic even within one millisecond, and an
increasing integer for the legacy `/v1/events/trades` the spec describes. History is kept
(bounded) so `since_id` can replay what a client missed; without `since…` a client gets only
new events, as Alpaca answers. `drop()` ends every open stream at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from simulator.fills import Execution

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
HISTORY = 100_000
_DROP = object()  # the sentinel that ends one subscriber's stream


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


class Ulids:
    """Monotonic ULIDs: 48-bit milliseconds, then 80 bits (random, +1 within a millisecond)."""

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_random = 0

    def next(self) -> str:
        ms = int(time.time() * 1000)
        if ms <= self._last_ms:
            ms, rand = self._last_ms, self._last_random + 1
        else:
            rand = secrets.randbits(79)  # headroom so +1 never overflows 80 bits
        self._last_ms, self._last_random = ms, rand
        return _encode(ms, 10) + _encode(rand, 16)


@dataclass(frozen=True)
class TradeEvent:
    seq: int  # the v1 event_id
    ulid: str  # the v2 event_id
    at: dt.datetime
    data: dict[str, Any]  # everything but event_id and at

    def payload(self, version: str) -> dict[str, Any]:
        event_id: int | str = self.ulid if version == "v2" else self.seq
        at = self.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {"account_id": self.data["account_id"], "at": at, "event_id": event_id, **self.data}


@dataclass(eq=False)  # identity: each connection is its own member of the set
class Subscriber:
    queue: asyncio.Queue[object]
    loop: asyncio.AbstractEventLoop


@dataclass
class EventStats:
    connects: int = 0
    max_concurrent: int = 0
    sent: int = 0
    dropped: int = 0  # connections ended by `drop`


@dataclass
class TradeEvents:
    history: deque[TradeEvent] = field(default_factory=lambda: deque(maxlen=HISTORY))
    stats: EventStats = field(default_factory=EventStats)
    _subscribers: set[Subscriber] = field(default_factory=set)
    _ulids: Ulids = field(default_factory=Ulids)
    _seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, account_id: str, executions: list[Execution]) -> list[TradeEvent]:
        made = []
        with self._lock:
            for execution in executions:
                self._seq += 1
                data = {"account_id": account_id, **execution.message()["data"]}
                event = TradeEvent(self._seq, self._ulids.next(), dt.datetime.now(dt.UTC), data)
                self.history.append(event)
                made.append(event)
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            for event in made:
                subscriber.loop.call_soon_threadsafe(subscriber.queue.put_nowait, event)
        return made

    def subscribe(self, since: str | int | None) -> tuple[Subscriber, list[TradeEvent]]:
        """A new subscriber, and the history after `since` (a v2 ULID or a v1 integer)."""
        subscriber = Subscriber(asyncio.Queue(), asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(subscriber)
            self.stats.connects += 1
            self.stats.max_concurrent = max(self.stats.max_concurrent, len(self._subscribers))
            if since is None:
                backlog: list[TradeEvent] = []
            elif isinstance(since, int):
                backlog = [e for e in self.history if e.seq > since]
            else:
                backlog = [e for e in self.history if e.ulid > since]
        return subscriber, backlog

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)

    def drop(self) -> int:
        with self._lock:
            subscribers = list(self._subscribers)
            self.stats.dropped += len(subscribers)
        for subscriber in subscribers:
            subscriber.loop.call_soon_threadsafe(subscriber.queue.put_nowait, _DROP)
        return len(subscribers)

    def describe(self) -> dict[str, Any]:
        return {
            "connections": len(self._subscribers),
            "events": len(self.history),
            "lastEventId": self.history[-1].ulid if self.history else None,
            **self.stats.__dict__,
        }

    def reset(self) -> None:
        with self._lock:
            self.history.clear()
            self.stats = EventStats(max_concurrent=len(self._subscribers))


def is_drop(item: object) -> bool:
    return item is _DROP

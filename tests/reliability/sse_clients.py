"""SSE clients for the event-delivery scenario, run in spawned processes.

Each worker process runs a share of the clients on its own asyncio loop, so the test
process (its writer threads, its bookkeeping) cannot starve them, and they read the raw
HTTP/1.1 stream (asyncio streams, chunked decoding, the SSE line format) rather than
through a client library whose own buffering would hide when a byte arrived. Every read
is timed: a client records how long it waited for its response headers and the longest
silence between two reads while connected, which the test bounds.

The processes share with the test only a few integers (what the writers have committed)
and write their results to a pickle file each.
"""

from __future__ import annotations

import asyncio
import codecs
import pickle
import random
import re
import time
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

HANG_UP_AT_ONCE = 0.03  # share of connections dropped as soon as the headers arrive
LEAVE_AFTER = (1, 600)  # messages a client reads before it hangs up: ≈ 3 reconnects each
PAUSE = 0.6  # share of reconnects that wait until more events are committed first
# Share of those pauses that outlast the relay's replay window (≈ 400 events): a fast
# machine keeps every other client near the head, so without them the journal path
# might never run.
LONG_PAUSE = 0.1
QUERY_PARAM = 0.2  # share of reconnects that resume with ?lastEventId= instead of the header
_LINE_END = re.compile(r"\r\n|\r|\n")
READ_TIMEOUT = 30.0  # as an EventSource behind a proxy would give up: an error, not a wait


@dataclass
class Shared:
    """What the writers have committed, as the test publishes it (final is -1 until done)."""

    committed: Synchronized[int]
    head: Synchronized[int]
    final: Synchronized[int]
    opened: Synchronized[int]  # clients whose first connection got its headers
    stop: Synchronized[int]  # set by the test to end every client at once


@dataclass
class Client:
    seed: float
    last_id: str
    messages: list[tuple[str, str, str]] = field(default_factory=list)  # (id, event, data)
    connects: int = 0
    replayed: int = 0
    pings: int = 0
    ended_by_server: int = 0
    errors: list[str] = field(default_factory=list)
    header_waits: list[float] = field(default_factory=list)  # seconds, one per connection
    worst_gap: float = 0.0  # the longest silence while connected, in seconds


class Chunks:
    """HTTP/1.1 chunked transfer decoding, fed as bytes arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._left = 0  # bytes of the current chunk still to come
        self._crlf = False  # the CRLF after a chunk's data is next
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while not self.ended:
            if self._left:
                take = min(self._left, len(self._buffer))
                out += self._buffer[:take]
                del self._buffer[:take]
                self._left -= take
                if self._left:
                    break
                self._crlf = True
            if self._crlf:
                if len(self._buffer) < 2:
                    break
                del self._buffer[:2]
                self._crlf = False
            end = self._buffer.find(b"\r\n")
            if end < 0:
                break
            size = int(bytes(self._buffer[:end]).split(b";")[0], 16)
            del self._buffer[: end + 2]
            self.ended, self._left = size == 0, size
        return bytes(out)


class Events:
    """The SSE line format: (id, event, data) per dispatched message; comments counted."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self.comments = 0

    def feed(self, data: bytes) -> list[tuple[str, str, str]]:
        text = self._text + self._decoder.decode(data)
        messages = []
        # Whole lines only: a CR at the very end may be the first half of a CRLF.
        cut = len(text) - 1 if text.endswith("\r") else len(text)
        end = max(text.rfind("\n", 0, cut), text.rfind("\r", 0, cut))
        self._text = text[end + 1 :]
        # str.splitlines would also split on U+2028 and friends, which JSON may hold.
        for line in _LINE_END.split(text[: end + 1])[:-1]:
            if not line:
                if self._data:
                    messages.append((self._id, self._event or "message", "\n".join(self._data)))
                self._data, self._event = [], ""
            elif line.startswith(":"):
                self.comments += 1
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    self._data.append(value)
                elif name == "event":
                    self._event = value
                elif name == "id":
                    self._id = value
        return messages


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    token: str


async def _open(target: Target, headers: dict[str, str], query: str) -> tuple[Any, Any, int]:
    """Connect and send the request; the reader, writer and response status once the
    response headers are in (the caller times this)."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    lines = [f"GET {target.path}{query} HTTP/1.1", f"Host: {target.host}:{target.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    status = int(head.split(b" ", 2)[1])
    assert b"transfer-encoding: chunked" in head.lower(), head
    return reader, writer, status


async def listen(client: Client, target: Target, shared: Shared) -> None:
    """One EventSource-like client: read, hang up at random, resume from the last id."""
    rng = random.Random(client.seed)
    while True:
        leave_after = 0 if rng.random() < HANG_UP_AT_ONCE else rng.randint(*LEAVE_AFTER)
        headers = {"Authorization": f"Bearer {target.token}", "Accept": "text/event-stream"}
        query = ""
        if client.connects and rng.random() < QUERY_PARAM:
            query = f"?lastEventId={client.last_id}"
        else:
            headers["Last-Event-ID"] = client.last_id
        resumed_after, head = int(client.last_id), shared.head.value
        client.connects += 1
        writer = None
        try:
            asked = time.monotonic()
            reader, writer, status = await _open(target, headers, query)
            last = time.monotonic()
            client.header_waits.append(last - asked)
            assert status == 200, status
            if client.connects == 1:
                with shared.opened.get_lock():
                    shared.opened.value += 1
            chunks, events, read = Chunks(), Events(), 0
            while leave_after and not chunks.ended and read < leave_after:
                data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
                now = time.monotonic()
                client.worst_gap = max(client.worst_gap, now - last)
                last = now
                if not data:
                    raise ConnectionError("the server closed the connection mid-stream")
                for message in events.feed(chunks.feed(data)):
                    client.messages.append(message)
                    client.last_id = message[0]
                    read += 1
                    if client.connects > 1 and resumed_after < int(message[0]) <= head:
                        client.replayed += 1  # committed while this client was away
                final = shared.final.value
                if final >= 0 and int(client.last_id) >= final:
                    return
            client.pings += events.comments
            client.ended_by_server += chunks.ended
        except (OSError, TimeoutError, ValueError) as exc:  # an EventSource reconnects
            client.errors.append(repr(exc))
        finally:
            if writer is not None:
                writer.close()
        if rng.random() < PAUSE:  # stay away until more events are committed
            away = rng.randint(450, 650) if rng.random() < LONG_PAUSE else rng.randint(1, 40)
            target_count = shared.committed.value + away
            # Polled: the counts live in shared memory, written by another process.
            while shared.committed.value < target_count and shared.final.value < 0:  # noqa: ASYNC110
                await asyncio.sleep(0.02)


async def _lag(worst: list[float]) -> None:
    """How late this process's own loop wakes up: the clients' share of any delay."""
    while True:
        asked = time.monotonic()
        await asyncio.sleep(0.05)
        worst[0] = max(worst[0], time.monotonic() - asked - 0.05)


async def _run(clients: list[Client], target: Target, shared: Shared, deadline: float) -> float:
    lag = [0.0]
    monitor = asyncio.create_task(_lag(lag))
    tasks = [asyncio.create_task(listen(c, target, shared)) for c in clients]
    caught_up_by = None
    while not all(t.done() for t in tasks) and not shared.stop.value:
        final = shared.final.value
        if final >= 0:
            # A client that got the last event just before `final` was set, then hung up,
            # reconnects to a stream with nothing left to send: done when it holds it.
            if all(int(c.last_id) >= final for c in clients):
                break
            caught_up_by = caught_up_by or time.monotonic() + deadline
            if time.monotonic() > caught_up_by:
                break
        await asyncio.sleep(0.05)
    for task in (monitor, *tasks):
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for client, result in zip(clients, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            client.errors.append(repr(result))
    return lag[0]


def work(clients: list[Client], target: Target, shared: Shared, deadline: float, out: Path) -> None:
    """A worker process's entry point: run `clients` to the end, pickle them (and the
    worst lag of this process's loop) to `out`."""
    lag = asyncio.run(_run(clients, target, shared, deadline))
    out.write_bytes(pickle.dumps((clients, lag)))

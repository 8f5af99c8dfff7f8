"""The fan-out clients, in their own process: `python -m benchmarks.sse_clients …`.

Opens N SSE streams on one sidecar with httpx-sse and asyncio, prints `connected` once all
are open and `warm` once every client has the first event (so all are subscribed), then
notes the CLOCK_MONOTONIC time (shared by all processes of the machine) at which each
client receives each event, until an event whose data holds `"benchStop"`. The receipts go
to `--out` as JSON: {event id: [seconds, …]}.

httpx-sse dispatches a message for every blank line once an id has been seen, so each
keep-alive ping (`: ping …` and a blank line) comes out as a message with the previous id,
no data and the default event name `message`; the stream never sends such a message.
Those are not deliveries: they are counted apart (`pings`), not taken for receipts (a
ping arriving after an event would otherwise count as a late receipt of it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

STREAM = "/api/stream/events"


class Clients:
    def __init__(self, count: int) -> None:
        self.count = count
        self.connected = 0
        self.warm = 0
        self.receipts: defaultdict[int, list[float]] = defaultdict(list)
        self.pings = 0
        self.opening = asyncio.Semaphore(50)  # no connect storm: 50 handshakes at a time

    def announce(self, word: str) -> None:
        sys.stdout.write(word + "\n")
        sys.stdout.flush()

    async def listen(self, http: httpx.AsyncClient, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        await self.opening.acquire()
        released = False
        try:
            async with aconnect_sse(http, "GET", STREAM, headers=headers) as source:
                source.response.raise_for_status()
                self.opening.release()
                released = True
                self.connected += 1
                if self.connected == self.count:
                    self.announce("connected")
                first = True
                async for event in source.aiter_sse():
                    if not event.data:  # a ping (see the docstring)
                        self.pings += 1
                        continue
                    self.receipts[int(event.id)].append(time.monotonic())
                    if first:
                        first = False
                        self.warm += 1
                        if self.warm == self.count:
                            self.announce("warm")
                    if '"benchStop"' in event.data:
                        return
        finally:
            if not released:
                self.opening.release()


async def main(args: argparse.Namespace) -> dict[str, object]:
    clients = Clients(args.clients)
    limits = httpx.Limits(max_connections=args.clients + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(30.0, read=60.0)
    async with httpx.AsyncClient(base_url=args.base, limits=limits, timeout=timeout) as http:
        tasks = [asyncio.create_task(clients.listen(http, args.token)) for _ in range(args.clients)]
        done, pending = await asyncio.wait(tasks, timeout=args.deadline)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    failed = [t for t in done if t.exception() is not None]
    result = {
        "receipts": clients.receipts,
        "clients": args.clients,
        "connected": clients.connected,
        "pings": clients.pings,
        "failed": len(failed) + len(pending),
        "first_error": repr(failed[0].exception()) if failed else None,
    }
    return result


def _raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--out", required=True)
    parser.add_argument("--deadline", type=float, default=300.0)
    arguments = parser.parse_args()
    _raise_file_limit(arguments.clients * 2 + 256)
    Path(arguments.out).write_text(json.dumps(asyncio.run(main(arguments))))

"""Figure 10: what a Broker API pass's units of Prefect work cost, in CPU, on the Prefect
server (its process tree) and in this process (its client): an event (the pass emits one
`recon.positions.changed` per changed account), a task run (one per batch of accounts),
and a rate-limit acquisition (`prefect.concurrency.sync.rate_limit`, which the pass makes
for its requests, shared between threads: `recon/broker/slots.py`).

Each unit is made `n` times one after the other, then the server is left to finish what it
does with them (its CPU has stopped moving); CPU is read from /proc (`benchmarks/cpu.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.cpu import tree_seconds
from benchmarks.stack import prefect_server
from tests.support.prefect import default_api

log = logging.getLogger("benchmarks")
EVENTS = 1_000
QUICK_EVENTS = 200
LIMIT = "bench-rate-limit"
BATCH = 20  # accounts per task run, RECON_BROKER_BATCH_SIZE's default


def bench_prefect_costs(root: Path, backend: str, n: int) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with prefect_server(root, backend) as server, default_api(server.api_url):
        with get_client(sync_client=True) as client:
            # Never full: what is measured is the acquisition, not a wait for slots.
            create = GlobalConcurrencyLimitCreate(
                name=LIMIT, limit=1_000_000, slot_decay_per_second=1_000_000.0
            )
            client.create_global_concurrency_limit(create)
        units: list[tuple[str, int, Callable[[int], None]]] = [
            ("event", n, _events),
            (f"task run (a flow of {n // BATCH})", n // BATCH, _task_runs),
            ("rate-limit acquisition (2 slots)", n // 2, _acquisitions),
        ]
        rows = []
        for unit, count, make in units:
            make(1)  # imports, connections, the first of each kind
            _settled(server.pid)
            server_before, client_before = tree_seconds(server.pid), time.process_time()
            started = time.perf_counter()
            make(count)
            _settled(server.pid)
            row = {
                "figure": "prefect",
                "prefect_db": backend,
                "unit": unit,
                "count": count,
                "server_ms": 1000 * (tree_seconds(server.pid) - server_before) / count,
                "client_ms": 1000 * (time.process_time() - client_before) / count,
                "wall_s": time.perf_counter() - started,
            }
            log.info("prefect costs %s %s: %.1f ms server", backend, unit, row["server_ms"])
            rows.append(row)
        return rows


def _events(count: int) -> None:
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    for i in range(count):
        emit_event(
            event="recon.bench.changed",
            resource={"prefect.resource.id": f"recon.account.{i}", "recon.account-id": str(i)},
            payload={"accountId": str(i), "created": [f"S{k}" for k in range(12)]},
        )
    EventsWorker.drain_all()


def _task_runs(count: int) -> None:
    from prefect import flow, task

    @task
    def batch(i: int) -> int:
        return i

    @flow
    def pass_of(n: int) -> list[int]:
        return [future.result() for future in batch.map(range(n))]

    pass_of(count)


def _acquisitions(count: int) -> None:
    from prefect.concurrency.sync import rate_limit

    for _ in range(count):
        rate_limit(LIMIT, occupy=2, strict=True)
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()  # each acquisition also emits Prefect's own event


def _settled(pid: int, quiet: float = 0.02, every: float = 0.5) -> None:
    """Until the server's CPU moves by less than `quiet` s over `every` s (at most 60 s)."""
    deadline = time.monotonic() + 60
    last = tree_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(every)
        now = tree_seconds(pid)
        if now - last < quiet:
            return
        last = now

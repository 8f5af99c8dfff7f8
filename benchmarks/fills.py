"""Figure 5: fill → `position:updated` at an SSE client, at 1, 10 and 50 fills/s sustained.

The whole stack as `recon up` runs it (Prefect server, `recon serve`, `recon api`, `recon
listen`, the simulator's websocket), on SQLite or PostgreSQL. Each fill is a buy on one of
a few long positions, so a position only grows: a fill has reached the client when the
client has seen its asset at (or beyond) the fill's `position_qty`, whichever batch
carried it (coalescing merges fills, and a batch that finds the book current writes
nothing). The listener's timing log (`RECON_LOG_FILL_TIMINGS`) splits each fill's time
into stream → listener, waiting for its batch, lock + REST read, persist, relay → client.
Beside it: the same kind of change picked up by a manual trigger (the listener stopped).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse
from prefect.settings import PREFECT_API_URL, temporary_settings

from benchmarks.common import database, median, percentile
from simulator.server import SimulatorConfig, SimulatorServer
from tests.sim import Sim
from tests.support.prefect import PrefectServer
from tests.support.process import Process
from tests.support.stack import served_stack
from tests.support.wait import wait_until as wait_for

log = logging.getLogger("benchmarks")
SYMBOLS = ("AAPL", "MSFT", "SPY", "KO")  # long in seed 7's book
RATES = (1, 10, 50)


class Client(threading.Thread):
    """The SSE client: when each asset was seen at each quantity (fill entries only)."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(daemon=True)
        self.base, self.token = base, token
        self.connected = threading.Event()
        self.seen: list[tuple[float, int, str, Decimal]] = []  # (wall, event id, asset, qty)
        self.triggered: list[tuple[float, str]] = []  # (wall, trigger) of other entries

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = httpx.Timeout(10.0, read=120.0)
        try:
            with (
                httpx.Client(base_url=self.base, headers=headers, timeout=timeout) as client,
                connect_sse(client, "GET", "/api/stream/events") as source,
            ):
                self.connected.set()
                for event in source.iter_sse():
                    if event.event != "position:updated":
                        continue
                    now, data = time.time(), json.loads(event.data)
                    for change in data["details"]:
                        after = change["fields"].get("qty", {}).get("after")
                        if after is not None:
                            self.seen.append(
                                (now, int(event.id), change["assetId"], Decimal(after))
                            )
                    self.triggered.append((now, data.get("trigger", "")))
        except httpx.HTTPError:
            return

    def arrival(self, asset_id: str, qty: Decimal, after: float) -> tuple[float, int] | None:
        for wall, event_id, asset, seen in self.seen:
            if asset == asset_id and seen >= qty and wall >= after:
                return wall, event_id
        return None


def _fire(sim: Sim, rate: int, seconds: float) -> list[dict[str, Any]]:
    """Fills at a fixed schedule (no catch-up burst if one is late)."""
    sent: list[dict[str, Any]] = []
    interval = 1.0 / rate
    headers = {"Authorization": f"Bearer {sim.control_token}"}
    with httpx.Client(base_url=sim.base_url, headers=headers, timeout=10) as client:
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            due = start + i * interval
            if (pause := due - time.monotonic()) > 0:
                time.sleep(pause)
            wall = time.time()
            body = {"symbol": SYMBOLS[i % len(SYMBOLS)], "qty": "1", "side": "buy"}
            answer = client.post("/_sim/fills", json=body).json()
            execution = answer["executions"][-1]
            sent.append(
                {
                    "sent": wall,
                    "asset": answer["assetId"],
                    "qty": Decimal(answer["positionQty"]),
                    "execution_id": execution["execution_id"],
                }
            )
    return sent


def _timings(path: Path) -> dict[str, dict[str, Any]]:
    """Per execution id: its batch's timing record (from the listener's log)."""
    found: dict[str, dict[str, Any]] = {}
    for text in path.read_text(errors="replace").splitlines():
        if "recon.listener.timings" not in text:
            continue
        record = json.loads(text.split("recon.listener.timings ", 1)[1])
        for execution_id, received in record["received"].items():
            found[execution_id] = record | {"at": received}
    return found


def _measure(sim: Sim, client: Client, log_path: Path, rate: int, seconds: float) -> dict[str, Any]:
    sent = _fire(sim, rate, seconds)
    last = sent[-1]
    wait_for(lambda: client.arrival(last["asset"], last["qty"], last["sent"]), 120, "the last fill")
    timings = _timings(log_path)
    totals, parts = [], {k: [] for k in ("stream", "wait", "lock_read", "persist", "relay")}
    first_half, second_half = [], []
    for i, fill in enumerate(sent):
        arrived = client.arrival(fill["asset"], fill["qty"], fill["sent"])
        if arrived is None:
            continue
        total = arrived[0] - fill["sent"]
        totals.append(total)
        (first_half if i < len(sent) // 2 else second_half).append(total)
        record = timings.get(fill["execution_id"])
        if record is not None and record["eventId"] == arrived[1]:
            parts["stream"].append(record["at"] - fill["sent"])
            parts["wait"].append(record["started"] - record["at"])
            parts["lock_read"].append(record["lock_s"] + record["read_s"])
            parts["persist"].append(record["persist_s"])
            parts["relay"].append(arrived[0] - record["committed"])
    batches = {r["eventId"] for r in timings.values() if r["at"] >= sent[0]["sent"]}
    return {
        "rate": rate,
        "seconds": seconds,
        "fills": len(sent),
        "arrived": len(totals),
        "batches": len(batches),
        "median_s": median(totals),
        "p99_s": percentile(totals, 99),
        "max_s": max(totals, default=None),
        # Backlog growth shows as the second half slower than the first.
        "first_half_median_s": median(first_half),
        "second_half_median_s": median(second_half),
        **{f"split_{k}_s": median(v) for k, v in parts.items()},
    }


def _trigger_path(base: str, token: str, sim: Sim, client: Client, runs: int) -> dict[str, Any]:
    """The same change without the listener: fill, then POST sync-positions, until the event."""
    latencies = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as api:
        for i in range(runs):
            fill = _fire(sim, 1, 1)[0]
            before = len(client.triggered)
            # The previous run may still be finishing (artifact, final state) after its
            # event: a 409 then, so wait for the slot.
            response = wait_for(
                lambda: (
                    (
                        r := api.post("/api/admin/jobs/sync-positions", params={"wait": "false"})
                    ).status_code
                    != 409
                    and r
                ),
                120,
                "the deployment's slot",
                interval=0.5,
            )
            assert response.status_code == 202, response.text
            wait_for(
                lambda b=before: any(t == "manual" for _, t in client.triggered[b:]),
                120,
                "the triggered run's event",
            )
            arrived = next(w for w, t in client.triggered[before:] if t == "manual")
            latencies.append(arrived - fill["sent"])
            log.info("fills: trigger path #%d %.2f s", i, latencies[-1])
    return {"runs": runs, "median_s": median(latencies), "p99_s": percentile(latencies, 99)}


def bench_fills(
    server: PrefectServer, dialect: str, args: argparse.Namespace, root: Path
) -> list[dict[str, Any]]:
    home = root / f"fills-{dialect}"
    home.mkdir()
    seconds = 10.0 if args.quick else 60.0
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        sim_server = stack.enter_context(SimulatorServer(SimulatorConfig(seed=7)))
        db = stack.enter_context(database(dialect, root, "fills"))
        stack.enter_context(temporary_settings({PREFECT_API_URL: server.api_url}))
        served = stack.enter_context(
            served_stack(
                home,
                db=dialect,
                url=db.url,
                simulator=sim_server,
                prefect=server,
                keys={"admin": ["admin:write", "admin:read", "events:read"]},
                settings={"RECON_HTTP_TIMEOUT_SECONDS": "30", "RECON_LOG_FILL_TIMINGS": "1"},
            )
        )
        base, admin, env = served.base, served.tokens["admin"], served.env
        client = Client(base, admin)
        client.start()
        assert client.connected.wait(15)
        listener_log = home / "listener.log"
        listener = Process(["cli", "listen"], env, listener_log)
        stack.callback(listener.stop)
        # The listener's startup run loads the book; fills are timed after it.
        wait_for(
            lambda: any(t == "reconnect" for _, t in client.triggered), 180, "the first resync"
        )
        for rate in RATES:
            log.info("fills: %d/s for %g s on %s", rate, seconds, dialect)
            result = _measure(Sim.of(sim_server), client, listener_log, rate, seconds)
            rows.append({"figure": "fills", "dialect": dialect, **result})
            log.info("fills: %s", result)
        listener.stop()
        runs = 3 if args.quick else 5
        try:
            trigger = _trigger_path(base, admin, Sim.of(sim_server), client, runs)
            rows.append({"figure": "fills-trigger", "dialect": dialect, **trigger})
        except Exception as exc:  # the fill figures above still count
            log.exception("fills: the trigger path on %s failed", dialect)
            rows.append({"figure": "fills-trigger", "dialect": dialect, "error": repr(exc)})
    return rows

"""`recon up --demo` supervises the fill listener: SIGKILLed, it is restarted and the gap filled."""

from __future__ import annotations

import os
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from simulator.book import asset_id_for
from tests.support.books import stored_book
from tests.support.process import cmdline, processes_with_env
from tests.support.wait import wait_until as wait_for
from tests.test_up import start_up, stop, up_env


def _listeners(marker: str) -> list[int]:
    return [p for p in processes_with_env(marker) if "cli listen" in cmdline(p)]


def _control(sim: str, data_dir: Path) -> httpx.Client:
    """The simulator's /_sim API with the token `recon up --demo` wrote for it."""
    token = (data_dir / "simulator-token").read_text().strip()
    return httpx.Client(
        base_url=f"{sim}/_sim", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def _stream(sim: str, data_dir: Path) -> dict[str, Any]:
    with _control(sim, data_dir) as client:
        return client.get("/stream").json()  # type: ignore[no-any-return]


def _fill(sim: str, data_dir: Path, qty: str) -> None:
    with _control(sim, data_dir) as client:
        client.post("/fills", json={"symbol": "AAPL", "qty": qty, "side": "buy"}).raise_for_status()


def _broker_qty(sim: str, symbol: str) -> Decimal:
    headers = {"APCA-API-KEY-ID": "sim-key", "APCA-API-SECRET-KEY": "sim-secret"}
    record = httpx.get(f"{sim}/v2/positions/{symbol}", headers=headers, timeout=10).json()
    return Decimal(record["qty"])


def test_sigkilled_listener_is_restarted_and_the_gap_filled(tmp_path: Path) -> None:
    env = up_env(tmp_path)
    data_dir = Path(env["RECON_DATA_DIR"])
    marker = f"RECON_DATA_DIR={env['RECON_DATA_DIR']}"
    sim = f"http://127.0.0.1:{env['RECON_SIMULATOR_PORT']}"
    url = f"sqlite:///{Path(env['RECON_DATA_DIR']) / 'recon.db'}"
    aapl = asset_id_for("AAPL")
    up = start_up(env, tmp_path, "fills")
    try:
        wait_for(lambda: _stream(sim, data_dir)["listening"] == 1, 120, "the listener to subscribe")
        [first] = wait_for(lambda: _listeners(marker), 30, "the listener process")
        wait_for(lambda: aapl in stored_book(url), 180, "the first book")
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: _stream(sim, data_dir)["connections"] == 0, 30, "the connection to drop")
        # Sent while no listener is there: only the restart's full run can bring it in.
        _fill(sim, data_dir, "5")
        wait_for(
            lambda: [p for p in _listeners(marker) if p != first], 60, "the restarted listener"
        )
        wait_for(
            lambda: stored_book(url).get(aapl) == _broker_qty(sim, "AAPL"),
            180,
            "the gap filled",
        )
        assert "listener exited" in up.output() and "restarting" in up.output()
        # And the restarted listener takes fills as they come.
        _fill(sim, data_dir, "2")
        wait_for(
            lambda: stored_book(url).get(aapl) == _broker_qty(sim, "AAPL"), 60, "the next fill"
        )
        # Never two connections, the restart included.
        assert (
            _stream(sim, data_dir)["max_concurrent"] == 1
        )  # never two connections, restart included
    finally:
        stop(up, signal.SIGTERM, marker)

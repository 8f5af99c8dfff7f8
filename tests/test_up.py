"""`recon up --demo`: the whole stack as one command, started and stopped like an operator would."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from recon.deployment import FULL_NAME
from tests.live import Process, base_env, free_port, processes_with_env, wait_for


def up_env(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "data"
    return base_env(tmp_path / "unused-home") | {
        "RECON_DATA_DIR": str(data),
        "RECON_PREFECT_PORT": str(free_port()),
        "RECON_SIMULATOR_PORT": str(free_port()),
        "RECON_API_PORT": str(free_port()),
        "RECON_STARTUP_DELAY_SECONDS": "3",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }


def start_up(env: dict[str, str], tmp_path: Path, name: str) -> Process:
    up = Process(["cli", "up", "--demo"], env, tmp_path / f"{name}.log", cwd=tmp_path)
    wait_for(lambda: _up(up), 150, "recon up to report it is up", interval=0.5)
    return up


def _up(up: Process) -> bool:
    assert up.popen.poll() is None, up.output()[-3000:]
    return "recon is up." in up.output()


def stop(up: Process, sig: signal.Signals, marker: str) -> None:
    up.signal(sig)
    assert up.popen.wait(90) == 0, up.output()[-3000:]
    assert "Stopped." in up.output()
    wait_for(lambda: not processes_with_env(marker), 15, "every process of the stack to exit")


def runs(tags: list[str] | None = None) -> list[FlowRun]:
    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=tags)) if tags else None
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=flt)


def prefect_db(env: dict[str, str]) -> Any:
    return sqlite3.connect(Path(env["RECON_DATA_DIR"]) / "prefect" / "prefect.db")


def _seed_commands_work(up: Process, env: dict[str, str]) -> None:
    """The old system's three commands: status, POST sync with a token, the event stream."""
    token = re.search(r"admin token (rk_\S+)", up.output())
    assert token, up.output()
    base = f"http://127.0.0.1:{env['RECON_API_PORT']}"
    headers = {"Authorization": f"Bearer {token.group(1)}"}
    with httpx.Client(base_url=base, headers=headers, timeout=90) as client:
        status = client.get("/api/admin/jobs/status").json()["positionReconciliation"]
        assert status["successfulRuns"] >= 2 and status["enabled"] is True
        # The real scheduler runs here: a five-minute run may hold the slot (409) for a moment.
        synced = wait_for(
            lambda: (r := client.post("/api/admin/jobs/sync-positions")).status_code != 409 and r,
            120,
            "a sync the schedule does not collide with",
            interval=1,
        )
        assert synced.status_code == 200 and synced.json()["success"] is True
        with connect_sse(client, "GET", "/api/stream/events", params={"lastEventId": 0}) as src:
            first = next(e for e in src.iter_sse() if e.event == "position:updated")
    assert first.id == "1" and first.json()["source"] == "position-reconciliation-job"


def _manual_sync_uses_the_running_server(env: dict[str, str], tmp_path: Path) -> None:
    """`recon sync` on the same data directory reports to `recon up`'s Prefect server."""
    sim = f"http://127.0.0.1:{env['RECON_SIMULATOR_PORT']}"
    done = subprocess.run(
        [sys.executable, "-m", "cli", "sync", "--json"],
        env=env
        | {"ALPACA_BASE_URL": sim, "ALPACA_API_KEY": "sim-key", "ALPACA_SECRET_KEY": "sim-secret"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["flowRunId"]
    api = f"http://127.0.0.1:{env['RECON_PREFECT_PORT']}/api"
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        assert str(client.read_flow_run(run_id).id) == run_id


def test_recon_up_demo_runs_the_stack_and_stops_cleanly(tmp_path: Path) -> None:
    env = up_env(tmp_path)
    marker = f"RECON_DATA_DIR={env['RECON_DATA_DIR']}"
    api = f"http://127.0.0.1:{env['RECON_PREFECT_PORT']}/api"
    up = start_up(env, tmp_path, "first")
    try:
        assert f"http://127.0.0.1:{env['RECON_PREFECT_PORT']}" in up.output()
        with temporary_settings({PREFECT_API_URL: api}):
            (startup,) = wait_for(
                lambda: [r for r in runs(["startup"]) if r.state_type == StateType.COMPLETED],
                90,
                "the startup reconciliation",
                interval=0.5,
            )
            triggered_at = time.monotonic()
            cli = subprocess.run(
                [sys.executable, "-m", "prefect", "deployment", "run", FULL_NAME],
                env=env | {"PREFECT_API_URL": api},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert cli.returncode == 0, cli.stderr
            manual = wait_for(
                lambda: [
                    r for r in runs() if r.id != startup.id and r.state_type == StateType.COMPLETED
                ],
                60,
                "the CLI-triggered run",
                interval=0.25,
            )
            print(
                f"CLI-triggered run completed {time.monotonic() - triggered_at:.1f} s after the CLI"
            )
            assert manual
            wait_for(
                lambda: [r for r in runs() if r.state_type == StateType.SCHEDULED],
                60,
                "the scheduler to create the five-minute runs",
                interval=0.5,
            )

        _seed_commands_work(up, env)
        _manual_sync_uses_the_running_server(env, tmp_path)

        second = subprocess.run(
            [sys.executable, "-m", "cli", "up", "--demo"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert (
            "already running" in second.stderr and str(env["RECON_PREFECT_PORT"]) in second.stderr
        )
    finally:
        stop(up, signal.SIGINT, marker)

    with prefect_db(env) as db:
        (paused,) = db.execute(
            "SELECT paused FROM deployment WHERE name = 'every-5-minutes'"
        ).fetchone()
        scheduled = db.execute(
            "SELECT count(*) FROM flow_run WHERE state_type = 'SCHEDULED'"
        ).fetchone()
        running = db.execute(
            "SELECT count(*) FROM flow_run WHERE state_type = 'RUNNING'"
        ).fetchone()
    assert paused == 0, "stopping must not pause the deployment"
    assert scheduled[0] > 0, "stopping must not delete the scheduled runs"
    assert running[0] == 0, "stopping must not leave a run Running"

    again = start_up(env, tmp_path, "second")
    stop(again, signal.SIGTERM, marker)

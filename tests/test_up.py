"""`recon up --demo`: the whole stack as one command, started and stopped like an operator would."""

from __future__ import annotations

import base64
import json
import re
import signal
import sqlite3
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from cli.token_file import TOKEN_FILE
from flows.trigger import TRIGGER_TAGS
from recon.deployment import FULL_NAME
from tests.support.env import base_env
from tests.support.process import Process, children_of, free_port, processes_with_env, run_module
from tests.support.wait import wait_until


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
    wait_until(lambda: _up(up), 150, "recon up to report it is up", interval=0.5)
    return up


def _up(up: Process) -> bool:
    assert up.popen.poll() is None, up.output()[-3000:]
    return "recon is up." in up.output()


def stop(up: Process, sig: signal.Signals, marker: str) -> None:
    up.signal(sig)
    assert up.popen.wait(90) == 0, up.output()[-3000:]
    assert "Stopped." in up.output()
    wait_until(lambda: not processes_with_env(marker), 15, "every process of the stack to exit")


def runs(tags: list[str] | None = None) -> list[FlowRun]:
    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=tags)) if tags else None
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=flt)


def prefect_auth(env: dict[str, str]) -> str:
    return (Path(env["RECON_DATA_DIR"]) / "prefect-auth").read_text().strip()


def operator_settings(env: dict[str, str]) -> Any:
    """This test process as an operator's shell with the exports `recon up` prints."""
    api = f"http://127.0.0.1:{env['RECON_PREFECT_PORT']}/api"
    return temporary_settings({PREFECT_API_URL: api, PREFECT_API_AUTH_STRING: prefect_auth(env)})


def banner_pid(up: Process, name: str) -> int:
    found = re.search(rf"process\s+{name}\s+pid (\d+)", up.output())
    assert found, up.output()
    return int(found.group(1))


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def _prefect_api_is_locked(env: dict[str, str]) -> None:
    """Point 1 of issue 19: no auth string, no API; CSRF on; no CORS for other origins."""
    base = f"http://127.0.0.1:{env['RECON_PREFECT_PORT']}/api"
    auth = prefect_auth(env)
    with httpx.Client(base_url=base, timeout=30) as anonymous:
        assert anonymous.get("/health").status_code == 200  # the one open path
        # Reads: the auth string's 401. Changes: the CSRF check (outside it) answers first,
        # and its token is itself behind the auth string.
        assert anonymous.get(f"/flow_runs/{uuid.uuid4()}").status_code == 401
        assert (
            anonymous.get("/deployments/name/reconcile-positions/every-5-minutes").status_code
            == 401
        )
        assert anonymous.get("/csrf-token", params={"client": "x"}).status_code == 401
        for change in ("/flow_runs/filter", "/deployments/filter"):
            assert anonymous.post(change, json={}).status_code in (401, 403)
        forged = {"Prefect-Csrf-Token": "guess", "Prefect-Csrf-Client": "x"}
        assert anonymous.post("/flow_runs/", json={}, headers=forged).status_code in (401, 403)
        preflight = anonymous.options(
            "/flow_runs/filter",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        ui = f"http://127.0.0.1:{env['RECON_PREFECT_PORT']}"
        own = anonymous.options(
            "/flow_runs/filter", headers={"Origin": ui, "Access-Control-Request-Method": "POST"}
        )
        assert own.headers.get("access-control-allow-origin") == ui  # the UI's own origin

    def basic(secret: str) -> dict[str, str]:  # what Prefect's client sends
        return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}

    with httpx.Client(base_url=base, headers=basic(auth), timeout=30) as client:
        wrong = client.get(f"/flow_runs/{uuid.uuid4()}", headers=basic("not-it"))
        assert wrong.status_code == 401
        assert client.get(f"/flow_runs/{uuid.uuid4()}").status_code == 404  # authenticated
        # Authenticated but without a CSRF token, a POST is refused (CSRF protection is on)...
        refused = client.post("/flow_runs/filter", json={})
        assert refused.status_code == 403 and "CSRF" in refused.text
        # ...and answered with one, as Prefect's client does it.
        token = client.get("/csrf-token", params={"client": "test-up"}).json()["token"]
        csrf = {"Prefect-Csrf-Token": token, "Prefect-Csrf-Client": "test-up"}
        assert client.post("/flow_runs/filter", json={}, headers=csrf).status_code == 200
    mode = (Path(env["RECON_DATA_DIR"]) / "prefect-auth").stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)


def _tree(pid: int) -> list[int]:
    return [pid] + [p for child in children_of(pid) for p in _tree(child)]


def _secrets_stay_with_the_runner(up: Process, env: dict[str, str]) -> None:
    """Point 5: only the runner (and its flow runs) holds the Alpaca keys; files are 0600."""
    runner = _environ(banner_pid(up, "runner"))
    assert runner["ALPACA_API_KEY"] == "sim-key" and runner["ALPACA_SECRET_KEY"] == "sim-secret"
    checked = 0
    for name in ("prefect-server", "sidecar", "simulator"):
        for pid in _tree(banner_pid(up, name)):
            environ = _environ(pid)
            assert environ["RECON_DATA_DIR"] == env["RECON_DATA_DIR"]  # it is one of ours
            leaked = sorted(k for k in environ if k.startswith("ALPACA_"))
            assert not leaked, (name, pid, leaked)
            checked += 1
    assert checked >= 3
    data = Path(env["RECON_DATA_DIR"])
    assert data.stat().st_mode & 0o777 == 0o700
    for private in (data / "recon.db", data / "prefect" / "prefect.db", data / "simulator-token"):
        assert private.stat().st_mode & 0o777 == 0o600, private
    sim = f"http://127.0.0.1:{env['RECON_SIMULATOR_PORT']}/_sim/state"
    token = (data / "simulator-token").read_text().strip()
    assert httpx.get(sim, timeout=10).status_code == 401
    authorized = httpx.get(sim, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert authorized.status_code == 200 and authorized.json()["positions"] > 0


def prefect_db(env: dict[str, str]) -> Any:
    return sqlite3.connect(Path(env["RECON_DATA_DIR"]) / "prefect" / "prefect.db")


def _seed_commands_work(up: Process, env: dict[str, str]) -> None:
    """The old system's three commands: status, POST sync with a token, the event stream."""
    # Its stdout is a log file, not a terminal: the token is in a 0600 file, not the log.
    token_file = Path(env["RECON_DATA_DIR"]).resolve() / TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert token.startswith("rk_") and token not in up.output()
    assert str(token_file) in up.output()
    base = f"http://127.0.0.1:{env['RECON_API_PORT']}"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=90) as client:
        status = client.get("/api/admin/jobs/status").json()["positionReconciliation"]
        assert status["successfulRuns"] >= 2 and status["enabled"] is True
        # The real scheduler runs here: a five-minute run may hold the slot (409) for a moment.
        synced = wait_until(
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
    keys = {"ALPACA_BASE_URL": sim, "ALPACA_API_KEY": "sim-key", "ALPACA_SECRET_KEY": "sim-secret"}
    done = run_module("cli", "sync", "--json", env=env | keys, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["flowRunId"]
    with operator_settings(env), get_client(sync_client=True) as client:
        assert str(client.read_flow_run(run_id).id) == run_id


def test_recon_up_demo_runs_the_stack_and_stops_cleanly(tmp_path: Path) -> None:
    env = up_env(tmp_path)
    marker = f"RECON_DATA_DIR={env['RECON_DATA_DIR']}"
    api = f"http://127.0.0.1:{env['RECON_PREFECT_PORT']}/api"
    up = start_up(env, tmp_path, "first")
    try:
        assert f"http://127.0.0.1:{env['RECON_PREFECT_PORT']}" in up.output()
        assert f"export PREFECT_API_AUTH_STRING=$(cat {env['RECON_DATA_DIR']}/prefect-auth)" in (
            up.output()
        )
        _prefect_api_is_locked(env)
        _secrets_stay_with_the_runner(up, env)
        with operator_settings(env):
            # One, beside the listener's first resync (shared with it or after it, never
            # Cancelled by it).
            startup = wait_until(
                lambda: [r for r in runs(["startup"]) if r.state_type == StateType.COMPLETED],
                90,
                "the startup reconciliation",
                interval=0.5,
            )
            assert len(startup) == 1, startup
            triggered_at = time.monotonic()
            cli = run_module(
                "prefect",
                "deployment",
                "run",
                FULL_NAME,
                # The exports the banner prints for the Prefect CLI.
                env=env | {"PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": prefect_auth(env)},
                timeout=60,
            )
            assert cli.returncode == 0, cli.stderr
            manual = wait_until(
                lambda: [
                    r
                    for r in runs()
                    if not set(r.tags) & set(TRIGGER_TAGS) and r.state_type == StateType.COMPLETED
                ],
                60,
                "the CLI-triggered run",
                interval=0.25,
            )
            print(
                f"CLI-triggered run completed {time.monotonic() - triggered_at:.1f} s after the CLI"
            )
            assert manual
            wait_until(
                lambda: [r for r in runs() if r.state_type == StateType.SCHEDULED],
                60,
                "the scheduler to create the five-minute runs",
                interval=0.5,
            )

        _seed_commands_work(up, env)
        _manual_sync_uses_the_running_server(env, tmp_path)

        second = run_module("cli", "up", "--demo", env=env, cwd=tmp_path, timeout=60)
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


def test_recon_up_refuses_a_plain_http_broker_url(tmp_path: Path) -> None:
    """The keys would cross the network in clear: refused before anything starts."""
    env = up_env(tmp_path) | {
        "ALPACA_BASE_URL": "http://broker.example:8080",
        "ALPACA_API_KEY": "k",
        "ALPACA_SECRET_KEY": "s",
    }
    done = run_module("cli", "up", env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    assert "ALPACA_BASE_URL must be https://" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (Path(env["RECON_DATA_DIR"]) / "prefect-auth").exists()

"""The sidecar as a real process on loopback, against a real Prefect server, runner, simulator."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed, Scheduled

from recon.deployment import FULL_NAME
from recon.keys import create_key, revoke_key
from recon.store.database import session_factory, upgrade
from tests.live import (
    Process,
    base_env,
    flow_process_of,
    free_port,
    prefect_api,
    stack_env,
    wait_for,
)
from tests.sim import Sim

SEED_STATUS_FIELDS = {
    "enabled", "schedule", "isRunning", "lastRunTime", "lastRunDuration", "nextRunTime",
    "totalRuns", "successfulRuns", "failedRuns", "lastError", "lastResult",
    "lastFlowRunId", "lastFlowRunUrl", "skippedRuns",
}  # fmt: skip


@pytest.fixture(scope="module")
def stack(
    simulator_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("sidecar")
    # No cron runs: one falling due mid-test would turn a trigger under test into a 409.
    server_env = base_env(root / "home") | {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}
    url = f"sqlite:///{root / 'recon.db'}"
    upgrade(url)
    tokens: dict[str, str] = {}
    with session_factory(url).begin() as session:
        tokens["admin"] = create_key(session, "admin", ["admin:read", "admin:write", "events:read"])
        tokens["reader"] = create_key(session, "reader", ["admin:read"])
        tokens["events"] = create_key(session, "events", ["events:read"])
        tokens["revoked"] = create_key(session, "old", ["admin:read", "admin:write"])
        revoke_key(session, "old")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with prefect_api(root, env=server_env) as server:
        env = stack_env(root, server.api_url, simulator_server, url)
        env["RECON_TRIGGER_WAIT_SECONDS"] = "45"
        runner = Process(["cli", "serve"], env, root / "runner.log")
        sidecar = Process(["cli", "api", "--port", str(port)], env, root / "sidecar.log")
        try:
            wait_for(lambda: _ready(base, sidecar), 90, "the sidecar and the deployment")
            yield {"base": base, "url": url, "tokens": tokens, "runner": runner, "sidecar": sidecar}
        finally:
            sidecar.stop()
            runner.stop()


def _ready(base: str, sidecar: Process) -> bool:
    assert sidecar.popen.poll() is None, sidecar.output()[-3000:]
    try:
        ready = httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
    if not ready:
        return False
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(FULL_NAME)
        except Exception:
            return False
    return True


def api(stack: dict[str, Any], token: str | None = "admin") -> httpx.Client:
    headers = {"Authorization": f"Bearer {stack['tokens'][token]}"} if token else {}
    return httpx.Client(base_url=stack["base"], headers=headers, timeout=90)


def status(stack: dict[str, Any]) -> dict[str, Any]:
    with api(stack) as client:
        response = client.get("/api/admin/jobs/status")
    assert response.status_code == 200, response.text
    return response.json()["positionReconciliation"]  # type: ignore[no-any-return]


def test_health_and_readiness_need_no_key(stack: dict[str, Any]) -> None:
    with api(stack, None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
        assert client.get("/docs").status_code == 200
        assert "/api/admin/jobs/status" in client.get("/openapi.json").json()["paths"]
    assert ready["checks"] == {"database": "ok", "prefect": "ok"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/admin/jobs/status"),
        ("POST", "/api/admin/jobs/sync-positions"),
        ("GET", "/api/positions"),
        ("GET", "/api/positions/AAPL/history"),
        ("GET", "/api/stream/events"),
    ],
)
def test_every_protected_route_answers_401_as_json(
    stack: dict[str, Any], method: str, path: str
) -> None:
    cases = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer rk_not-a-real-token"},
        {"Authorization": f"Bearer {stack['tokens']['revoked']}"},
        {"Authorization": "Bearer " + "x" * 5000},
    ]
    with httpx.Client(base_url=stack["base"], timeout=10) as client:
        for headers in cases:
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (headers, response.text)
            body = response.json()
            assert body["error"] == "unauthorized" and body["message"]
            assert stack["tokens"]["revoked"] not in response.text


@pytest.mark.parametrize(
    ("token", "method", "path", "capability"),
    [
        ("events", "GET", "/api/admin/jobs/status", "admin:read"),
        ("reader", "POST", "/api/admin/jobs/sync-positions", "admin:write"),
        ("events", "GET", "/api/positions", "admin:read"),
        ("reader", "GET", "/api/stream/events", "events:read"),
    ],
)
def test_missing_capability_is_403_as_json(
    stack: dict[str, Any], token: str, method: str, path: str, capability: str
) -> None:
    with api(stack, token) as client:
        response = client.request(method, path)
    assert response.status_code == 403
    assert response.json() == {
        "error": "forbidden",
        "message": f"this API key lacks the capability {capability}",
    }


def test_access_token_query_is_for_the_stream_only(stack: dict[str, Any]) -> None:
    token = stack["tokens"]["admin"]
    with httpx.Client(base_url=stack["base"], timeout=10) as client:
        assert (
            client.get("/api/admin/jobs/status", params={"access_token": token}).status_code == 401
        )
        with client.stream("GET", "/api/stream/events", params={"access_token": token}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")


def test_sync_waits_and_answers_with_the_seed_shape(stack: dict[str, Any], sim: Sim) -> None:
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(FULL_NAME)
        # What the scheduler would create for the next slot (it is off in this module).
        upcoming = client.create_flow_run_from_deployment(
            deployment.id,
            state=Scheduled(scheduled_time=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)),
        )
    with api(stack) as client:
        response = client.post("/api/admin/jobs/sync-positions")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"success", "message", "result", "flowRunId"}
    assert body["success"] is True and isinstance(body["message"], str)
    result = body["result"]
    assert set(result) == {"created", "updated", "removed", "errors", "summary"}
    assert set(result["summary"]) >= {
        "totalChanges", "createdCount", "updatedCount", "removedCount", "errorCount",
    }  # fmt: skip
    assert result["summary"]["createdCount"] == len(result["created"])
    assert all(isinstance(s, str) for s in result["created"])

    now = status(stack)
    assert set(now) >= SEED_STATUS_FIELDS
    assert now["enabled"] is True
    assert now["schedule"] == "*/5 * * * * (America/New_York)"
    assert now["lastFlowRunId"] == body["flowRunId"]
    assert body["flowRunId"] in now["lastFlowRunUrl"]
    assert (
        now["successfulRuns"] >= 1 and now["totalRuns"] == now["successfulRuns"] + now["failedRuns"]
    )
    assert isinstance(now["lastRunDuration"], int) and now["lastRunDuration"] > 0
    assert dt.datetime.fromisoformat(now["lastRunTime"]).tzinfo is not None
    assert dt.datetime.fromisoformat(now["nextRunTime"]) == upcoming.expected_start_time
    assert now["lastError"] is None
    assert now["lastResult"]["created"] == result["created"]
    assert now["isRunning"] is False
    timings = []
    with api(stack) as client:
        for _ in range(20):
            response = client.get("/api/admin/jobs/status")
            timings.append(response.elapsed.total_seconds() * 1000)
    print(f"status endpoint: median {statistics.median(timings):.0f} ms over 20 calls")


def test_failed_run_is_500_with_the_reason_and_shows_in_status(
    stack: dict[str, Any], sim: Sim
) -> None:
    before = status(stack)["failedRuns"]
    sim.fault("status", status=401, path="/v2/positions")
    with api(stack) as client:
        response = client.post("/api/admin/jobs/sync-positions")
    assert response.status_code == 500
    body = response.json()
    assert body["success"] is False and "not authorized" in body["message"]
    assert sim.secret_key not in response.text
    now = status(stack)
    assert now["failedRuns"] == before + 1
    assert "not authorized" in now["lastError"]
    assert now["lastFlowRunId"] == body["flowRunId"]


def test_no_wait_is_202_and_a_second_trigger_is_409(stack: dict[str, Any], sim: Sim) -> None:
    sim.fault("stall", delay=5.0, path="/v2/positions")
    with api(stack) as client:
        first = client.post("/api/admin/jobs/sync-positions", params={"wait": "false"})
        assert first.status_code == 202
        run_id = first.json()["flowRunId"]
        assert run_id in first.json()["flowRunUrl"]
        second = client.post("/api/admin/jobs/sync-positions")
    assert second.status_code == 409
    assert second.json() == {
        "error": "Position sync already in progress",
        "message": second.json()["message"],
        "flowRunId": run_id,
    }
    wait_for(
        lambda: status(stack)["lastFlowRunId"] == run_id, 60, "the run to finish", interval=0.5
    )
    skipped = status(stack)["skippedRuns"]
    assert isinstance(skipped, int)


def test_twenty_simultaneous_triggers_never_run_two_syncs(stack: dict[str, Any], sim: Sim) -> None:
    sim.fault("stall", delay=3.0, path="/v2/positions")
    codes: list[int] = []
    barrier = threading.Barrier(20)

    def post() -> None:
        with api(stack) as client:
            barrier.wait()
            codes.append(client.post("/api/admin/jobs/sync-positions").status_code)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(codes) == 20 and set(codes) <= {200, 202, 409}
    assert codes.count(200) == 1, codes
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    spans = sorted((r.start_time, r.end_time) for r in runs if r.start_time)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None and start >= end, "two syncs ran at once"


def test_positions_and_history_with_exact_decimals(stack: dict[str, Any], sim: Sim) -> None:
    with api(stack) as client:
        assert client.post("/api/admin/jobs/sync-positions").status_code == 200
        book = client.get("/api/positions").json()
        assert book["count"] == len(book["positions"]) > 0
        first = book["positions"][0]
        assert isinstance(first["qty"], str) and isinstance(first["avgEntryPrice"], str)
        history = client.get(f"/api/positions/{first['symbol']}/history").json()
        assert history["history"][-1]["change"] == "created"
        assert client.get("/api/positions/NOPE/history").status_code == 404
        assert client.get("/api/positions/%3Cscript%3E/history").status_code == 422


def test_crashed_runs_reach_the_stream_as_system_error(stack: dict[str, Any], sim: Sim) -> None:
    """One killed flow process (the runner's crash hook journals it) and one run crashed by
    Prefect with no process left (the sidecar's watcher journals it)."""
    received: list[dict[str, Any]] = []
    connected = threading.Event()

    def listen() -> None:
        with (
            api(stack, "events") as client,
            connect_sse(client, "GET", "/api/stream/events") as src,
        ):
            connected.set()
            for event in src.iter_sse():
                if event.event == "system:error":
                    received.append(event.json() | {"_id": event.id})
                    if len(received) == 2:
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)

    sim.fault("stall", delay=60.0, path="/v2/positions")
    with api(stack) as client:
        killed = client.post("/api/admin/jobs/sync-positions", params={"wait": "false"}).json()
    wait_for(lambda: sim.requests("/v2/positions"), 30, "the run to reach the broker")
    pid = wait_for(
        lambda: flow_process_of(stack["runner"].pid, killed["flowRunId"]), 30, "its process"
    )
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: received, 30, "system:error for the killed run", interval=0.2)
    sim.clear_fault()

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(FULL_NAME)
        # Scheduled an hour out, so the runner cannot pick it up before it is crashed: a
        # Crashed run may still go to Pending (Prefect allows re-runs), and would then run.
        later = Scheduled(scheduled_time=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        zombie = client.create_flow_run_from_deployment(
            deployment.id, tags=["zombie-test"], state=later
        )
        # What the zombie automation does: nobody is left to run a hook.
        client.set_flow_run_state(zombie.id, Crashed(message="No heartbeat for 45 s"), force=True)
    listener.join(30)
    assert [e["flowRunId"] for e in received] == [killed["flowRunId"], str(zombie.id)]
    for event in received:
        assert event["message"] == "Position reconciliation failed"
        assert event["source"] == "position-reconciliation-job"
        assert event["error"] and event["timestamp"]
    assert int(received[0]["_id"]) < int(received[1]["_id"])
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(zombie.id).state_type == StateType.CRASHED


def _recon(
    stack: dict[str, Any], *args: str, token: str = "admin"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECON_", "ALPACA_"))}
    env |= {"RECON_API_URL": stack["base"], "RECON_API_TOKEN": stack["tokens"][token]}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_operator_cli_talks_to_the_sidecar(stack: dict[str, Any], sim: Sim) -> None:
    shown = _recon(stack, "status")
    assert shown.returncode == 0, shown.stderr
    assert "successfulRuns" in json.loads(shown.stdout)["positionReconciliation"]
    forbidden = _recon(stack, "trigger", token="reader")
    assert forbidden.returncode == 1 and "HTTP 403" in forbidden.stderr
    sim.fault("stall", delay=5.0, path="/v2/positions")
    started = _recon(stack, "trigger", "--no-wait")
    assert started.returncode == 0, started.stderr
    busy = _recon(stack, "trigger")
    assert busy.returncode == 3 and "already in progress" in busy.stderr
    run_id = json.loads(started.stdout)["flowRunId"]
    wait_for(
        lambda: status(stack)["lastFlowRunId"] == run_id, 60, "the run to finish", interval=0.5
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECON_", "ALPACA_"))}
    env |= {"RECON_API_URL": stack["base"], "RECON_API_TOKEN": stack["tokens"]["events"]}
    tail = subprocess.Popen(
        [sys.executable, "-m", "cli", "events", "--last-event-id", "0"],
        env=env,
        # Started from a background job, this test inherits SIGINT ignored, and so would the
        # tail: Ctrl-C is what is under test, so give it the default disposition back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stdout is not None
        line = tail.stdout.readline()
        event_id, kind, data = line.split(" ", 2)
        assert event_id == "1" and kind in ("position:updated", "system:error")
        assert json.loads(data)["source"] == "position-reconciliation-job"
    finally:
        tail.send_signal(signal.SIGINT)
        # Drain its pipes: a full stdout would block its exit flush for ever.
        tail.communicate(timeout=20)

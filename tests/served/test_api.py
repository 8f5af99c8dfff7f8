"""The sidecar as a real process on loopback, against a real Prefect server, runner, simulator.

What needs runs to happen (results, failures, crashes, the CLI); the routes' contracts
(auth, status codes, shapes) are `tests/test_routes.py`'s, in process."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
from typing import Any

import httpx
from httpx_sse import connect_sse
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed, Scheduled

from recon.deployment import FULL_NAME
from tests.factories import SEED_STATUS_FIELDS
from tests.sim import Sim
from tests.support.env import scrubbed_env
from tests.support.process import flow_process_of, run_module
from tests.support.stack import Stack
from tests.support.wait import wait_until


def test_a_ticket_opens_the_stream_once(stack: Stack) -> None:
    with stack.api("events") as client:
        issued = client.post("/api/stream/tickets")
    assert issued.status_code == 201, issued.text
    ticket = issued.json()["ticket"]
    with httpx.Client(base_url=stack.base, timeout=10) as client:
        with client.stream("GET", "/api/stream/events", params={"ticket": ticket}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
        again = client.get("/api/stream/events", params={"ticket": ticket})
    assert again.status_code == 401 and again.json()["error"] == "unauthorized"


def test_sync_waits_and_answers_with_the_seed_shape(stack: Stack, sim: Sim) -> None:
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(FULL_NAME)
        # What the scheduler would create for the next slot (it is off in this module).
        upcoming = client.create_flow_run_from_deployment(
            deployment.id,
            state=Scheduled(scheduled_time=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)),
        )
    with stack.api() as client:
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
    # The module's first sync, into an empty book: every simulated position is created.
    assert result["created"] and all(isinstance(s, str) for s in result["created"])

    now = stack.status()
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
    with stack.api() as client:
        for _ in range(20):
            response = client.get("/api/admin/jobs/status")
            timings.append(response.elapsed.total_seconds() * 1000)
    print(f"status endpoint: median {statistics.median(timings):.0f} ms over 20 calls")


def test_failed_run_is_500_with_the_reason_and_shows_in_status(stack: Stack, sim: Sim) -> None:
    before = stack.status()["failedRuns"]
    sim.fault("status", status=401, path="/v2/positions")
    with stack.api() as client:
        response = client.post("/api/admin/jobs/sync-positions")
    assert response.status_code == 500
    body = response.json()
    assert body["success"] is False and "not authorized" in body["message"]
    assert sim.secret_key not in response.text
    now = stack.status()
    assert now["failedRuns"] == before + 1
    assert "not authorized" in now["lastError"]
    assert now["lastFlowRunId"] == body["flowRunId"]


def test_no_wait_is_202_and_a_second_trigger_is_409(stack: Stack, sim: Sim) -> None:
    skipped_before = stack.status()["skippedRuns"]
    sim.fault("stall", delay=5.0, path="/v2/positions")
    with stack.api() as client:
        first = client.post("/api/admin/jobs/sync-positions", params={"wait": "false"})
        assert first.status_code == 202
        run_id = first.json()["flowRunId"]
        assert run_id in first.json()["flowRunUrl"]
        second = client.post("/api/admin/jobs/sync-positions")
    assert second.status_code == 409
    conflict = second.json()
    assert set(conflict) == {"error", "message", "flowRunId"}
    assert conflict["error"] == "Position sync already in progress"
    # the message names the run and its state
    assert conflict["flowRunId"] == run_id, f"{conflict}\n{stack.describe_runs()}"
    # The check saw the first run (no second run was created, so none was cancelled).
    assert re.fullmatch(
        r"a position sync is already in progress \(flow run \S+ is (Scheduled|Pending|Running)\);"
        r" try again when it has finished",
        conflict["message"],
    ), conflict["message"]
    wait_until(
        lambda: stack.status()["lastFlowRunId"] == run_id, 60, "the run to finish", interval=0.5
    )
    # The 409 was answered before any run was made: no Cancelled run, nothing skipped.
    assert stack.status()["skippedRuns"] == skipped_before


def test_twenty_simultaneous_triggers_never_run_two_syncs(stack: Stack, sim: Sim) -> None:
    sim.fault("stall", delay=3.0, path="/v2/positions")
    codes: list[int] = []
    barrier = threading.Barrier(20)

    def post() -> None:
        with stack.api() as client:
            barrier.wait()
            codes.append(client.post("/api/admin/jobs/sync-positions").status_code)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(codes) == 20 and set(codes) <= {200, 202, 409}
    assert codes.count(200) == 1, f"{codes}\n{stack.describe_runs()}"
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    spans = sorted((r.start_time, r.end_time) for r in runs if r.start_time)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None and start >= end, "two syncs ran at once"


def test_positions_and_history_with_exact_decimals(stack: Stack, sim: Sim) -> None:
    with stack.api() as client:
        synced = client.post("/api/admin/jobs/sync-positions")
        assert synced.status_code == 200, f"{synced.text}\n{stack.describe_runs()}"
        book = client.get("/api/positions").json()
        assert book["count"] == len(book["positions"]) > 0
        assert book["nextCursor"] is None  # the simulated book fits in one default page
        first = book["positions"][0]
        assert isinstance(first["qty"], str) and isinstance(first["avgEntryPrice"], str)
        history = client.get(f"/api/positions/{first['symbol']}/history").json()
        assert history["history"][-1]["change"] == "created"
        assert client.get("/api/positions/NOPE/history").status_code == 404
        assert client.get("/api/positions/%3Cscript%3E/history").status_code == 422


def test_crashed_runs_reach_the_stream_as_system_error(stack: Stack, sim: Sim) -> None:
    """One killed flow process (the runner's crash hook journals it) and one run crashed by
    Prefect with no process left (the sidecar's watcher journals it)."""
    received: list[dict[str, Any]] = []
    connected = threading.Event()

    def listen() -> None:
        with (
            stack.api("events") as client,
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
    with stack.api() as client:
        killed = client.post("/api/admin/jobs/sync-positions", params={"wait": "false"}).json()
    wait_until(lambda: sim.requests("/v2/positions"), 30, "the run to reach the broker")
    pid = wait_until(
        lambda: flow_process_of(stack.runner.pid, killed["flowRunId"]), 30, "its process"
    )
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: received, 30, "system:error for the killed run", interval=0.2)
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


def _recon(stack: Stack, *args: str, token: str = "admin") -> subprocess.CompletedProcess[str]:
    env = scrubbed_env() | {"RECON_API_URL": stack.base, "RECON_API_TOKEN": stack.tokens[token]}
    return run_module("cli", *args, env=env)


def test_status_counts_are_prefects_counts(stack: Stack) -> None:
    """The three counts come from one run-history query: they equal Prefect's own count of
    the deployment's runs in each state (after this module's completed, failed, crashed and
    skipped runs)."""
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(FULL_NAME)

        def prefects(*types: StateType) -> int:
            return client.count_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(types))),
                )
            )

        expected = {
            "successfulRuns": prefects(StateType.COMPLETED),
            "failedRuns": prefects(StateType.FAILED, StateType.CRASHED),
            "skippedRuns": prefects(StateType.CANCELLED),
        }
    now = stack.status()
    assert {k: now[k] for k in expected} == expected
    assert now["totalRuns"] == expected["successfulRuns"] + expected["failedRuns"]


def test_operator_cli_talks_to_the_sidecar(stack: Stack, sim: Sim) -> None:
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
    wait_until(
        lambda: stack.status()["lastFlowRunId"] == run_id, 60, "the run to finish", interval=0.5
    )

    env = scrubbed_env() | {"RECON_API_URL": stack.base, "RECON_API_TOKEN": stack.tokens["events"]}
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

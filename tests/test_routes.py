"""Every route's status codes and answer shapes, against the sidecar app in this process
(`tests.support.sidecar`): the session's Prefect server, SQLite and PostgreSQL, real HTTP.

The deployment is registered with no runner, so a triggered run stays Scheduled: what a
run does (200 with its result, a failed run's 500, crashes) is `tests/served/test_api.py`'s, on a
served stack.
"""

from __future__ import annotations

import datetime as dt
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelled, Failed

from recon.diff import diff_positions, empty_book
from recon.schemas.result import RunResult
from recon.snapshot import AccountSummary, Snapshot
from recon.store.database import session_factory
from recon.store.writer import apply_reconciliation
from tests.factories import ACCOUNT_ID, SEED_STATUS_FIELDS, frame, raw_position
from tests.support.prefect import default_api
from tests.support.process import free_port
from tests.support.sidecar import Sidecar, in_process_sidecar
from tests.support.wait import wait_until

PROTECTED = [
    ("GET", "/api/admin/jobs/status"),
    ("POST", "/api/admin/jobs/sync-positions"),
    ("GET", "/api/positions"),
    ("GET", "/api/positions/AAPL/history"),
    ("GET", "/api/stream/events"),
]


def test_health_and_readiness_need_no_key(sidecar: Sidecar) -> None:
    with sidecar.api(None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
        assert client.get("/docs").status_code == 200
        assert "/api/admin/jobs/status" in client.get("/openapi.json").json()["paths"]
    assert ready["checks"] == {"database": "ok", "prefect": "ok"}
    assert ready["status"] == "ready"


def test_readiness_is_503_while_prefect_is_unreachable(sidecar: Sidecar) -> None:
    """A second sidecar on the same database whose Prefect API is a port nobody listens on."""
    nowhere = f"http://127.0.0.1:{free_port()}/api"
    with (
        default_api(nowhere),
        in_process_sidecar(sidecar.db, sidecar.url, {}, ready=False) as cut_off,
    ):
        response = httpx.get(f"{cut_off.base}/readyz", timeout=30)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready" and body["checks"]["database"] == "ok"
    # Prefect's health check answers the connection error rather than raising it.
    assert body["checks"]["prefect"] == "unhealthy (ConnectError)"


def test_the_schema_documents_every_route(sidecar: Sidecar) -> None:
    with sidecar.api(None) as client:
        paths = client.get("/openapi.json").json()["paths"]
    documented = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    wanted = [("GET", "/healthz"), ("GET", "/readyz"), *PROTECTED]
    assert {(m, p.replace("AAPL", "{symbol}")) for m, p in wanted} <= documented


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_protected_route_answers_401_as_json(
    sidecar: Sidecar, method: str, path: str
) -> None:
    cases = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer rk_not-a-real-token"},
        {"Authorization": f"Bearer {sidecar.tokens['revoked']}"},
        {"Authorization": "Bearer " + "x" * 5000},
    ]
    with httpx.Client(base_url=sidecar.base, timeout=10) as client:
        for headers in cases:
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (headers, response.text)
            body = response.json()
            assert body["error"] == "unauthorized" and body["message"]
            assert sidecar.tokens["revoked"] not in response.text
            assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("token", "method", "path", "capability"),
    [
        ("events", "GET", "/api/admin/jobs/status", "admin:read"),
        ("reader", "POST", "/api/admin/jobs/sync-positions", "admin:write"),
        ("events", "GET", "/api/positions", "admin:read"),
        ("events", "GET", "/api/positions/AAPL/history", "admin:read"),
        ("reader", "GET", "/api/stream/events", "events:read"),
    ],
)
def test_missing_capability_is_403_as_json(
    sidecar: Sidecar, token: str, method: str, path: str, capability: str
) -> None:
    with sidecar.api(token) as client:
        response = client.request(method, path)
    assert response.status_code == 403
    assert response.json() == {
        "error": "forbidden",
        "message": f"this API key lacks the capability {capability}",
    }


def test_access_token_query_is_for_the_stream_only(sidecar: Sidecar) -> None:
    token = sidecar.tokens["admin"]
    with httpx.Client(base_url=sidecar.base, timeout=10) as client:
        assert (
            client.get("/api/admin/jobs/status", params={"access_token": token}).status_code == 401
        )
        with client.stream("GET", "/api/stream/events", params={"access_token": token}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("last", ["9" * 40, "-1", "1e3", "abc"])
def test_a_resume_point_that_is_not_a_journal_id_is_a_4xx_json(sidecar: Sidecar, last: str) -> None:
    with sidecar.api() as client:
        response = client.get("/api/stream/events", headers={"Last-Event-ID": last})
    assert 400 <= response.status_code < 500
    assert response.json()["error"] and response.json()["message"]


def test_status_has_the_seed_shape_before_any_run(sidecar: Sidecar) -> None:
    with sidecar.api() as client:
        response = client.get("/api/admin/jobs/status")
    assert response.status_code == 200, response.text
    now = response.json()["positionReconciliation"]
    assert set(now) >= SEED_STATUS_FIELDS
    assert now["schedule"] == "*/5 * * * * (America/New_York)"
    assert now["isRunning"] is False
    assert isinstance(now["totalRuns"], int)
    assert now["totalRuns"] == now["successfulRuns"] + now["failedRuns"]


@pytest.mark.usefixtures("no_open_runs")
def test_no_wait_is_202_and_a_second_trigger_is_409(sidecar: Sidecar) -> None:
    with sidecar.api() as client:
        first = client.post("/api/admin/jobs/sync-positions", params={"wait": "false"})
        assert first.status_code == 202, first.text
        body = first.json()
        assert set(body) == {"success", "message", "flowRunId", "flowRunUrl"}
        assert body["success"] is True and body["flowRunId"] in body["flowRunUrl"]
        second = client.post("/api/admin/jobs/sync-positions")
        assert second.status_code == 409
        assert second.json() == {
            "error": "Position sync already in progress",
            "message": second.json()["message"],
            "flowRunId": body["flowRunId"],
        }
        pending = client.get("/api/admin/jobs/status").json()["positionReconciliation"]
    assert pending["currentFlowRunId"] == body["flowRunId"]


@pytest.mark.usefixtures("no_open_runs")
def test_a_replica_sees_what_another_did_before_its_copy_expires(
    sidecar: Sidecar, deployment: UUID
) -> None:
    """A second replica keeps its status's Prefect reads for an hour: only Prefect's events
    can tell it of a run the first one triggered, and of the run's end."""
    hour = {"RECON_STATUS_CACHE_SECONDS": "3600"}
    with (
        in_process_sidecar(sidecar.db, sidecar.url, {"replica": ["admin:read"]}, env=hour) as b,
        b.api("replica") as replica,
    ):

        def status() -> tuple[dict[str, Any], str]:
            response = replica.get("/api/admin/jobs/status")
            assert response.status_code == 200, response.text
            return response.json()["positionReconciliation"], response.headers["cache-status"]

        # Once its event subscription is up, its copy is kept and served.
        wait_until(lambda: status()[1] == "recon; hit", 60, "the replica's kept copy")
        before, _ = status()
        assert before["currentFlowRunId"] is None
        with sidecar.api() as client:
            triggered = client.post("/api/admin/jobs/sync-positions", params={"wait": "false"})
        assert triggered.status_code == 202, triggered.text
        run_id = triggered.json()["flowRunId"]
        wait_until(lambda: status()[0]["currentFlowRunId"] == run_id, 30, "the run, on the replica")
        with get_client(sync_client=True) as prefect:
            prefect.set_flow_run_state(UUID(run_id), Cancelled(message="by hand"), force=True)
        after = wait_until(
            lambda: (now := status()[0])["currentFlowRunId"] is None and now, 30, "its end"
        )
    assert after["skippedRuns"] == before["skippedRuns"] + 1


def test_status_cache_seconds_0_reads_prefect_every_time(sidecar: Sidecar) -> None:
    off = {"RECON_STATUS_CACHE_SECONDS": "0"}
    with (
        in_process_sidecar(sidecar.db, sidecar.url, {"uncached": ["admin:read"]}, env=off) as b,
        b.api("uncached") as client,
    ):
        served = [client.get("/api/admin/jobs/status").headers["cache-status"] for _ in range(5)]
    assert served == ["recon; fwd=bypass"] * 5


@pytest.mark.usefixtures("no_open_runs")
def test_a_run_that_fails_while_waited_for_is_500_with_the_reason(
    sidecar: Sidecar, deployment: UUID
) -> None:
    """The runner's part played by hand: the run is failed through the Prefect API."""
    failed: list[httpx.Response] = []

    # Asked of the server, not filtered from its first page: the session's server holds
    # every earlier module's runs, and a page of them need not include this one.
    triggered = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        tags=FlowRunFilterTags(all_=["api"]),
    )

    def fail_the_run() -> bool:
        assert not failed, f"the trigger answered before its run was failed: {failed[0].text}"
        with get_client(sync_client=True) as client:
            waiting = client.read_flow_runs(flow_run_filter=triggered)
            for run in waiting:
                client.set_flow_run_state(run.id, Failed(message="broker said no"), force=True)
        return bool(waiting)

    def post() -> None:
        with sidecar.api() as client:
            failed.append(client.post("/api/admin/jobs/sync-positions"))

    poster = threading.Thread(target=post)
    poster.start()
    wait_until(fail_the_run, 30, "the triggered run", interval=0.1)
    poster.join(60)
    (response,) = failed
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["success"] is False and body["message"] == "broker said no"
    assert body["error"] == "Position sync failed"
    assert body["flowRunId"] in body["flowRunUrl"]


def test_wait_must_be_a_boolean(sidecar: Sidecar) -> None:
    with sidecar.api() as client:
        response = client.post("/api/admin/jobs/sync-positions", params={"wait": "perhaps"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid request"


def _stored(url: str) -> None:
    """One reconciliation written through the store, as a run would: AAPL and a fraction."""
    raw = [raw_position("AAPL", "10", "190.5"), raw_position("BRK.B", "0.125", "412.25")]
    account = AccountSummary(ACCOUNT_ID, Decimal(0), Decimal(0))
    snapshot = Snapshot(account=account, positions=frame(raw))  # type: ignore[arg-type]
    diff = diff_positions(empty_book(), snapshot.positions)
    result = RunResult.from_diff(snapshot, diff, started_at=datetime.now(UTC), flow_run_id="r1")
    apply_reconciliation(session_factory(url), diff, result)


def test_positions_and_history_with_exact_decimals(sidecar: Sidecar) -> None:
    with sidecar.api() as client:
        assert client.get("/api/positions").json() == {
            "positions": [],
            "count": 0,
            "nextCursor": None,
        }
        _stored(sidecar.url)
        book = client.get("/api/positions").json()
        assert book["count"] == len(book["positions"]) == 2
        by_symbol = {p["symbol"]: p for p in book["positions"]}
        assert by_symbol["BRK.B"]["qty"] == "0.125"
        first = book["positions"][0]
        assert isinstance(first["qty"], str) and isinstance(first["avgEntryPrice"], str)
        assert {"assetId", "accountId", "updatedAt", "refreshedAt"} <= set(first)
        dt.datetime.fromisoformat(first["updatedAt"])
        other = client.get("/api/positions", params={"accountId": "someone-else"}).json()
        assert other == {"positions": [], "count": 0, "nextCursor": None}
        history = client.get("/api/positions/brk.b/history").json()
        assert history["symbol"] == "BRK.B"
        (change,) = history["history"]
        assert change["change"] == "created" and change["symbol"] == "BRK.B"
        assert set(change) == {
            "eventId", "accountId", "assetId", "symbol", "change", "fields", "timestamp",
        }  # fmt: skip
        # How far back the retained journal reaches (recon db prune): here, its only change.
        assert list(history) == ["symbol", "history", "oldestRetainedAt"]
        assert history["oldestRetainedAt"] == change["timestamp"]
        missing = client.get("/api/positions/NOPE/history")
        assert missing.status_code == 404
        assert missing.json() == {"error": "not found", "message": "no history for symbol NOPE"}
        assert client.get("/api/positions/%3Cscript%3E/history").status_code == 422
        assert client.get("/api/positions/AAPL/history", params={"limit": 0}).status_code == 422
        too_long = client.get("/api/positions", params={"accountId": "a" * 65})
        assert too_long.status_code == 422 and too_long.json()["error"] == "invalid request"

"""The typed shapes write exactly the bytes the hand-built dicts wrote.

`fixtures/shapes_before.json` was produced by the dict-building code these models replaced
(RunResult.as_dict/as_record, writer.position_updated_payload, cli.sync.render on a dict,
api.status._last_result, api.routes.positions._position), from the inputs built below.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from api.schemas import JobState, JobStatus, SyncAccepted, SyncCompleted
from api.status import _last_result
from cli.sync import render
from recon.broker.protocol import RawSnapshot
from recon.diff import diff_book
from recon.schemas.events import PositionsChanged, PositionUpdated, RunFailed, sse_data
from recon.schemas.positions import HistoryEntry, PositionOut
from recon.schemas.result import RunChanges, RunReport, RunResult
from recon.snapshot import parse_snapshot
from recon.store.models import Position, PositionChange, SyncRun
from tests.factories import account_for, frame, raw_position

BEFORE: dict[str, str] = json.loads(
    (Path(__file__).parent / "fixtures" / "shapes_before.json").read_text()
)
AT = datetime(2026, 12, 2, 0, 30, 5, 123456, tzinfo=UTC)
FLOW_RUN = "0b6f0f2e-aaaa-4bbb-8ccc-000000000001"
COMPACT: dict[str, Any] = {"separators": (",", ":"), "ensure_ascii": False}

BOOK = [
    raw_position("AAPL", "10", "189.50"),
    raw_position("KO", "5", "62.40"),
    raw_position("TSLA", "3", "178.30"),
]
NEW = [
    raw_position("AAPL", "12.5", "189.50", avg="180.25"),
    raw_position("KO", "5", "63.00"),
    raw_position("NVDA", "0.0000001", "120.75"),
    {"symbol": "BAD", "asset_id": "x", "qty": 1.5},
]


@pytest.fixture
def result() -> RunResult:
    raw = RawSnapshot(account=account_for(NEW[:3]), positions=NEW, clock={"is_open": True})
    snapshot = parse_snapshot(raw)
    diff = diff_book(frame(BOOK), snapshot)
    built = RunResult.from_diff(snapshot, diff, started_at=AT, flow_run_id=FLOW_RUN)
    return built.model_copy(update={"sync_run_id": 7, "event_id": 42})


def test_run_report_is_the_flows_old_return_value(result: RunResult) -> None:
    assert json.dumps(result.dump()) == BEFORE["report"]
    # What `recon sync --json` reads back from the flow's result and prints again.
    assert (
        json.dumps(RunReport.model_validate(json.loads(BEFORE["report"])).dump())
        == (BEFORE["report"])
    )


def test_run_record_is_the_old_sync_runs_result(result: RunResult) -> None:
    assert json.dumps(result.record()) == BEFORE["record"]


def test_position_updated_payload_and_its_sse_data(result: RunResult) -> None:
    payload = PositionUpdated.of(result, AT).dump()
    assert json.dumps(payload, **COMPACT) == BEFORE["position_updated"]
    # Read back from the journal, it validates and writes the same bytes.
    again = PositionUpdated.model_validate(json.loads(BEFORE["position_updated"])).dump()
    assert json.dumps(again, **COMPACT) == BEFORE["position_updated"]
    assert sse_data(payload, "ignored") == BEFORE["position_updated"]


def test_run_failed_payload() -> None:
    payload = RunFailed(error="boom", timestamp=AT, flow_run_id=FLOW_RUN, status="crashed")
    assert json.dumps(payload.dump(), **COMPACT) == (
        '{"message":"Position reconciliation failed","error":"boom",'
        '"timestamp":"2026-12-02T00:30:05.123456+00:00","source":"position-reconciliation-job",'
        f'"flowRunId":"{FLOW_RUN}","status":"crashed"}}'
    )
    # A row without a flowRunId gets the row's.
    data = sse_data(payload.model_copy(update={"flow_run_id": None}).dump(), "row-run")
    assert json.loads(data)["flowRunId"] == "row-run"
    assert list(json.loads(data)) == [
        "message",
        "error",
        "timestamp",
        "source",
        "flowRunId",
        "status",
    ]


def test_prefect_event_payload(result: RunResult) -> None:
    summary = json.loads(BEFORE["record"])["summary"]
    expected = {
        "created": result.created,
        "updated": result.updated,
        "removed": result.removed,
        "summary": summary,
        "eventId": 42,
        "syncRunId": 7,
    }
    assert json.dumps(PositionsChanged.of(result).dump()) == json.dumps(expected)


def test_cli_render(result: RunResult) -> None:
    assert render(result) == BEFORE["render"]


def test_status_last_result() -> None:
    changes = _last_result(SyncRun(result=json.loads(BEFORE["record"])))
    assert changes is not None
    assert json.dumps(changes.dump(), **COMPACT) == BEFORE["last_result"]


def test_trigger_answers() -> None:
    changes = RunChanges.model_validate(json.loads(BEFORE["record"]))
    done = SyncCompleted(
        message="Position sync completed: 4 changes",
        result=changes,
        flow_run_id=FLOW_RUN,
        flow_run_url="http://ui/runs/flow-run/x",
    )
    assert json.dumps(done.dump(), **COMPACT) == (
        '{"success":true,"message":"Position sync completed: 4 changes","result":'
        + BEFORE["last_result"]
        + f',"flowRunId":"{FLOW_RUN}","flowRunUrl":"http://ui/runs/flow-run/x"}}'
    )
    queued = SyncAccepted(message="Position sync triggered", flow_run_id=FLOW_RUN, flow_run_url="u")
    assert json.dumps(queued.dump(), **COMPACT) == (
        '{"success":true,"message":"Position sync triggered",'
        f'"flowRunId":"{FLOW_RUN}","flowRunUrl":"u"}}'
    )


def test_job_status_keys() -> None:
    state = JobState(
        enabled=True,
        schedule="*/5 * * * * (America/New_York)",
        is_running=False,
        is_pending=False,
        current_flow_run_id=None,
        last_run_time="2026-12-02T00:30:05.123456+00:00",
        last_run_duration=1234,
        last_run_state="Completed",
        next_run_time=None,
        total_runs=3,
        successful_runs=2,
        failed_runs=1,
        skipped_runs=0,
        last_error=None,
        last_result=None,
        last_flow_run_id=FLOW_RUN,
        last_flow_run_url="u",
    )
    body = JobStatus(position_reconciliation=state).dump()
    assert list(body) == ["positionReconciliation", "stream"]  # stream: issue 13
    assert list(body["positionReconciliation"]) == [
        "enabled",
        "schedule",
        "isRunning",
        "isPending",
        "currentFlowRunId",
        "lastRunTime",
        "lastRunDuration",
        "lastRunState",
        "nextRunTime",
        "totalRuns",
        "successfulRuns",
        "failedRuns",
        "skippedRuns",
        "lastError",
        "lastResult",
        "lastFlowRunId",
        "lastFlowRunUrl",
    ]


def test_position_row() -> None:
    values = frame(NEW[:1]).iloc[0].to_dict()
    row = Position(**values, created_at=AT, updated_at=AT, refreshed_at=AT)
    assert json.dumps(PositionOut.model_validate(row).dump(), **COMPACT) == BEFORE["position"]


def test_history_entry(result: RunResult) -> None:
    detail = result.details[0]
    row = PositionChange(
        event_id=42,
        account_id=result.account_id,
        asset_id=detail["assetId"],
        symbol=detail["symbol"],
        change=detail["change"],
        fields=detail["fields"],
        created_at=AT,
    )
    expected = {
        "eventId": 42,
        "accountId": result.account_id,
        "assetId": detail["assetId"],
        "symbol": detail["symbol"],
        "change": detail["change"],
        "fields": row.fields,
        "timestamp": AT.isoformat(),
    }
    entry = HistoryEntry.model_validate(row)
    assert json.dumps(entry.dump(), **COMPACT) == json.dumps(expected, **COMPACT)

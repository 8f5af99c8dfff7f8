"""The flow under a real Prefect API, against the simulator over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from sqlalchemy import func, select

from flows.publish import ARTIFACT_KEY
from flows.reconcile import reconcile_positions
from recon.store.book import load_book
from recon.store.database import engine_for, session_factory
from recon.store.journal import POSITION_UPDATED, SYSTEM_ERROR, read_events
from recon.store.lock import sync_lock
from recon.store.models import Position, SyncRun
from tests.factories import account_for, raw_position
from tests.sim import Sim
from tests.support.wait import wait_until

pytestmark = pytest.mark.usefixtures("prefect_server")
FIXTURES = Path(__file__).parent / "fixtures" / "alpaca"


def run(**parameters: Any) -> Any:
    return reconcile_positions(**parameters, return_state=True)


def book(url: str) -> dict[str, dict[str, Any]]:
    with session_factory(url)() as session:
        rows = session.scalars(select(Position)).all()
        return {
            r.asset_id: {c: getattr(r, c) for c in ("symbol", "qty", "avg_entry_price", "side")}
            for r in rows
        }


def events(url: str) -> list[Any]:
    with session_factory(url)() as session:
        return read_events(session, 0)


def runs(url: str) -> list[SyncRun]:
    with session_factory(url)() as session:
        return list(session.scalars(select(SyncRun).order_by(SyncRun.id)))


def test_first_run_creates_the_book_and_second_reports_nothing(configured: str, sim: Sim) -> None:
    state = run()
    assert state.is_completed(), state.message
    result = state.result()
    assert set(result) >= {"created", "updated", "removed", "errors", "summary", "flowRunId"}
    assert result["updated"] == result["removed"] == result["errors"] == []
    listed = sim.requests("/v2/positions")
    assert len(listed) == 1
    stored = book(configured)
    assert len(stored) == len(result["created"]) > 5
    assert any(p["side"] == "short" and p["qty"] < 0 for p in stored.values())
    assert [e.type for e in events(configured)] == [POSITION_UPDATED]

    again = run()
    assert again.is_completed()
    assert again.result()["summary"]["totalChanges"] == 0
    assert [e.type for e in events(configured)] == [POSITION_UPDATED]
    assert [r.status for r in runs(configured)] == ["completed", "completed"]


def test_drift_and_rename_are_updates_keyed_by_asset_id(configured: str, sim: Sim) -> None:
    assert run().is_completed()
    renamed = False
    for _ in range(12):
        sim.step()
        before = book(configured)
        state = run()
        assert state.is_completed(), state.message
        after = book(configured)
        result = state.result()
        for detail in result["details"]:
            if detail["change"] == "updated" and "symbol" in detail["fields"]:
                renamed = True
                assert before[detail["assetId"]]["symbol"] == detail["fields"]["symbol"]["before"]
                assert after[detail["assetId"]]["symbol"] == detail["fields"]["symbol"]["after"]
        live = {p["asset_id"]: Decimal(p["qty"]) for p in sim.broker_positions()}
        assert {k: v["qty"] for k, v in after.items()} == live
    assert renamed, "the simulator renames a ticker within a dozen steps"


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("status", {"status": 503}),
        ("status", {"status": 500}),
        ("status", {"status": 429}),
        ("status", {"status": 504}),
        ("malformed_json", {}),
        ("stall", {"delay": 3.0}),
        ("no_code", {"status": 502}),
    ],
)
def test_transient_faults_succeed_after_retries(
    configured: str, sim: Sim, mode: str, options: dict[str, Any]
) -> None:
    sim.fault(mode, path="/v2/positions", count=2, **options)
    state = run()
    assert state.is_completed(), state.message
    assert len(sim.requests("/v2/positions")) == 3  # two faults, then the good answer
    assert book(configured)


@pytest.mark.parametrize(
    ("mode", "options", "reason"),
    [
        ("status", {"status": 401}, "not authorized"),
        ("status", {"status": 403}, "forbidden"),
        ("status", {"status": 422}, "invalid symbol"),
    ],
)
def test_rejections_are_not_retried_and_write_nothing_but_the_failure(
    configured: str, sim: Sim, mode: str, options: dict[str, Any], reason: str
) -> None:
    sim.fault(mode, path="/v2/positions", **options)
    state = run()
    assert state.is_failed()
    assert reason in (state.message or "")
    assert len(sim.requests("/v2/positions")) == 1
    assert book(configured) == {}
    (event,) = events(configured)
    assert event.type == SYSTEM_ERROR and reason in event.payload["error"]
    assert [r.status for r in runs(configured)] == ["failed"]


def test_persistent_outage_fails_after_retries_with_nothing_written(
    configured: str, sim: Sim, env: pytest.MonkeyPatch
) -> None:
    env.setenv("RECON_FETCH_RETRIES", "2")
    assert run().is_completed()
    before = book(configured)
    sim.step()
    sim.fault("status", status=503, path="/v2/positions")
    state = run()
    assert state.is_failed()
    assert len(sim.requests("/v2/positions")) == 1 + 3
    assert book(configured) == before
    assert [e.type for e in events(configured)] == [POSITION_UPDATED, SYSTEM_ERROR]


@pytest.mark.parametrize("mode", ["unknown_enum", "missing_qty"])
def test_a_bad_record_fails_its_own_symbol_only(configured: str, sim: Sim, mode: str) -> None:
    assert run().is_completed()
    before = book(configured)
    sim.step()
    sim.fault(mode, path="/v2/positions")
    state = run()
    assert state.is_completed(), state.message
    result = state.result()
    (error,) = result["errors"]
    bad = next(a for a, p in before.items() if p["symbol"] == error["symbol"])
    after = book(configured)
    assert after[bad] == before[bad]  # untouched, not removed
    assert error["symbol"] not in result["removed"]
    good = {
        p["asset_id"]: Decimal(p["qty"]) for p in sim.broker_positions() if p["asset_id"] != bad
    }
    assert {k: v["qty"] for k, v in after.items() if k != bad} == good


def test_empty_list_while_account_holds_positions_is_refused(configured: str, sim: Sim) -> None:
    assert run().is_completed()
    before = book(configured)
    sim.fault("empty_positions")
    state = run()
    assert state.is_failed()
    assert "refusing to treat the account as flat" in (state.message or "")
    assert book(configured) == before


def test_snapshot_that_does_not_tie_out_is_refused(configured: str, sim: Sim) -> None:
    positions = [raw_position("AAPL", "10", "100"), raw_position("MSFT", "5", "300")]
    account = account_for(positions)
    account["long_market_value"] = "9000"
    sim.load(positions, account)
    state = run()
    assert state.is_failed()
    assert "tie" in (state.message or "") or "add up to" in (state.message or "")
    assert book(configured) == {}


def test_mass_removal_is_held_back_unless_allowed(configured: str, sim: Sim) -> None:
    positions = [raw_position(f"S{i}", "1", "10") for i in range(6)]
    sim.load(positions)
    assert run().is_completed()
    sim.load(positions[:2])
    refused = run()
    assert refused.is_failed()
    assert "allow_mass_removal" in (refused.message or "")
    assert len(book(configured)) == 6
    allowed = run(allow_mass_removal=True)
    assert allowed.is_completed()
    assert sorted(allowed.result()["removed"]) == ["S2", "S3", "S4", "S5"]
    assert len(book(configured)) == 2


@pytest.mark.parametrize(
    "name",
    [
        "positions_stock_alpaca_py_tests.json",
        "positions_fractional_lct_alpaca_docs.json",
        "position_crypto_btcusd_alpaca_docs_broker_crypto_guide.json",
        "position_openapi_example1.json",
        "position_openapi_example2.json",
        "position_stock_alpaca_docs.json",
    ],
)
def test_every_real_payload_shape_reconciles_exactly(configured: str, sim: Sim, name: str) -> None:
    payload = json.loads((FIXTURES / name).read_text())
    positions = payload if isinstance(payload, list) else [payload]
    sim.load(positions)
    state = run()
    assert state.is_completed(), state.message
    assert state.result()["errors"] == []
    with session_factory(configured)() as session:
        for raw in positions:
            row = session.scalar(select(Position).where(Position.asset_id == raw["asset_id"]))
            assert row is not None
            assert row.symbol == raw["symbol"].strip()
            for field in ("qty", "avg_entry_price", "cost_basis", "market_value"):
                assert format(getattr(row, field), "f") == raw[field]


def test_a_run_started_while_another_writes_is_skipped_at_once(configured: str, sim: Sim) -> None:
    with sync_lock(engine_for(configured)):
        state = run()
    # Cancelled, like a concurrency-limit skip: not a failure, never "no changes".
    assert state.is_cancelled(), state
    assert (state.message or "").startswith("Skipped: another reconciliation")
    assert sim.requests("/v2/positions") == []
    with session_factory(configured)() as session:
        assert session.scalar(select(func.count()).select_from(Position)) == 0
        assert read_events(session, 0) == []  # no system:error: nothing failed


def test_artifact_lists_the_changes(configured: str, sim: Sim) -> None:
    sim.load([raw_position("AAPL", "10", "100")])
    state = run()
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY]))
        )
    mine = [a for a in artifacts if a.flow_run_id == state.state_details.flow_run_id]
    assert mine and "AAPL" in json.dumps(mine[0].data)


def test_task_runs_are_linked_in_the_run_graph(configured: str, sim: Sim) -> None:
    """fetch → diff → persist show as dependencies in the UI, though the flow passes the
    snapshot and plan `opaque` (so Prefect does not walk every field of them)."""
    state = run()
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id

    def linked() -> dict[str, Any] | None:
        with get_client(sync_client=True) as client:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        by_name = {t.name.rsplit("-", 1)[0]: t for t in task_runs}
        wanted = {"fetch-snapshot", "diff-positions", "persist-changes"}
        return by_name if wanted <= set(by_name) else None

    by_name = wait_until(linked, 30, "the three task runs")
    fetch, diff, persist = (
        by_name[n] for n in ("fetch-snapshot", "diff-positions", "persist-changes")
    )
    assert [i.id for i in diff.task_inputs["snapshot"]] == [fetch.id]
    assert [i.id for i in persist.task_inputs["plan"]] == [diff.id]


def test_loaded_frame_round_trips(configured: str, sim: Sim) -> None:
    sim.load([raw_position("NVDA", "0.173011547", "131.07")])
    state = run()
    assert state.is_completed()
    with session_factory(configured)() as session:
        frame = load_book(session, state.result()["accountId"])
    assert frame["qty"].tolist() == [Decimal("0.173011547")]

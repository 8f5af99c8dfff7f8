"""The flow's dry run (`dry_run=True`) in this process, under the session's Prefect API, on
SQLite and PostgreSQL: it reports what a run would do, refused or not, and writes nothing
to the book, the run log or the journal, even when it fails; the lock is not taken."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from flows.reconcile import reconcile_positions
from recon.schemas.result import PreviewReport
from recon.store.database import engine_for, session_factory
from recon.store.lock import sync_lock
from recon.store.models import Position, PositionChange, PositionEvent, SyncRun
from tests.factories import account_for, raw_position
from tests.sim import Sim

pytestmark = pytest.mark.usefixtures("prefect_server")


def stored(url: str) -> dict[str, int]:
    with session_factory(url)() as session:
        return {
            t.__tablename__: session.scalar(select(func.count()).select_from(t)) or 0
            for t in (Position, PositionEvent, PositionChange, SyncRun)
        }


def preview(**parameters: Any) -> PreviewReport:
    state = reconcile_positions(dry_run=True, **parameters, return_state=True)
    assert state.is_completed(), state.message
    return PreviewReport.model_validate(state.result())


def test_a_preview_reports_and_writes_nothing(configured: str, sim: Sim) -> None:
    kept = ("MSFT", "PEP", "XOM")
    sim.load([raw_position(s) for s in ("AAPL", "KO", "TSLA", *kept)])
    assert reconcile_positions(return_state=True).is_completed()
    before = stored(configured)
    sim.load([raw_position("AAPL", "12"), raw_position("NVDA", "1"), *map(raw_position, kept)])
    # The lock held by someone else does not stop a preview (it takes none).
    with sync_lock(engine_for(configured)):
        report = preview()
    assert report.dry_run is True and report.refused is None
    assert (report.created, report.updated, sorted(report.removed)) == (
        ["NVDA"],
        ["AAPL"],
        ["KO", "TSLA"],
    )
    assert report.sync_run_id is None and report.event_id is None
    assert stored(configured) == before


def test_a_refused_preview_says_which_check_and_why(configured: str, sim: Sim) -> None:
    sim.load([raw_position(s) for s in ("AAPL", "KO", "TSLA", "PEP")])
    assert reconcile_positions(return_state=True).is_completed()
    before = stored(configured)
    sim.load([raw_position("AAPL")])
    refused = preview()
    assert refused.refused is not None and refused.refused.check == "mass_removal"
    assert "over the cap" in refused.refused.reason
    assert preview(allow_mass_removal=True).refused is None
    # No positions listed while the account reports some: "not flat", refused.
    sim.load([], account=account_for([raw_position("AAPL")]))
    flat = preview()
    assert flat.refused is not None and flat.refused.check == "snapshot"
    assert stored(configured) == before


def test_a_failed_preview_records_nothing(configured: str, sim: Sim) -> None:
    before = stored(configured)
    sim.fault("status", status=401)
    state = reconcile_positions(dry_run=True, return_state=True)
    assert state.is_failed()
    assert stored(configured) == before

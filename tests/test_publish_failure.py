"""A run whose commit succeeded stays Completed when publishing its artifact/event fails."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import flows.reconcile
from recon.schemas.result import RunResult
from recon.store.database import session_factory
from recon.store.journal import POSITION_UPDATED, read_events
from recon.store.models import SyncRun
from tests.sim import Sim

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_publishing_failure_after_the_commit_keeps_the_run_completed(
    configured: str, sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(_result: RunResult) -> None:
        raise ConnectionError("Prefect API unreachable\nsecond line")

    monkeypatch.setattr(flows.reconcile, "publish_changes", unreachable)
    state = flows.reconcile.reconcile_positions(return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["summary"]["createdCount"] > 0
    with session_factory(configured)() as session:
        assert [e.type for e in read_events(session, 0)] == [POSITION_UPDATED]  # no system:error
        assert [r.status for r in session.scalars(select(SyncRun))] == ["completed"]

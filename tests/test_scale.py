"""Large runs stay bounded where Prefect and SSE clients see them, and lose no change.

A 100,000-change run is written by the real writer and read by a real SSE client through
the relay over HTTP; a run larger than the report's caps goes through the flow under the
Prefect API and through `recon sync --json` as a process.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.reconcile import reconcile_positions
from recon.broker.protocol import RawSnapshot
from recon.diff import diff_book
from recon.schemas.events import PART_DETAILS
from recon.schemas.result import MAX_DETAILS, MAX_SYMBOLS, RunReport, RunResult
from recon.settings import get_settings
from recon.snapshot import parse_snapshot
from recon.store.book import load_book
from recon.store.database import session_factory, upgrade
from recon.store.journal import POSITION_UPDATED
from recon.store.runs import full_report
from recon.store.writer import apply_reconciliation
from tests.factories import account_for, raw_position
from tests.sim import Sim
from tests.support.asgi import auth, make_key, open_stream, serve, stream_app, wait_until
from tests.test_cli import recon, sim_env

LARGE = 100_000
# A part carries PART_DETAILS first-load details (9 fields each, ≈ 500 bytes): well under
# this, where one message for the whole run would be ≈ 50 MB.
MESSAGE_BOUND = 512 * 1024
OLD_KEYS = {"type", "created", "updated", "removed", "timestamp", "source", "details"}


def positions(n: int, qty: str = "10") -> list[dict[str, object]]:
    return [raw_position(f"S{i:06d}", qty, "12.34") for i in range(n)]


def test_a_100k_change_run_reaches_a_client_as_bounded_parts(
    env: pytest.MonkeyPatch, database_url: str
) -> None:
    env.setenv("RECON_DATABASE_URL", database_url)  # read by the stream's auth dependency
    get_settings.cache_clear()
    upgrade(database_url)
    raw = positions(LARGE)
    snapshot = parse_snapshot(RawSnapshot(account=account_for(raw), positions=raw))
    sessions = session_factory(database_url)
    with sessions() as session:
        diff = diff_book(load_book(session, snapshot.account_id), snapshot)
    started = datetime.now(UTC)
    result = RunResult.from_diff(snapshot, diff, started_at=started, flow_run_id="run-100k")
    token = make_key(database_url, ["events:read"])
    app = stream_app(database_url, poll_interval=0.05, ping_interval=15.0)
    with serve(app) as server, open_stream(server.base_url, headers=auth(token)) as source:
        wait_until(lambda: server.relay.subscriber_count == 1, what="the client to subscribe")
        final = apply_reconciliation(sessions, diff, result)
        messages = []
        for event in source.iter_sse():
            assert event.event == POSITION_UPDATED
            assert len(event.data.encode()) <= MESSAGE_BOUND
            messages.append(json.loads(event.data))
            if len(messages) == messages[0]["parts"]:
                break
    assert len(messages) == -(-LARGE // PART_DETAILS)
    assert [m["part"] for m in messages] == list(range(1, len(messages) + 1))
    for message in messages:
        assert set(message) >= OLD_KEYS | {"accountId", "flowRunId", "part", "parts"}
        assert message["flowRunId"] == "run-100k" and len(message["details"]) <= PART_DETAILS
        assert message["created"] == [d["symbol"] for d in message["details"]]
    # Every change reached the client once, with its fields.
    details = [d for m in messages for d in m["details"]]
    assert sorted(d["assetId"] for d in details) == sorted(p["asset_id"] for p in raw)  # type: ignore[type-var]
    assert {d["fields"]["qty"]["after"] for d in details} == {"10"}
    assert sorted(s for m in messages for s in m["created"]) == sorted(final.created)
    # The journal gives the whole run back too (what `recon sync` prints).
    whole = full_report(sessions, final.bounded())
    assert whole.details == [d for m in messages for d in m["details"]]
    assert len(whole.created) == LARGE and not whole.truncated


@pytest.mark.usefixtures("prefect_server")
def test_a_large_run_returns_a_bounded_report_and_sync_prints_it_whole(
    configured: str, sim: Sim, tmp_path: Path
) -> None:
    n = MAX_SYMBOLS + 200
    first = positions(n)
    sim.load(first, account_for(first))
    state = reconcile_positions(return_state=True)
    assert state.is_completed(), state.message
    returned = state.result()
    assert returned["truncated"] is True
    assert returned["summary"]["createdCount"] == returned["summary"]["totalChanges"] == n
    assert len(returned["created"]) == MAX_SYMBOLS and len(returned["details"]) == MAX_DETAILS
    assert len(json.dumps(returned)) < 200_000

    second = positions(n, qty="11")  # every position re-sized
    sim.load(second, account_for(second))
    done = recon("sync", "--json", extra_env=sim_env(sim, configured), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = RunReport.model_validate(json.loads(done.stdout))
    assert "truncated" not in json.loads(done.stdout)
    assert sorted(printed.updated) == sorted(p["symbol"] for p in second)  # type: ignore[type-var]
    assert len(printed.details) == n
    assert {d["fields"]["qty"]["after"] for d in printed.details} == {"11"}

"""`recon up --demo --accounts N --workers 2`: the shards of a Broker API pass (two: one per
worker, by default) run on two local Prefect process workers (the shard deployment on the
`recon-process` work pool), not on the runner; the listener applies a fill of one account
from the Broker API's event stream. Real processes throughout: `recon up`, its Prefect
server, simulator, runner, sidecar, listener and the two `prefect worker start` children."""

from __future__ import annotations

import signal
from decimal import Decimal
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun
from sqlalchemy import select

from recon.deployment import SHARD_FULL_NAME, WORK_POOL
from recon.store.database import session_factory
from recon.store.models import Position, PositionEvent
from simulator.book import asset_id_for
from tests.sim import Sim
from tests.support.process import Process
from tests.support.wait import wait_until
from tests.test_up import operator_settings, runs, stop, up_env

ACCOUNTS = 6


def _finished_startup() -> FlowRun | None:
    """The startup pass as `recon serve` waits for it (`flows.resync.full_run`): the first
    startup run that finished other than Cancelled. One that finds another run in the
    deployment's slot is Cancelled by the limit and asked for again (CI saw one Cancelled)."""
    done = [
        r
        for r in runs(["startup"])
        if r.state is not None and r.state.is_final() and not r.state.is_cancelled()
    ]
    return done[0] if done else None


def test_recon_up_workers_run_the_shards(tmp_path: Path) -> None:
    env = up_env(tmp_path)  # no RECON_SHARDS: --workers 2 makes it two
    marker = f"RECON_DATA_DIR={env['RECON_DATA_DIR']}"
    logs = Path(env["RECON_DATA_DIR"]) / "logs"
    args = ["cli", "up", "--demo", "--accounts", str(ACCOUNTS), "--workers", "2"]
    up = Process(args, env, tmp_path / "up.log", cwd=tmp_path)
    try:
        wait_until(lambda: "recon is up." in up.output(), 150, "recon up", interval=0.5)
        assert "worker-1" in up.output() and "worker-2" in up.output(), up.output()
        with operator_settings(env):
            parent = wait_until(_finished_startup, 180, "the startup pass", interval=0.5)
            assert parent.state is not None and parent.state.is_completed(), parent.state
            with get_client(sync_client=True) as client:
                shard_deployment = client.read_deployment_by_name(SHARD_FULL_NAME)
                children = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])
                    )
                )
                workers = client.read_workers_for_work_pool(WORK_POOL)
        assert shard_deployment.work_pool_name == WORK_POOL
        assert {w.name for w in workers} == {"recon-worker-1", "recon-worker-2"}
        shards = [c for c in children if c.deployment_id == shard_deployment.id]
        assert len(shards) == 2, children
        assert all(s.state is not None and s.state.is_completed() for s in shards), shards
        assert all(s.work_pool_name == WORK_POOL for s in shards)
        # Each shard ran on one of the workers (not on the runner, which does not serve the
        # shard deployment in this mode), and the two ran on different workers (each runs one
        # at a time): the pass is shared, not queued. A worker may also try a shard the other
        # took; the server aborts that submission. Only the startup pass's shards are judged:
        # a scheduled pass may start while the test runs.
        worker_logs = {n: (logs / f"worker-{n}.log").read_text() for n in (1, 2)}
        ran_on = [_worker_that_ran(shard, worker_logs) for shard in shards]
        assert sorted(ran_on) == [1, 2], (ran_on, worker_logs)
        assert sorted(len(s.parameters["account_ids"]) for s in shards) == [3, 3]
        _a_fill_reaches_its_account(env)
    finally:
        stop(up, signal.SIGINT, marker)


def _worker_that_ran(shard: FlowRun, worker_logs: dict[int, str]) -> int:
    """The worker whose log shows it submitted `shard` and the server did not abort it."""
    won = [
        n
        for n, log in worker_logs.items()
        if f"submitting flow run '{shard.id}'" in log
        and f"Aborted submission of flow run '{shard.id}'" not in log
    ]
    assert len(won) == 1, (shard.id, won)
    return won[0]


def _a_fill_reaches_its_account(env: dict[str, str]) -> None:
    """A fill on one account, sent on `/v2/events/trades`: the listener books it."""
    data = Path(env["RECON_DATA_DIR"])
    sim = Sim(
        f"http://127.0.0.1:{env['RECON_SIMULATOR_PORT']}",
        "",
        "",
        (data / "simulator-token").read_text().strip(),
    )
    account = sim.account_ids()[0]
    filled = sim.account_fill(account, "AAPL", "3", "buy")
    aapl = asset_id_for("AAPL")
    url = f"sqlite:///{data / 'recon.db'}"

    execution = filled["executions"][0]["execution_id"]

    def booked_by_the_listener() -> bool:
        with session_factory(url)() as session:
            row = session.get(Position, (account, aapl))
            entries = session.scalars(
                select(PositionEvent).where(PositionEvent.account_id == account)
            ).all()
        by_fill = [e for e in entries if execution in e.payload.get("executionIds", [])]
        # The fill's own journal entry: not a full run that happened to read the new book.
        return bool(by_fill) and row is not None and row.qty == Decimal(filled["positionQty"])

    wait_until(booked_by_the_listener, 60, "the fill in the book, from the event stream")

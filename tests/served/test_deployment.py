"""The served deployment on a real `prefect server start`: limit one, DST, failures, crashes."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import time
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.server.schemas.schedules import CronSchedule as ServerCron
from prefect.states import Scheduled
from sqlalchemy import select

from flows.deployment import FULL_NAME, schedules
from flows.zombies import NAME as ZOMBIE_AUTOMATION
from recon.store.database import session_factory
from recon.store.journal import SYSTEM_ERROR, read_events
from recon.store.models import SyncRun
from tests.sim import Sim
from tests.support.prefect import running_spans
from tests.support.process import flow_process_of
from tests.support.stack import Stack
from tests.support.wait import wait_until

UTC = dt.UTC


def client() -> SyncPrefectClient:
    return get_client(sync_client=True)


def trigger(**kwargs: Any) -> UUID:
    run: FlowRun = run_deployment(FULL_NAME, timeout=0, as_subflow=False, **kwargs)  # type: ignore[assignment]
    return run.id


def read(run_id: UUID) -> FlowRun:
    with client() as c:
        return c.read_flow_run(run_id)


def wait_final(run_ids: list[UUID], timeout: float = 90) -> list[FlowRun]:
    def done() -> list[FlowRun] | None:
        runs = [read(i) for i in run_ids]
        return runs if all(r.state and r.state.is_final() for r in runs) else None

    return wait_until(done, timeout, "runs to finish", interval=0.5)


def assert_never_overlapping(runs: list[FlowRun]) -> None:
    with client() as c:
        spans = running_spans(c, [r.id for r in runs])
    assert spans, "no run entered Running"
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None and start >= end, f"two runs were Running at once: {spans}"


def test_served_deployment_has_the_schedule_and_the_limit(stack: Stack) -> None:
    with client() as c:
        deployment = c.read_deployment_by_name(FULL_NAME)
    crons = {
        (s.schedule.cron, s.schedule.timezone, s.schedule.day_or) for s in deployment.schedules
    }  # type: ignore[union-attr]
    assert crons == {("*/5 * * * *", "America/New_York", True), ("*/5 6 1-7 11 0", "UTC", False)}
    assert all(s.active for s in deployment.schedules)
    assert deployment.paused is False
    assert deployment.global_concurrency_limit is not None
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options is not None
    assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert deployment.parameters == {"allow_mass_removal": False, "dry_run": False}


def test_zombie_automation_is_installed(stack: Stack) -> None:
    with client() as c:
        (automation,) = c.read_automations_by_name(ZOMBIE_AUTOMATION)
    assert automation.enabled
    assert automation.trigger.posture.value == "Proactive"  # type: ignore[union-attr]


def test_simultaneous_triggers_never_run_twice(stack: Stack, sim: Sim) -> None:
    sim.fault("stall", delay=4.0, path="/v2/positions")
    ids = [trigger() for _ in range(5)]
    runs = wait_final(ids)
    states = [r.state.type for r in runs if r.state]
    assert states.count(StateType.COMPLETED) >= 1
    assert set(states) <= {StateType.COMPLETED, StateType.CANCELLED}
    for r in runs:
        if r.state and r.state.type == StateType.CANCELLED:
            assert "concurrency limit" in (r.state.message or "")
    assert_never_overlapping(runs)


def test_trigger_during_a_scheduled_run_is_cancelled(stack: Stack, sim: Sim) -> None:
    sim.fault("stall", delay=4.0, path="/v2/positions")
    with client() as c:
        deployment = c.read_deployment_by_name(FULL_NAME)
        # What the scheduler creates for a cron slot that is due now.
        scheduled = c.create_flow_run_from_deployment(
            deployment.id, state=Scheduled(scheduled_time=dt.datetime.now(UTC))
        )
    wait_until(lambda: read(scheduled.id).state_type == StateType.RUNNING, 30, "the scheduled run")
    manual = trigger(tags=["manual"])
    first, second = wait_final([scheduled.id, manual])
    assert first.state_type == StateType.COMPLETED
    assert second.state_type == StateType.CANCELLED
    assert "Deployment concurrency limit reached" in (second.state.message or "")  # type: ignore[union-attr]


def test_slot_is_free_again_after_a_failed_run(stack: Stack, sim: Sim) -> None:
    sim.fault("status", status=401, path="/v2/positions")
    (failed,) = wait_final([trigger()])
    assert failed.state_type == StateType.FAILED
    sim.clear_fault()
    (ok,) = wait_final([trigger()])
    assert ok.state_type == StateType.COMPLETED


def test_slot_is_free_again_after_the_flow_process_is_killed(stack: Stack, sim: Sim) -> None:
    sim.fault("stall", delay=60.0, path="/v2/positions")
    run_id = trigger()
    wait_until(lambda: read(run_id).state_type == StateType.RUNNING, 30, "the run to start")
    pid = wait_until(lambda: flow_process_of(stack.runner.pid, str(run_id)), 10, "its process")
    os.kill(pid, signal.SIGKILL)
    (crashed,) = wait_final([run_id], timeout=30)
    assert crashed.state_type == StateType.CRASHED
    sim.clear_fault()
    started = time.monotonic()
    (ok,) = wait_final([trigger()], timeout=60)
    assert ok.state_type == StateType.COMPLETED
    print(f"next run completed {time.monotonic() - started:.1f} s after the kill was reported")
    # The runner ran the crash hook: the run is recorded and journaled as an error.
    with session_factory(stack.url)() as session:
        run = session.scalar(select(SyncRun).where(SyncRun.flow_run_id == str(run_id)))
        assert run is not None and run.status == "crashed"
        assert any(
            e.type == SYSTEM_ERROR and e.flow_run_id == str(run_id) for e in read_events(session, 0)
        )


def test_zombie_run_is_crashed_when_runner_and_flow_die_together(stack: Stack, sim: Sim) -> None:
    sim.fault("stall", delay=300.0, path="/v2/positions")
    run_id = trigger()
    wait_until(lambda: read(run_id).state_type == StateType.RUNNING, 30, "the run to start")
    runner = stack.runner
    pid = wait_until(lambda: flow_process_of(runner.pid, str(run_id)), 10, "its process")
    # Wait for one heartbeat: the automation arms on the first one.
    wait_until(lambda: _heartbeats(run_id), 60, "a heartbeat", interval=1)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    os.killpg(runner.pid, signal.SIGKILL)
    runner.popen.wait(10)
    (crashed,) = wait_final([run_id], timeout=120)
    took = time.monotonic() - killed_at
    print(f"zombie run marked {crashed.state_name} {took:.0f} s after SIGKILL")
    assert crashed.state_type == StateType.CRASHED
    sim.clear_fault()
    stack.start_runner()
    (ok,) = wait_final([trigger()], timeout=60)
    assert ok.state_type == StateType.COMPLETED


def _heartbeats(run_id: UUID) -> bool:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    with client() as c:
        page = c.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
            ),
            limit=10,  # the client's default (100) is over the server's maximum (50)
        )
    return bool(page.events)


@pytest.mark.parametrize("year", [2026, 2027])
def test_every_five_minute_slot_runs_on_both_dst_nights(year: int) -> None:
    """Uses the Prefect server's own schedule computation (what its scheduler calls)."""
    nights = {
        2026: (dt.datetime(2026, 3, 8, 5, tzinfo=UTC), dt.datetime(2026, 11, 1, 4, tzinfo=UTC)),
        2027: (dt.datetime(2027, 3, 14, 5, tzinfo=UTC), dt.datetime(2027, 11, 7, 4, tzinfo=UTC)),
    }[year]
    for start in nights:
        end = start + dt.timedelta(hours=5)
        times: list[dt.datetime] = []
        for schedule in schedules():
            server = ServerCron(
                cron=schedule.cron,  # type: ignore[attr-defined]
                timezone=schedule.timezone,  # type: ignore[attr-defined]
                day_or=schedule.day_or,  # type: ignore[attr-defined]
            )
            times += [d.astimezone(UTC) for d in _dates(server, start, end)]
        expected = [start + dt.timedelta(minutes=5 * i) for i in range(5 * 12 + 1)]
        assert sorted(times) == expected, f"gap or duplicate on the night of {start:%Y-%m-%d}"


def test_fall_back_fill_runs_on_no_other_night() -> None:
    fill = next(s for s in schedules() if s.timezone == "UTC")  # type: ignore[attr-defined]
    server = ServerCron(cron=fill.cron, timezone="UTC", day_or=False)  # type: ignore[attr-defined]
    start = dt.datetime(2026, 11, 2, tzinfo=UTC)
    dates = {d.date() for d in _dates(server, start, start + dt.timedelta(days=400))}
    assert dates == {dt.date(2027, 11, 7)}


def _dates(schedule: ServerCron, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    import asyncio
    import inspect

    result: Any = schedule.get_dates(n=10_000, start=start, end=end)
    if inspect.isawaitable(result):
        result = asyncio.run(result)  # type: ignore[arg-type]
    return [
        dt.datetime.fromisoformat(str(d)) if not isinstance(d, dt.datetime) else d for d in result
    ]

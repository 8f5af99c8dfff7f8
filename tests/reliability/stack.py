"""The served stack the reliability scenarios attack, and what they read back from it.

A real Prefect server (scheduler off: the tests create the scheduled runs themselves, so
no cron run lands mid-scenario), `recon serve` running the deployment, `recon api`, and
the simulated broker; the app database is SQLite or PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
from httpx_sse import connect_sse
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Scheduled
from sqlalchemy import func, select

from recon.store.database import session_factory
from recon.store.journal import read_events
from recon.store.models import PositionEvent, SyncRun
from tests.live import Process, wait_for
from tests.reliability.books import stored_book

FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


@dataclass
class Received:
    id: int
    type: str
    data: dict[str, Any]
    at: dt.datetime  # wall clock at receipt, comparable with Prefect's state timestamps


@dataclass
class Listener:
    """One SSE client on the sidecar's stream, in a thread, recording every event."""

    events: list[Received] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)

    def of(self, type_: str, flow_run_id: UUID | str) -> list[Received]:
        wanted = str(flow_run_id)
        return [e for e in self.events if e.type == type_ and e.data.get("flowRunId") == wanted]


@dataclass
class Stack:
    db: str
    url: str
    base: str
    token: str
    prefect_url: str
    deployment_id: UUID
    runner: Process
    sidecar: Process
    root: Any
    env: dict[str, str]

    # -- the sidecar ---------------------------------------------------------------------

    def api(self, timeout: float = 90) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def trigger(self, *, wait: bool) -> httpx.Response:
        with self.api() as client:
            return client.post("/api/admin/jobs/sync-positions", params={"wait": str(wait).lower()})

    def status(self) -> dict[str, Any]:
        with self.api() as client:
            response = client.get("/api/admin/jobs/status")
        assert response.status_code == 200, response.text
        return response.json()["positionReconciliation"]  # type: ignore[no-any-return]

    @contextmanager
    def listen(self) -> Iterator[Listener]:
        listener = Listener()
        stop = threading.Event()

        def run() -> None:
            with (
                self.api(timeout=300) as client,
                connect_sse(client, "GET", "/api/stream/events") as source,
            ):
                listener.connected.set()
                for event in source.iter_sse():
                    now = dt.datetime.now(dt.UTC)
                    if event.data:  # httpx-sse yields each `: ping` as an empty message
                        data = event.json()
                        listener.events.append(Received(int(event.id), event.event, data, now))
                    if stop.is_set():
                        return

        thread = threading.Thread(target=run, daemon=True, name="sse-listener")
        thread.start()
        assert listener.connected.wait(15), "the stream did not connect"
        try:
            yield listener
        finally:
            stop.set()

    # -- Prefect -------------------------------------------------------------------------

    @contextmanager
    def prefect(self) -> Iterator[SyncPrefectClient]:
        with SyncPrefectClient(self.prefect_url) as client:
            yield client

    def flow_run(self, run_id: UUID | str) -> FlowRun:
        with self.prefect() as client:
            return client.read_flow_run(UUID(str(run_id)))

    def wait_final(self, run_id: UUID | str, timeout: float = 90) -> FlowRun:
        def final() -> FlowRun | None:
            run = self.flow_run(run_id)
            return run if run.state_type in FINAL else None

        return wait_for(final, timeout, f"flow run {run_id} to end", interval=0.25)  # type: ignore[no-any-return]

    def schedule_run(self, delay: float = 1.0) -> FlowRun:
        """What the scheduler creates for the next cron slot, due `delay` seconds from now."""
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
        with self.prefect() as client:
            return client.create_flow_run_from_deployment(
                self.deployment_id, state=Scheduled(scheduled_time=at), tags=["schedule"]
            )

    def deployment_runs(self) -> list[FlowRun]:
        only_ours = FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[self.deployment_id])
        )
        with self.prefect() as client:
            return client.read_flow_runs(
                flow_run_filter=only_ours, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200
            )

    # -- the app database ----------------------------------------------------------------

    def book(self) -> dict[str, Decimal]:
        return stored_book(self.url)

    def journal(self, after: int = 0) -> list[PositionEvent]:
        with session_factory(self.url)() as session:
            return read_events(session, after, limit=100_000)

    def last_event_id(self) -> int:
        with session_factory(self.url)() as session:
            return int(session.scalar(select(func.max(PositionEvent.id))) or 0)

    def sync_runs(self) -> list[SyncRun]:
        with session_factory(self.url)() as session:
            return list(session.scalars(select(SyncRun).order_by(SyncRun.id)))

"""The typed `Stack`: what the end-to-end and reliability tests (and the benchmarks) run.

A real Prefect server (in the tests with its scheduler off: they create the scheduled runs
themselves, so no cron run lands mid-test), `recon serve` running the deployment,
`recon api`, the simulated broker, and an app database, SQLite or PostgreSQL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
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

from flows.zombies import NAME as ZOMBIE_AUTOMATION
from recon.deployment import FULL_NAME
from recon.store.database import session_factory
from recon.store.journal import read_events
from recon.store.models import PositionEvent, SyncRun
from tests.support.books import stored_book
from tests.support.databases import app_database
from tests.support.env import base_env, stack_env
from tests.support.prefect import NO_SCHEDULER, PrefectServer, default_api
from tests.support.process import Process, free_port
from tests.support.sidecar import EVERY_CAPABILITY, Sidecar, create_keys
from tests.support.wait import wait_until

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
class Stack(Sidecar):
    """The sidecar as its own process, with the runner and a Prefect server of its own."""

    prefect_url: str
    deployment_id: UUID
    runner: Process
    sidecar: Process
    root: Path
    env: dict[str, str]  # of `recon serve` and `recon api`

    # -- the processes -------------------------------------------------------------------

    def ready(self) -> UUID | None:
        """The deployment's id once the sidecar answers ready and the deployment and the
        zombie automation (what guards its runs) exist; None before."""
        for process in (self.runner, self.sidecar):
            process.assert_alive()
        try:
            if httpx.get(f"{self.base}/readyz", timeout=2).status_code != 200:
                return None
        except httpx.HTTPError:
            return None
        with self.prefect() as client:
            try:
                deployment = client.read_deployment_by_name(FULL_NAME)
            except Exception:
                return None
            return deployment.id if client.read_automations_by_name(ZOMBIE_AUTOMATION) else None

    def start_runner(self) -> None:
        """A new `recon serve` (after a test killed the last one), once it is serving."""
        self.runner = Process(["cli", "serve"], self.env, self.root / "runner.log")
        wait_until(self.ready, 60, "the runner to register the deployment", interval=0.5)

    def stop(self) -> None:
        self.sidecar.stop()
        self.runner.stop()

    # -- the sidecar ---------------------------------------------------------------------

    def trigger(self, *, wait: bool) -> httpx.Response:
        with self.api() as client:
            return client.post("/api/admin/jobs/sync-positions", params={"wait": str(wait).lower()})

    def status(self) -> dict[str, Any]:
        with self.api() as client:
            response = client.get("/api/admin/jobs/status")
        assert response.status_code == 200, response.text
        return response.json()["positionReconciliation"]  # type: ignore[no-any-return]

    @contextlib.contextmanager
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

    @contextlib.contextmanager
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

        return wait_until(final, timeout, f"flow run {run_id} to end", interval=0.25)

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

    def completed_runs(self, tag: str) -> list[FlowRun]:
        """The deployment's Completed runs that carry `tag` (e.g. a listener's "reconnect")."""
        return [
            r
            for r in self.deployment_runs()
            if tag in r.tags and r.state_type == StateType.COMPLETED
        ]

    def describe_runs(self) -> str:
        """The deployment's runs (state, message, tags, times) and its concurrency slots: what
        an assertion about who holds the slot prints when it fails."""
        lines = []
        with self.prefect() as client:
            limit = client.read_deployment(self.deployment_id).global_concurrency_limit
            if limit is not None:
                lines.append(f"slots: {limit.active_slots}/{limit.limit}")
        for run in self.deployment_runs():
            lines.append(
                f"{run.id} {run.name} {run.state_type} {run.state_name!r} "
                f"{run.state.message if run.state else ''!r} tags={run.tags} "
                f"created={run.created} start={run.start_time} end={run.end_time}"
            )
        return "\n".join(lines)

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


@contextlib.contextmanager
def served_stack(
    root: Path,
    *,
    db: str,
    url: str,
    simulator: Any,
    prefect: PrefectServer | None = None,
    settings: dict[str, str] | None = None,
    keys: dict[str, list[str]] | None = None,
) -> Iterator[Stack]:
    """`recon serve` and `recon api` on the app database `url` (of kind `db`) against the
    running `SimulatorServer` `simulator`, once they are ready; stopped afterwards.

    `prefect`: the server to serve on (default: a new one, scheduler off, stopped after);
    `settings`: environment over `stack_env`'s; `keys`: API keys to create, name to
    capabilities (default one "admin" key with every capability).
    """
    tokens = create_keys(url, keys or {"admin": EVERY_CAPABILITY})
    with contextlib.ExitStack() as cleanup:
        if prefect is None:
            prefect = PrefectServer(root / "home", root, base_env(root / "home") | NO_SCHEDULER)
            cleanup.callback(prefect.stop)
        env = stack_env(root, prefect.api_url, simulator, url) | (settings or {})
        port = free_port()
        runner = Process(["cli", "serve"], env, root / "runner.log")
        cleanup.callback(runner.stop)
        sidecar = Process(["cli", "api", "--port", str(port)], env, root / "sidecar.log")
        cleanup.callback(sidecar.stop)  # callbacks run last-in first-out: sidecar first
        stack = Stack(
            db=db,
            url=url,
            base=f"http://127.0.0.1:{port}",
            tokens=tokens,
            prefect_url=prefect.api_url,
            deployment_id=UUID(int=0),  # until it is served
            runner=runner,
            sidecar=sidecar,
            root=root,
            env=env,
        )
        stack.deployment_id = wait_until(stack.ready, 180, "the served stack", interval=0.5)
        # Runs first: the sidecar, then the runner of the moment (a test may have started
        # a new one); the callbacks above are then no-ops, unless readiness failed.
        cleanup.callback(stack.stop)
        yield stack


@contextlib.contextmanager
def sqlite_stack(
    root: Path, simulator: Any, *, keys: dict[str, list[str]], trigger_wait: int
) -> Iterator[Stack]:
    """A served stack on a new SQLite app database under `root`, this process's Prefect
    client pointed at its server meanwhile: the served and console packages' stack."""
    with (
        app_database("sqlite", root) as url,
        served_stack(
            root,
            db="sqlite",
            url=url,
            simulator=simulator,
            settings={"RECON_TRIGGER_WAIT_SECONDS": str(trigger_wait)},
            keys=keys,
        ) as stack,
        default_api(stack.prefect_url),
    ):
        yield stack

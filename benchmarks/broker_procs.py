"""The processes of one Broker API pass (`benchmarks/broker.py`): a Prefect server of its own
(scheduler off: no cron run lands mid-pass), `recon serve` and K `prefect worker start`
process workers (`recon up --workers K`'s commands), and the sampler of the peak RSS of
the flow-run processes they start."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prefect.client.orchestration import SyncPrefectClient

from benchmarks.common import rss_mb
from benchmarks.cpu import process_seconds
from benchmarks.stack import prefect_server
from recon.deployment import FULL_NAME, SHARD_FULL_NAME, WORK_POOL
from tests.support.prefect import NO_SCHEDULER, PrefectServer
from tests.support.process import Process, children_of, cmdline
from tests.support.wait import wait_until

HEARTBEAT_SECONDS = 30  # RECON_HEARTBEAT_SECONDS' default


@dataclass(eq=False)  # a Thread: hashed by identity
class Peaks(threading.Thread):
    """VmHWM of every child of the watched processes (the flow runs a runner or a worker
    starts), polled from /proc: a child's own high-water mark, by parent and child pid;
    and the CPU seconds of each flow-run child, as last seen."""

    parents: list[int]
    interval: float = 0.25
    peaks: dict[int, dict[int, float]] = field(default_factory=dict)
    commands: dict[int, str] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(name="rss-sampler", daemon=True)

    def run(self) -> None:
        while not self.done.wait(self.interval):
            for parent in self.parents:
                for child in children_of(parent):
                    value = rss_mb(child, "VmHWM")
                    if value is None:
                        continue
                    mine = self.peaks.setdefault(parent, {})
                    mine[child] = max(mine.get(child, 0.0), value)
                    self.commands.setdefault(child, cmdline(child)[:200])
                    if "prefect" in self.commands[child]:
                        seconds = process_seconds(child, reaped=False)
                        self.cpu[child] = max(self.cpu.get(child, 0.0), seconds)

    def stop(self) -> None:
        self.done.set()
        self.join(5)

    def flow_runs(self, parent: int) -> list[float]:
        """The peaks of `parent`'s flow-run processes (`python -m prefect.engine`…), by child."""
        mine = self.peaks.get(parent, {})
        return [mb for pid, mb in mine.items() if "prefect" in self.commands.get(pid, "")]


@dataclass
class Pass:
    prefect: PrefectServer
    runner: Process
    workers: list[Process]
    deployment_id: str

    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(self.prefect.api_url)


def _ready(prefect_url: str, processes: list[Process], workers: int) -> str | None:
    for process in processes:
        process.assert_alive()
    with SyncPrefectClient(prefect_url) as client:
        try:
            deployment = client.read_deployment_by_name(FULL_NAME)
            shard = client.read_deployment_by_name(SHARD_FULL_NAME)
        except Exception:
            return None
        if workers > 1:
            if shard.work_pool_name != WORK_POOL:
                return None
            if len(client.read_workers_for_work_pool(WORK_POOL)) < workers:
                return None
    return str(deployment.id)


@contextlib.contextmanager
def pass_stack(
    home: Path, env: dict[str, str], workers: int, backend: str = "sqlite"
) -> Iterator[Pass]:
    """Everything one pass runs on, ready; stopped afterwards. With one worker the pass is
    not sharded (RECON_SHARDS=1): the parent's own flow-run process, on the runner, maps
    the accounts; with K > 1 the shards go to the K workers on the process pool."""
    with prefect_server(home, backend, NO_SCHEDULER) as prefect:
        yield from _on(prefect, home, env, workers)


def _on(prefect: PrefectServer, home: Path, env: dict[str, str], workers: int) -> Iterator[Pass]:
    processes: list[Process] = []
    try:
        env = env | {"PREFECT_API_URL": prefect.api_url}
        serve = ["cli", "serve", *(["--shard-pool", WORK_POOL] if workers > 1 else [])]
        runner = Process(serve, env, home / "runner.log")
        processes.append(runner)
        # As `recon up --workers` sets them: a 1 s poll, and the flow runs' heartbeats (the
        # zombie automation crashes a shard without them).
        worker_env = env | {
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
        }
        started: list[Process] = []
        for number in range(1, workers + 1 if workers > 1 else 1):
            args = ["prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process"]
            # One flow run at a time per worker, so K shards land on K workers: without a
            # limit one worker's poll may take every shard (seen: 2 shards, one worker).
            args += ["--name", f"bench-worker-{number}", "--limit", "1"]
            started.append(Process(args, worker_env, home / f"worker-{number}.log"))
        processes += started
        found = wait_until(
            lambda: _ready(prefect.api_url, processes, workers), 240, "the pass's stack", 0.5
        )
        yield Pass(prefect, runner, started, found)
    finally:
        for process in reversed(processes):
            process.stop()

"""Children of `recon up` that are restarted when they die instead of stopping the stack.

The fill listener holds a websocket that can fail in ways no retry inside it covers (a
crash, an OOM kill). Restarting it is safe by design: on every connect it runs a full
reconciliation, so what it missed while down is in the book within one run. Restarts back
off (1 s doubling to 30 s) so a listener that cannot start does not spin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import typer

from cli.processes import Child, Children
from recon.deployment import WORK_POOL

LISTENER = "listener"
RESTARTABLE = {LISTENER: ["cli", "listen"]}
MAX_BACKOFF = 30.0
# A child that ran this long before dying starts the backoff afresh.
STABLE_SECONDS = 60.0


@dataclass
class Supervisor:
    children: Children
    restarts: int = 0
    _backoff: dict[str, float] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)
    _envs: dict[str, dict[str, str]] = field(default_factory=dict)
    _args: dict[str, list[str]] = field(default_factory=dict)

    def start(
        self, name: str, *, env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> Child:
        """Start `name` (RESTARTABLE's command, or `args`) with `env`, both kept for its
        restarts. `recon up --workers`' Prefect workers are started so too: a worker that
        dies crashes its shard's run (reported by the parent) and is started again."""
        if env is not None:
            self._envs[name] = env
        if args is not None or name not in self._args:
            self._args[name] = args or RESTARTABLE[name]
        self._started[name] = time.monotonic()
        return self.children.start(name, self._args[name], env=self._envs[name])

    def restart(self, dead: Child) -> bool:
        """Start `dead` again if it is one of ours; False for every other child."""
        if dead.name not in self._args:
            return False
        ran = time.monotonic() - self._started.get(dead.name, 0.0)
        delay = 0.0 if ran >= STABLE_SECONDS else self._backoff.get(dead.name, 1.0)
        self._backoff[dead.name] = min(max(delay, 1.0) * 2, MAX_BACKOFF)
        typer.secho(
            f"{dead.name} exited ({dead.process.returncode}); restarting in {delay:g} s.",
            fg="yellow",
            err=True,
        )
        self.children.started.remove(dead)
        dead.stop()
        time.sleep(delay)
        self.start(dead.name)
        self.restarts += 1
        return True


def start_workers(
    supervisor: Supervisor, count: int, env: dict[str, str], heartbeat_seconds: int
) -> None:
    """`recon up --workers K`: K Prefect process workers on the shards' work pool (created
    by the first that finds it missing, or by `recon serve --shard-pool`). They get the
    runner's environment (their flow runs call the broker and write the book)."""
    worker_env = env | {
        # A shard waits for a worker's poll: 1 s, not the default 10 s.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        # The zombie automation crashes a shard whose process died without a word.
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_seconds),
    }
    for number in range(1, count + 1):
        name = f"worker-{number}"
        # One shard at a time: otherwise the first worker to poll takes several shards and
        # the others idle (seen in the benchmark: one of two workers ran both).
        args = ["prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process"]
        args += ["--limit", "1"]
        supervisor.start(name, env=worker_env, args=[*args, "--name", f"recon-{name}"])

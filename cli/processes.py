"""Child processes of `recon up`: started in their own process group, stopped as a group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path | None = None
    url: str | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole group, then SIGKILL what is left: nothing may outlive `recon up`."""
        if not self.alive():
            _kill_group(self.process.pid, signal.SIGKILL)  # grandchildren of a dead child
            return
        _kill_group(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        _kill_group(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)

    def tail(self, lines: int = 15) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _die_with_parent() -> None:
    """Linux: SIGTERM this child if `recon up` itself is killed (SIGKILL gives it no chance
    to stop its children). A no-op elsewhere."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class Children:
    log_dir: Path
    started: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: list[str],
        *,
        env: dict[str, str],
        to_terminal: bool = False,
        detached: bool = False,
    ) -> Child:
        """Start `python -m <args>` in a new session, so that a Ctrl-C in the terminal
        reaches only `recon up`, which then stops the children in order. Each child gets
        its own `env` (cli/stack_env.py): not every child may see every secret.
        `detached`: the child outlives this process (`recon sync`'s background server)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = None if to_terminal else self.log_dir / f"{name}.log"
        output = None if log is None else log.open("ab")
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            [sys.executable, "-m", *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # One prctl call: safe between fork and exec.
            preexec_fn=None if detached else _die_with_parent,
        )
        if output is not None:
            output.close()
        child = Child(name, process, log)
        self.started.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.started):
            child.stop()

    def first_dead(self) -> Child | None:
        return next((c for c in self.started if not c.alive()), None)


def wait_until(
    ready: Callable[[], bool], *, child: Child, timeout: float, what: str, interval: float = 0.25
) -> None:
    """Poll `ready` until true; fail early, with the child's log, if the child exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not child.alive():
            raise RuntimeError(
                f"{what} exited with code {child.process.returncode}\n{child.tail()}"
            )
        time.sleep(interval)
    raise RuntimeError(f"{what} not ready after {timeout:g} s\n{child.tail()}")


def answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code < 500
        except httpx.HTTPError:
            return False

    return check


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

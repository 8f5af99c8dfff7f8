"""The one child-process wrapper: `python -m ...` of this interpreter, and /proc probes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_module(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m <args>` to completion, its output captured as text; never raises on the
    exit code (the test asserts it)."""
    command = [sys.executable, "-m", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


class Process:
    """A background `python -m <args>` in its own session, so a test can signal it and
    everything it started; its output goes to `log`."""

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> None:
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", *args],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_alive(self) -> None:
        """Fail with the end of its log if it has exited (a wait on it would only time out)."""
        assert self.popen.poll() is None, self.output()[-3000:]

    def signal(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state: an exited child not yet reaped ("Z") cannot be killed.
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def flow_processes(runner_pid: int) -> list[int]:
    """The runner starts each flow run of a served deployment as `python -m prefect.engine`."""
    return [p for p in children_of(runner_pid) if "prefect.engine" in cmdline(p)]


def flow_process_of(runner_pid: int, flow_run_id: str) -> int | None:
    """The process running this flow run: the previous run's process may still be exiting."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for pid in flow_processes(runner_pid):
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid
        except OSError:
            continue
    return None


def processes_with_env(marker: str) -> list[int]:
    """Every live process whose environment holds `marker` (e.g. a unique data dir)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                stat = (environ.parent / "stat").read_text()
                if ") Z " not in stat:  # zombies are already dead
                    found.append(int(environ.parent.name))
        except OSError:
            continue
    return found

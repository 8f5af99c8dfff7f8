"""The processes one end-to-end measurement times: `recon sync --json`, a trigger through the
sidecar, the naive script, and the SSE client that notes each run's `position:updated`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from benchmarks.common import rss_mb

STREAM = "/api/stream/events"


@dataclass
class Message:
    monotonic: float
    wall: float
    size: int  # bytes of the SSE data field
    part: int
    parts: int
    details: int  # entries in its `details` list


class Listener(threading.Thread):
    """One SSE client on the sidecar: every `position:updated` message, by flow run id."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(name="e2e-listener", daemon=True)
        self.base, self.token = base, token
        self.messages: dict[str, list[Message]] = {}
        self.connected = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = httpx.Timeout(10.0, read=120.0)  # pings every 15 s keep it reading
        try:
            with (
                httpx.Client(base_url=self.base, headers=headers, timeout=timeout) as client,
                connect_sse(client, "GET", STREAM) as source,
            ):
                self.connected.set()
                for event in source.iter_sse():
                    if event.event == "position:updated":
                        self._note(event.data)
        except httpx.HTTPError:
            return  # the sidecar stopped

    def _note(self, data: str) -> None:
        at, wall = time.monotonic(), time.time()
        body = json.loads(data)
        message = Message(
            at,
            wall,
            len(data.encode()),
            int(body.get("part", 1)),
            int(body.get("parts", 1)),
            len(body.get("details") or ()),
        )
        self.messages.setdefault(str(body.get("flowRunId")), []).append(message)

    def complete(self, run_id: str) -> list[Message] | None:
        """Every part of this run's event, once all have arrived."""
        got = self.messages.get(run_id, [])
        if got and len({m.part for m in got}) >= got[0].parts:
            return got
        return None


@dataclass
class ProcessRun:
    started_wall: float
    started: float  # monotonic
    seconds: float  # start → exit
    returncode: int
    peak_rss_mb: float  # VmHWM: the process's own high-water mark
    stdout: str

    @property
    def started_pair(self) -> tuple[float, float]:
        return self.started_wall, self.started


def run_process(args: list[str], env: dict[str, str], out: Path, cwd: Path) -> ProcessRun:
    """Start `python <args>`, wait for it, return its output and its peak RSS.

    The peak is VmHWM polled from /proc while it runs (its last reading before exit):
    `wait4`'s ru_maxrss would also count the parent's pages the child was forked with.
    """
    with out.open("w+b") as stdout, (out.with_suffix(".err")).open("wb") as stderr:
        wall, start = time.time(), time.monotonic()
        popen = subprocess.Popen(  # noqa: S603 (our own interpreter and modules)
            [sys.executable, *args], env=env, cwd=cwd, stdout=stdout, stderr=stderr
        )
        peak = [0.0]

        def watch() -> None:
            while popen.returncode is None:
                peak[0] = max(peak[0], rss_mb(popen.pid, "VmHWM") or 0.0)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        popen.wait()
        seconds = time.monotonic() - start
        watcher.join()
        stdout.seek(0)
        text = stdout.read().decode(errors="replace")
    return ProcessRun(wall, start, seconds, popen.returncode, peak[0], text)


def trigger(client: httpx.Client) -> tuple[str, float, float] | None:
    """POST the trigger; (run id, wall, monotonic), or None if a scheduled run holds the slot."""
    wall, start = time.time(), time.monotonic()
    response = client.post("/api/admin/jobs/sync-positions", params={"wait": "false"})
    if response.status_code == 409:
        return None
    if response.status_code != 202:
        raise AssertionError(f"trigger answered {response.status_code}: {response.text}")
    return str(response.json()["flowRunId"]), wall, start


def idle(client: httpx.Client) -> bool:
    job = client.get("/api/admin/jobs/status").json()["positionReconciliation"]
    return not (job["isRunning"] or job.get("isPending"))


def last_json(text: str) -> dict[str, Any]:
    """The JSON object a process printed last (logs may come before it)."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            value: dict[str, Any] = json.loads(line)
            return value
    raise AssertionError(f"no JSON in the output: {text[-2000:]}")

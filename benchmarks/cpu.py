"""CPU time from /proc: of one process tree, of PostgreSQL, of the whole machine.

What a benchmark needs to tell "the pass waited" from "the machine was full": on a 2-core
box the Prefect server, PostgreSQL, the simulator and the flow-run processes share the same
cores, so a pass slower than its floor is either idle somewhere or out of CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_seconds(pid: int, *, reaped: bool = True) -> float:
    """utime + stime of `pid` (and, with `reaped`, of its children it has waited for)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # After the ")": state is [0], utime [11], stime [12], cutime [13], cstime [14].
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_seconds(pid: int) -> float:
    """CPU of `pid`, its reaped children and its live descendants (theirs, not reaped yet)."""
    return process_seconds(pid) + sum(process_seconds(p, reaped=False) for p in descendants(pid))


def postgres_seconds() -> float:
    """CPU of every PostgreSQL process (the postmaster's reaped backends included)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm == "postgres":
            total += process_seconds(int(entry.name))
    return total


@dataclass(frozen=True)
class Machine:
    """Busy and total CPU seconds of every core since boot (/proc/stat)."""

    busy: float
    total: float

    @classmethod
    def now(cls) -> Machine:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return cls(busy=(sum(values[:8]) - idle) / _TICK, total=sum(values[:8]) / _TICK)

    def share_since(self, before: Machine) -> float | None:
        """The share of the machine (every core) busy between `before` and this."""
        elapsed = self.total - before.total
        return (self.busy - before.busy) / elapsed if elapsed > 0 else None

"""Shared pieces: statistics, timing and memory probes, benchmark databases."""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from recon.store.database import engine_for
from tests.support.databases import PG_ADMIN_URL, app_database

DIALECTS = ("sqlite", "postgresql")


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(top: float | None, bottom: float | None) -> float | None:
    """top / bottom, or None when either is missing or zero (a ratio to nothing says nothing)."""
    return top / bottom if top and bottom else None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): with few samples p95/p99 is the maximum."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call, after a full collection so no earlier garbage is billed."""
    gc.collect()
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def peak_memory(call: Callable[[], Any]) -> float:
    """Peak Python-heap bytes (numpy buffers included) allocated during one call, in MB.

    tracemalloc slows allocation-heavy code, so it is run apart from the timed repeats.
    """
    gc.collect()
    tracemalloc.start()
    try:
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 1e6


def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float | None:
    """VmRSS (or VmHWM, the high-water mark) of a process, from /proc, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class Database:
    dialect: str
    url: str  # SQLAlchemy URL (what RECON_DATABASE_URL takes)
    path: Path | None = None  # SQLite file
    schema: str | None = None  # PostgreSQL schema

    @property
    def libpq(self) -> str:
        """The plain libpq URL for psycopg (no SQLAlchemy driver suffix, no search_path)."""
        return PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://", 1)


@contextlib.contextmanager
def database(dialect: str, root: Path, name: str) -> Iterator[Database]:
    """A migrated, empty app database (a SQLite file, or a fresh PostgreSQL schema), removed
    afterwards: the tests' own (`tests.support.databases`)."""
    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}" if dialect == "postgresql" else None
    with app_database(dialect, root, name=name, schema=schema) as url:
        path = None if schema else root / f"{name}.db"
        yield Database(dialect, url, path=path, schema=schema)


def clear_journal(db: Database) -> None:
    """Empty every table a run writes (children first), leaving the schema in place."""
    with engine_for(db.url).begin() as connection:
        for table in ("position_changes", "position_events", "positions", "sync_runs"):
            connection.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608 (fixed names)


def vacuum(db: Database) -> None:
    """Keep dead rows of the previous repeat from billing the next one."""
    engine = engine_for(db.url)
    if db.dialect == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM ANALYZE"))
    else:
        with engine.connect() as connection:
            connection.execute(sa.text("PRAGMA wal_checkpoint(TRUNCATE)"))

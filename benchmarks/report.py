"""The machine, the Markdown tables printed at the end, the JSON written next to them."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sqlite3
import timeit
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

from benchmarks.common import PG_ADMIN_URL


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": _cpuinfo("model name"),
        "memory_gb": round(_meminfo_kb("MemTotal") / 1024**2, 1),
        "python": platform.python_version(),
        # Machines here differ (and are shared): a fixed pure-Python loop to compare them by.
        "reference_loop_s": reference_loop(),
        # Each flow run is a new process; without cached bytecode it compiles its imports.
        "bytecode_compiled": _bytecode_compiled(),
        "sqlite": sqlite3.sqlite_version,
        "packages": {
            p: version(p) for p in ("prefect", "pandas", "sqlalchemy", "psycopg", "alpaca-py")
        },
    }
    try:
        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect() as connection:
            info["postgresql"] = connection.execute(sa.text("SHOW server_version")).scalar()
        engine.dispose()
    except sa.exc.OperationalError:
        info["postgresql"] = None
    return info


def reference_loop() -> float:
    """Best of five: the sum of 10**6 squares in a generator (≈ 0.05 s on a fast core)."""
    return round(min(timeit.repeat("sum(i * i for i in range(10**6))", number=1, repeat=5)), 4)


def _bytecode_compiled() -> bool:
    import prefect.flow_engine as module

    cached = importlib.util.cache_from_source(module.__file__ or "")
    return Path(cached).exists()


def _cpuinfo(key: str) -> str | None:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(key):
            return line.split(":", 1)[1].strip()
    return None


def _meminfo_kb(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def num(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    if value >= 100:
        return f"{value:,.0f}{unit}"
    if value >= 10:
        return f"{value:.1f}{unit}"
    return f"{value:.{digits}f}{unit}" if value >= 0.01 else f"{value:.4f}{unit}"


class Column(NamedTuple):
    header: str
    key: str
    format: Callable[[Any], str]


def _column(spec: list[Any]) -> Column:
    """A column of figures.toml: [header, key] is text; a unit makes it a number."""
    header, key, *number = spec
    if not number:
        return Column(header, key, str)
    unit, digits, scale = number[0], (number[1:2] or [2])[0], (number[2:3] or [1])[0]

    def show(value: Any) -> str:
        return num(None if value is None else value * scale, unit, digits)

    return Column(header, key, show)


def _figures() -> dict[str, tuple[str, list[Column]]]:
    figures = tomllib.loads(Path(__file__).with_name("figures.toml").read_text())
    return {
        name: (figure["title"], [_column(spec) for spec in figure["columns"]])
        for name, figure in figures.items()
    }


FIGURES = _figures()


def tables(rows: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for figure, (title, columns) in FIGURES.items():
        mine = [r for r in rows if r["figure"] == figure and "error" not in r]
        if not mine:
            continue
        out += [f"### {title}", ""]
        out.append("| " + " | ".join(c.header for c in columns) + " |")
        out.append("|" + "---|" * len(columns))
        for row in mine:
            out.append("| " + " | ".join(c.format(row.get(c.key)) for c in columns) + " |")
        out.append("")
    failed = [r for r in rows if "error" in r]
    out += [f"**{r['figure']} on {r['dialect']} failed:** {r['error']}" for r in failed]
    return "\n".join(out)


def write(path: Path, rows: list[dict[str, Any]], options: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "options": options,
        "results": rows,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")

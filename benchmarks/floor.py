"""The floor: read the N local rows and bulk-write the changed ones with the driver alone.

No diffing and no type conversion are timed: which rows changed is known in advance and
every parameter is prepared before the clock starts. What is timed is the I/O any correct
implementation must do: read the book, then in one transaction write the run row, UPDATE the
changed positions, INSERT the new ones, DELETE the removed ones, and write the journal
(one event, one change row per position). sqlite3 `executemany`; psycopg pipelined
`executemany` for UPDATEs, `COPY` for INSERTs and one `DELETE … = ANY(%s)`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg

from benchmarks.common import Database
from benchmarks.data import Record
from recon.position import COLUMNS

_UPDATED = (
    "qty",
    "qty_available",
    "market_value",
    "cost_basis",
    "unrealized_pl",
    "unrealized_intraday_pl",
)
_STAMPS = ("created_at", "updated_at", "refreshed_at")
_CHANGE_COLUMNS = (
    "event_id",
    "account_id",
    "asset_id",
    "symbol",
    "change",
    "fields",
    "created_at",
)


@dataclass(frozen=True)
class FloorPlan:
    account_id: str
    updates: list[tuple[Any, ...]]
    inserts: list[tuple[Any, ...]]
    deletes: list[str]
    changes: list[tuple[Any, ...]]  # without event_id, filled in at run time


def plan(db: Database, book: list[Record], after: list[Record]) -> FloorPlan:
    """Every parameter in the driver's own form, computed before timing."""
    sqlite = db.dialect == "sqlite"
    now: Any = datetime.now(UTC)
    if sqlite:
        now = now.strftime("%Y-%m-%d %H:%M:%S.%f")

    def value(v: Any) -> Any:
        return format(v, "f") if sqlite and isinstance(v, Decimal) else v

    old = {r["asset_id"]: r for r in book}
    new_ids = {r["asset_id"] for r in after}
    account_id = book[0]["account_id"]
    updates, inserts, changes = [], [], []
    for r in after:
        before = old.get(r["asset_id"])
        if before is None:
            inserts.append((*(value(r[c]) for c in COLUMNS), now, now, now))
            fields = {c: {"before": None, "after": str(r[c])} for c in ("symbol", "qty")}
        elif before["qty"] != r["qty"]:
            updates.append((*(value(r[c]) for c in _UPDATED), now, now, account_id, r["asset_id"]))
            fields = {"qty": {"before": str(before["qty"]), "after": str(r["qty"])}}
        else:
            continue
        kind = "created" if before is None else "updated"
        changes.append((account_id, r["asset_id"], r["symbol"], kind, json.dumps(fields), now))
    deletes = [a for a in old if a not in new_ids]
    for asset_id in deletes:
        fields = {"qty": {"before": str(old[asset_id]["qty"]), "after": None}}
        symbol = old[asset_id]["symbol"]
        changes.append((account_id, asset_id, symbol, "removed", json.dumps(fields), now))
    return FloorPlan(account_id, updates, inserts, deletes, changes)


_SELECT = f"SELECT {', '.join(COLUMNS)} FROM positions WHERE account_id = ?"  # noqa: S608
_SET = ", ".join(f"{c} = ?" for c in (*_UPDATED, "updated_at", "refreshed_at"))
_UPDATE = f"UPDATE positions SET {_SET} WHERE account_id = ? AND asset_id = ?"  # noqa: S608
_RUN = (
    "INSERT INTO sync_runs (account_id, status, started_at, finished_at, created_count,"
    " updated_count, removed_count, unchanged_count, error_count)"
    " VALUES (?, 'completed', ?, ?, ?, ?, ?, 0, 0) RETURNING id"
)
_EVENT = (
    "INSERT INTO position_events (type, account_id, sync_run_id, payload, created_at)"
    " VALUES ('position:updated', ?, ?, ?, ?) RETURNING id"
)


def run_floor(db: Database, fp: FloorPlan) -> int:
    """Returns the number of rows read."""
    if db.dialect == "sqlite":
        return _sqlite(db, fp)
    return _postgres(db, fp)


def _counts(fp: FloorPlan, now: Any) -> tuple[Any, ...]:
    return (fp.account_id, now, now, len(fp.inserts), len(fp.updates), len(fp.deletes))


def _sqlite(db: Database, fp: FloorPlan) -> int:
    conn = sqlite3.connect(str(db.path), isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        rows = conn.execute(_SELECT, (fp.account_id,)).fetchall()
        now = fp.changes[0][-1]
        conn.execute("BEGIN IMMEDIATE")
        run_id = conn.execute(_RUN, _counts(fp, now)).fetchone()[0]
        conn.executemany(_UPDATE, fp.updates)
        marks = ", ".join("?" * (len(COLUMNS) + len(_STAMPS)))
        names = ", ".join((*COLUMNS, *_STAMPS))
        conn.executemany(f"INSERT INTO positions ({names}) VALUES ({marks})", fp.inserts)  # noqa: S608
        conn.executemany(
            "DELETE FROM positions WHERE account_id = ? AND asset_id = ?",
            [(fp.account_id, a) for a in fp.deletes],
        )
        event_id = conn.execute(_EVENT, (fp.account_id, run_id, "{}", now)).fetchone()[0]
        marks = ", ".join("?" * len(_CHANGE_COLUMNS))
        conn.executemany(
            f"INSERT INTO position_changes ({', '.join(_CHANGE_COLUMNS)}) VALUES ({marks})",  # noqa: S608
            [(event_id, *c) for c in fp.changes],
        )
        conn.execute("COMMIT")
        return len(rows)
    finally:
        conn.close()


def _postgres(db: Database, fp: FloorPlan) -> int:
    def pg(sql: str) -> str:
        return sql.replace("?", "%s")

    options = f"-csearch_path={db.schema}"
    with psycopg.connect(db.libpq, options=options) as conn, conn.cursor() as cur:
        rows = cur.execute(pg(_SELECT), (fp.account_id,)).fetchall()
        conn.commit()
        now = fp.changes[0][-1]
        run_id = cur.execute(pg(_RUN), _counts(fp, now)).fetchone()[0]  # type: ignore[index]
        cur.executemany(pg(_UPDATE), fp.updates)
        with cur.copy(f"COPY positions ({', '.join((*COLUMNS, *_STAMPS))}) FROM STDIN") as copy:
            for row in fp.inserts:
                copy.write_row(row)
        cur.execute(
            "DELETE FROM positions WHERE account_id = %s AND asset_id = ANY(%s)",
            (fp.account_id, fp.deletes),
        )
        event = cur.execute(pg(_EVENT), (fp.account_id, run_id, "{}", now)).fetchone()
        with cur.copy(f"COPY position_changes ({', '.join(_CHANGE_COLUMNS)}) FROM STDIN") as copy:
            for change in fp.changes:
                copy.write_row((event[0], *change))  # type: ignore[index]
        conn.commit()
        return len(rows)

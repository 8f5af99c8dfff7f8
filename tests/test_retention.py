"""`recon db prune` on a journal of 1,000,000 rows, on SQLite and PostgreSQL, while a writer
appends to the journal: what must stay stays, foreign keys hold, no batch holds its locks
for long (figures in docs/reliability.md, Journal retention)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from recon.store.database import engine_for
from recon.store.journal import SYSTEM_ERROR, append_event
from recon.store.models import Position
from recon.store.retention import REPLAY_WINDOW_EVENTS, oldest_change_at, prune_journal

RUNS = 1_000
EVENTS = 499_500  # one change each: 1,000 + 2 x 499,500 = 1,000,000 journal rows
ASSETS = 500
STEP_SECONDS = 17  # 499,000 events over ≈ 98 days
END = datetime(2026, 12, 1, tzinfo=UTC)
START = END - timedelta(seconds=EVENTS * STEP_SECONDS)
# Ten assets changed once, in the first hours only: their latest change is ancient.
OLD_ASSET = "CASE WHEN i <= 1000 AND i % 100 = 0 THEN 'old-' || i ELSE 'asset-' || (i % 500) END"


def _run_of(step: str) -> str:
    return f"(({step}) * {RUNS} / {EVENTS} + 1)"


def _fill_sqlite(connection: sa.Connection) -> None:
    def at(seconds: str) -> str:
        start = f"'{START:%Y-%m-%d %H:%M:%S}'"
        return f"strftime('%Y-%m-%d %H:%M:%S', {start}, '+' || ({seconds}) || ' seconds')" + (
            " || '.000000'"
        )

    def series(count: int) -> str:
        return f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})"

    connection.exec_driver_sql(
        f"{series(RUNS)} INSERT INTO sync_runs (id, account_id, status, started_at, finished_at,"
        " created_count, updated_count, removed_count, unchanged_count, error_count)"
        f" SELECT i, 'acct', 'completed', {at(f'i * {EVENTS // RUNS * STEP_SECONDS} - 60')},"
        f" {at(f'i * {EVENTS // RUNS * STEP_SECONDS}')}, 0, 1, 0, 0, 0 FROM n"
    )
    connection.exec_driver_sql(
        f"{series(EVENTS)} INSERT INTO position_events (id, type, account_id, sync_run_id,"
        " payload, created_at)"
        f" SELECT i, 'position:updated', 'acct', {_run_of('i - 1')}, '{{}}',"
        f" {at(f'i * {STEP_SECONDS}')} FROM n"
    )
    asset = OLD_ASSET
    connection.exec_driver_sql(
        f"{series(EVENTS)} INSERT INTO position_changes (id, event_id, account_id, asset_id,"
        " symbol, change, fields, created_at)"
        f" SELECT i, i, 'acct', {asset}, upper({asset}), 'updated', '{{}}',"
        f" {at(f'i * {STEP_SECONDS}')} FROM n"
    )


def _fill_postgresql(connection: sa.Connection) -> None:
    def at(seconds: str) -> str:
        return f"(TIMESTAMPTZ '{START.isoformat()}' + ({seconds}) * INTERVAL '1 second')"

    def series(count: int) -> str:
        return f"FROM generate_series(1, {count}) AS i"

    connection.exec_driver_sql(
        "INSERT INTO sync_runs (id, account_id, status, started_at, finished_at,"
        " created_count, updated_count, removed_count, unchanged_count, error_count)"
        f" OVERRIDING SYSTEM VALUE SELECT i, 'acct', 'completed',"
        f" {at(f'i * {EVENTS // RUNS * STEP_SECONDS} - 60')},"
        f" {at(f'i * {EVENTS // RUNS * STEP_SECONDS}')}, 0, 1, 0, 0, 0 {series(RUNS)}"
    )
    connection.exec_driver_sql(
        "INSERT INTO position_events (id, type, account_id, sync_run_id, payload, created_at)"
        f" OVERRIDING SYSTEM VALUE SELECT i, 'position:updated', 'acct', {_run_of('i - 1')},"
        f" '{{}}'::jsonb, {at(f'i * {STEP_SECONDS}')} {series(EVENTS)}"
    )
    asset = OLD_ASSET.replace("%", "%%")  # psycopg's placeholders
    connection.exec_driver_sql(
        "INSERT INTO position_changes (id, event_id, account_id, asset_id, symbol, change,"
        f" fields, created_at) OVERRIDING SYSTEM VALUE SELECT i, i, 'acct', {asset},"
        f" upper({asset}), 'updated', '{{}}'::jsonb, {at(f'i * {STEP_SECONDS}')} {series(EVENTS)}"
    )
    for table in ("sync_runs", "position_events", "position_changes"):
        connection.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        )
        connection.exec_driver_sql(f"ANALYZE {table}")


def _book_row_on_run_one(connection: sa.Connection) -> None:
    """A position last written by the first (ancient) run: that run must stay."""
    zero = Decimal("0")
    connection.execute(
        sa.insert(Position).values(
            account_id="acct",
            asset_id="asset-1",
            symbol="ASSET-1",
            exchange="NASDAQ",
            asset_class="us_equity",
            side="long",
            qty=Decimal("1"),
            avg_entry_price=zero,
            cost_basis=zero,
            created_at=START,
            updated_at=START,
            refreshed_at=START,
            sync_run_id=1,
        )
    )


AFTER = {
    "changes newer": "SELECT count(*) FROM position_changes WHERE created_at >= :c",
    "changes older": "SELECT count(*) FROM position_changes WHERE created_at < :c",
    "events older": "SELECT count(*) FROM position_events WHERE created_at < :c",
    "events": "SELECT count(*) FROM position_events",
    "run 1": "SELECT count(*) FROM sync_runs WHERE id = 1",
    "changes without their event": "SELECT count(*) FROM position_changes c WHERE NOT EXISTS"
    " (SELECT 1 FROM position_events e WHERE e.id = c.event_id)",
    "events without their run": "SELECT count(*) FROM position_events e WHERE sync_run_id"
    " IS NOT NULL AND NOT EXISTS (SELECT 1 FROM sync_runs r WHERE r.id = e.sync_run_id)",
}


def _count(connection: sa.Connection, sql: str, **params: object) -> int:
    return int(connection.execute(sa.text(sql), params).scalar_one())


class _Writer(threading.Thread):
    """Appends a journal event every 20 ms (its own transaction) and times each commit."""

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(daemon=True)
        self.sessions = sessionmaker(engine)
        self.stop = threading.Event()
        self.longest = 0.0
        self.written: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                began = time.monotonic()
                with self.sessions.begin() as session:
                    self.written.append(
                        append_event(session, type=SYSTEM_ERROR, payload={"n": len(self.written)})
                    )
                self.longest = max(self.longest, time.monotonic() - began)
                self.stop.wait(0.02)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_prune_a_million_row_journal(database_url: str) -> None:
    engine = engine_for(database_url)
    kind = engine.dialect.name
    began = time.monotonic()
    with engine.begin() as connection:
        (_fill_sqlite if kind == "sqlite" else _fill_postgresql)(connection)
        _book_row_on_run_one(connection)
    filled = time.monotonic() - began
    cutoff = END - timedelta(days=30)
    with engine.connect() as connection:
        total = _count(
            connection,
            "SELECT (SELECT count(*) FROM sync_runs)"
            " + (SELECT count(*) FROM position_events)"
            " + (SELECT count(*) FROM position_changes)",
        )
        assert total == 1_000_000
        newer = {
            table: _count(
                connection, f"SELECT count(*) FROM {table} WHERE created_at >= :c", c=cutoff
            )
            for table in ("position_changes", "position_events")
        }

    writer = _Writer(engine)
    writer.start()
    try:
        result = prune_journal(engine, 30, now=END)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None, writer.error
    print(
        f"\n{kind}: filled 1,000,000 rows in {filled:.1f} s; pruned {result.deleted} in"
        f" {result.seconds:.1f} s, {sum(t.batches for t in result.tables)} batches, longest"
        f" batch {result.longest_batch_seconds * 1000:.0f} ms; the writer's longest commit"
        f" {writer.longest * 1000:.0f} ms over {len(writer.written)} appends"
    )
    deleted = {t.table: t.deleted for t in result.tables}
    old_assets = 10
    with engine.connect() as connection:
        after = {name: _count(connection, sql, c=cutoff) for name, sql in AFTER.items()}
    assert after == {
        "changes newer": newer["position_changes"],  # newer rows all stay
        "changes older": old_assets,  # each old asset's one (latest) change
        "events older": old_assets,  # the events of those changes
        "events": newer["position_events"] + old_assets + len(writer.written),
        "run 1": 1,  # a book row points at it
        "changes without their event": 0,  # foreign keys hold
        "events without their run": 0,
    }
    assert deleted["position_changes"] == EVENTS - newer["position_changes"] - old_assets
    assert deleted["sync_runs"] > RUNS // 2
    with sessionmaker(engine)() as session:
        assert oldest_change_at(session, ["old-100"]) == START + timedelta(
            seconds=100 * STEP_SECONDS
        )
        assert oldest_change_at(session, ["asset-7"]) >= cutoff  # type: ignore[operator]
    # What a sync can wait for: a batch of changes or events (PostgreSQL's run batches lock
    # only old rows nobody writes; each run costs a scan of the events, recon/store/retention).
    for table in result.tables:
        print(
            f"  {table.table}: {table.deleted} in {table.batches} batches, longest"
            f" {table.longest_batch_seconds * 1000:.0f} ms"
        )
        if table.table != "sync_runs" or kind == "sqlite":
            assert table.longest_batch_seconds < 2.0
    assert writer.longest < 3.0

    # Everything is older now: the replay window and each asset's latest change remain.
    again = prune_journal(engine, 0, now=datetime.now(UTC) + timedelta(days=1))
    with engine.connect() as connection:
        assert _count(connection, "SELECT count(*) FROM position_changes") == ASSETS + old_assets
        events = _count(connection, "SELECT count(*) FROM position_events")
        window = REPLAY_WINDOW_EVENTS
        assert window <= events <= window + ASSETS + old_assets
        newest = _count(connection, "SELECT max(id) FROM position_events")
        above = "SELECT count(*) FROM position_events WHERE id > :f"
        assert _count(connection, above, f=newest - window) == window
    print(f"{kind}: second prune (keep 0 days) {again.deleted} rows in {again.seconds:.1f} s")

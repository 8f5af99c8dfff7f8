"""`recon db backup` / `recon db prune` as an operator runs them (a real subprocess), and a
`.env` RECON_DATA_DIR moving Prefect's home with the database."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from recon.store.backup import libpq_env
from recon.store.database import engine_for, upgrade
from recon.store.journal import POSITION_UPDATED, SYSTEM_ERROR, append_event
from recon.store.models import Base
from recon.store.writer import record_failure
from tests.support.databases import PG_ADMIN_URL
from tests.support.env import OURS, scrubbed_env
from tests.support.process import run_module

TABLES = [*Base.metadata.sorted_tables]


def recon(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = scrubbed_env((*OURS, "PREFECT_")) | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return run_module("cli", *args, env=base | env, cwd=cwd)


def _journal(url: str, runs: int) -> None:
    """Runs with events and changes, through the writers the flow uses."""
    sessions = sa.orm.sessionmaker(engine_for(url))
    for n in range(runs):
        record_failure(
            sessions,
            flow_run_id=f"run-{n}",
            started_at=datetime.now(UTC),
            reason=f"failure {n} ünïcode",
        )
        with sessions.begin() as session:
            append_event(session, type=POSITION_UPDATED, payload={"n": n, "qty": "1.000000001"})
            append_event(session, type=SYSTEM_ERROR, payload={"error": "x" * 300})


def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(url) if url.startswith("sqlite") else engine_for(url)
    with engine.connect() as connection:
        dump = {
            t.name: [tuple(r) for r in connection.execute(sa.select(t).order_by(*t.primary_key))]
            for t in TABLES
        }
        dump["alembic_version"] = list(
            connection.execute(sa.text("SELECT version_num FROM alembic_version"))
        )
    engine.dispose()
    return dump


def test_dotenv_data_dir_moves_prefect_home_with_the_database(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RECON_DATA_DIR=elsewhere\n")
    done = recon("db", "upgrade", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "elsewhere" / "recon.db").is_file()
    assert (tmp_path / "elsewhere" / "prefect").is_dir()  # PREFECT_HOME followed it
    assert not (tmp_path / ".recon").exists()


def test_backup_of_a_live_sqlite_database_restores_every_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(url)
    # A second connection keeps the WAL from being checkpointed into the main file: a copy
    # of `recon.db` alone would miss these commits.
    holder = sqlite3.connect(tmp_path / "recon.db")
    holder.execute("PRAGMA wal_autocheckpoint=0")
    holder.execute("BEGIN")
    holder.execute("SELECT count(*) FROM position_events").fetchall()  # an open read
    try:
        _journal(url, 30)
        assert (tmp_path / "recon.db-wal").stat().st_size > 0
        done = recon(
            "db", "backup", str(tmp_path / "backup.db"), cwd=tmp_path, RECON_DATABASE_URL=url
        )
        assert done.returncode == 0, done.stderr
        again = recon(
            "db", "backup", str(tmp_path / "backup.db"), cwd=tmp_path, RECON_DATABASE_URL=url
        )
        assert again.returncode == 1
        assert "exists" in again.stderr
    finally:
        holder.rollback()
        holder.close()
    # Restore: the backup file put in place of the database (the service stopped).
    restored = tmp_path / "restored" / "recon.db"
    restored.parent.mkdir()
    shutil.copyfile(tmp_path / "backup.db", restored)
    assert (tmp_path / "backup.db").stat().st_mode & 0o077 == 0
    source, copy = _dump(url), _dump(f"sqlite:///{restored}")
    assert sum(len(rows) for rows in source.values()) > 60
    assert copy == source


@pytest.fixture
def pg_database() -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL databases: the one backed up (migrated) and the restore target."""
    if shutil.which("pg_dump") is None or shutil.which("psql") is None:
        pytest.skip("pg_dump / psql are not on PATH")
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"recon_backup_{uuid.uuid4().hex[:8]}", f"recon_restore_{uuid.uuid4().hex[:8]}"]
    with admin.connect() as connection:
        for name in names:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    urls = [make_url(PG_ADMIN_URL).set(database=name).render_as_string(False) for name in names]
    try:
        yield urls[0], urls[1]
    finally:
        for url in urls:
            engine_for(url).dispose()
        with admin.connect() as connection:
            for name in names:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_pg_dump_backup_restores_into_a_fresh_database(
    pg_database: tuple[str, str], tmp_path: Path
) -> None:
    url, target = pg_database
    upgrade(url)
    _journal(url, 30)
    dump = tmp_path / "recon.sql"
    done = recon("db", "backup", str(dump), cwd=tmp_path, RECON_DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    uri, env = libpq_env(make_url(target))
    restored = subprocess.run(
        ["psql", "--quiet", "-v", "ON_ERROR_STOP=1", "--file", str(dump), "--dbname", uri],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert restored.returncode == 0, restored.stderr
    assert _dump(target) == _dump(url)
    # The restored journal goes on: its id sequence continues after the last row.
    sessions = sa.orm.sessionmaker(engine_for(target))
    with sessions.begin() as session:
        new_id = append_event(session, type=SYSTEM_ERROR, payload={})
    assert new_id > max(row[0] for row in _dump(url)["position_events"])


def test_prune_from_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(url)
    _journal(url, 3)
    old = datetime.now(UTC) - timedelta(days=40)
    with engine_for(url).begin() as connection:
        connection.execute(sa.text("UPDATE position_events SET created_at = :t"), {"t": old})
        connection.execute(sa.text("UPDATE sync_runs SET finished_at = :t"), {"t": old})
    done = recon("db", "prune", "--keep-days", "30", "--json", cwd=tmp_path, RECON_DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [t["table"] for t in result["tables"]] == [
        "position_changes",
        "position_events",
        "sync_runs",
    ]
    # 9 events, all inside the replay window (the newest 10,000 always stay); the runs
    # they point at stay with them.
    assert [t["deleted"] for t in result["tables"]] == [0, 0, 0]
    assert recon("db", "prune", "--keep-days", "-1", cwd=tmp_path).returncode == 2

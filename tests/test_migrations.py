"""Migrations: Alembic brings any database to head, and a database already there is left
to a single query (the flow calls `upgrade` at the start of every run)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from recon.store.database import HEAD_REVISION, MIGRATIONS, current_revision, engine_for, upgrade

ROOT = Path(__file__).resolve().parent.parent


def _config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def test_head_revision_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_a_fresh_database_is_migrated_to_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    assert current_revision(url) == HEAD_REVISION
    tables = sa.inspect(engine_for(url)).get_table_names()
    assert "api_keys" in tables and "audit" in tables


def test_an_older_database_is_brought_to_head(database_url: str) -> None:
    with engine_for(database_url).begin() as connection:
        command.downgrade(_config(connection), "0001")
    assert current_revision(database_url) == "0001"
    assert "api_keys" not in sa.inspect(engine_for(database_url)).get_table_names()

    upgrade(database_url)

    assert current_revision(database_url) == HEAD_REVISION
    assert "api_keys" in sa.inspect(engine_for(database_url)).get_table_names()


def test_a_database_at_head_is_not_handed_to_alembic(database_url: str) -> None:
    # A new process, as a flow run is: after `upgrade`, Alembic was never imported.
    probe = textwrap.dedent(
        f"""
        import sys
        from recon.store.database import upgrade
        upgrade({database_url!r})
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("alembic", "mako")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert current_revision(database_url) == HEAD_REVISION

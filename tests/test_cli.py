"""`recon` as an operator runs it: a real subprocess against the test Prefect API and simulator."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from tests.sim import Sim
from tests.support.env import scrubbed_env
from tests.support.process import run_module

pytestmark = pytest.mark.usefixtures("prefect_server")


def recon(*args: str, extra_env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = scrubbed_env() | {"PREFECT_API_URL": str(PREFECT_API_URL.value()), **extra_env}
    return run_module("cli", *args, env=env, cwd=cwd)


def sim_env(sim: Sim, database_url: str) -> dict[str, str]:
    return {
        "ALPACA_BASE_URL": sim.base_url,
        "ALPACA_API_KEY": sim.api_key,
        "ALPACA_SECRET_KEY": sim.secret_key,
        "RECON_DATABASE_URL": database_url,
        "RECON_FETCH_BACKOFF_SECONDS": "0.05",
    }


def test_sync_json_prints_one_object_with_decimal_strings(
    sim: Sim, database_url: str, tmp_path: Path
) -> None:
    done = recon("sync", "--json", extra_env=sim_env(sim, database_url), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["summary"]["createdCount"] == len(result["created"]) > 0
    quantities = [d["fields"]["qty"]["after"] for d in result["details"]]
    assert all(isinstance(q, str) for q in quantities)
    assert any("." in q for q in quantities)  # fractional shares came through as text

    again = recon("sync", extra_env=sim_env(sim, database_url), cwd=tmp_path)
    assert again.returncode == 0
    assert "0 changes" in again.stdout


def test_sync_exits_non_zero_with_the_reason(sim: Sim, database_url: str, tmp_path: Path) -> None:
    sim.fault("status", status=401)
    done = recon("sync", extra_env=sim_env(sim, database_url), cwd=tmp_path)
    assert done.returncode == 1
    assert "request is not authorized" in done.stderr
    assert sim.secret_key not in done.stderr + done.stdout


def test_sync_without_keys_says_what_is_missing(database_url: str, tmp_path: Path) -> None:
    done = recon("sync", extra_env={"RECON_DATABASE_URL": database_url}, cwd=tmp_path)
    assert done.returncode == 1
    assert "ALPACA_API_KEY" in done.stderr


def test_db_upgrade_reports_the_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    done = recon("db", "upgrade", extra_env={"RECON_DATABASE_URL": url}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from recon.store.database import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert f"revision {head}" in done.stdout


def test_sync_dry_run_reports_and_writes_nothing(
    sim: Sim, database_url: str, tmp_path: Path
) -> None:
    from sqlalchemy import func, select

    from recon.store.database import session_factory
    from recon.store.models import AuditEntry, Position, PositionEvent, SyncRun

    done = recon("sync", "--dry-run", "--json", extra_env=sim_env(sim, database_url), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    preview = json.loads(done.stdout)
    assert preview["dryRun"] is True and preview["refused"] is None
    assert preview["summary"]["createdCount"] == len(preview["created"]) > 0
    assert preview["syncRunId"] is None and preview["eventId"] is None
    with session_factory(database_url)() as session:
        for table in (Position, PositionEvent, SyncRun):
            assert session.scalar(select(func.count()).select_from(table)) == 0, table
        (audit,) = session.scalars(select(AuditEntry)).all()
    assert (audit.actor, audit.action, audit.detail["dryRun"]) == ("cli", "preview", True)

    text = recon("sync", "--dry-run", extra_env=sim_env(sim, database_url), cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("PREVIEW (nothing written)")
    assert "would apply" in text.stdout

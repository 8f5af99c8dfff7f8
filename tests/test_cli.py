"""`recon` as an operator runs it: a real subprocess against the test Prefect API and simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from tests.sim import Sim

pytestmark = pytest.mark.usefixtures("prefect_server")


def recon(*args: str, extra_env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPACA_", "RECON_"))}
    env |= {"PREFECT_API_URL": str(PREFECT_API_URL.value()), **extra_env}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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

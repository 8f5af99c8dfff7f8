"""`recon keys` as an operator runs it (a real subprocess) against SQLite and PostgreSQL:
expiring keys and changing a key's capabilities; and `recon up`'s admin-token file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from cli.token_file import TOKEN_FILE, write_token_file
from recon.keys import authenticate
from recon.store.database import session_factory
from recon.store.models import ApiKey


def keys(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPACA_", "RECON_"))}
    env["RECON_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "cli", "keys", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_key_can_expire(database_url: str, tmp_path: Path) -> None:
    made = keys(
        "create", "temp", "--cap", "events:read", "--expires-in", "12h",
        database_url=database_url, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    with session_factory(database_url)() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.name == "temp")).one()
        assert key.expires_at is not None
        left = key.expires_at - datetime.now(UTC)
        assert timedelta(hours=11, minutes=59) < left <= timedelta(hours=12)
        assert authenticate(session, token) is not None
    listed = keys("list", database_url=database_url, cwd=tmp_path)
    assert f"expires {key.expires_at:%Y-%m-%d %H:%M}" in listed.stdout
    with session_factory(database_url).begin() as session:  # twelve hours pass
        session.execute(update(ApiKey).values(expires_at=datetime.now(UTC)))
    with session_factory(database_url)() as session:
        assert authenticate(session, token) is None


@pytest.mark.parametrize("duration", ["0h", "12", "1y", "-3d", "h"])
def test_an_expiry_must_be_a_positive_duration(
    database_url: str, tmp_path: Path, duration: str
) -> None:
    made = keys(
        "create", "temp", "--cap", "events:read", "--expires-in", duration,
        database_url=database_url, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 2
    assert "is not a duration like 30m, 12h or 90d" in made.stderr
    assert made.stdout == ""
    with session_factory(database_url)() as session:
        assert session.scalars(select(ApiKey)).all() == []


def test_a_key_without_expiry_lives_until_revoked(database_url: str, tmp_path: Path) -> None:
    made = keys("create", "forever", "--cap", "admin:read", database_url=database_url, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    with session_factory(database_url)() as session:
        key = session.scalars(select(ApiKey)).one()
        assert key.expires_at is None
        assert authenticate(session, made.stdout.strip()) is not None


def test_caps_replaces_a_keys_capabilities(database_url: str, tmp_path: Path) -> None:
    made = keys(
        "create", "ui", "--cap", "events:read", "--cap", "admin:read",
        database_url=database_url, cwd=tmp_path,
    )  # fmt: skip
    token = made.stdout.strip()
    changed = keys("caps", "ui", "--cap", "admin:read", database_url=database_url, cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == "ui: admin:read"
    with session_factory(database_url)() as session:
        principal = authenticate(session, token)
        assert principal is not None and principal.capabilities == {"admin:read"}
    unknown = keys("caps", "nobody", "--cap", "admin:read", database_url=database_url, cwd=tmp_path)
    assert unknown.returncode == 2 and "no key named 'nobody'" in unknown.stderr
    bad = keys("caps", "ui", "--cap", "root", database_url=database_url, cwd=tmp_path)
    assert bad.returncode == 2 and "unknown capability root" in bad.stderr


def test_the_admin_token_file_is_owner_only_even_over_an_older_file(tmp_path: Path) -> None:
    older = tmp_path / TOKEN_FILE
    older.write_text("rk_old\n")
    older.chmod(0o644)
    written = write_token_file(tmp_path, "rk_new")
    assert written == older
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert written.read_text() == "rk_new\n"

"""`recon db backup`: a consistent copy of the app database while it is in use.

SQLite runs in WAL mode: the main file alone misses every commit not yet checkpointed, and
copying it while a run writes can tear it. `VACUUM INTO` writes a complete, compacted
database from one read transaction instead (writers go on meanwhile). PostgreSQL is backed
up by its own `pg_dump` (plain SQL; restore with `psql`), the password passed in the
environment, never on the command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from recon.errors import ConfigurationError
from recon.store.database import engine_for


def backup_database(url: str, target: Path) -> Path:
    """Write a backup of the database at `url` to `target` (which must not exist)."""
    target = target.resolve()
    if target.exists():
        raise ConfigurationError(f"{target} exists: give a new path")
    target.parent.mkdir(parents=True, exist_ok=True)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = engine_for(url).execution_options(isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:  # VACUUM cannot run inside a transaction
            connection.execute(text("VACUUM INTO :target"), {"target": str(target)})
        target.chmod(0o600)
        return target
    if parsed.get_backend_name() == "postgresql":
        _pg_dump(parsed, target)
        return target
    raise ConfigurationError(f"no backup for {parsed.get_backend_name()} databases")


def libpq_env(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and the environment that carries it."""
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    bare = url.set(drivername="postgresql", password=None)
    return bare.render_as_string(hide_password=False), env


def _pg_dump(url: URL, target: Path) -> None:
    binary = shutil.which("pg_dump")
    if binary is None:
        raise ConfigurationError(
            "pg_dump is not on PATH: install the PostgreSQL client tools of the server's "
            "major version (or run pg_dump where they are; docs/operations.md)"
        )
    uri, env = libpq_env(url)
    done = subprocess.run(  # noqa: S603 - a fixed binary and our own arguments
        [binary, "--format=plain", "--no-owner", "--file", str(target), "--dbname", uri],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        target.unlink(missing_ok=True)
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise ConfigurationError(f"pg_dump failed (exit {done.returncode}): {first}")
    target.chmod(0o600)

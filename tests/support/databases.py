"""A migrated, empty app database: a SQLite file, or a PostgreSQL schema of its own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from recon.store.database import engine_for, upgrade

PG_ADMIN_URL = os.environ.get(
    "RECON_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

# The two dialects every store test runs on (`pytest -m "not postgres"` skips the second).
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def postgres_schema_url(schema: str) -> str:
    return f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"


@contextmanager
def app_database(
    kind: str, root: Path, *, name: str = "recon", schema: str | None = None
) -> Iterator[str]:
    """A migrated, empty app database, removed afterwards: the SQLite file `root/name.db`,
    or a fresh PostgreSQL schema (`schema`, or a random one), dropped with its rows.
    Yields its URL."""
    if kind == "sqlite":
        url = f"sqlite:///{root / f'{name}.db'}"
        upgrade(url)
        try:
            yield url
        finally:
            engine_for(url).dispose()
        return
    schema = schema or f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = postgres_schema_url(schema)
    try:
        upgrade(url)
        yield url
    finally:
        engine_for(url).dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

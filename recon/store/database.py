"""Engines, sessions and migrations for the app database (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from recon.errors import StoreError
from recon.store.types import dumps

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration's revision (tests check it against Alembic's own head). A database
# already there needs no Alembic at all: importing it and loading the scripts costs a new
# flow process ≈ 0.3 s, on the path from trigger to event.
HEAD_REVISION = "0009"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings this workload needs on each dialect."""
    parsed = make_url(url)
    kwargs.setdefault("json_serializer", dumps)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 5}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.drivername in ("postgresql", "postgres"):
        # Bare postgresql:// URLs would pick psycopg2, which is not installed; psycopg 3 is.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the sidecar read while a run writes; busy_timeout waits out short locks
    # instead of failing at once; SQLite leaves foreign keys off unless asked.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@cache
def engine_for(url: str) -> Engine:
    """One engine (and pool) per URL per process. A broker-mode run's threads hold up to two
    connections each (an account's lock and its transaction): the pool keeps 20 open, so
    the default 8 threads never open and close a connection per account, and allows 40 at
    most (RECON_BROKER_PARALLELISM is capped at 20). Connections are opened only when
    needed."""
    return make_engine(url, pool_size=20, max_overflow=20)


@cache
def session_factory(url: str) -> sessionmaker[Session]:
    """One sessionmaker per URL per process, bound to `engine_for(url)`."""
    return sessionmaker(engine_for(url), expire_on_commit=False)


def upgrade(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations; idempotent, so every command that needs tables calls it."""
    if revision == "head" and _stamped_revision(url) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    engine = engine_for(url)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _stamped_revision(url: str) -> str | None:
    """The revision in `alembic_version`, or None when the table is missing or unreadable
    (Alembic then finds out properly)."""
    try:
        with engine_for(url).connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        return None
    return rows[0][0] if len(rows) == 1 else None


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine_for(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Raise a database failure as a `StoreError` with one line an operator can read.

    SQLAlchemy's own message carries the statement and its parameters over several lines;
    that text would otherwise become the run's state message and the `system:error` event.
    The original stays chained (`__cause__`) for the traceback in the run's logs.
    """
    try:
        yield
    except SQLAlchemyError as exc:
        raise StoreError(f"{what}: database error: {describe(exc)}") from exc


def describe(exc: SQLAlchemyError) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__

"""One `StoreDialect` per engine: the store's dialect-specific SQL in one object each."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from recon.store.dialects.base import StoreDialect

_CHOSEN: WeakKeyDictionary[Engine, StoreDialect] = WeakKeyDictionary()


def dialect_for(bind: Engine | Connection | Session) -> StoreDialect:
    """The store dialect of `bind`'s engine, chosen at its first use and kept with it."""
    engine = _engine(bind)
    chosen = _CHOSEN.get(engine)
    if chosen is None:
        chosen = _CHOSEN[engine] = _choose(engine)
    return chosen


def _engine(bind: Engine | Connection | Session) -> Engine:
    if isinstance(bind, Session):
        found = bind.get_bind()
        return found if isinstance(found, Engine) else found.engine
    return bind if isinstance(bind, Engine) else bind.engine


def _choose(engine: Engine) -> StoreDialect:
    # Imported here: a process on one database never loads the other's module.
    name = engine.dialect.name
    if name == "postgresql":
        from recon.store.dialects.postgresql import PostgreSQLDialect

        return PostgreSQLDialect(engine)
    if name == "sqlite":
        from recon.store.dialects.sqlite import SQLiteDialect

        return SQLiteDialect(engine)
    raise ValueError(f"no store dialect for {name!r} (SQLite or PostgreSQL)")


__all__ = ["StoreDialect", "dialect_for"]

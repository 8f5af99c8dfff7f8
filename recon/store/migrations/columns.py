"""Column shapes the migrations repeat: keep each revision to what it adds, not how a type is spelt.

These are frozen migration helpers, not the models: a revision that has shipped must keep
producing the same schema, so change a helper only together with a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY is the rowid alias.
BIG_INTEGER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def big_id() -> sa.Column[int]:
    """The surrogate key: an autoincrementing `id`."""
    return sa.Column("id", BIG_INTEGER, autoincrement=True, nullable=False)


def big_ref(name: str, *, nullable: bool) -> sa.Column[int]:
    """A reference to another table's `big_id`."""
    return sa.Column(name, BIG_INTEGER, nullable=nullable)


def document(name: str, *, nullable: bool) -> sa.Column[object]:
    """A JSON document: JSONB on PostgreSQL, JSON text on SQLite."""
    json_type = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    return sa.Column(name, json_type, nullable=nullable)

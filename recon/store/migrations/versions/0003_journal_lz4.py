"""journal documents compressed with lz4 on PostgreSQL

A run's event payload carries every change (≈ 390 KB of JSON for 1,200 changes). TOAST
compresses it on write; lz4 does that several times faster than the default pglz, at a
similar ratio for this repetitive JSON. Only servers built with lz4 offer it; the others
keep pglz. SQLite has no such setting. Existing values keep their compression.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

_DOCUMENTS = (("position_events", "payload"), ("sync_runs", "result"))


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    offered = bind.scalar(
        sa.text(
            "SELECT :method = ANY(enumvals) FROM pg_settings"
            " WHERE name = 'default_toast_compression'"
        ),
        {"method": method},
    )
    if not offered:
        return
    for table, column in _DOCUMENTS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")

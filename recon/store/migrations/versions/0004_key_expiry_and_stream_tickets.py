"""api key expiry and stream tickets

`api_keys.expires_at`: an optional end of life (NULL: the key lives until revoked).
`stream_tickets`: short-lived, single-use tickets for the event stream, so a long-lived
key need not travel in a URL. Kept in the app database, not in a sidecar's memory, so a
ticket issued by one replica is accepted by another behind the same proxy.
"""

import sqlalchemy as sa
from alembic import op

from recon.store.migrations.columns import big_id, big_ref
from recon.store.types import UTCDateTime

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at", UTCDateTime(), nullable=True))
    op.create_table(
        "stream_tickets",
        big_id(),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        big_ref("api_key_id", nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"]),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_stream_tickets_expires_at", "stream_tickets", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_stream_tickets_expires_at", table_name="stream_tickets")
    op.drop_table("stream_tickets")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")

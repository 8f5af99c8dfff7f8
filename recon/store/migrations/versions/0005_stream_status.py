"""stream status: the fill listener's connection state, shared by every sidecar"""

import sqlalchemy as sa
from alembic import op

from recon.store.migrations.columns import BIG_INTEGER
from recon.store.types import UTCDateTime

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "stream_status",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=True),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("connected_since", UTCDateTime(), nullable=True),
        sa.Column("last_event_at", UTCDateTime(), nullable=True),
        sa.Column("fills_applied", BIG_INTEGER, nullable=False),
        sa.Column("reconnects", BIG_INTEGER, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("stream_status")

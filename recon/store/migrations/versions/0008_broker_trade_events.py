"""broker trade events: where the Broker API event stream resumes, and what it applied

`trade_event_cursor`: one row per stream, the last applied `event_id` of
`/v2/events/trades` (a ULID), written in the transaction of the fills it applied.
`trade_events_applied`: the event ids applied lately, so the replay after a restart (which
starts a little before the cursor) skips what is already in the book and the journal.
"""

import sqlalchemy as sa
from alembic import op

from recon.store.types import UTCDateTime

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "trade_event_cursor",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("last_event_id", sa.String(length=64), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "trade_events_applied",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=False),
        sa.Column("applied_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index("ix_trade_events_applied_at", "trade_events_applied", ["applied_at"])


def downgrade() -> None:
    op.drop_index("ix_trade_events_applied_at", table_name="trade_events_applied")
    op.drop_table("trade_events_applied")
    op.drop_table("trade_event_cursor")

"""position_events.sync_run_id indexed

`recon db prune` deletes old `sync_runs` rows; each one's journal rows are found by this
foreign key, which PostgreSQL (unlike for the primary key) does not index by itself, so
each deleted run cost a scan of the journal.
"""

from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    with op.batch_alter_table("position_events", schema=None) as batch_op:
        batch_op.create_index("ix_position_events_sync_run_id", ["sync_run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("position_events", schema=None) as batch_op:
        batch_op.drop_index("ix_position_events_sync_run_id")

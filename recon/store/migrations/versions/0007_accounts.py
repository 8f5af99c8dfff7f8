"""accounts: API keys scoped to accounts, and per-account reads of the journal and runs

The positions, journal and run tables carry `account_id` since 0001 (rows of the trading
mode hold the one account's id); the Broker API mode reads them per account.
"""

from alembic import op

from recon.store.migrations.columns import document

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    # NULL: every account (the keys made before this revision keep what they saw).
    op.add_column("api_keys", document("accounts", nullable=True))
    op.create_index("ix_position_events_account_id", "position_events", ["account_id", "id"])
    op.create_index("ix_sync_runs_account_finished", "sync_runs", ["account_id", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_sync_runs_account_finished", table_name="sync_runs")
    op.drop_index("ix_position_events_account_id", table_name="position_events")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("accounts")

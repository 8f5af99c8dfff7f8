"""initial schema"""

import sqlalchemy as sa
from alembic import op

from recon.store.migrations.columns import big_id, big_ref, document
from recon.store.types import ExactDecimal, UTCDateTime

revision = "0001"
down_revision = None


def upgrade() -> None:

    op.create_table(
        "sync_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "sync_runs",
        big_id(),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("account_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("created_count", sa.Integer(), nullable=False),
        sa.Column("updated_count", sa.Integer(), nullable=False),
        sa.Column("removed_count", sa.Integer(), nullable=False),
        sa.Column("unchanged_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("market_open", sa.Boolean(), nullable=True),
        document("result", nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.create_index("ix_sync_runs_finished_at", ["finished_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sync_runs_flow_run_id"), ["flow_run_id"], unique=False)

    op.create_table(
        "position_events",
        big_id(),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=True),
        big_ref("sync_run_id", nullable=True),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        document("payload", nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sync_run_id"],
            ["sync_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("position_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_position_events_flow_run_id"), ["flow_run_id"], unique=False
        )

    op.create_table(
        "positions",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("asset_id", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("exchange", sa.String(length=32), nullable=False),
        sa.Column("asset_class", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("asset_marginable", sa.Boolean(), nullable=True),
        sa.Column("qty", ExactDecimal(), nullable=False),
        sa.Column("qty_available", ExactDecimal(), nullable=True),
        sa.Column("avg_entry_price", ExactDecimal(), nullable=False),
        sa.Column("cost_basis", ExactDecimal(), nullable=False),
        sa.Column("current_price", ExactDecimal(), nullable=True),
        sa.Column("lastday_price", ExactDecimal(), nullable=True),
        sa.Column("change_today", ExactDecimal(), nullable=True),
        sa.Column("market_value", ExactDecimal(), nullable=True),
        sa.Column("unrealized_pl", ExactDecimal(), nullable=True),
        sa.Column("unrealized_plpc", ExactDecimal(), nullable=True),
        sa.Column("unrealized_intraday_pl", ExactDecimal(), nullable=True),
        sa.Column("unrealized_intraday_plpc", ExactDecimal(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("refreshed_at", UTCDateTime(), nullable=False),
        big_ref("sync_run_id", nullable=True),
        sa.ForeignKeyConstraint(
            ["sync_run_id"],
            ["sync_runs.id"],
        ),
        sa.PrimaryKeyConstraint("account_id", "asset_id"),
    )
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.create_index("ix_positions_account_symbol", ["account_id", "symbol"], unique=False)

    op.create_table(
        "position_changes",
        big_id(),
        big_ref("event_id", nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("asset_id", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        document("fields", nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["position_events.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("position_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_position_changes_account_asset", ["account_id", "asset_id"], unique=False
        )
        batch_op.create_index(
            "ix_position_changes_account_symbol", ["account_id", "symbol"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_position_changes_event_id"), ["event_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("position_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_position_changes_event_id"))
        batch_op.drop_index("ix_position_changes_account_symbol")
        batch_op.drop_index("ix_position_changes_account_asset")

    op.drop_table("position_changes")
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.drop_index("ix_positions_account_symbol")

    op.drop_table("positions")
    with op.batch_alter_table("position_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_position_events_flow_run_id"))

    op.drop_table("position_events")
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_runs_flow_run_id"))
        batch_op.drop_index("ix_sync_runs_finished_at")

    op.drop_table("sync_runs")
    op.drop_table("sync_leases")

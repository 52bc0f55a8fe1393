"""vm manager: instance id, timings, claim trace, saved console tail, last health error

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:00:00

Numbered 0002 as planned, but chained after 0004 (leases), which was written
first against 0001: one head, whatever order the files were written in. The
two touch different tables, so either order migrates the same schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("instance_id", sa.String(length=64), nullable=True))
        # server_default: rows written before this migration get an empty object.
        batch_op.add_column(
            sa.Column("timings", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch_op.add_column(sa.Column("claim_trace", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("console_tail", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("health_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_column("health_error")
        batch_op.drop_column("console_tail")
        batch_op.drop_column("claim_trace")
        batch_op.drop_column("timings")
        batch_op.drop_column("instance_id")

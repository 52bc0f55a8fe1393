"""leases: the run using the copy and when its claim lapses

A lease row says which VM holds the live copy of a user's provider
credentials; ``run_id``/``busy_until`` say a prompt run is using it right
now, so a second run (on any controller) is refused instead of refreshing
the same single-use refresh token twice. ``busy_until`` lets a claim left by
a crashed controller lapse on its own.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("busy_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_column("busy_until")
        batch_op.drop_column("run_id")

"""jobs.claimed_by / claimed_at (the atomic submission claim) and jobs.attempt (POST /v1/jobs/{id}/retry).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("claimed_by", sa.String(128)))
    op.add_column("jobs", sa.Column("claimed_at", sa.DateTime(timezone=True)))
    # Every existing job ran once: the server default fills the rows already there.
    op.add_column("jobs", sa.Column("attempt", sa.Integer, nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("attempt")
        batch.drop_column("claimed_at")
        batch.drop_column("claimed_by")

"""jobs.waiting (what the job's Ray work waits for) and jobs.cost (resources held, price) (commit d89b41c).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("waiting", sa.JSON))
    op.add_column("jobs", sa.Column("cost", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cost")
        batch.drop_column("waiting")

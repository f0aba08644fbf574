"""Dataset revisions: the dataset_revisions table (a job's images with relabel/exclude marks applied).

Revision ID: 0009
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_revisions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("base_dataset_uri", sa.Text(), nullable=False),
        sa.Column("dataset_uri", sa.Text(), nullable=False),
        sa.Column("marks", sa.JSON(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dataset_revisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_revisions_dataset_uri"), ["dataset_uri"], unique=False)
        batch_op.create_index(batch_op.f("ix_dataset_revisions_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dataset_revisions_tenant"), ["tenant"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dataset_revisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_revisions_tenant"))
        batch_op.drop_index(batch_op.f("ix_dataset_revisions_job_id"))
        batch_op.drop_index(batch_op.f("ix_dataset_revisions_dataset_uri"))
    op.drop_table("dataset_revisions")

"""Batch predictions: the batch_predictions table and its event log, batch_prediction_events.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_predictions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("model_ref", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=True),
        sa.Column("images_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("images_total", sa.Integer(), nullable=True),
        sa.Column("scores", sa.JSON(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("cost", sa.JSON(), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("batch_predictions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_predictions_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_batch_predictions_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_batch_predictions_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_batch_predictions_tenant"), ["tenant"], unique=False)

    op.create_table(
        "batch_prediction_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["batch_predictions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("batch_prediction_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_prediction_events_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("batch_prediction_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_prediction_events_run_id"))
    op.drop_table("batch_prediction_events")

    with op.batch_alter_table("batch_predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_predictions_tenant"))
        batch_op.drop_index(batch_op.f("ix_batch_predictions_status"))
        batch_op.drop_index(batch_op.f("ix_batch_predictions_model_id"))
        batch_op.drop_index(batch_op.f("ix_batch_predictions_created_at"))
    op.drop_table("batch_predictions")

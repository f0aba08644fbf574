"""The first release's schema (commit 7f66d3b): jobs, their events and epochs, models.

A store made by that release with `create_all` has no alembic_version table; `core.migrate` stamps it with
this revision (or a later one, judged by its columns) instead of creating the tables again.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16)),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("dataset", sa.JSON),
        sa.Column("lr_sweep", sa.JSON),
        sa.Column("training", sa.JSON),
        sa.Column("best", sa.JSON),
        sa.Column("evaluation", sa.JSON),
        sa.Column("model_id", sa.String(40)),
        sa.Column("error", sa.JSON),
        sa.Column("idempotency_key", sa.String(255), unique=True),
        sa.Column("request_hash", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.JSON),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])
    op.create_table(
        "job_epochs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
    )
    op.create_index("ix_job_epochs_job_id", "job_epochs", ["job_id"])
    op.create_table(
        "models",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("artifact_uri", sa.Text, nullable=False),
        sa.Column("arch", sa.String(64), nullable=False),
        sa.Column("classes", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_models_job_id", "models", ["job_id"])


def downgrade() -> None:
    for table in ("models", "job_epochs", "job_events", "jobs"):
        op.drop_table(table)

"""The job store exactly as the first release (commit 7f66d3b) created it: `create_all`, no alembic_version.

Copied from that commit's core/store.py (the tables now live in core/store/tables.py) and frozen: the migration
tests upgrade a store like this one.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(128)),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("phase", sa.String(16)),
    sa.Column("progress", sa.Float, nullable=False, default=0.0),
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
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", sa.JSON),
)

epochs = sa.Table(
    "job_epochs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("metrics", sa.JSON, nullable=False),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("artifact_uri", sa.Text, nullable=False),
    sa.Column("arch", sa.String(64), nullable=False),
    sa.Column("classes", sa.JSON, nullable=False),
    sa.Column("metrics", sa.JSON),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

JOB_ID = "job-20261126090000-0000beef"


def create_first_release_store(url: str) -> None:
    """The first release's tables holding one finished job: its event, an epoch and its model."""
    engine = sa.create_engine(url)
    now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                jobs.insert().values(
                    id=JOB_ID,
                    name="first",
                    status="succeeded",
                    progress=1.0,
                    params={"dataset_uri": "s3://bucket/data"},
                    best={"epoch": 1, "val_accuracy": 0.9},
                    model_id="mdl-first",
                    idempotency_key="key-first",
                    request_hash="0" * 64,
                    created_at=now,
                    finished_at=now,
                    updated_at=now,
                )
            )
            conn.execute(events.insert().values(job_id=JOB_ID, at=now, kind="succeeded", message="job succeeded"))
            conn.execute(epochs.insert().values(job_id=JOB_ID, metrics={"epoch": 1, "val_accuracy": 0.9}))
            conn.execute(
                models.insert().values(
                    id="mdl-first",
                    job_id=JOB_ID,
                    artifact_uri="s3://trainyard-artifacts/jobs/first/model",
                    arch="efficientnet_lite0",
                    classes=["cat", "dog"],
                    created_at=now,
                )
            )
    finally:
        engine.dispose()

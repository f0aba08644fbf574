"""The store's tables: what `core.migrate` builds (core/migrations) and every query below reads and writes."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

jobs_table = sa.Table(
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
    sa.Column("artifacts", sa.JSON),  # name -> s3:// URI of the job's files (plots, model)
    sa.Column("model_id", sa.String(40)),
    sa.Column("error", sa.JSON),
    sa.Column("waiting", sa.JSON),  # what the job's Ray work waits for (nodes scaling up), while it waits
    sa.Column("cost", sa.JSON),  # CPU-/GPU-seconds held and the estimated price (jobs.cost.JobCost)
    # Which API process claimed the queued job's submission to Ray, and when (a lease: see claim_submission).
    sa.Column("claimed_by", sa.String(128)),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    # 1 for the first run; each POST /v1/jobs/{id}/retry adds one (same job, its events and epochs continue).
    sa.Column("attempt", sa.Integer, nullable=False, default=1, server_default="1"),
    sa.Column("idempotency_key", sa.String(255), unique=True),
    sa.Column("request_hash", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # The tenant that owns the job (core.tenancy); NULL only for jobs stored before tenants existed.
    sa.Column("tenant", sa.String(64), index=True),
    # When the quota gate (service.dispatch) handed the job to Ray; NULL while it waits for its turn.
    sa.Column("launched_at", sa.DateTime(timezone=True)),
)

events_table = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", sa.JSON),
)

epochs_table = sa.Table(
    "job_epochs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("metrics", sa.JSON, nullable=False),
)

models_table = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("artifact_uri", sa.Text, nullable=False),
    sa.Column("arch", sa.String(64), nullable=False),
    sa.Column("classes", sa.JSON, nullable=False),
    sa.Column("metrics", sa.JSON),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("tenant", sa.String(64), index=True),  # copied from its job
    # A model's name is its job's `name`; each job that trains it adds the next version (1, 2, …).
    sa.Column("name", sa.String(128), index=True),
    sa.Column("version", sa.Integer),
    # Set by DELETE /v1/models/{id}: the row stays so a version number is never handed out twice.
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    # Names are per tenant (service.model_refs): each tenant numbers its own versions of a name.
    sa.UniqueConstraint("tenant", "name", "version", name="uq_models_tenant_name_version"),
)

# Tenants and their API keys (core.tenancy). NULL limits mean "the settings' default".
tenants_table = sa.Table(
    "tenants",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("max_concurrent_jobs", sa.Integer),
    sa.Column("max_gpu_workers", sa.Integer),
    sa.Column("dataset_prefixes", sa.JSON),  # list of s3://bucket/prefix this tenant may train on
    sa.Column("rate_limit_per_s", sa.Float),  # requests/s per key; NULL: the setting, 0: unlimited
    sa.Column("rate_limit_burst", sa.Integer),
    # What its jobs may spend in a calendar month (UTC), scale-up overhead included; NULL: no budget.
    sa.Column("monthly_budget_usd", sa.Float),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

api_keys_table = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant", sa.String(64), sa.ForeignKey("tenants.name"), nullable=False, index=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("admin", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

# `latest` (moved on each successful job) and user-moved aliases such as `production`: name@alias -> model id.
model_aliases_table = sa.Table(
    "model_aliases",
    metadata,
    # The model's tenant ("" for models stored before tenants existed: a key column cannot be NULL).
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("model_id", sa.String(40), sa.ForeignKey("models.id"), nullable=False, index=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# A dataset revision: a job's images with a person's relabel/exclude marks applied, written as a new dataset
# (core.revisions); `dataset_uri` is what a retrain trains on.
revisions_table = sa.Table(
    "dataset_revisions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant", sa.String(64), index=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("base_dataset_uri", sa.Text, nullable=False),
    sa.Column("dataset_uri", sa.Text, nullable=False, index=True),
    sa.Column("marks", sa.JSON, nullable=False),
    sa.Column("images", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

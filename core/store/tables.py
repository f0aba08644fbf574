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

# The webhooks owed for resources that asked for them (core.webhooks): one per terminal state (resource, attempt).
webhook_deliveries_table = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("resource_kind", sa.String(16), nullable=False),  # "job", "batch"
    sa.Column("resource_id", sa.String(40), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("tenant", sa.String(64)),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event", sa.String(64), nullable=False),  # "job.succeeded"
    sa.Column("body", sa.Text, nullable=False),  # the exact bytes every try sends (each signed anew)
    sa.Column("state", sa.String(16), nullable=False, index=True),  # pending, delivered, failed
    sa.Column("tries", sa.Integer, nullable=False, default=0),
    sa.Column("next_try_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    # Which API process is sending it, since when (a lease, as for job submissions).
    sa.Column("claimed_by", sa.String(128)),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("resource_kind", "resource_id", "attempt", name="uq_webhook_deliveries_resource_attempt"),
)

# Each tenant's webhook signing secret. Kept in the clear: HMAC signing needs the secret itself, not a hash.
webhook_secrets_table = sa.Table(
    "webhook_secrets",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# What of each job its MLflow run holds already (service.tracking), so the mirror resumes where it stopped.
mlflow_runs_table = sa.Table(
    "mlflow_runs",
    metadata,
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("run_id", sa.String(64)),
    sa.Column("synced", sa.JSON, nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True)),  # the run is complete (or given up on)
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("next_try_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.Column("claimed_by", sa.String(128)),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
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

# Batch prediction runs (core.store.batch): one model over every image under an S3 prefix, as a Ray job.
batch_predictions_table = sa.Table(
    "batch_predictions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant", sa.String(64), index=True),
    sa.Column("model_id", sa.String(40), sa.ForeignKey("models.id"), nullable=False, index=True),
    sa.Column("model_ref", sa.String(200), nullable=False),  # what the request named: id, name, name@alias …
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("phase", sa.String(16)),
    sa.Column("params", sa.JSON, nullable=False),  # BatchParams, output_uri resolved
    sa.Column("plan", sa.JSON),  # BatchPlan, set by the first attempt's listing
    sa.Column("images_done", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("images_total", sa.Integer),
    sa.Column("scores", sa.JSON),  # BatchScores, for labelled input
    sa.Column("result", sa.JSON),  # errors, shards, manifest, timing
    sa.Column("error", sa.JSON),
    sa.Column("cost", sa.JSON),  # core.cost.JobCost of the model actors
    sa.Column("attempt", sa.Integer, nullable=False, default=1, server_default="1"),
    # Which API process claimed the queued run's submission to Ray, and when (a lease, as for jobs).
    sa.Column("claimed_by", sa.String(128)),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

batch_events_table = sa.Table(
    "batch_prediction_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("batch_predictions.id"), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", sa.JSON),
)

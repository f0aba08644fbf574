"""The job store: the source of truth for jobs, their event log, per-epoch metrics and deployed models.

One small interface over SQLAlchemy, so the same code runs on a SQLite file (one machine) and on
PostgreSQL (clusters). The API, the job driver and the Ray Train controller all write here; every status
change is a conditional UPDATE, so a late writer can never resurrect a job that was cancelled or failed.

`JobStore` is composed of one part per concern, each in its own module: jobs as created and read (`jobs`), their
queue, claims and status changes (`lifecycle`), events and epochs (`events`), models and aliases (`models`),
what jobs spent (`spending`); the tables (`tables`), the records handed out (`records`) and the engine (`base`)
sit below them.
"""

from core.store.base import make_engine, new_id, request_hash
from core.store.events import EventLog
from core.store.lifecycle import JobLifecycle
from core.store.models import LATEST_ALIAS, ModelRegistry
from core.store.records import (
    EventRecord,
    IdempotencyConflict,
    JobError,
    JobRecord,
    LoggedEvent,
    ModelRecord,
    ResultField,
)
from core.store.spending import COST_CAP_REACHED, Spending, spent_usd
from core.store.tables import (
    api_keys_table,
    batch_predictions_table,
    epochs_table,
    events_table,
    jobs_table,
    metadata,
    mlflow_runs_table,
    model_aliases_table,
    models_table,
    revisions_table,
    tenants_table,
    webhook_deliveries_table,
    webhook_secrets_table,
)


class JobStore(JobLifecycle, EventLog, ModelRegistry, Spending):
    """The store's one face: every method of its parts, on one engine."""


__all__ = [
    "COST_CAP_REACHED",
    "LATEST_ALIAS",
    "EventRecord",
    "IdempotencyConflict",
    "JobError",
    "JobRecord",
    "JobStore",
    "LoggedEvent",
    "ModelRecord",
    "ResultField",
    "Spending",
    "api_keys_table",
    "batch_predictions_table",
    "epochs_table",
    "events_table",
    "jobs_table",
    "make_engine",
    "metadata",
    "mlflow_runs_table",
    "model_aliases_table",
    "models_table",
    "new_id",
    "request_hash",
    "revisions_table",
    "spent_usd",
    "tenants_table",
    "webhook_deliveries_table",
    "webhook_secrets_table",
]

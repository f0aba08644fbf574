"""The job store: the source of truth for jobs, their event log, per-epoch metrics and deployed models.

One small interface over SQLAlchemy, so the same code runs on a SQLite file (one machine) and on
PostgreSQL (clusters). The API, the job driver and the Ray Train controller all write here; every status
change is a conditional UPDATE, so a late writer can never resurrect a job that was cancelled or failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection, Engine

from core.spec import JobParams, JobStatus, Phase

_T = TypeVar("_T")
TERMINAL = [s.value for s in JobStatus if s.terminal]
ResultField = Literal["dataset", "lr_sweep", "training", "best", "evaluation", "artifacts", "cost"]

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
LATEST_ALIAS = "latest"


class JobError(BaseModel):
    code: str
    message: str
    phase: Phase | None = None


class JobRecord(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    phase: Phase | None
    progress: float
    params: JobParams
    dataset: dict[str, Any] | None = None
    lr_sweep: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    artifacts: dict[str, str] | None = None
    model_id: str | None = None
    error: JobError | None = None
    waiting: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    attempt: int = 1
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    tenant: str | None = None
    launched_at: datetime | None = None


class EventRecord(BaseModel):
    id: int
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] | None = None


class LoggedEvent(EventRecord):
    """An event with the job it belongs to, as read across all jobs (metrics fold the whole log)."""

    job_id: str


class ModelRecord(BaseModel):
    id: str
    job_id: str
    artifact_uri: str
    arch: str
    classes: list[str]
    metrics: dict[str, Any] | None = None
    created_at: datetime
    tenant: str | None = None
    name: str | None = None
    version: int | None = None


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""


def _of_tenant(tenant: str | None) -> sa.ColumnElement[bool]:
    return jobs_table.c.tenant.is_(None) if tenant is None else jobs_table.c.tenant == tenant


def _alias_tenant(tenant: str | None) -> str:
    # Alias rows key on the tenant; models stored before tenants existed have none.
    return tenant or ""


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite drops the zone; everything we write is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def new_id(prefix: str) -> str:
    # Time-ordered ids sort like creation order, which keeps listing and logs readable.
    return f"{prefix}-{_now().strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"


def request_hash(params: JobParams) -> str:
    return hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # A connection for each thread of the API's pool (40) and its background threads: with the default 5
        # (+10 overflow) a status read waited for a connection that a writer held while waiting for the lock.
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=48, max_overflow=16
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while a job driver writes; several processes share this file.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            # In WAL mode NORMAL skips the fsync per commit (FULL made a POST's few commits 22 of its 26 ms):
            # a commit still survives any crash of a process (every fault test kills one); only an OS crash or
            # power loss can roll back the last commits. A deployment that must survive those uses PostgreSQL.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite lets one writer in at a time and makes the others sleep and retry, for 1 ms, 2, 5, ... up to
        # 100 ms a try: under load an INSERT whose lock was free again after 1 ms slept up to 430 ms. This
        # process's writers queue here instead, in order, and wake as soon as the lock is free. (Other processes,
        # job drivers, still meet the busy timeout; PostgreSQL needs neither.)
        self._writer: AbstractContextManager[Any] = (
            threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @classmethod
    def from_url(cls, url: str) -> JobStore:
        """Open the store at `url`. Its schema is `python -m core.migrate`'s job (core/migrate.py), not ours."""
        if url.startswith("sqlite:///"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return cls(make_engine(url))

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._writer, self.engine.begin() as conn:
            yield conn

    # --- jobs -------------------------------------------------------------------------------------

    def create_job(
        self, params: JobParams, idempotency_key: str | None = None, tenant: str | None = None
    ) -> tuple[JobRecord, bool]:
        """Insert a queued job. Returns (job, created); a repeated Idempotency-Key returns the first job.

        Idempotency keys are scoped to the tenant: two tenants choosing the same key get two jobs.
        """
        digest = request_hash(params)
        if idempotency_key and tenant is not None:
            idempotency_key = f"{tenant}:{idempotency_key}"
        if idempotency_key:
            existing = self._by_idempotency_key(idempotency_key)
            if existing is not None:
                if existing[1] != digest:
                    raise IdempotencyConflict(idempotency_key)
                return existing[0], False
        job_id = new_id("job")
        now = _now()
        try:
            with self._tx() as conn:
                conn.execute(
                    jobs_table.insert().values(
                        id=job_id,
                        name=params.name,
                        status=JobStatus.queued.value,
                        phase=None,
                        progress=0.0,
                        params=params.model_dump(mode="json"),
                        idempotency_key=idempotency_key,
                        request_hash=digest,
                        created_at=now,
                        updated_at=now,
                        tenant=tenant,
                    )
                )
                self._event(conn, job_id, "queued", "job accepted")
        except sa.exc.IntegrityError:
            # Two requests raced with the same key: the other one won.
            existing = self._by_idempotency_key(idempotency_key or "")
            if existing is None:
                raise
            if existing[1] != digest:
                raise IdempotencyConflict(idempotency_key) from None
            return existing[0], False
        job = self.get_job(job_id)
        assert job is not None
        return job, True

    def _by_idempotency_key(self, key: str) -> tuple[JobRecord, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs_table).where(jobs_table.c.idempotency_key == key)).first()
        if row is None:
            return None
        return self._job(row._mapping), row.request_hash

    def get_job(self, job_id: str) -> JobRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs_table).where(jobs_table.c.id == job_id)).first()
        return None if row is None else self._job(row._mapping)

    def list_jobs(
        self, status: JobStatus | None = None, limit: int = 50, before: str | None = None, tenant: str | None = None
    ) -> list[JobRecord]:
        """Newest first. `before` is a job id (the cursor): only jobs created before it are returned.

        `tenant`: only that tenant's jobs; None lists every tenant's (an admin's view).
        """
        query = sa.select(jobs_table).order_by(jobs_table.c.created_at.desc(), jobs_table.c.id.desc())
        if tenant is not None:
            query = query.where(jobs_table.c.tenant == tenant)
        if status is not None:
            query = query.where(jobs_table.c.status == status.value)
        if before is not None:
            cursor = self.get_job(before)
            if cursor is not None:
                query = query.where(
                    sa.or_(
                        jobs_table.c.created_at < cursor.created_at,
                        sa.and_(jobs_table.c.created_at == cursor.created_at, jobs_table.c.id < cursor.id),
                    )
                )
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [self._job(r._mapping) for r in rows]

    def active_jobs(self) -> list[JobRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs_table).where(jobs_table.c.status.in_([JobStatus.queued, JobStatus.running]))
            ).all()
        return [self._job(r._mapping) for r in rows]

    def unlaunched_jobs(self) -> list[JobRecord]:
        """Queued jobs not yet handed to Ray, oldest first: what the quota gate chooses from."""
        return self._unlaunched(sa.true())

    def launched_jobs(self) -> list[JobRecord]:
        """Jobs holding a quota slot: handed to Ray (queued there or running) and not finished."""
        return self._launched(sa.true())

    def launched_jobs_of(self, tenant: str | None) -> list[JobRecord]:
        """One tenant's jobs holding a quota slot (at most its quota, so cheap to read on every POST)."""
        return self._launched(_of_tenant(tenant))

    def queue_head_of(self, tenant: str | None, limit: int) -> list[JobRecord]:
        """The oldest `limit` of one tenant's unlaunched jobs, oldest first."""
        return self._unlaunched(_of_tenant(tenant), limit)

    def _unlaunched(self, where: sa.ColumnElement[bool], limit: int | None = None) -> list[JobRecord]:
        query = (
            sa.select(jobs_table)
            .where(where, jobs_table.c.status == JobStatus.queued.value, jobs_table.c.launched_at.is_(None))
            .order_by(jobs_table.c.created_at, jobs_table.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [self._job(r._mapping) for r in rows]

    def _launched(self, where: sa.ColumnElement[bool]) -> list[JobRecord]:
        query = sa.select(jobs_table).where(
            where,
            jobs_table.c.status.in_([JobStatus.queued.value, JobStatus.running.value]),
            sa.or_(jobs_table.c.launched_at.is_not(None), jobs_table.c.status == JobStatus.running.value),
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [self._job(r._mapping) for r in rows]

    def claim_launch(self, job_id: str) -> bool:
        """Atomically mark a queued job as handed to Ray; False if another process (or pass) claimed it first."""
        with self._tx() as conn:
            result = conn.execute(
                jobs_table.update()
                .where(
                    jobs_table.c.id == job_id,
                    jobs_table.c.status == JobStatus.queued.value,
                    jobs_table.c.launched_at.is_(None),
                )
                .values(launched_at=_now(), waiting=None, updated_at=_now())
            )
        return result.rowcount == 1

    def release_launch(self, job_id: str) -> None:
        """Undo a claim whose submission did not reach Ray: the job waits for its turn again."""
        with self._tx() as conn:
            conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id, jobs_table.c.status == JobStatus.queued.value)
                .values(launched_at=None)
            )

    def count_by_status(self) -> dict[JobStatus, int]:
        """Jobs per status (every status present, zeros included): one GROUP BY, cheap enough per scrape."""
        query = sa.select(jobs_table.c.status, sa.func.count()).group_by(jobs_table.c.status)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        counts = dict.fromkeys(JobStatus, 0)
        for status, count in rows:
            counts[JobStatus(status)] = int(count)
        return counts

    def _transition(self, conn: Connection, job_id: str, values: dict[str, Any]) -> bool:
        result = conn.execute(
            jobs_table.update()
            .where(jobs_table.c.id == job_id, jobs_table.c.status.not_in(TERMINAL))
            .values(updated_at=_now(), **values)
        )
        return result.rowcount == 1

    def set_phase(self, job_id: str, phase: Phase, progress: float) -> bool:
        with self._tx() as conn:
            row = conn.execute(sa.select(jobs_table.c.phase).where(jobs_table.c.id == job_id)).first()
            changed = row is not None and row.phase != phase.value
            ok = self._transition(
                conn,
                job_id,
                {
                    "status": JobStatus.running.value,
                    "phase": phase.value,
                    "progress": progress,
                    "started_at": sa.func.coalesce(jobs_table.c.started_at, _now()),
                },
            )
            if ok and changed:
                self._event(conn, job_id, "phase", f"entered {phase.value}", {"phase": phase.value})
        return ok

    def set_progress(self, job_id: str, progress: float) -> bool:
        with self._tx() as conn:
            return self._transition(conn, job_id, {"progress": progress})

    def set_result(self, job_id: str, field: ResultField, value: dict[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute(jobs_table.update().where(jobs_table.c.id == job_id).values({field: value}))

    def set_waiting(self, job_id: str, waiting: dict[str, Any] | None) -> None:
        with self._tx() as conn:
            conn.execute(jobs_table.update().where(jobs_table.c.id == job_id).values(waiting=waiting))

    def costs_by_status(self) -> dict[JobStatus, list[dict[str, Any]]]:
        """Every recorded job cost, grouped by the job's status (for metrics read at scrape time)."""
        query = sa.select(jobs_table.c.status, jobs_table.c.cost).where(jobs_table.c.cost.is_not(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        grouped: dict[JobStatus, list[dict[str, Any]]] = {status: [] for status in JobStatus}
        for status, cost in rows:
            if cost:
                grouped[JobStatus(status)].append(cost)
        return grouped

    def succeed(self, job_id: str, model_id: str | None) -> bool:
        with self._tx() as conn:
            ok = self._transition(
                conn,
                job_id,
                {
                    "status": JobStatus.succeeded.value,
                    "phase": None,
                    "progress": 1.0,
                    "model_id": model_id,
                    "finished_at": _now(),
                },
            )
            if ok:
                self._event(conn, job_id, "succeeded", "job succeeded", {"model_id": model_id})
        return ok

    def succeed_with_model(self, job_id: str, model: ModelRecord) -> bool:
        """Mark the job succeeded and list its model, in one transaction: a job cancelled meanwhile gets neither,
        so a cancel that lands while the model deploys never leaves a listed model behind."""

        def succeed(conn: Connection) -> bool:
            values = {"status": JobStatus.succeeded.value, "phase": None, "progress": 1.0, "model_id": model.id}
            ok = self._transition(conn, job_id, values | {"finished_at": _now()})
            if ok:
                self._insert_model(conn, model)
                self._event(conn, job_id, "succeeded", "job succeeded", {"model_id": model.id})
            return ok

        return self._numbered(succeed)

    def fail(self, job_id: str, code: str, message: str, phase: Phase | None = None) -> bool:
        with self._tx() as conn:
            if phase is None:
                row = conn.execute(sa.select(jobs_table.c.phase).where(jobs_table.c.id == job_id)).first()
                phase = Phase(row.phase) if row is not None and row.phase else None
            error = JobError(code=code, message=message, phase=phase).model_dump(mode="json")
            ok = self._transition(
                conn, job_id, {"status": JobStatus.failed.value, "error": error, "finished_at": _now()}
            )
            if ok:
                self._event(conn, job_id, "failed", message, error)
        return ok

    def claim_submission(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Take the right to submit a queued job to Ray; True for exactly one caller among racing API processes.

        One conditional UPDATE: the database serialises racing claims, and only the caller whose UPDATE matched
        the row submits. The claim is a lease: if its holder dies between claim and submit, another API process
        may claim the job once `lease_s` has passed.
        """
        now = _now()
        with self._tx() as conn:
            result = conn.execute(
                jobs_table.update()
                .where(
                    jobs_table.c.id == job_id,
                    jobs_table.c.status == JobStatus.queued.value,
                    sa.or_(
                        jobs_table.c.claimed_at.is_(None),
                        jobs_table.c.claimed_at < now - timedelta(seconds=lease_s),
                    ),
                )
                .values(claimed_by=owner, claimed_at=now)
            )
        return result.rowcount == 1

    def release_claim(self, job_id: str, owner: str) -> None:
        """Give a claim back (the submission failed), so the next reconcile pass need not wait out the lease."""
        with self._tx() as conn:
            conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id, jobs_table.c.claimed_by == owner)
                .values(claimed_by=None, claimed_at=None)
            )

    def retry(self, job_id: str) -> JobRecord | None:
        """Queue a failed or cancelled job again as its next attempt; None if it is not failed or cancelled.

        Its events, epochs and results stay: the new attempt resumes from the last checkpoint and continues them.
        """
        retryable = [JobStatus.failed.value, JobStatus.cancelled.value]
        with self._tx() as conn:
            result = conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id, jobs_table.c.status.in_(retryable))
                .values(
                    status=JobStatus.queued.value,
                    phase=None,
                    error=None,
                    waiting=None,
                    finished_at=None,
                    claimed_by=None,
                    claimed_at=None,
                    launched_at=None,  # it waits for its tenant's quota again (service.dispatch)
                    attempt=jobs_table.c.attempt + 1,
                    updated_at=_now(),
                )
                .returning(jobs_table.c.attempt)
            )
            row = result.first()
            if row is None:
                return None
            self._event(conn, job_id, "retry", f"attempt {row.attempt} queued", {"attempt": row.attempt})
        return self.get_job(job_id)

    def cancel(self, job_id: str) -> bool:
        with self._tx() as conn:
            ok = self._transition(conn, job_id, {"status": JobStatus.cancelled.value, "finished_at": _now()})
            if ok:
                self._event(conn, job_id, "cancelled", "job cancelled")
        return ok

    # --- per-epoch metrics and events ---------------------------------------------------------------

    def add_epoch(self, job_id: str, metrics: dict[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute(epochs_table.insert().values(job_id=job_id, metrics=metrics))

    def delete_epochs(self, job_id: str) -> None:
        """Forget the job's recorded epochs (a retried job that trains again from the start)."""
        with self._tx() as conn:
            conn.execute(epochs_table.delete().where(epochs_table.c.job_id == job_id))

    def epochs(self, job_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(epochs_table.c.metrics).where(epochs_table.c.job_id == job_id).order_by(epochs_table.c.id)
            ).all()
        return [r.metrics for r in rows]

    def epochs_of(self, job_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """`epochs` of many jobs in one query (a page of the job list), each job's in order; every id is a key."""
        found: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
        if not found:
            return found
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(epochs_table.c.job_id, epochs_table.c.metrics)
                .where(epochs_table.c.job_id.in_(list(found)))
                .order_by(epochs_table.c.id)
            ).all()
        for row in rows:
            found[row.job_id].append(row.metrics)
        return found

    def add_event(self, job_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> bool:
        """Log an event of a job that has not ended; once it has, nothing is written and the answer is False.

        A cancel is a job's last word: a driver finishing a stage in the moment between the cancel and Ray
        stopping it (an evaluation from saved logits takes milliseconds) must not log after it.
        """
        with self._tx() as conn:
            if not self._transition(conn, job_id, {}):  # takes the write lock, so no cancel lands in between
                return False
            self._event(conn, job_id, kind, message, data)
        return True

    def events(self, job_id: str, after: int = 0) -> list[EventRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events_table)
                .where(events_table.c.job_id == job_id, events_table.c.id > after)
                .order_by(events_table.c.id)
            ).all()
        return [
            EventRecord(id=r.id, at=_utc(r.at), kind=r.kind, message=r.message, data=r.data)  # type: ignore[arg-type]
            for r in rows
        ]

    def events_of_all_jobs(self, after: int, kinds: Sequence[str]) -> list[LoggedEvent]:
        """Events of every job with id > `after` and one of `kinds`, in id order."""
        query = (
            sa.select(events_table)
            .where(events_table.c.id > after, events_table.c.kind.in_(list(kinds)))
            .order_by(events_table.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            LoggedEvent(id=r.id, job_id=r.job_id, at=_utc(r.at), kind=r.kind, message=r.message, data=r.data)  # type: ignore[arg-type]
            for r in rows
        ]

    @staticmethod
    def _event(conn: Connection, job_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        conn.execute(events_table.insert().values(job_id=job_id, at=_now(), kind=kind, message=message, data=data))

    # --- models -------------------------------------------------------------------------------------

    def add_model(self, model: ModelRecord) -> ModelRecord:
        """Insert a model; a named one as the next version of its name (see `_insert_model`)."""
        return self._numbered(lambda conn: self._insert_model(conn, model))

    def _numbered(self, write: Callable[[Connection], _T]) -> _T:
        # Two jobs of one name finishing together race for a version number; the unique (tenant, name, version)
        # constraint fails the loser's transaction, which runs again with the next number.
        for attempt in range(20):
            if attempt:
                time.sleep(random.uniform(0, 0.01 * attempt))  # spread the losers of a race apart
            try:
                with self._tx() as conn:
                    return write(conn)
            except sa.exc.IntegrityError:
                continue
        raise RuntimeError("could not number a new model version: too many concurrent writers")

    @staticmethod
    def _insert_model(conn: Connection, model: ModelRecord) -> ModelRecord:
        """The one way a model is stored: in its job's tenant (unless the record names one); a named model as the
        next version of that name in its tenant, with the name's `latest` alias moved to it."""
        if model.tenant is None:
            tenant = conn.execute(sa.select(jobs_table.c.tenant).where(jobs_table.c.id == model.job_id)).scalar()
            model = model.model_copy(update={"tenant": tenant})
        if model.name is not None:
            top = conn.execute(
                sa.select(sa.func.max(models_table.c.version)).where(
                    models_table.c.tenant == model.tenant, models_table.c.name == model.name
                )
            ).scalar()
            model = model.model_copy(update={"version": (top or 0) + 1})
        conn.execute(models_table.insert().values(**model.model_dump()))
        if model.name is not None:
            JobStore._set_alias(conn, model.tenant, model.name, LATEST_ALIAS, model.id)
        return model

    def get_model(self, model_id: str) -> ModelRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(models_table).where(models_table.c.id == model_id, models_table.c.deleted_at.is_(None))
            ).first()
        return None if row is None else self._model(row._mapping)

    def get_model_version(self, name: str, version: int, tenant: str | None) -> ModelRecord | None:
        query = sa.select(models_table).where(
            models_table.c.tenant == tenant,
            models_table.c.name == name,
            models_table.c.version == version,
            models_table.c.deleted_at.is_(None),
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else self._model(row._mapping)

    def get_model_by_alias(self, name: str, alias: str, tenant: str | None) -> ModelRecord | None:
        query = (
            sa.select(models_table)
            .join(model_aliases_table, model_aliases_table.c.model_id == models_table.c.id)
            .where(
                model_aliases_table.c.tenant == _alias_tenant(tenant),
                model_aliases_table.c.name == name,
                model_aliases_table.c.alias == alias,
                models_table.c.deleted_at.is_(None),
            )
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else self._model(row._mapping)

    def model_name_exists(self, name: str, tenant: str | None) -> bool:
        query = sa.select(models_table.c.id).where(
            models_table.c.tenant == tenant, models_table.c.name == name, models_table.c.deleted_at.is_(None)
        )
        with self.engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def list_models(self, tenant: str | None = None) -> list[ModelRecord]:
        """Newest first; `tenant`: only that tenant's models, None: every tenant's (an admin's view)."""
        query = sa.select(models_table).where(models_table.c.deleted_at.is_(None))
        if tenant is not None:
            query = query.where(models_table.c.tenant == tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(models_table.c.created_at.desc())).all()
        return [self._model(r._mapping) for r in rows]

    def model_aliases(self) -> dict[str, list[str]]:
        """model id -> the aliases pointing at it (sorted), for every model that has one."""
        query = sa.select(model_aliases_table.c.model_id, model_aliases_table.c.alias).order_by(
            model_aliases_table.c.alias
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        aliases: dict[str, list[str]] = {}
        for model_id, alias in rows:
            aliases.setdefault(model_id, []).append(alias)
        return aliases

    def set_alias(self, name: str, alias: str, model_id: str, tenant: str | None) -> None:
        with self._tx() as conn:
            self._set_alias(conn, tenant, name, alias, model_id)

    @staticmethod
    def _set_alias(conn: Connection, tenant: str | None, name: str, alias: str, model_id: str) -> None:
        # Delete then insert: one statement set that both SQLite and PostgreSQL run the same way.
        key = {"tenant": _alias_tenant(tenant), "name": name, "alias": alias}
        conn.execute(model_aliases_table.delete().where(*(model_aliases_table.c[k] == v for k, v in key.items())))
        conn.execute(model_aliases_table.insert().values(**key, model_id=model_id, updated_at=_now()))

    def delete_model(self, model_id: str) -> bool:
        """Mark a version deleted; `latest` falls back to the newest version left (or goes away).

        Callers check first that no other alias points at it. False when there was no such model.
        """
        with self._tx() as conn:
            row = conn.execute(
                sa.select(models_table.c.name, models_table.c.tenant).where(
                    models_table.c.id == model_id, models_table.c.deleted_at.is_(None)
                )
            ).first()
            if row is None:
                return False
            conn.execute(models_table.update().where(models_table.c.id == model_id).values(deleted_at=_now()))
            conn.execute(model_aliases_table.delete().where(model_aliases_table.c.model_id == model_id))
            if row.name is not None:
                newest = conn.execute(
                    sa.select(models_table.c.id)
                    .where(
                        models_table.c.tenant == row.tenant,
                        models_table.c.name == row.name,
                        models_table.c.deleted_at.is_(None),
                    )
                    .order_by(models_table.c.version.desc())
                    .limit(1)
                ).first()
                if newest is not None:
                    self._set_alias(conn, row.tenant, row.name, LATEST_ALIAS, newest.id)
        return True

    # --- row mapping --------------------------------------------------------------------------------

    @staticmethod
    def _job(row: Any) -> JobRecord:
        data = dict(row)
        for key in ("created_at", "started_at", "finished_at", "updated_at"):
            data[key] = _utc(data[key])
        for private in ("idempotency_key", "request_hash", "claimed_by", "claimed_at"):
            data.pop(private, None)
        return JobRecord.model_validate(data)

    @staticmethod
    def _model(row: Any) -> ModelRecord:
        data = dict(row)
        data["created_at"] = _utc(data["created_at"])
        data.pop("deleted_at", None)
        return ModelRecord.model_validate(data)


# The batch prediction tables live in their own module over this `metadata`; importing it here puts them in every
# schema comparison and migration that reads `metadata`.
import core.batch_store  # noqa: E402, F401

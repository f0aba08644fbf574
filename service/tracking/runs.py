"""What each job's MLflow run holds already, and which API process is bringing it up to date (a lease)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from core.leases import claim, unclaimed
from core.spec import JobStatus
from core.store import jobs_table, mlflow_runs_table


class Synced(BaseModel):
    """The parts of a job its run holds: each is logged once, then marked here."""

    attempt: int = 0  # the job attempt the run follows; a retry reopens the run
    params: bool = False
    epochs: int = 0
    lr_sweep: bool = False
    artifacts: list[str] = Field(default_factory=list)
    evaluation: bool = False
    model: bool = False
    report: bool = False
    registered: dict[str, str] | None = None  # {"name", "version"}, or {"skipped": why}
    ended: bool = False
    warned: bool = False  # a warning event was written for the outage now under way


class TrackedRun(BaseModel):
    job_id: str
    run_id: str | None
    synced: Synced
    failures: int


def _now() -> datetime:
    return datetime.now(UTC)


def _tracked(row: Any) -> TrackedRun:
    return TrackedRun(
        job_id=row.job_id, run_id=row.run_id, synced=Synced.model_validate(row.synced), failures=row.failures
    )


class Runs:
    """The mlflow_runs table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def to_sync(self, owner: str, lease_s: float, since: datetime, limit: int = 32) -> list[TrackedRun]:
        """The runs `owner` should bring up to date now, claimed for it: new jobs get a row, retried jobs reopen."""
        j, r, now = jobs_table, mlflow_runs_table, _now()
        started = sa.select(j.c.id, j.c.status, r.c.job_id.label("tracked"), r.c.closed_at).outerjoin(
            r, r.c.job_id == j.c.id
        )
        started = started.where(j.c.updated_at >= since, j.c.status != JobStatus.queued.value)
        with self.engine.connect() as conn:
            rows = conn.execute(started).all()
        for row in rows:
            if row.tracked is None:
                self._insert(row.id)
            elif row.closed_at is not None and row.status == JobStatus.running.value:
                with self.engine.begin() as conn:  # a retry: the same run follows the new attempt
                    conn.execute(r.update().where(r.c.job_id == row.id).values(closed_at=None, next_try_at=None))
        waited = sa.or_(r.c.next_try_at.is_(None), r.c.next_try_at <= now)
        due = sa.and_(r.c.closed_at.is_(None), waited, unclaimed(r, now, lease_s, owner))
        return [_tracked(row) for row in claim(self.engine, r, due, owner, now, r.c.updated_at, limit)]

    def _insert(self, job_id: str) -> None:
        values = {"job_id": job_id, "synced": Synced().model_dump(), "failures": 0, "updated_at": _now()}
        try:
            with self.engine.begin() as conn:
                conn.execute(mlflow_runs_table.insert().values(**values))
        except sa.exc.IntegrityError:
            pass  # another API process started tracking it first

    def save(self, run: TrackedRun, owner: str, *, closed: bool = False, error: str | None = None) -> None:
        """Record progress (or, with `error`, a failed try: the next one waits `run.failures` backoffs)."""
        r = mlflow_runs_table
        values: dict[str, Any] = {
            "run_id": run.run_id,
            "synced": run.synced.model_dump(),
            "failures": run.failures,
            "last_error": error,
            "updated_at": _now(),
            "closed_at": _now() if closed else None,
            "next_try_at": _now() + timedelta(seconds=retry_delay(run.failures)) if error else None,
        }
        with self.engine.begin() as conn:
            conn.execute(r.update().where(r.c.job_id == run.job_id, r.c.claimed_by == owner).values(**values))

    def release(self, job_id: str, owner: str) -> None:
        r = mlflow_runs_table
        with self.engine.begin() as conn:
            conn.execute(
                r.update().where(r.c.job_id == job_id, r.c.claimed_by == owner).values(claimed_by=None, claimed_at=None)
            )

    def registered(self) -> list[tuple[str | None, str]]:
        """(tenant, registered model name) of every job the mirror registered: the names whose aliases it mirrors."""
        r, j = mlflow_runs_table, jobs_table
        query = sa.select(j.c.tenant, r.c.synced).join(j, j.c.id == r.c.job_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        found = {(row.tenant, row.synced["registered"]["name"]) for row in rows if _registered_name(row.synced)}
        return sorted(found, key=lambda pair: (pair[0] or "", pair[1]))

    def status(self, job_id: str) -> dict[str, Any] | None:
        """The row as stored (tests and operators: what the mirror did for a job)."""
        r = mlflow_runs_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(r).where(r.c.job_id == job_id)).first()
        return None if row is None else dict(row._mapping)


def _registered_name(synced: dict[str, Any]) -> bool:
    registered = synced.get("registered") or {}
    return "name" in registered


def retry_delay(failures: int) -> float:
    """5 s after the first failure, doubling, at most 5 minutes: a server that is down is asked rarely."""
    return float(min(300, 5 * 2 ** max(0, failures - 1)))

"""A job's life after it is created: the quota gate's queue and the claims that hand a job to Ray exactly once,
then the status changes, each a conditional UPDATE so a late writer can never resurrect an ended job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from core.spec import JobStatus, Phase
from core.store.base import _now
from core.store.jobs import Jobs
from core.store.records import JobError, JobRecord
from core.store.tables import jobs_table


def _of_tenant(tenant: str | None) -> sa.ColumnElement[bool]:
    return jobs_table.c.tenant.is_(None) if tenant is None else jobs_table.c.tenant == tenant


class JobLifecycle(Jobs):
    # --- the queue and its claims -------------------------------------------------------------------

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
        now = _now()
        return self._claim_queued(
            job_id, [jobs_table.c.launched_at.is_(None)], launched_at=now, waiting=None, updated_at=now
        )

    def release_launch(self, job_id: str) -> None:
        """Undo a claim whose submission did not reach Ray: the job waits for its turn again."""
        with self._tx() as conn:
            conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id, jobs_table.c.status == JobStatus.queued.value)
                .values(launched_at=None)
            )

    def claim_submission(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Take the right to submit a queued job to Ray; True for exactly one caller among racing API processes.

        One conditional UPDATE: the database serialises racing claims, and only the caller whose UPDATE matched
        the row submits. The claim is a lease: if its holder dies between claim and submit, another API process
        may claim the job once `lease_s` has passed.
        """
        now = _now()
        lease_over = sa.or_(
            jobs_table.c.claimed_at.is_(None), jobs_table.c.claimed_at < now - timedelta(seconds=lease_s)
        )
        return self._claim_queued(job_id, [lease_over], claimed_by=owner, claimed_at=now)

    def _claim_queued(self, job_id: str, conditions: list[sa.ColumnElement[bool]], **values: Any) -> bool:
        """One conditional UPDATE of a queued job: True for the one caller whose UPDATE matched the row."""
        with self._tx() as conn:
            result = conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id, jobs_table.c.status == JobStatus.queued.value, *conditions)
                .values(**values)
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

    # --- status changes -----------------------------------------------------------------------------

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

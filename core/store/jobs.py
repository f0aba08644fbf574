"""Jobs as the API reads and creates them: insert (idempotently), look up, list, count."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from core.spec import JobParams, JobStatus
from core.store.base import StoreBase, _now, new_id, request_hash
from core.store.records import IdempotencyConflict, JobRecord, ResultField
from core.store.tables import jobs_table


class Jobs(StoreBase):
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
        try:
            with self._tx() as conn:
                # Read under the writer's lock: this process's jobs are then created in the order of their
                # timestamps, which is the order the queue launches them in (oldest first).
                now = _now()
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
        self,
        status: JobStatus | None = None,
        limit: int = 50,
        before: str | None = None,
        tenant: str | None = None,
        name: str | None = None,
    ) -> list[JobRecord]:
        """Newest first. `before` is a job id (the cursor): only jobs created before it are returned.

        `tenant`: only that tenant's jobs; None lists every tenant's (an admin's view). `name`: only jobs whose
        name contains it, ignoring case.
        """
        query = sa.select(jobs_table).order_by(jobs_table.c.created_at.desc(), jobs_table.c.id.desc())
        if tenant is not None:
            query = query.where(jobs_table.c.tenant == tenant)
        if name:
            query = query.where(jobs_table.c.name.icontains(name, autoescape=True))
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

    def count_by_status(self) -> dict[JobStatus, int]:
        """Jobs per status (every status present, zeros included): one GROUP BY, cheap enough per scrape."""
        query = sa.select(jobs_table.c.status, sa.func.count()).group_by(jobs_table.c.status)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        counts = dict.fromkeys(JobStatus, 0)
        for status, count in rows:
            counts[JobStatus(status)] = int(count)
        return counts

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

"""Batch prediction runs and their event log, in the job store's database (same engine, same rules).

Every status change is a conditional UPDATE, as for jobs: a cancel or a failure is final, and a driver that
writes late (progress, a result) after its run was cancelled changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from core.batch_spec import BATCH_ID_PREFIX, BatchParams, BatchPhase, BatchPlan, BatchScores
from core.spec import JobStatus
from core.store.base import TERMINAL, StoreBase, _now, _utc, new_id
from core.store.records import EventRecord
from core.store.tables import batch_events_table, batch_predictions_table

_table = batch_predictions_table


class BatchError(BaseModel):
    code: str
    message: str
    phase: BatchPhase | None = None


class BatchRecord(BaseModel):
    id: str
    tenant: str | None
    model_id: str
    model_ref: str
    status: JobStatus
    phase: BatchPhase | None
    params: BatchParams
    plan: BatchPlan | None = None
    images_done: int = 0
    images_total: int | None = None
    scores: BatchScores | None = None
    result: dict[str, Any] | None = None
    error: BatchError | None = None
    cost: dict[str, Any] | None = None
    attempt: int = 1
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime

    @property
    def output_uri(self) -> str:
        assert self.params.output_uri is not None  # resolved when the run is created
        return self.params.output_uri


class BatchStore:
    """Batch runs over the job store's engine; writes queue behind the same per-process writer lock."""

    def __init__(self, jobs: StoreBase) -> None:
        self.engine = jobs.engine
        self._tx = jobs._tx

    def create(
        self, run_id: str, params: BatchParams, model_id: str, model_ref: str, tenant: str | None
    ) -> BatchRecord:
        with self._tx() as conn:
            now = _now()  # under the writer's lock, like a job's: creation order and timestamp order agree
            conn.execute(
                _table.insert().values(
                    id=run_id,
                    tenant=tenant,
                    model_id=model_id,
                    model_ref=model_ref,
                    status=JobStatus.queued.value,
                    params=params.model_dump(mode="json"),
                    created_at=now,
                    updated_at=now,
                )
            )
            self._event(conn, run_id, "queued", f"batch run accepted: {params.input_uri} -> {params.output_uri}")
        return self._get(run_id)

    @staticmethod
    def new_id() -> str:
        return new_id(BATCH_ID_PREFIX)

    def get(self, run_id: str) -> BatchRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(_table).where(_table.c.id == run_id)).first()
        return None if row is None else _record(row._mapping)

    def _get(self, run_id: str) -> BatchRecord:
        run = self.get(run_id)
        assert run is not None, run_id
        return run

    def list_runs(
        self, tenant: str | None, status: JobStatus | None = None, limit: int = 50, before: BatchRecord | None = None
    ) -> list[BatchRecord]:
        """Newest first; `tenant` None lists every tenant's (an admin's view); `before` is the cursor's run."""
        query = sa.select(_table).order_by(_table.c.created_at.desc(), _table.c.id.desc())
        if tenant is not None:
            query = query.where(_table.c.tenant == tenant)
        if status is not None:
            query = query.where(_table.c.status == status.value)
        if before is not None:
            query = query.where(
                sa.or_(
                    _table.c.created_at < before.created_at,
                    sa.and_(_table.c.created_at == before.created_at, _table.c.id < before.id),
                )
            )
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [_record(r._mapping) for r in rows]

    def active(self) -> list[BatchRecord]:
        query = sa.select(_table).where(_table.c.status.in_([JobStatus.queued.value, JobStatus.running.value]))
        with self.engine.connect() as conn:
            return [_record(r._mapping) for r in conn.execute(query).all()]

    # --- submission ---------------------------------------------------------------------------------------

    def claim_submission(self, run_id: str, owner: str, lease_s: float) -> bool:
        """The right to submit a queued run to Ray: True for exactly one of racing API processes (a lease)."""
        now = _now()
        with self._tx() as conn:
            result = conn.execute(
                _table.update()
                .where(
                    _table.c.id == run_id,
                    _table.c.status == JobStatus.queued.value,
                    sa.or_(_table.c.claimed_at.is_(None), _table.c.claimed_at < now - timedelta(seconds=lease_s)),
                )
                .values(claimed_by=owner, claimed_at=now)
            )
        return result.rowcount == 1

    def release_claim(self, run_id: str, owner: str) -> None:
        with self._tx() as conn:
            conn.execute(
                _table.update()
                .where(_table.c.id == run_id, _table.c.claimed_by == owner)
                .values(claimed_by=None, claimed_at=None)
            )

    # --- the driver's writes --------------------------------------------------------------------------------

    def set_phase(self, run_id: str, phase: BatchPhase) -> bool:
        """Enter `phase` (the first one marks the run running); False once the run has ended (cancelled)."""
        values = {
            "status": JobStatus.running.value,
            "phase": phase.value,
            "started_at": sa.func.coalesce(_table.c.started_at, _now()),
        }
        with self._tx() as conn:
            ok = self._transition(conn, run_id, values)
            if ok:
                self._event(conn, run_id, "phase", f"entered {phase.value}", {"phase": phase.value})
        return ok

    def set_plan(self, run_id: str, plan: BatchPlan, images_done: int) -> bool:
        values = {"plan": plan.model_dump(mode="json"), "images_total": plan.images, "images_done": images_done}
        with self._tx() as conn:
            return self._transition(conn, run_id, values)

    def set_progress(self, run_id: str, images_done: int) -> bool:
        """Record progress; False once the run has ended: the driver stops (a cancel is its last word)."""
        with self._tx() as conn:
            return self._transition(conn, run_id, {"images_done": images_done})

    def set_cost(self, run_id: str, cost: dict[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute(_table.update().where(_table.c.id == run_id).values(cost=cost))

    def succeed(self, run_id: str, scores: BatchScores | None, result: dict[str, Any]) -> bool:
        values = {
            "status": JobStatus.succeeded.value,
            "phase": None,
            "scores": scores.model_dump(mode="json") if scores else None,
            "result": result,
            "finished_at": _now(),
        }
        with self._tx() as conn:
            ok = self._transition(conn, run_id, values)
            if ok:
                accuracy = f"; accuracy {scores.accuracy:.2%}" if scores else ""
                self._event(conn, run_id, "succeeded", f"{result.get('rows', 0)} rows written{accuracy}", result)
        return ok

    def fail(self, run_id: str, code: str, message: str, phase: BatchPhase | None = None) -> bool:
        with self._tx() as conn:
            if phase is None:
                row = conn.execute(sa.select(_table.c.phase).where(_table.c.id == run_id)).first()
                phase = BatchPhase(row.phase) if row is not None and row.phase else None
            error = BatchError(code=code, message=message, phase=phase).model_dump(mode="json")
            ok = self._transition(
                conn, run_id, {"status": JobStatus.failed.value, "error": error, "finished_at": _now()}
            )
            if ok:
                self._event(conn, run_id, "failed", message, error)
        return ok

    def cancel(self, run_id: str) -> bool:
        with self._tx() as conn:
            ok = self._transition(conn, run_id, {"status": JobStatus.cancelled.value, "finished_at": _now()})
            if ok:
                self._event(conn, run_id, "cancelled", "batch run cancelled")
        return ok

    def retry(self, run_id: str) -> BatchRecord | None:
        """Queue a failed or cancelled run again as its next attempt; None if it is neither."""
        retryable = [JobStatus.failed.value, JobStatus.cancelled.value]
        with self._tx() as conn:
            row = conn.execute(
                _table.update()
                .where(_table.c.id == run_id, _table.c.status.in_(retryable))
                .values(
                    status=JobStatus.queued.value,
                    phase=None,
                    error=None,
                    finished_at=None,
                    claimed_by=None,
                    claimed_at=None,
                    attempt=_table.c.attempt + 1,
                    updated_at=_now(),
                )
                .returning(_table.c.attempt)
            ).first()
            if row is None:
                return None
            message = f"attempt {row.attempt} queued; shards already written are kept"
            self._event(conn, run_id, "retry", message, {"attempt": row.attempt})
        return self.get(run_id)

    # --- events -------------------------------------------------------------------------------------------

    def add_event(self, run_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> bool:
        """Log an event of a run that has not ended; False (nothing written) once it has."""
        with self._tx() as conn:
            if not self._transition(conn, run_id, {}):
                return False
            self._event(conn, run_id, kind, message, data)
        return True

    def record_event(self, run_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        """Log an event whatever the run's status: what the service does for a run after it ended (its webhook)
        belongs to its log too."""
        with self._tx() as conn:
            self._event(conn, run_id, kind, message, data)

    def events(self, run_id: str, after: int = 0) -> list[EventRecord]:
        query = (
            sa.select(batch_events_table)
            .where(batch_events_table.c.run_id == run_id, batch_events_table.c.id > after)
            .order_by(batch_events_table.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            EventRecord(id=r.id, at=_utc(r.at), kind=r.kind, message=r.message, data=r.data)  # type: ignore[arg-type]
            for r in rows
        ]

    @staticmethod
    def _event(conn: Connection, run_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        conn.execute(
            batch_events_table.insert().values(run_id=run_id, at=_now(), kind=kind, message=message, data=data)
        )

    @staticmethod
    def _transition(conn: Connection, run_id: str, values: dict[str, Any]) -> bool:
        result = conn.execute(
            _table.update()
            .where(_table.c.id == run_id, _table.c.status.not_in(TERMINAL))
            .values(updated_at=_now(), **values)
        )
        return result.rowcount == 1


def _record(row: Any) -> BatchRecord:
    data = dict(row)
    for key in ("created_at", "started_at", "finished_at", "updated_at"):
        data[key] = _utc(data[key])
    for private in ("claimed_by", "claimed_at"):
        data.pop(private, None)
    return BatchRecord.model_validate(data)

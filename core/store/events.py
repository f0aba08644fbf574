"""A job's event log and its per-epoch metrics: appended by the driver and the training workers, read by the API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from core.store.base import StoreBase, _utc
from core.store.records import EventRecord, LoggedEvent
from core.store.tables import epochs_table, events_table, jobs_table


class EventLog(StoreBase):
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

    def events_of_tenant(self, after: int, tenant: str | None, limit: int = 500) -> list[LoggedEvent]:
        """Events with id > `after` of one tenant's jobs (None: every tenant's), in id order, at most `limit`."""
        query = sa.select(events_table).where(events_table.c.id > after).order_by(events_table.c.id).limit(limit)
        if tenant is not None:
            query = query.join(jobs_table, jobs_table.c.id == events_table.c.job_id).where(
                jobs_table.c.tenant == tenant
            )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            LoggedEvent(id=r.id, job_id=r.job_id, at=_utc(r.at), kind=r.kind, message=r.message, data=r.data)  # type: ignore[arg-type]
            for r in rows
        ]

    def last_event_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(events_table.c.id))).scalar() or 0)

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

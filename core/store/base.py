"""The store's engine and transactions, and what every part of it shares: status changes that never touch an
ended job, the event log's insert, and the mapping of rows to records.

One small interface over SQLAlchemy, so the same code runs on a SQLite file (one machine) and on PostgreSQL
(clusters).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.spec import JobParams, JobStatus
from core.store.records import JobRecord, ModelRecord
from core.store.tables import events_table, jobs_table

TERMINAL = [s.value for s in JobStatus if s.terminal]


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


class StoreBase:
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
    def from_url(cls, url: str) -> Self:
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

    def _transition(self, conn: Connection, job_id: str, values: dict[str, Any]) -> bool:
        result = conn.execute(
            jobs_table.update()
            .where(jobs_table.c.id == job_id, jobs_table.c.status.not_in(TERMINAL))
            .values(updated_at=_now(), **values)
        )
        return result.rowcount == 1

    @staticmethod
    def _event(conn: Connection, job_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        conn.execute(events_table.insert().values(job_id=job_id, at=_now(), kind=kind, message=message, data=data))

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

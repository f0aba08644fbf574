"""Deployed models, their numbered versions under a name, and the aliases (`latest`, `production` …) on them."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.spec import JobStatus
from core.store.base import StoreBase, _now
from core.store.records import JobError, ModelRecord
from core.store.tables import jobs_table, model_aliases_table, models_table

_T = TypeVar("_T")
LATEST_ALIAS = "latest"


def _alias_tenant(tenant: str | None) -> str:
    # Alias rows key on the tenant; models stored before tenants existed have none.
    return tenant or ""


class ModelRegistry(StoreBase):
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
            ModelRegistry._set_alias(conn, model.tenant, model.name, LATEST_ALIAS, model.id)
        return model

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

    def end_with_model(self, job_id: str, model: ModelRecord, error: JobError | None = None) -> bool:
        """`succeed_with_model`; with `error`, the job fails yet lists the model it kept, in one transaction (a job
        stopped at its cost cap deploys its best checkpoint so far)."""
        if error is None:
            return self.succeed_with_model(job_id, model)

        def fail(conn: Connection) -> bool:
            values: dict[str, Any] = {"status": JobStatus.failed.value, "model_id": model.id, "finished_at": _now()}
            values |= {"phase": error.phase.value if error.phase else None, "error": error.model_dump(mode="json")}
            ok = self._transition(conn, job_id, values)
            if ok:
                self._insert_model(conn, model)
                self._event(conn, job_id, "failed", error.message, error.model_dump(mode="json"))
            return ok

        return self._numbered(fail)

    def get_model(self, model_id: str) -> ModelRecord | None:
        return self._live_model(sa.select(models_table).where(models_table.c.id == model_id))

    def get_model_version(self, name: str, version: int, tenant: str | None) -> ModelRecord | None:
        return self._live_model(
            sa.select(models_table).where(
                models_table.c.tenant == tenant, models_table.c.name == name, models_table.c.version == version
            )
        )

    def get_model_by_alias(self, name: str, alias: str, tenant: str | None) -> ModelRecord | None:
        return self._live_model(
            sa.select(models_table)
            .join(model_aliases_table, model_aliases_table.c.model_id == models_table.c.id)
            .where(
                model_aliases_table.c.tenant == _alias_tenant(tenant),
                model_aliases_table.c.name == name,
                model_aliases_table.c.alias == alias,
            )
        )

    def _live_model(self, query: sa.Select[Any]) -> ModelRecord | None:
        """The first model `query` selects that has not been deleted, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(query.where(models_table.c.deleted_at.is_(None))).first()
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

    def has_models(self) -> bool:
        """Whether any tenant has a model listed (what the Serve application must serve)."""
        query = sa.select(models_table.c.id).where(models_table.c.deleted_at.is_(None)).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

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

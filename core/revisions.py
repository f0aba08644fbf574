"""Dataset revisions on record: which job's images a person marked, and where the revised dataset lives.

The revision itself is a dataset in S3 (see service.revisions); this is its row in the store, so a job's page
can list the revisions made from it and a job trained on one can find the job it revises.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine

from core.store.tables import revisions_table

MarkAction = Literal["fine", "relabel", "exclude"]


class Mark(BaseModel):
    """What a person decided about one image, as fastai's ImageClassifierCleaner offers: keep, relabel, drop."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=1024,
        description="the image's path in the job's dataset (`path` of a most_wrong or least_certain entry)",
        examples=["valid/cat/cat_012.jpg"],
    )
    action: MarkAction = Field(description="fine: keep as labelled; relabel: give it `label`; exclude: leave it out")
    label: str | None = Field(default=None, min_length=1, max_length=128, description="the new class, for relabel")


class RevisionRecord(BaseModel):
    id: str
    tenant: str | None
    job_id: str = Field(description="the job whose images were marked")
    base_dataset_uri: str = Field(description="that job's dataset_uri, left untouched")
    dataset_uri: str = Field(description="the revised dataset: a labels.csv and copies of the images it lists")
    marks: list[Mark]
    images: int = Field(description="images in the revised dataset")
    created_at: datetime


class RevisionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, record: RevisionRecord) -> RevisionRecord:
        values = record.model_dump()
        values["marks"] = [m.model_dump() for m in record.marks]
        with self.engine.begin() as conn:
            conn.execute(revisions_table.insert().values(**values))
        return record

    def of_job(self, job_id: str) -> list[RevisionRecord]:
        """The revisions made from `job_id`'s images, newest first."""
        return self._select(revisions_table.c.job_id == job_id)

    def trained_on(self, dataset_uri: str, tenant: str | None) -> RevisionRecord | None:
        """The revision a job with this dataset_uri trains on, if the URI is one of `tenant`'s revisions."""
        owner = revisions_table.c.tenant.is_(None) if tenant is None else revisions_table.c.tenant == tenant
        found = self._select(sa.and_(revisions_table.c.dataset_uri == dataset_uri, owner))
        return found[0] if found else None

    def _select(self, where: sa.ColumnElement[bool]) -> list[RevisionRecord]:
        query = sa.select(revisions_table).where(where).order_by(revisions_table.c.created_at.desc())
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_record(row._mapping) for row in rows]


def _record(row: Any) -> RevisionRecord:
    created = row["created_at"]
    return RevisionRecord.model_validate(
        {**row, "created_at": created.replace(tzinfo=UTC) if created.tzinfo is None else created}
    )

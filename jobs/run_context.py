"""What the stages after validation need of the job they run for: one typed record, filled by the driver.

The driver (`jobs.driver`) owns the job's bookkeeping: it reads the job from the store, enters each phase and
records failures; the pipeline (`jobs.pipeline`) only needs this view of it, so the two do not import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from core.cost import WorkUsage
from core.settings import Settings
from core.spec import JobParams, Phase
from core.store import JobStore


@dataclass(frozen=True)
class RunContext:
    job_id: str
    store: JobStore
    settings: Settings
    s3: Any  # a boto3 S3 client
    params: JobParams
    attempt: int
    recorded_lr: float | None  # the learning rate an earlier attempt chose, if one got that far
    # Enters a phase: records it on the job, and raises JobCancelled when the job was cancelled meanwhile.
    stage: Callable[[Phase], AbstractContextManager[None]]
    # Shared with the driver, which keeps the job's record: the files listed on the job, and its Ray work's cost.
    artifacts: dict[str, str]
    usage: list[WorkUsage]

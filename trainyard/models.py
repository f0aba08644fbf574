"""What the API answers with, as the SDK sees it. Unknown fields are kept (`extra="allow"`), so a newer
server's additions (cost, model versions …) reach the caller instead of failing validation.

`Job` and `Model` are bound to the `Client` that fetched them, so ``job.wait()`` and ``model.predict(…)``
work without passing the client around.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

if TYPE_CHECKING:
    from PIL.Image import Image
    from rich.console import Console

ImageInput: TypeAlias = "str | Path | bytes | Image"
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class BoundClient(Protocol):
    """What a fetched `Job` or `Model` asks of the client that fetched it (`trainyard.client.Client`)."""

    def get_job(self, job_id: str) -> Job: ...
    def cancel_job(self, job_id: str) -> Job: ...
    def events(self, job_id: str, *, after: int = 0) -> list[Event]: ...
    def report_url(self, job_id: str) -> str: ...
    def report(self, job_id: str) -> str: ...
    def predict(self, model_id: str, image: ImageInput, *, top_k: int | None = None) -> list[Prediction]: ...
    def wait(
        self,
        job_id: str,
        *,
        progress: bool = False,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        raise_on_failure: bool = True,
        console: Console | None = None,
    ) -> Job: ...


class _ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Bound(_ApiModel):
    _client: BoundClient | None = PrivateAttr(default=None)

    def _bind(self, client: BoundClient) -> None:
        self._client = client

    @property
    def client(self) -> BoundClient:
        if self._client is None:
            raise RuntimeError(f"this {type(self).__name__} is not bound to a Client; fetch it through one")
        return self._client


def bind_all(value: Any, client: BoundClient) -> None:
    """Bind every `_Bound` object in `value` (a model, a list of them, nested fields) to `client`.

    A job carries its `model`, a page carries its jobs: whatever the SDK returns, each object in it can call
    the API through the client that fetched it.
    """
    if isinstance(value, list | tuple):
        for item in value:
            bind_all(item, client)
        return
    if not isinstance(value, BaseModel):
        return
    if isinstance(value, _Bound):
        value._bind(client)
    for name in type(value).model_fields:
        bind_all(getattr(value, name), client)


class Caller(_ApiModel):
    """The client's key as the API sees it (`GET /v1/me`)."""

    tenant: str
    admin: bool
    key_id: str | None = None
    upload_uri: str
    dataset_prefixes: list[str] = Field(default_factory=list)


class JobErrorInfo(_ApiModel):
    code: str
    message: str
    phase: str | None = None


class Prediction(_ApiModel):
    label: str
    probability: float


class _Predictor(_Bound):
    id: str
    predict_url: str

    def predict(self, image: ImageInput, *, top_k: int | None = None) -> list[Prediction]:
        """Classify one image: a path, raw bytes or a PIL image; most probable label first."""
        return self.client.predict(self.id, image, top_k=top_k)


class ModelRef(_Predictor):
    """The model a job deployed."""


class Model(_Predictor):
    # The training job's `name`, this version's number under it, and the aliases pointing at it now.
    name: str | None = None
    version: int | None = None
    aliases: list[str] = Field(default_factory=list)
    job_id: str
    arch: str
    classes: list[str]
    metrics: dict[str, Any] | None = None
    created_at: datetime
    # False when the model's objects are gone from the artifact store; `unavailable_reason` says what to do.
    available: bool = True
    unavailable_reason: str | None = None


class Job(_Bound):
    id: str
    name: str | None = None
    status: JobStatus
    phase: str | None = None
    progress: float = 0.0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    dataset: dict[str, Any] | None = None
    lr_sweep: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    best: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    artifacts: dict[str, str] = Field(default_factory=dict)
    model: ModelRef | None = None
    error: JobErrorInfo | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def total_epochs(self) -> int:
        """Head-only plus unfrozen epochs, as the pipeline runs them."""
        return int(self.params.get("freeze_epochs", 0)) + int(self.params.get("epochs", 0))

    def refresh(self) -> Job:
        return self.client.get_job(self.id)

    def cancel(self) -> Job:
        return self.client.cancel_job(self.id)

    def events(self, after: int = 0) -> list[Event]:
        return self.client.events(self.id, after=after)

    def report_url(self) -> str:
        return self.client.report_url(self.id)

    def wait(
        self,
        *,
        progress: bool = False,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        raise_on_failure: bool = True,
        console: Console | None = None,
    ) -> Job:
        """Poll until the job ends; with `progress`, show it live (plain lines when not on a terminal).

        Raises `JobFailed` (or `JobCancelled`) when it did not succeed, unless `raise_on_failure` is False.
        """
        return self.client.wait(
            self.id,
            progress=progress,
            poll_interval=poll_interval,
            timeout=timeout,
            raise_on_failure=raise_on_failure,
            console=console,
        )

    def save_report(self, path: Path) -> Path:
        path.write_text(self.client.report(self.id), encoding="utf-8")
        return path


class JobPage(_ApiModel):
    jobs: list[Job]
    next_cursor: str | None = None


class Event(_ApiModel):
    id: int
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] | None = None


class Revision(_ApiModel):
    """A dataset revision: a job's images with relabel/exclude marks applied (POST /v1/jobs/{id}/revisions)."""

    id: str
    job_id: str
    base_dataset_uri: str
    dataset_uri: str
    marks: list[dict[str, Any]] = Field(default_factory=list)
    changes: dict[str, int] = Field(default_factory=dict)
    images: int
    created_at: datetime
    retrain_job_id: str | None = None

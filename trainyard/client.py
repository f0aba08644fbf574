"""`Client`: typed access to the Trainyard REST API (see docs/api.md), on httpx.

from trainyard import Client

client = Client()                                   # URL and key from env, config file or the local stack
job = client.submit("./my-photos", epochs=3)        # a local folder is uploaded to S3 first
job = job.wait(progress=True)                       # raises JobFailed if it did not succeed
print(job.model.predict("cat.jpg", top_k=3))
"""

from __future__ import annotations

import io
import logging
import mimetypes
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import httpx
from httpx_sse import connect_sse

from trainyard.config import ClientConfig
from trainyard.errors import (
    JobCancelled,
    JobFailed,
    NotFound,
    NotSupported,
    TrainyardError,
    Unavailable,
    from_response,
    unreachable,
)
from trainyard.models import (
    Caller,
    Event,
    ImageInput,
    Job,
    JobPage,
    JobStatus,
    Model,
    Prediction,
    Revision,
    bind_all,
)
from trainyard.spec import JobOptions

if TYPE_CHECKING:
    from rich.console import Console

    from trainyard.upload import UploadResult

logger = logging.getLogger(__name__)

_M = TypeVar("_M")

DEFAULT_TIMEOUT_S = 30.0
# The longest Retry-After the client waits out by itself; an API asking for more gets its error raised at once.
MAX_RETRY_AFTER_S = 30.0
# Answers that mean "nothing was done; send it again after Retry-After seconds": over the key's rate limit,
# the model server's queue full or still starting.
_RETRYABLE = (429, 503)
# How long `wait` keeps polling through API outages (a restart, a rolling deploy) before giving up.
WAIT_OUTAGE_TOLERANCE_S = 30.0


class Client:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        """`max_retries`: how often a 429 or 503 with Retry-After is waited out and sent again (default 4)."""
        self.config = config or ClientConfig.resolve(url=url, api_key=api_key, max_retries=max_retries)
        headers = {"User-Agent": "trainyard-sdk"}
        if self.config.api_key is not None:
            # Sent whenever a key is configured; the API ignores it until authentication lands.
            headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
        self._http = httpx.Client(base_url=self.config.base_url, headers=headers, timeout=timeout)

    @property
    def url(self) -> str:
        return self.config.base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- HTTP ------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call; a 429 or 503 with Retry-After is sent again after that wait, `max_retries` times."""
        for attempt in range(self.config.max_retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                raise unreachable(self.url, e) from None
            wait = _retry_after(response)
            if wait is None or attempt == self.config.max_retries:
                break
            logger.info("%s %s answered %s; retrying in %.0f s", method, path, response.status_code, wait)
            time.sleep(wait)
        if response.is_error:
            raise from_response(response)
        return response

    def _bound(self, value: _M) -> _M:
        """`value` with every job and model in it bound to this client (see `bind_all`)."""
        bind_all(value, self)
        return value

    def _job(self, response: httpx.Response) -> Job:
        return self._bound(Job.model_validate(response.json()))

    # --- jobs ------------------------------------------------------------------------------------------

    def submit(
        self,
        dataset: str | Path,
        *,
        idempotency_key: str | None = None,
        progress: bool = False,
        console: Console | None = None,
        **params: Unpack[JobOptions],
    ) -> Job:
        """Submit a training job on `dataset`: an ``s3://`` URI, or a local folder (uploaded first).

        `params` are the job's parameters (`JobOptions`, docs/api.md): one left out takes the API's default,
        None sends null (``patience=None``: no early stopping; ``lr=None``: the LR sweep `lr_sweep` names, e.g.
        ``{"method": "trials", "trials": 8}``; ``progressive_resizing=None``: every epoch at full size).
        """
        dataset_uri = dataset if isinstance(dataset, str) and dataset.startswith("s3://") else None
        if dataset_uri is None:
            dataset_uri = self.upload(Path(dataset), progress=progress, console=console).uri
        body = {"dataset_uri": dataset_uri, **params}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._job(self._request("POST", "/v1/jobs", json=body, headers=headers))

    def upload(self, folder: Path, *, progress: bool = False, console: Console | None = None) -> UploadResult:
        """Upload a local dataset folder to ``<your upload_uri>/<name>-<hash>/``; unchanged: no-op."""
        from trainyard.upload import dataset_files, upload_folder

        files = dataset_files(folder)  # a missing or empty folder is refused before any request
        return upload_folder(folder, self.config, self._upload_root(), files=files, progress=progress, console=console)

    def _upload_root(self) -> str:
        try:
            return self.me().upload_uri
        except NotFound as e:
            if e.code != "not_found":  # a route the API has, answering 404 for another reason
                raise
            # An API without GET /v1/me keeps every upload in one shared folder.
            return f"s3://{self.config.upload_bucket}/uploads/"

    def me(self) -> Caller:
        """Who this client's key is: tenant, admin or not, where uploads go, which prefixes it may train on."""
        return Caller.model_validate(self._request("GET", "/v1/me").json())

    def get_job(self, job_id: str) -> Job:
        return self._job(self._request("GET", f"/v1/jobs/{job_id}"))

    def list_jobs(
        self, status: JobStatus | None = None, *, limit: int = 50, cursor: str | None = None, name: str | None = None
    ) -> JobPage:
        """One page, newest first; pass `next_cursor` back as `cursor` for the next. `name`: names containing it."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if name:
            params["name"] = name
        if cursor:
            params["cursor"] = cursor
        return self._bound(JobPage.model_validate(self._request("GET", "/v1/jobs", params=params).json()))

    def iter_jobs(self, status: JobStatus | None = None) -> Iterator[Job]:
        """Every job, newest first, page by page."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(status, limit=200, cursor=cursor)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel_job(self, job_id: str) -> Job:
        return self._job(self._request("POST", f"/v1/jobs/{job_id}/cancel"))

    def retry_job(self, job_id: str) -> Job:
        """Run a failed or cancelled job again from its last checkpoint (needs an API that offers it)."""
        try:
            return self._job(self._request("POST", f"/v1/jobs/{job_id}/retry"))
        except TrainyardError as e:
            # An unknown route (404 without job_not_found) or method: this API predates retry.
            if (e.status == 404 and e.code != "job_not_found") or e.status == 405:
                raise _retry_unsupported(self.url, e.status) from None
            raise

    def revise(
        self,
        job_id: str,
        *,
        relabel: dict[str, str] | None = None,
        exclude: list[str] | None = None,
        fine: list[str] | None = None,
        retrain: bool = False,
    ) -> Revision:
        """Mark images of a finished job (path -> new label, paths to exclude or keep): a new dataset revision.

        With `retrain`, a job with the same parameters is submitted on it (`retrain_job_id`).
        """
        marks = [{"path": p, "action": "relabel", "label": label} for p, label in (relabel or {}).items()]
        marks += [{"path": p, "action": "exclude"} for p in exclude or []]
        marks += [{"path": p, "action": "fine"} for p in fine or []]
        body = {"marks": marks, "retrain": retrain}
        return Revision.model_validate(self._request("POST", f"/v1/jobs/{job_id}/revisions", json=body).json())

    def revisions(self, job_id: str) -> tuple[list[Revision], Revision | None]:
        """(revisions made from the job's images, the revision the job itself trained on or None)."""
        found = self._request("GET", f"/v1/jobs/{job_id}/revisions").json()
        trained_on = found["trained_on"]
        return [Revision.model_validate(r) for r in found["revisions"]], (
            Revision.model_validate(trained_on) if trained_on else None
        )

    def events(self, job_id: str, *, after: int = 0) -> list[Event]:
        response = self._request("GET", f"/v1/jobs/{job_id}/events", params={"after": after})
        return [Event.model_validate(e) for e in response.json()["events"]]

    def stream_events(self, job_id: str, *, after: int = 0) -> Iterator[Event]:
        """The job's events as they happen (Server-Sent Events), ending when the job ends."""
        self.get_job(job_id)  # a clear NotFound before the stream opens
        params: dict[str, Any] = {"after": after, "stream": "true"}
        try:
            with connect_sse(
                self._http, "GET", f"/v1/jobs/{job_id}/events", params=params, timeout=httpx.Timeout(60.0)
            ) as source:
                if source.response.is_error:
                    source.response.read()
                    raise from_response(source.response)
                for message in source.iter_sse():
                    if message.event == "end":
                        return
                    if message.data:
                        yield Event.model_validate_json(message.data)
        except httpx.TransportError as e:
            raise unreachable(self.url, e) from None

    def artifact(self, job_id: str, name: str) -> bytes:
        """One of the job's files (``lr_sweep.png``, ``model.pt`` …) as bytes."""
        return self._request("GET", f"/v1/jobs/{job_id}/artifacts/{name}").content

    def report_url(self, job_id: str) -> str:
        return f"{self.url}/v1/jobs/{job_id}/report"

    def report(self, job_id: str) -> str:
        """The job's report page (self-contained HTML)."""
        return self._request("GET", f"/v1/jobs/{job_id}/report").text

    def wait(
        self,
        job_id: str,
        *,
        progress: bool = False,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        raise_on_failure: bool = True,
        console: Console | None = None,
    ) -> Job:
        """Poll the job until it ends; see `Job.wait`."""
        from trainyard.progress import NullDisplay, make_display

        display = make_display(console) if progress else NullDisplay()
        deadline = None if timeout is None else time.monotonic() + timeout
        outage_since: float | None = None
        with display:
            while True:
                try:
                    job = self.get_job(job_id)
                    outage_since = None
                except Unavailable:
                    # The job runs on Ray whatever the API does: ride out a restart of the API.
                    outage_since = outage_since or time.monotonic()
                    if time.monotonic() - outage_since > WAIT_OUTAGE_TOLERANCE_S:
                        raise
                    time.sleep(poll_interval)
                    continue
                display.update(job)
                if job.terminal:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job.status} after {timeout:.0f}s")
                time.sleep(poll_interval)
        if raise_on_failure:
            raise_for_outcome(job)
        return job

    # --- models ----------------------------------------------------------------------------------------

    def list_models(self) -> list[Model]:
        return [self._bound(Model.model_validate(m)) for m in self._request("GET", "/v1/models").json()["models"]]

    def get_model(self, model_id: str) -> Model:
        return self._bound(Model.model_validate(self._request("GET", f"/v1/models/{model_id}").json()))

    def move_alias(self, name: str, alias: str, *, version: int | None = None, model_id: str | None = None) -> Model:
        """Point `name@alias` at one version (by number or id); rollback is moving it back. Returns that version."""
        body = {"version": version} if model_id is None else {"model_id": model_id}
        moved = self._request("POST", f"/v1/models/{name}/aliases/{alias}", json=body).json()
        return self.get_model(moved["model_id"])

    def delete_model(self, model_id: str) -> None:
        """Undeploy one version: it stops answering at once and every replica frees it within seconds."""
        self._request("DELETE", f"/v1/models/{model_id}")

    def predict(self, model_id: str, image: ImageInput, *, top_k: int | None = None) -> list[Prediction]:
        """Classify one image (a path, raw bytes or a PIL image); most probable label first."""
        content, content_type = _image_body(image)
        params = {"top_k": top_k} if top_k is not None else {}
        response = self._request(
            "POST",
            f"/v1/models/{model_id}/predict",
            params=params,
            content=content,
            headers={"Content-Type": content_type},
        )
        return [Prediction.model_validate(p) for p in response.json()["predictions"]]

    def health(self) -> dict[str, Any]:
        return dict(self._request("GET", "/healthz").json())


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait before sending again, for an answer that asks for it within MAX_RETRY_AFTER_S; else None."""
    if response.status_code not in _RETRYABLE:
        return None
    try:
        wait = float(response.headers.get("retry-after", ""))
    except ValueError:  # absent, or an HTTP date (which the API never sends)
        return None
    return wait if 0 <= wait <= MAX_RETRY_AFTER_S else None


def raise_for_outcome(job: Job) -> None:
    """Raise `JobFailed`/`JobCancelled` for a job that ended without succeeding."""
    if job.status == "cancelled":
        raise JobCancelled("cancelled", code="cancelled", job_id=job.id, phase=job.phase)
    if job.status == "failed":
        error = job.error
        raise JobFailed(
            error.message if error else "no reason recorded",
            code=error.code if error else "failed",
            job_id=job.id,
            phase=error.phase if error else job.phase,
        )


def _retry_unsupported(url: str, status: int | None) -> NotSupported:
    return NotSupported(
        f"the API at {url} does not offer POST /v1/jobs/{{id}}/retry yet; upgrade the server, "
        "or submit the job again with the same parameters (`trainyard submit`)",
        status=status,
        code="retry_not_supported",
    )


def _image_body(image: Any) -> tuple[bytes, str]:
    if isinstance(image, bytes):
        return image, "application/octet-stream"
    if isinstance(image, str | Path):
        path = Path(image)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return path.read_bytes(), content_type
    save = getattr(image, "save", None)
    if callable(save):  # a PIL image: send it losslessly
        buffer = io.BytesIO()
        save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"
    raise TypeError(f"image must be a path, bytes or a PIL.Image, got {type(image).__name__}")

"""The batch prediction methods of `Client` (docs/api.md, "Batch predictions"), kept in a module of their own.

run = client.batch_predict("pets@production", "s3://my-bucket/incoming/")   # or a local folder
run = run.wait()                                                             # raises JobFailed if it failed
print(run.progress.images_done, run.scores and run.scores["accuracy"], run.output_uri)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from trainyard.errors import JobCancelled, JobFailed, NotSupported
from trainyard.models import BatchPrediction, BatchPredictionPage, JobStatus, _Bound
from trainyard.polling import poll_until_ended

if TYPE_CHECKING:
    from rich.console import Console

    from trainyard.config import ClientConfig
    from trainyard.upload import UploadResult

_B = TypeVar("_B", bound=_Bound)


class BatchPredictions:
    """Mixed into `Client`: everything here goes through the client's HTTP session and configuration."""

    config: ClientConfig

    if TYPE_CHECKING:

        def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

        def _bound(self, model: _B) -> _B: ...

        def upload(self, folder: Path, *, progress: bool = False, console: Console | None = None) -> UploadResult: ...

    def _batch(self, response: httpx.Response) -> BatchPrediction:
        return self._bound(BatchPrediction.model_validate(response.json()))

    def batch_predict(
        self,
        model: str,
        images: str | Path,
        *,
        output_uri: str | None = None,
        top_k: int | None = None,
        format: str | None = None,
        use_gpu: bool | None = None,
        num_workers: int | None = None,
        notify_url: str | None = None,
        progress: bool = False,
        console: Console | None = None,
    ) -> BatchPrediction:
        """Score every image under `images` (an s3:// prefix or CSV manifest, or a local folder, uploaded first)
        with `model` (an id, a name, name@alias or name@version). Returns the queued run; `.wait()` follows it."""
        input_uri = images if isinstance(images, str) and images.startswith("s3://") else None
        if input_uri is None:
            input_uri = self.upload(Path(images), progress=progress, console=console).uri
        given = {
            "output_uri": output_uri,
            "top_k": top_k,
            "format": format,
            "use_gpu": use_gpu,
            "num_workers": num_workers,
            "notify_url": notify_url,
        }
        body = {"input_uri": input_uri, **{k: v for k, v in given.items() if v is not None}}
        return self._batch(self._request("POST", f"/v1/models/{model}/batch-predictions", json=body))

    def get_batch_prediction(self, batch_id: str) -> BatchPrediction:
        return self._batch(self._request("GET", f"/v1/batch-predictions/{batch_id}"))

    def list_batch_predictions(
        self, status: JobStatus | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> BatchPredictionPage:
        """One page of runs, newest first; pass `next_cursor` back as `cursor` for the next."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        page = BatchPredictionPage.model_validate(self._request("GET", "/v1/batch-predictions", params=params).json())
        for run in page.batch_predictions:
            self._bound(run)
        return page

    def cancel_batch_prediction(self, batch_id: str) -> BatchPrediction:
        """Cancel a run (idempotent): its actors are freed, its manifest says cancelled, written shards stay."""
        return self._batch(self._request("POST", f"/v1/batch-predictions/{batch_id}/cancel"))

    def retry_batch_prediction(self, batch_id: str) -> BatchPrediction:
        """Run a failed or cancelled run again; the shards it already wrote are skipped."""
        return self._batch(self._request("POST", f"/v1/batch-predictions/{batch_id}/retry"))

    def wait_batch_prediction(
        self,
        batch_id: str,
        *,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        raise_on_failure: bool = True,
        on_update: Callable[[BatchPrediction], None] | None = None,
    ) -> BatchPrediction:
        """Poll until the run ends (riding out API restarts); `on_update(run)` sees every poll."""
        run = poll_until_ended(
            lambda: self.get_batch_prediction(batch_id),
            f"batch run {batch_id}",
            poll_interval=poll_interval,
            timeout=timeout,
            on_update=on_update,
        )
        if raise_on_failure:
            raise_for_batch_outcome(run)
        return run

    def batch_rows(self, run: BatchPrediction) -> list[dict[str, Any]]:
        """Every result row of a finished `jsonl` run, read from its output with this client's S3 access."""
        from trainyard.upload import s3_client

        if run.params.get("format", "jsonl") != "jsonl":
            raise NotSupported(
                f"rows() reads jsonl output; run {run.id} wrote {run.params.get('format')}: read its shards under "
                f"{run.output_uri} with pandas or pyarrow",
                code="format_not_supported",
            )
        bucket, _, prefix = run.output_uri.removeprefix("s3://").partition("/")
        s3 = s3_client(self.config)
        rows: list[dict[str, Any]] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in sorted(page.get("Contents", []), key=lambda o: o["Key"]):
                if item["Key"].rsplit("/", 1)[-1].startswith("part-"):
                    body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
                    rows += [json.loads(line) for line in body.splitlines() if line]
        return rows


def raise_for_batch_outcome(run: BatchPrediction) -> None:
    """Raise `JobFailed`/`JobCancelled` for a run that ended without succeeding."""
    if run.status == "cancelled":
        raise JobCancelled("cancelled", code="cancelled", job_id=run.id, phase=run.phase)
    if run.status == "failed":
        error = run.error
        raise JobFailed(
            error.message if error else "no reason recorded",
            code=error.code if error else "failed",
            job_id=run.id,
            phase=error.phase if error else run.phase,
        )

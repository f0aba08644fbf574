"""One pass of the MLflow mirror: bring every job's run up to date with the store, then the aliases.

A job's run gets, as the job records them: its parameters (once it runs), each epoch's metrics, the LR
sweep's curve and plot, the other plots, the evaluation; once the job has ended, the model files, the report
(the same HTML page as GET /v1/jobs/{id}/report), the registered model version, and the run's end. Each part is
remembered once logged (`runs.Synced`), so a pass after an outage or a restart logs only what is missing.

When MLflow does not answer, the pass stops (asking again for every job would only wait on the same dead
server), the job it was on gets one `tracking_unavailable` warning event for the outage and tries again after a
growing delay (5 s to 5 minutes). MLflow refusing something (an invalid name, a registered model of another
tenant) is not an outage: that part is skipped and the job's log says why (`tracking_skipped`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from core.exports import FILE_NAMES, MANIFEST_FILE, ExportFormat, building, export_folder
from core.s3 import s3_client
from core.settings import Settings
from core.spec import S3Location
from core.store import JobRecord, JobStore
from service.tracking import content, registry
from service.tracking.runs import Runs, TrackedRun

logger = logging.getLogger(__name__)
T = TypeVar("T")

CLOCK_MARGIN = timedelta(seconds=30)
LEASE_S = 120.0
# MLflow's client retries a failed request up to 7 times with backoff (minutes, against a server that is down)
# and waits 120 s for an answer: the mirror has its own retry, so it asks once and briefly. And it prints a
# "View run" line on the API's stdout for every run it ends.
CLIENT_ENVIRONMENT = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# What MLflow answers when it refuses a request, as opposed to not answering it.
REFUSALS = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED"}


class Unavailable(Exception):
    """MLflow (or the artifact store the files come from) did not answer: try again later."""


class Refused(Exception):
    """MLflow answered no (an invalid name, a missing entity): that part is skipped, not retried."""


class Mirror:
    def __init__(self, store: JobStore, settings: Settings) -> None:
        assert settings.mlflow_tracking_uri, "the mirror runs only when TRAINYARD_MLFLOW_TRACKING_URI is set"
        self.store, self.settings = store, settings
        self.runs = Runs(store.engine)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.where = _origin(settings.mlflow_tracking_uri)
        self.passes = 0  # finished passes: tests wait on it instead of sleeping
        self._since = datetime.now(UTC) - timedelta(seconds=settings.mlflow_lookback_s)
        self._client: Any = None
        self._experiment_id: str | None = None
        self._s3: Any = None
        self._lock = threading.Lock()
        self._aliases_due: set[tuple[str | None, str]] | None = None  # None: every registered name, at start

    def alias_moved(self, tenant: str | None, name: str) -> None:
        """Called by the alias route: mirror this name's aliases on the next pass (and until MLflow answers)."""
        with self._lock:
            if self._aliases_due is not None:
                self._aliases_due.add((tenant, name))

    def run_once(self) -> None:
        started = datetime.now(UTC)
        claimed = self.runs.to_sync(self.owner, LEASE_S, self._since)
        unavailable = False
        for run in claimed:
            try:
                if not unavailable:  # MLflow did not answer for an earlier job: the others wait for the next pass
                    self._sync(run)
            except Unavailable as e:
                self._failed(run, str(e))
                unavailable = True
            except Exception as e:  # a bug of ours with this job's record: it must not stop the other jobs
                logger.exception("MLflow mirror: job %s could not be mirrored", run.job_id)
                run.failures += 1
                self.runs.save(run, self.owner, error=_short(e))
            finally:
                self.runs.release(run.job_id, self.owner)
        if not unavailable:
            self._since = max(self._since, started - CLOCK_MARGIN)
            self._mirror_aliases()
        self.passes += 1

    # --- one job ---------------------------------------------------------------------------------------

    def _sync(self, run: TrackedRun) -> None:
        job = self.store.get_job(run.job_id)
        if job is None:
            self.runs.save(run, self.owner, closed=True)
            return
        s, mlflow = run.synced, self.mlflow
        if run.run_id is None:
            experiment = self._experiment()
            run.run_id = self._call(lambda: content.start_run(mlflow, experiment, job, self.settings.public_url))
            s.attempt = job.attempt
            self._save(run, job)
        run_id = str(run.run_id)
        if s.attempt != job.attempt:  # a retry: the run follows the new attempt to its own end
            self._do(job, "to reopen the run", lambda: mlflow.update_run(run_id, status="RUNNING"))
            s.attempt, s.registered = job.attempt, None
            s.ended = s.report = s.evaluation = s.model = False
            self._save(run, job)
        if not s.params:
            self._do(job, "the parameters", lambda: content.log_params(mlflow, run_id, job))
            s.params = True
            self._save(run, job)
        epochs = self.store.epochs(job.id)
        if len(epochs) > s.epochs:
            rows = content.epoch_rows(epochs[s.epochs :], self._epoch_times(job.id))
            self._do(job, "the epochs' metrics", lambda: content.log_metrics(mlflow, run_id, rows))
            s.epochs = len(epochs)
            self._save(run, job)
        if job.lr_sweep and not s.lr_sweep:
            self._do(job, "the LR sweep", lambda: content.log_lr_sweep(mlflow, run_id, job))
            s.lr_sweep = True
            self._save(run, job)
        for name, uri in (job.artifacts or {}).items():
            if name.endswith(".png") and name not in s.artifacts:
                plot = functools.partial(content.log_bytes, mlflow, run_id, self._read(uri), name, "plots")
                self._do(job, name, plot)
                s.artifacts.append(name)
                self._save(run, job)
        if job.evaluation and not s.evaluation:
            self._do(job, "the evaluation", lambda: content.log_evaluation(mlflow, run_id, job))
            s.evaluation = True
            self._save(run, job)
        if job.status.terminal:
            self._finish(run, job)
        else:
            self._save(run, job)

    def _finish(self, run: TrackedRun, job: JobRecord) -> None:
        s, run_id, mlflow = run.synced, str(run.run_id), self.mlflow
        artifact = (job.artifacts or {}).get("model.pt")
        if artifact and not s.model:
            found = self._model_files(artifact)
            if found is None:  # its exports are being built, seconds after the job succeeded: the next pass
                self._save(run, job)
                return
            files, manifest = found
            self._do(job, "the model files", lambda: content.log_model_files(mlflow, run_id, files, manifest))
            s.model = True
            self._save(run, job)
        if not s.report:
            html = self._report(job)
            if html is not None:
                self._do(job, "the report", lambda: mlflow.log_text(run_id, html, "report.html"))
            s.report = True
            self._save(run, job)
        if artifact and s.registered is None and job.status.value == "succeeded":
            s.registered = self._register(run_id, job)
            self._save(run, job)
        if not s.ended:
            status, end = content.RUN_STATUS[job.status], content.millis(job.finished_at)
            self._do(job, "the run's end", lambda: mlflow.set_terminated(run_id, status=status, end_time=end))
            s.ended = True
        self._save(run, job, closed=True)

    def _register(self, run_id: str, job: JobRecord) -> dict[str, str]:
        model = self.store.get_model(job.model_id) if job.model_id else None
        version = model.version if model else None
        try:
            name = registry.registered_name(self.settings.mlflow_model_name, job.name, job.tenant)
            number = self._call(lambda: registry.register(self.mlflow, name, run_id, job, version))
        except (registry.NotRegistered, Refused) as why:
            self.store.record_event(job.id, "tracking_skipped", f"the model is not registered in MLflow: {why}")
            return {"skipped": str(why)}
        self.store.record_event(
            job.id, "tracking", f"registered in MLflow as {name} version {number}", {"name": name, "version": number}
        )
        if job.name:
            self.alias_moved(job.tenant, job.name)
        return {"name": name, "version": number}

    def _report(self, job: JobRecord) -> str | None:
        """The job's report page, as GET /v1/jobs/{id}/report renders it (None, and the log says why, if it fails)."""
        from service.report import render_report

        try:
            return render_report(job, self.store.epochs(job.id), self.settings.public_url, self._s3_client())
        except Exception as e:  # the page is a copy for MLflow's users: the run goes on without it
            logger.exception("MLflow mirror: the report of job %s could not be rendered", job.id)
            self.store.record_event(job.id, "tracking_skipped", f"the report is not in the MLflow run: {_short(e)}")
            return None

    def _do(self, job: JobRecord, what: str, action: Callable[[], object]) -> None:
        """One logging call: MLflow not answering stops the pass (`Unavailable`); MLflow refusing skips the part."""
        try:
            self._call(action)
        except Refused as e:
            self.store.record_event(job.id, "tracking_skipped", f"MLflow refused {what}: {e}")

    def _save(self, run: TrackedRun, job: JobRecord, closed: bool = False) -> None:
        if run.synced.warned:  # it answers again
            run.synced.warned = False
            message = f"MLflow at {self.where} answers again; the run is catching up"
            self.store.record_event(job.id, "tracking_resumed", message)
        run.failures = 0
        self.runs.save(run, self.owner, closed=closed)

    def _failed(self, run: TrackedRun, error: str) -> None:
        run.failures += 1
        if not run.synced.warned:
            run.synced.warned = True
            self.store.record_event(
                run.job_id,
                "tracking_unavailable",
                f"MLflow at {self.where} did not answer ({error}); the job is not affected, and its run "
                "catches up when MLflow answers again",
                {"failures": run.failures},
            )
        logger.warning("MLflow mirror: job %s: %s (failure %d)", run.job_id, error, run.failures)
        self.runs.save(run, self.owner, error=error[:500])

    # --- aliases ---------------------------------------------------------------------------------------

    def _mirror_aliases(self) -> None:
        with self._lock:
            # The first pass takes every registered name, so that moves made while no API tracked arrive too.
            due = set(self._aliases_due) if self._aliases_due is not None else set(self._registered_names())
            self._aliases_due = set()
        done = set()
        for tenant, name in sorted(due, key=lambda pair: (pair[0] or "", pair[1])):
            aliases = self._aliases_of(tenant, name)
            try:
                registered = registry.registered_name(self.settings.mlflow_model_name, name, tenant)
                self._call(lambda: registry.mirror_aliases(self.mlflow, registered, tenant, aliases))  # noqa: B023
            except Unavailable as e:
                logger.warning("MLflow mirror: the aliases of %s wait for MLflow: %s", name, e)
                break
            except (registry.NotRegistered, Refused) as e:
                logger.warning("MLflow mirror: the aliases of %s are not mirrored: %s", name, e)
            done.add((tenant, name))
        with self._lock:
            assert self._aliases_due is not None
            self._aliases_due |= due - done

    def _registered_names(self) -> list[tuple[str | None, str]]:
        found = []
        for tenant, _ in self.runs.registered():
            for model in self.store.list_models(tenant):
                if model.tenant == tenant and model.name:
                    found.append((tenant, model.name))
        return found

    def _aliases_of(self, tenant: str | None, name: str) -> dict[str, str]:
        ids = {m.id for m in self.store.list_models(tenant) if m.tenant == tenant and m.name == name}
        pointed = self.store.model_aliases().items()
        return {alias: model_id for model_id, aliases in pointed if model_id in ids for alias in aliases}

    # --- MLflow and S3 ---------------------------------------------------------------------------------

    @property
    def mlflow(self) -> Any:
        if self._client is None:
            for key, value in CLIENT_ENVIRONMENT.items():
                os.environ.setdefault(key, value)
            from mlflow import MlflowClient  # ~1.5 s and ~100 MB: only in an API that tracks

            uri = self.settings.mlflow_tracking_uri
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    def _call(self, action: Callable[[], T]) -> T:
        """One MLflow call: not answering becomes `Unavailable`, answering no becomes `Refused`."""
        from mlflow.exceptions import MlflowException, RestException

        try:
            return action()
        except RestException as e:
            if e.error_code in REFUSALS:
                raise Refused(e.message[:300]) from None
            raise Unavailable(f"{e.error_code}: {e.message[:200]}") from None
        except MlflowException as e:
            raise Unavailable(_short(e)) from None
        except OSError as e:  # requests' connection errors, where MLflow does not wrap them
            raise Unavailable(_short(e)) from None

    def _experiment(self) -> str:
        if self._experiment_id is None:
            name = self.settings.mlflow_experiment
            found = self._call(lambda: self.mlflow.get_experiment_by_name(name))
            made = found.experiment_id if found else self._call(lambda: self.mlflow.create_experiment(name))
            self._experiment_id = str(made)
        return self._experiment_id

    def _s3_client(self) -> Any:
        if self._s3 is None:
            self._s3 = s3_client(self.settings)
        return self._s3

    def _read(self, uri: str) -> bytes:
        location = S3Location.parse(uri)
        try:
            return bytes(self._s3_client().get_object(Bucket=location.bucket, Key=location.key)["Body"].read())
        except (ClientError, BotoCoreError) as e:
            raise Unavailable(f"the artifact store: {_short(e)}") from None

    def _model_files(self, artifact_uri: str) -> tuple[dict[str, bytes], dict[str, Any] | None] | None:
        """The ONNX export and its manifest when the model has them, else Trainyard's own artifact; None while the
        exports are being built."""
        folder = export_folder(artifact_uri)
        try:
            manifest = json.loads(self._read(f"{folder.uri}{MANIFEST_FILE}"))
        except Unavailable:
            manifest = None
        if manifest and building(manifest.get("building_since")):
            return None
        if manifest and ExportFormat.onnx in manifest.get("files", {}):
            return {"model.onnx": self._read(f"{folder.uri}{FILE_NAMES[ExportFormat.onnx]}")}, manifest
        return {"model.pt": self._read(artifact_uri)}, manifest

    def _epoch_times(self, job_id: str) -> dict[int, int]:
        """When each epoch was recorded (ms): its `epoch` event; head-only epochs, by their checkpoint's event."""
        times: dict[int, int] = {}
        for event in self.store.events(job_id):
            if event.kind == "epoch" and event.data:
                times[int(event.data["epoch"])] = content.millis(event.at)
            elif event.kind == "checkpoint" and event.data and "epoch" in event.data:
                for epoch in range(1, int(event.data["epoch"]) + 1):
                    times.setdefault(epoch, content.millis(event.at))
        return times


def _origin(uri: str) -> str:
    """scheme://host[:port] of the tracking URI: never its user or password."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}" if parts.hostname else uri


def _short(error: Exception) -> str:
    """What went wrong in a few words: MLflow's messages wrap the whole connection error."""
    text = str(error)
    for cause, words in (("Connection refused", "connection refused"), ("timed out", "timed out")):
        if cause in text:
            return words
    first = text.splitlines()[0][:200] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__

"""How the API starts, stops and watches training jobs on Ray: one Ray Job per training job.

The Ray submission id *is* the Trainyard job id (plus `-attemptN` for a retried job's later attempts: see
`ray_submission_id`), so a submission can be repeated safely (Ray refuses a second job with the same id) and
the reconciler can ask Ray about any job in the store without a mapping table. The launcher's methods take
that submission id.
"""

from __future__ import annotations

import logging
import threading
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from core.batch_spec import BATCH_ID_PREFIX

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

logger = logging.getLogger(__name__)

# The Jobs SDK uses `requests` without a timeout; a dashboard that accepts connections but hangs would
# otherwise pin a worker thread (and the reconciler) forever.
RAY_REQUEST_TIMEOUT_S = 10.0


class RayJobState(StrEnum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    stopped = "stopped"
    missing = "missing"  # Ray answered and has no job with this id
    unreachable = "unreachable"  # Ray did not answer; nothing can be concluded


class LauncherUnavailable(Exception):
    """Ray could not be reached; the caller should leave the job as it is and try again later."""


class Launcher(Protocol):
    """What the API needs from the cluster. Every method blocks: call it via `asyncio.to_thread` from async code."""

    def submit(self, job_id: str) -> None:
        """Start the job's driver. Submitting a job Ray already has is not an error.

        Raises LauncherUnavailable when Ray is not answering.
        """

    def stop(self, job_id: str) -> None:
        """Ask the job's driver to stop. A job Ray does not know is not an error.

        Raises LauncherUnavailable when Ray is not answering.
        """

    def state(self, job_id: str) -> RayJobState:
        """The job's state as Ray sees it; never raises."""

    def ping(self) -> bool:
        """Whether Ray's Jobs API answers."""


def driver_entrypoint(job_id: str) -> str:
    # A batch prediction run (`bp-…`) has its own driver; one launcher submits both kinds of work.
    module = "jobs.batch.driver" if job_id.startswith(f"{BATCH_ID_PREFIX}-") else "jobs.driver"
    return f"python -m {module} {job_id}"


# A retried job runs again under a new Ray submission id: Ray keeps each submission's record and log, and
# does not support reusing an id. The first attempt's id is the job id itself.
_ATTEMPT_SUFFIX = "-attempt"


def ray_submission_id(job_id: str, attempt: int) -> str:
    """The id of the job's Ray submission for `attempt` (1 for the first run): what the launcher is given."""
    return job_id if attempt == 1 else f"{job_id}{_ATTEMPT_SUFFIX}{attempt}"


def job_id_of(submission_id: str) -> str:
    """The Trainyard job id a Ray submission id belongs to."""
    return submission_id.split(_ATTEMPT_SUFFIX, 1)[0]


_RAY_STATES = {
    "PENDING": RayJobState.pending,
    "RUNNING": RayJobState.running,
    "SUCCEEDED": RayJobState.succeeded,
    "FAILED": RayJobState.failed,
    "STOPPED": RayJobState.stopped,
}


def _is_http_status(error: RuntimeError, status: int) -> bool:
    # The SDK reports HTTP errors only as RuntimeError("Request failed with status code N: …").
    return f"status code {status}" in str(error)


class RayLauncher:
    """A `Launcher` over Ray's Jobs API (the dashboard's HTTP server, e.g. http://127.0.0.1:8265).

    The client is created on first use because its constructor contacts the dashboard, and the API must
    start (and keep accepting jobs) while Ray is down. No environment or secret travels with a submission:
    the cluster's processes already have Trainyard's configuration in their environment.
    """

    def __init__(self, address: str, *, timeout_s: float = RAY_REQUEST_TIMEOUT_S) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._client: JobSubmissionClient | None = None
        self._lock = threading.Lock()

    def _get_client(self) -> JobSubmissionClient:
        with self._lock:
            if self._client is None:
                try:
                    self._client = _new_client(self.address, self.timeout_s)
                except OSError as e:  # ConnectionError from the version check, requests' errors
                    raise LauncherUnavailable(f"Ray's Jobs API at {self.address} is not answering: {e}") from e
            return self._client

    def submit(self, job_id: str) -> None:
        client = self._get_client()
        try:
            client.submit_job(
                entrypoint=driver_entrypoint(job_id_of(job_id)),
                submission_id=job_id,
                # The driver only orchestrates; its Ray Train workers reserve the CPUs/GPUs.
                entrypoint_num_cpus=0,
                metadata={"trainyard_job_id": job_id_of(job_id)},
            )
        except OSError as e:
            raise LauncherUnavailable(f"submitting {job_id} to Ray failed: {e}") from e
        except RuntimeError as e:
            # A resubmission after an API crash between submit and reply: Ray already runs it.
            if "already exists" in str(e):
                logger.info("job %s was already submitted to Ray", job_id)
                return
            raise
        logger.info("submitted job %s to Ray", job_id)

    def stop(self, job_id: str) -> None:
        client = self._get_client()
        try:
            client.stop_job(job_id)
        except OSError as e:
            raise LauncherUnavailable(f"stopping {job_id} on Ray failed: {e}") from e
        except RuntimeError as e:
            if not _is_http_status(e, 404):
                raise
            logger.info("job %s is unknown to Ray; nothing to stop", job_id)

    def state(self, job_id: str) -> RayJobState:
        try:
            status = self._get_client().get_job_status(job_id)
        except LauncherUnavailable:
            return RayJobState.unreachable
        except OSError:
            return RayJobState.unreachable
        except RuntimeError as e:
            if _is_http_status(e, 404):
                return RayJobState.missing
            # A 5xx (e.g. the dashboard lost its GCS connection): Ray is not answering usefully.
            logger.warning("Ray could not report on job %s: %s", job_id, e)
            return RayJobState.unreachable
        except Exception as e:  # authentication errors and the like: not conclusive either
            logger.warning("Ray could not report on job %s: %s", job_id, e)
            return RayJobState.unreachable
        return _RAY_STATES.get(str(status), RayJobState.unreachable)

    def ping(self) -> bool:
        try:
            self._get_client().get_version()
        except Exception:
            return False
        return True


def _new_client(address: str, timeout_s: float) -> JobSubmissionClient:
    # Imported here: importing Ray costs a second or more and the API may never need it (tests, Ray down).
    from ray.job_submission import JobSubmissionClient

    class _TimeoutClient(JobSubmissionClient):
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

    return _TimeoutClient(address)

"""Turning what Ray raises when distributed training fails into a sentence a user can act on.

Ray Train wraps a worker's failure in a `WorkerGroupError` whose message is "Training failed due to worker
errors:" followed by per-rank tracebacks; shown as it is (first line only) the user reads an empty reason.
This digs out each failed rank's root cause and names the two causes a user most often meets: a worker
process that died, and an artifact store (S3) that stopped answering.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from jobs.errors import StageError

# pyarrow's S3 filesystem (checkpoints) and botocore (everything else) as they report an unreachable store.
_STORAGE_MARKERS = re.compile(
    r"AWS Error|curlCode|Could not connect to the endpoint URL|EndpointConnectionError|the object store \(S3|"
    r"When (uploading|reading|listing|getting|creating|deleting|completing)"
)
_DIED_MARKERS = re.compile(r"ActorDiedError|ActorUnavailableError|died unexpectedly|SIGKILL|signal 9|exit code")
_WRAPPER_LINES = ("Training failed due to worker errors:",)


def storage_unavailable(action: str, exc: BaseException) -> StageError:
    """The StageError for S3 not answering `action` (e.g. "listing s3://b/p") after the client's retries."""
    from core.settings import get_settings

    settings = get_settings()
    endpoint = settings.s3_endpoint_url or "AWS S3"
    return StageError(
        "storage_unavailable",
        f"the object store (S3, {endpoint}) did not answer while {action}, after {settings.s3_max_attempts} tries "
        f"with backoff ({type(exc).__name__}); check that the S3 endpoint is up, then submit the job again",
    )


def _root(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        line = line.strip()
        if line and line not in _WRAPPER_LINES and not line.startswith("Traceback"):
            return line[:300]
    return ""


def _causes(exc: BaseException) -> list[tuple[str, BaseException]]:
    """(where, root cause) for each failed rank, or for the error itself when it names no ranks."""
    root = _root(exc)
    failures = getattr(root, "worker_failures", None) or getattr(exc, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        return [(f"worker rank {rank}", _root(error)) for rank, error in sorted(failures.items())]
    return [("training", root)]


_SIGNAL = re.compile(r"killed by signal (\d+)")
# Ray's memory monitor kills a worker before the kernel would, and says so.
_RAY_OOM = re.compile(r"OutOfMemoryError|running low on memory")
# A worker process that vanished (SIGKILL, the kernel's OOM killer, a segfault): Ray only sees the pipe close.
_VANISHED = re.compile(r"unexpectedly exits|died unexpectedly|SYSTEM_ERROR")


def _death_reason(text: str) -> str:
    """Why a worker process died, in a user's words, from what Ray wrote about it ("" when it says nothing).

    Ray cannot see the signal of a process that vanished; it lists the usual causes, and so does this.
    """
    if found := _SIGNAL.search(text):
        return f"killed by signal {found.group(1)}"
    if _RAY_OOM.search(text):
        return "out of memory: Ray's memory monitor killed it"
    if _VANISHED.search(text):
        return "its process vanished: killed (SIGKILL, or the kernel's out-of-memory killer) or crashed"
    return ""


def worker_failure_summary(worker_exceptions: Mapping[int, BaseException]) -> str:
    """One sentence naming each failed rank and its root cause, e.g. "training worker rank 1 died (killed by
    signal 9)"; for the job's event log while Ray Train retries."""
    parts = []
    for rank, error in sorted(worker_exceptions.items()):
        cause = _root(error)
        text = f"{type(cause).__name__} {cause} {type(error).__name__} {error}"
        if _DIED_MARKERS.search(text):
            reason = _death_reason(text)
            parts.append(f"training worker rank {rank} died" + (f" ({reason})" if reason else ""))
        else:
            parts.append(f"training worker rank {rank} failed: {type(cause).__name__}: {_first_line(cause)}")
    return "; ".join(parts) or "a training worker failed"


def training_failure(exc: BaseException, attempts: int) -> StageError:
    """The StageError for a `TorchTrainer.fit()` that raised `exc` after `attempts` tries."""
    causes = _causes(exc)
    where, cause = causes[0]
    detail = f"{type(cause).__name__}: {_first_line(cause)}".rstrip(": ")
    text = " ".join(f"{type(c).__name__} {c}" for _, c in causes) + f" {type(exc).__name__} {exc}"
    tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if _STORAGE_MARKERS.search(text):
        return StageError(
            "storage_unavailable",
            f"the artifact store (S3) stopped answering while training saved or loaded a checkpoint ({where}, "
            f"{tries}): {detail}. Check that the S3 endpoint is up, then submit the job again",
        )
    if _DIED_MARKERS.search(text):
        reason = _death_reason(text) or "killed, or out of memory"
        return StageError(
            "worker_died",
            f"a training worker died ({reason}; {where}, {tries}) and the retry failed too: {detail}",
        )
    return StageError("training_failed", f"distributed training failed ({where}, {tries}): {detail}")


def actor_pool_failure(exc: BaseException) -> StageError:
    """The StageError for a batch run whose Ray Data pipeline (its pool of model actors) raised `exc`."""
    cause = _root(exc)
    detail = f"{type(cause).__name__}: {_first_line(cause)}".rstrip(": ")
    text = f"{type(cause).__name__} {cause} {type(exc).__name__} {exc}"
    if _STORAGE_MARKERS.search(text):
        return StageError(
            "storage_unavailable",
            f"the object store (S3) stopped answering while the model actors read images: {detail}. Check that the "
            "S3 endpoint is up, then retry the run (shards already written are kept)",
        )
    if _DIED_MARKERS.search(text):
        reason = _death_reason(text) or "killed, or out of memory"
        return StageError("worker_died", f"a model actor died ({reason}) and Ray Data's retries failed too: {detail}")
    return StageError("prediction_failed", f"scoring the images failed in a model actor: {detail}")

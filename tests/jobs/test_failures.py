"""Training failures in a user's words: a dead worker names its rank and signal; S3 outages name S3."""

from __future__ import annotations

import pickle

from botocore.exceptions import EndpointConnectionError

from jobs.errors import StageError
from jobs.failures import storage_unavailable, training_failure, worker_failure_summary


class ActorDiedError(Exception):
    """Stands in for Ray's error of the same name: only its name and text are read."""


SIGKILLED = ActorDiedError(
    "The actor died unexpectedly before finishing this task. The process was killed by signal 9 (SIGKILL)."
)


# What Ray 2.60 says of a Ray Train worker whose process was SIGKILLed (it cannot see the signal itself).
VANISHED = ActorDiedError(
    "The actor died unexpectedly before finishing this task.\n\tclass_name: RayTrainWorker\nThe actor is dead because "
    "its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with "
    "a connection error code 2. End of file. Some common causes include: (1) the process was killed by the OOM "
    "killer due to high memory usage, (2) ray stop --force was called, or (3) the worker crashed unexpectedly"
)


class WorkerGroupError(Exception):
    def __init__(self, message: str, worker_failures: dict[int, BaseException]) -> None:
        super().__init__(message)
        self.worker_failures = worker_failures


def test_a_killed_worker_is_named_with_its_rank_and_signal() -> None:
    assert worker_failure_summary({1: SIGKILLED}) == "training worker rank 1 died (killed by signal 9)"
    summary = worker_failure_summary({0: ValueError("bad shape"), 1: SIGKILLED})
    assert (
        summary
        == "training worker rank 0 failed: ValueError: bad shape; training worker rank 1 died (killed by signal 9)"
    )


def test_a_worker_that_vanished_is_not_blamed_on_memory_alone() -> None:
    assert worker_failure_summary({0: VANISHED}) == (
        "training worker rank 0 died (its process vanished: killed (SIGKILL, or the kernel's out-of-memory killer) "
        "or crashed)"
    )


def test_training_that_fails_twice_on_a_dead_worker_never_reads_as_an_empty_reason() -> None:
    error = training_failure(WorkerGroupError("Training failed due to worker errors:", {1: SIGKILLED}), attempts=2)
    assert error.code == "worker_died"
    assert error.message.startswith("a training worker died (killed by signal 9; worker rank 1, after 2 attempts)")
    assert error.message.rstrip().endswith("(SIGKILL).")


def test_an_unreachable_s3_is_named_as_storage() -> None:
    error = storage_unavailable("listing s3://b/p", EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    assert error.code == "storage_unavailable"
    assert "object store (S3" in error.message and "listing s3://b/p" in error.message
    # The same error raised inside a Ray Train worker reaches the driver wrapped; it is still storage.
    wrapped = training_failure(WorkerGroupError("Training failed due to worker errors:", {0: error}), attempts=2)
    assert wrapped.code == "storage_unavailable"


def test_stage_errors_survive_pickling_between_ray_processes() -> None:
    error = pickle.loads(pickle.dumps(StageError("storage_unavailable", "S3 did not answer")))
    assert (error.code, error.message) == ("storage_unavailable", "S3 did not answer")

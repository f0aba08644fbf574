"""The parts of a batch run that need no cluster: the actor pool's size, the shard size, the scores."""

from __future__ import annotations

import pytest

from core.batch_output import ResultRow
from jobs.batch.pipeline import size_pool
from jobs.batch.shards import MAX_SHARD, MIN_SHARD, Tally, shard_size_for
from jobs.errors import StageError


def test_the_pool_takes_one_actor_per_cpu_or_gpu_of_the_cluster_unless_told() -> None:
    assert size_pool(False, None, {"CPU": 6.0, "GPU": 2.0}, fixed_cluster=True).max_size == 6
    gpu = size_pool(True, None, {"CPU": 6.0, "GPU": 2.0}, fixed_cluster=True)
    assert (gpu.min_size, gpu.max_size, gpu.gpus, gpu.cpus) == (2, 2, 1.0, 1.0)
    assert size_pool(False, 3, {"CPU": 6.0}, fixed_cluster=True).max_size == 3


def test_an_autoscaling_cluster_without_gpus_starts_one_gpu_actor_and_may_grow() -> None:
    pool = size_pool(True, None, {"CPU": 4.0}, fixed_cluster=False)
    assert pool.min_size == 1 and pool.max_size > 1 and pool.gpus == 1.0


@pytest.mark.parametrize(
    ("use_gpu", "workers", "code"), [(True, None, "not_enough_gpus"), (False, 5, "not_enough_cpus")]
)
def test_a_fixed_cluster_that_cannot_hold_the_pool_fails_at_once(use_gpu: bool, workers: int | None, code: str) -> None:
    with pytest.raises(StageError) as failed:
        size_pool(use_gpu, workers, {"CPU": 2.0}, fixed_cluster=True)
    assert failed.value.code == code and "does not autoscale" in failed.value.message


def test_shards_stay_between_their_bounds() -> None:
    assert shard_size_for(10) == MIN_SHARD
    assert shard_size_for(10_000_000) == MAX_SHARD
    assert MIN_SHARD < shard_size_for(200_000) < MAX_SHARD


def row(actual: str | None, prediction: str | None, error: str | None = None) -> ResultRow:
    labels = [prediction] if prediction else []
    return ResultRow(path="s3://b/x", prediction=prediction, labels=labels, probabilities=[1.0] * len(labels),
                     error=error, actual=actual)  # fmt: skip


def test_scores_count_labelled_scored_rows_and_set_apart_unknown_labels() -> None:
    tally = Tally(["cat", "dog"])
    for r in (row("cat", "cat"), row("cat", "dog"), row("dog", "dog"), row("dog", None, "not found"),
              row("horse", "cat"), row(None, "cat")):  # fmt: skip
        tally.add(r)
    scores = tally.scores()
    assert scores.confusion_matrix == [[1, 1], [0, 1]]
    assert (scores.correct, scores.images, scores.unknown_labels) == (2, 3, 1)
    assert scores.accuracy == round(2 / 3, 5)

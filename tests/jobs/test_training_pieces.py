from __future__ import annotations

import numpy as np

from jobs.features import Features
from jobs.stages.fine_tune import _gpu_failure_line, train_head
from jobs.train_loop import shard_indices


def test_shards_are_disjoint_equal_and_change_every_epoch() -> None:
    n, world = 101, 2
    epoch1 = [shard_indices(n, rank, world, seed=1) for rank in range(world)]
    epoch2 = [shard_indices(n, rank, world, seed=2) for rank in range(world)]
    assert len(epoch1[0]) == len(epoch1[1]) == 50
    assert not set(epoch1[0]) & set(epoch1[1])
    assert epoch1 != epoch2


def test_head_learns_on_cached_features() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, size=(3, 32))
    y = rng.integers(0, 3, size=150)
    x = (centres[y] + rng.normal(0, 1, size=(150, 32))).astype(np.float32)
    features = Features(train_x=x[:100], train_y=y[:100], valid_x=x[100:], valid_y=y[100:], images_per_second=0.0)
    result = train_head(features, num_classes=3, lr=3e-3, epochs=5, batch_size=16, seed=0)
    assert [e["epoch"] for e in result.epochs] == [1, 2, 3, 4, 5]
    assert result.epochs[-1]["train_loss"] < result.epochs[0]["train_loss"]
    assert result.epochs[-1]["accuracy"] >= 0.9
    assert len(result.state) > 1000


def test_a_wrapped_nccl_error_is_reported_by_its_own_line() -> None:
    worker = ValueError("ProcessGroupNCCL is only supported with GPUs, no GPUs found!")
    wrapped = RuntimeError(
        "Training failed due to controller error:\nTraceback ...\n    backend_class = ProcessGroupNCCL(\n"
        f"ValueError: {worker}"
    )
    wrapped.__cause__ = worker
    assert _gpu_failure_line(wrapped) == "ProcessGroupNCCL is only supported with GPUs, no GPUs found!"
    assert _gpu_failure_line(RuntimeError("loss is nan")) is None

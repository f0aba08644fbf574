from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from core.backbones import build_classifier, local_pretrained_weights
from core.spec import JobParams
from jobs.features import Features
from jobs.head import train_head
from jobs.stages.fine_tune import (
    CONTROLLER_POLL_ENV,
    CONTROLLER_POLL_S,
    PREEMPTION_WATCHER_ENV,
    RAY_TRAIN_ENV,
    BestCheckpoint,
    _gpu_failure_line,
    pick_best,
)
from jobs.unfrozen import (
    MIN_DELTA,
    EarlyStopping,
    shard_indices,
    train_mode,
    trial_steps,
    worker_batch_size,
)
from jobs.unfrozen_config import epoch_image_sizes


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


def test_early_stopping_counts_epochs_without_a_real_improvement() -> None:
    stopping = EarlyStopping(best_loss=0.50)  # the head-only model's validation loss
    assert stopping.improved(0.40)
    assert not stopping.improved(0.395)  # less than MIN_DELTA better: noise, not progress
    assert stopping.bad_epochs == 1
    assert not stopping.improved(0.6)
    assert stopping.bad_epochs == 2
    assert stopping.improved(0.40 - 2 * MIN_DELTA)
    assert stopping.bad_epochs == 0


def test_the_unfrozen_trial_is_short_on_big_sets_and_the_whole_epoch_on_small_ones() -> None:
    # 6,000 images at a global batch of 64: 94 steps an epoch; the trial sees 512 images (8 steps).
    assert trial_steps(6000, global_batch=64, steps_per_epoch=94, trial_images=512) == 8
    # 245 images: 4 steps an epoch, shorter than a trial: the trial is the epoch, checked at its end.
    assert trial_steps(245, global_batch=64, steps_per_epoch=4, trial_images=512) == 4


@pytest.mark.parametrize("world", [2, 3, 4])
def test_the_workers_batches_together_are_the_one_worker_batches(world: int) -> None:
    # batch_size is global: world workers at batch_size // world each take, step by step, exactly the images
    # one worker takes at batch_size, so the two runs make the same optimizer steps over the same batches.
    n, global_batch, seed = 96, 12, 1001
    (single,) = [shard_indices(n, 0, 1, seed)]
    per_worker = worker_batch_size(global_batch, world)
    shards = [shard_indices(n, rank, world, seed) for rank in range(world)]
    steps = len(shards[0]) // per_worker
    assert steps == n // global_batch
    for step in range(steps):
        together = {i for shard in shards for i in shard[step * per_worker : (step + 1) * per_worker]}
        assert together == set(single[step * global_batch : (step + 1) * global_batch])


def test_a_global_batch_smaller_than_the_workers_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        JobParams(dataset_uri="s3://bucket/data", batch_size=2, num_workers=4)
    (problem,) = error.value.errors()
    assert problem["loc"] == ("num_workers",) and "batch_size" in problem["msg"]
    assert worker_batch_size(64, 2) == 32 and worker_batch_size(10, 3) == 3


def test_head_result_carries_its_validation_logits() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    y = rng.integers(0, 2, size=40)
    features = Features(train_x=x[:30], train_y=y[:30], valid_x=x[30:], valid_y=y[30:], images_per_second=0.0)
    result = train_head(features, num_classes=2, lr=1e-2, epochs=2, batch_size=8, seed=0)
    logits = torch.load(io.BytesIO(result.valid_logits), weights_only=True)
    assert logits.shape == (10, 2)
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[30:])).item()
    assert loss == pytest.approx(result.epochs[-1]["valid_loss"], abs=1e-4)  # the same numbers the epoch reported


def test_progressive_resizing_grows_evenly_to_the_full_size_at_the_last_epoch() -> None:
    assert epoch_image_sizes(224, 3, 0.75) == [160, 192, 224]
    assert epoch_image_sizes(224, 2, 0.5) == [112, 224]
    assert epoch_image_sizes(224, 1, 0.5) == [224]  # one epoch: it is the last, at full size
    assert epoch_image_sizes(224, 3, None) == [224, 224, 224]
    assert epoch_image_sizes(224, 3, 1.0) == [224, 224, 224]
    assert epoch_image_sizes(40, 3, 0.3) == [32, 32, 40]  # never below 32 px, never above image_size
    sizes = epoch_image_sizes(512, 10, 0.6)
    assert sizes == sorted(sizes) and sizes[-1] == 512 and all(s % 16 == 0 for s in sizes)


def test_fine_tuning_keeps_the_bodys_batch_norm_statistics_and_trains_its_scale() -> None:
    torch.manual_seed(0)
    # Pretrained: with random weights and ImageNet's statistics absent, ReLU6 saturates and no gradient flows.
    model = build_classifier("efficientnet_lite0", 2, local_pretrained_weights("efficientnet_lite0"))
    norms = [m for m in model.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    means = [m.running_mean.clone() for m in norms]
    scales = [m.weight.detach().clone() for m in norms]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_mode(model, model.body)
    assert model.training and model.head.training and not any(m.training for m in norms)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    assert all(torch.equal(m.running_mean, before) for m, before in zip(norms, means, strict=True))
    assert any(not torch.equal(m.weight, before) for m, before in zip(norms, scales, strict=True))


def _candidate(epoch: int, accuracy: float, loss: float) -> BestCheckpoint:
    stage = "frozen" if epoch == 1 else "unfrozen"
    return BestCheckpoint(
        epoch=epoch, stage=stage, metric="accuracy", value=accuracy, valid_loss=loss, checkpoint_uri=f"s3://b/{epoch}"
    )


def test_the_kept_checkpoint_is_the_most_accurate_and_a_tie_needs_a_real_drop_in_loss() -> None:
    head_only = _candidate(1, 1.0, 0.0056)
    # Equal accuracy, a loss lower by less than MIN_DELTA: the head-only model stays (unfreezing did not pay).
    assert pick_best([_candidate(2, 1.0, 0.0002), head_only]) is head_only
    # Lower by more than MIN_DELTA: the later one, as training itself would count it.
    better = _candidate(2, 0.99, 0.044)
    assert pick_best([_candidate(1, 0.99, 0.0946), better]) is better
    # Accuracy first, whatever the loss.
    accurate = _candidate(3, 1.0, 0.09)
    assert pick_best([_candidate(1, 0.98, 0.01), _candidate(2, 0.99, 0.02), accurate]) is accurate


def test_the_controller_poll_interval_reaches_ray_trains_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    # fine_tune shortens the controller's poll (the last epoch -> fit() returning) through this variable. If Ray
    # Train renamed it or stopped copying it from the driver to its controller, the setting would silently do
    # nothing.
    from ray.train.v2._internal import constants

    monkeypatch.setenv(CONTROLLER_POLL_ENV, str(CONTROLLER_POLL_S))
    assert constants.get_env_vars_to_propagate()[CONTROLLER_POLL_ENV] == str(CONTROLLER_POLL_S)
    assert constants.HEALTH_CHECK_INTERVAL_S_ENV_VAR == CONTROLLER_POLL_ENV
    assert CONTROLLER_POLL_S < constants.DEFAULT_HEALTH_CHECK_INTERVAL_S


def test_the_preemption_watcher_switch_reaches_ray_trains_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    # fine_tune turns the watcher off (one actor process fewer per job); Ray Train must still read and copy the switch.
    from ray.train.v2._internal import constants

    monkeypatch.setenv(PREEMPTION_WATCHER_ENV, RAY_TRAIN_ENV[PREEMPTION_WATCHER_ENV])
    assert constants.ENABLE_PREEMPTION_WATCHER_ENV_VAR == PREEMPTION_WATCHER_ENV
    assert constants.get_env_vars_to_propagate()[PREEMPTION_WATCHER_ENV] == "0"
    assert constants.DEFAULT_ENABLE_PREEMPTION_WATCHER  # on unless told: the setting is what turns it off

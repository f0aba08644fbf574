"""Stage 4: fastai's `fine_tune`, distributed.

1. Frozen body: the head trains on the cached features for `freeze_epochs` (one-cycle, seconds on a CPU).
2. Unfrozen: Ray Train `TorchTrainer` runs `jobs.train_loop` on `num_workers` DDP workers (gloo on CPU,
   NCCL on GPU) at half the head LR and 1/100 of that for the body, checkpointing every epoch to S3.
The best checkpoint by validation accuracy (the head-only model included; `pick_best` settles ties) is what
the job keeps. The head-only model's metrics come from the cached features (the same eval transform the images
would get), so it is checkpointed here without another pass over the validation images, and unfrozen training
starts only to beat it (see `jobs.unfrozen`: a short trial, then early stopping).
"""

from __future__ import annotations

import io
import os
import re

import torch
from pydantic import BaseModel
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from core.backbones import build_classifier
from core.runtime_env import TORCH_MALLOC_ENV
from core.s3 import arrow_filesystem, s3_client
from core.settings import Settings, get_settings
from core.spec import JobParams, Phase, S3Location, phase_progress
from core.store import JobStore
from jobs.cost_cap import CostCap, CostCapHit, reached_before_training
from jobs.dataset import ValidatedDataset
from jobs.errors import StageError
from jobs.failures import training_failure
from jobs.features import Features
from jobs.head import HeadResult, train_head
from jobs.paths import artifact_location
from jobs.resources import worker_bundle
from jobs.train_loop import train_loop_per_worker
from jobs.training_progress import CHECKPOINT_FILE, PREDICTIONS_FILE, TrainingProgress
from jobs.unfrozen import MIN_DELTA
from jobs.unfrozen_config import loop_config
from jobs.weights import resolve_weights

# One restart of the worker group from its last checkpoint after a worker dies (preemption, OOM kill).
MAX_FAILURES = 1
# What torch and NCCL say when a node advertises a GPU to Ray but CUDA is not usable there.
_GPU_FAILURE = re.compile(r"CUDA|NVIDIA|NCCL|no GPUs|GPU.*not available", re.IGNORECASE)
# glibc gives Ray Train's training thread its own malloc arena; these settings cut its page faults
# (benchmarks/README.md, "Process settings").
WORKER_ENV = TORCH_MALLOC_ENV
# Ray Train's controller takes the workers' reports, and learns that training has ended, only when it polls
# them: every 2 s by default, so fit() returns up to 2 s after the last epoch. At 0.5 s the job reaches
# `evaluating` about a second sooner, for a little more of the controller's CPU (benchmarks/README.md, "Time to a
# deployed model"). Ray Train copies this variable from the driver to its controller; an operator's own value
# wins.
CONTROLLER_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
CONTROLLER_POLL_S = 0.5
# Ray Train's preemption watcher only tells the training function that its node is being drained
# (`ray.train.get_preemption_info`), which jobs.train_loop never asks: a checkpoint every epoch and a restart from
# it are what recover a preempted worker here. Off, Ray Train starts one actor process fewer per job.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
RAY_TRAIN_ENV = {CONTROLLER_POLL_ENV: str(CONTROLLER_POLL_S), PREEMPTION_WATCHER_ENV: "0"}


def _gpu_failure_line(exc: BaseException) -> str | None:
    """The line of a (wrapped) training error that says the GPU was unusable, e.g. NCCL finding no GPU.

    Ray Train wraps worker errors in controller errors whose first line says nothing; the cause is deeper.
    """
    found = None
    seen: BaseException | None = exc
    while seen is not None:
        for line in str(seen).splitlines():
            if _GPU_FAILURE.search(line):
                found = line.strip()[:300]
        seen = seen.__cause__ or seen.__context__
    return found


class BestCheckpoint(BaseModel):
    epoch: int
    stage: str
    metric: str
    value: float
    valid_loss: float
    checkpoint_uri: str
    # The validation logits of this checkpoint, saved beside it: the final evaluation reads them.
    predictions_uri: str | None = None


class FineTuned(BaseModel):
    """What training kept, and whether it stopped at the job's cost cap (then `best` is the best so far)."""

    best: BestCheckpoint
    cost_cap: CostCapHit | None = None


def fine_tune(
    job_id: str,
    params: JobParams,
    dataset: ValidatedDataset,
    features: Features | None,
    lr: float,
    store: JobStore,
    settings: Settings,
    *,
    resume: bool = False,
    spent_usd: float = 0.0,
) -> FineTuned:
    """Train; with `resume` (a retried job), Ray Train restores the run from the job's checkpoint folder and the
    head-only epochs, already recorded and checkpointed by an earlier attempt, are not run again. `spent_usd`: the
    job's work priced so far, which its `max_cost_usd` counts (`jobs.cost_cap`)."""
    classes = dataset.summary.classes
    artifacts = artifact_location(settings, job_id)
    head: HeadResult | None = None
    head_only: BestCheckpoint | None = None
    # A retried job resumes its unfrozen epochs; its head-only epochs were trained and recorded before.
    if params.freeze_epochs > 0 and not resume:
        assert features is not None, "head-only epochs train on the cached features"
        head = train_head(features, len(classes), lr, params.freeze_epochs, params.batch_size, params.seed)
        for row in head.epochs:
            store.add_epoch(job_id, row)
        head_only = checkpoint_head_only(head, params, len(classes), artifacts.child("checkpoints", "head-only"))
        store.add_event(
            job_id,
            "checkpoint",
            "head-only model checkpointed",
            {"epoch": head_only.epoch, "uri": head_only.checkpoint_uri},
        )
    cap = None
    if params.max_cost_usd is not None:
        bundle = worker_bundle(params)
        cap = CostCap(
            max_usd=params.max_cost_usd,
            spent_before_usd=spent_usd,
            worker_cpus=bundle["CPU"],
            worker_gpus=bundle.get("GPU", 0.0),
        )
        # Already reached before Ray Train starts (features cost it, or an earlier attempt): the head-only model,
        # trained on the driver for nothing, is the best there will be.
        if head_only is not None and (hit := reached_before_training(cap, head_only.epoch)):
            return FineTuned(best=head_only, cost_cap=hit)
        if head_only is None and reached_before_training(cap, params.freeze_epochs):
            raise StageError(
                "cost_cap_reached",
                f"the job's work before training is estimated at ${spent_usd:.4f}, at or past its max_cost_usd "
                f"${params.max_cost_usd:.4f}, so training did not start; submit it again with a higher max_cost_usd",
            )
    if head_only is not None and params.patience is not None and head_only.value == 1.0:
        # Kept models are picked by validation accuracy first: none can beat this one, and finding that out would
        # cost Ray Train's start-up and an epoch (on cats-vs-whales, 3 epochs for 150/150 again: 116 s against 42).
        store.add_event(
            job_id,
            "unfreeze_skipped",
            "the head-only model is kept: it classifies every validation image correctly, so no unfrozen epoch "
            "could be more accurate (patience: null unfreezes anyway)",
            {"epoch": head_only.epoch, "valid_loss": head_only.valid_loss},
        )
        return FineTuned(best=head_only)
    total_epochs = params.freeze_epochs + params.epochs
    store.set_progress(job_id, phase_progress(Phase.training, params.freeze_epochs / total_epochs))

    config = loop_config(
        job_id,
        params,
        classes,
        dataset.train,
        dataset.valid,
        lr,
        head.state if head else None,
        head_only.valid_loss if head_only else None,
        batch_delay_s=settings.fault_delays.get("worker_batch", 0.0),
        cost_cap=cap,
    )
    resources = worker_bundle(params)
    for name, value in RAY_TRAIN_ENV.items():
        os.environ.setdefault(name, value)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config.model_dump(),
        torch_config=TorchConfig(backend="nccl" if params.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=params.num_workers, use_gpu=params.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(  # type: ignore[call-arg]  # mypy resolves Ray Train v1 here
            name="train",
            storage_path=f"{artifacts.bucket}/{artifacts.prefix}checkpoints",
            storage_filesystem=arrow_filesystem(settings),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="accuracy", checkpoint_score_order="max"
            ),
            failure_config=FailureConfig(max_failures=MAX_FAILURES),
            callbacks=[TrainingProgress(job_id, total_epochs)],  # type: ignore[list-item]
            worker_runtime_env={"env_vars": WORKER_ENV | ({} if params.use_gpu else {"OMP_NUM_THREADS": "1"})},
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors: name each rank's root cause in the user's words
        gpu_failure = _gpu_failure_line(exc) if params.use_gpu else None
        if gpu_failure:
            raise StageError(
                "gpu_unavailable",
                f"the training workers were placed on GPU nodes but could not use their GPU ({gpu_failure}); "
                "check the NVIDIA driver and CUDA on the cluster's GPU nodes, or set use_gpu=false",
            ) from exc
        raise training_failure(exc, attempts=MAX_FAILURES + 1) from exc
    candidates = [head_only] if head_only else []
    candidates += [
        BestCheckpoint(
            epoch=int(metrics["epoch"]),
            stage=str(metrics["stage"]),
            metric="accuracy",
            value=round(float(metrics["accuracy"]), 5),
            valid_loss=round(float(metrics["valid_loss"]), 5),
            checkpoint_uri=f"s3://{checkpoint.path}/{CHECKPOINT_FILE}",
            predictions_uri=f"s3://{checkpoint.path}/{PREDICTIONS_FILE}",
        )
        for checkpoint, metrics in result.best_checkpoints or []
    ]
    if not candidates:
        raise StageError("no_checkpoint", "training finished without saving a checkpoint")
    hit = (result.metrics or {}).get("cost_cap")
    return FineTuned(best=pick_best(candidates), cost_cap=CostCapHit.model_validate_json(hit) if hit else None)


def pick_best(candidates: list[BestCheckpoint]) -> BestCheckpoint:
    """The most accurate; at equal accuracy the earliest (the head-only model first), unless a later one has a
    validation loss lower by more than MIN_DELTA: the same margin by which unfreezing has to pay to go on."""
    top = max(c.value for c in candidates)
    tied = sorted((c for c in candidates if c.value == top), key=lambda c: c.epoch)
    best = tied[0]
    for later in tied[1:]:
        if later.valid_loss < best.valid_loss - MIN_DELTA:
            best = later
    return best


def checkpoint_head_only(head: HeadResult, params: JobParams, num_classes: int, location: S3Location) -> BestCheckpoint:
    """Write the head-only model (pretrained body + trained head) as a checkpoint, with its validation logits.

    Its metrics are the last head-only epoch's, measured on the cached features: the images would give the
    same numbers, so no pass over them is spent on it.
    """
    settings = get_settings()
    s3 = s3_client(settings)
    weights = resolve_weights(params.arch, params.weights_uri, s3, settings.resolved_cache_dir)
    model = build_classifier(params.arch, num_classes, weights)
    model.head.load_state_dict(torch.load(io.BytesIO(head.state), weights_only=True))
    model_file, predictions = io.BytesIO(), io.BytesIO()
    torch.save({"model": model.state_dict(), "epoch": 0}, model_file)
    torch.save({"valid_logits": torch.load(io.BytesIO(head.valid_logits), weights_only=True)}, predictions)
    s3.put_object(Bucket=location.bucket, Key=f"{location.prefix}{CHECKPOINT_FILE}", Body=model_file.getvalue())
    s3.put_object(Bucket=location.bucket, Key=f"{location.prefix}{PREDICTIONS_FILE}", Body=predictions.getvalue())
    last = head.epochs[-1]
    return BestCheckpoint(
        epoch=int(last["epoch"]),
        stage="frozen",
        metric="accuracy",
        value=round(float(last["accuracy"]), 5),
        valid_loss=round(float(last["valid_loss"]), 5),
        checkpoint_uri=f"s3://{location.bucket}/{location.prefix}{CHECKPOINT_FILE}",
        predictions_uri=f"s3://{location.bucket}/{location.prefix}{PREDICTIONS_FILE}",
    )

"""Unfrozen fine-tuning, the torch part: DDP steps, one-cycle and discriminative LRs, validation, early stopping.

`jobs.train_loop` runs this inside each Ray Train worker; it needs torch, torchvision, pydantic and the project's
data code only (no Ray, no S3), so `benchmarks/gpu_check.py` runs the same loop on a GPU machine that has
neither. Whoever calls it owns the process group, the model's placement and what a report does.

The job's `batch_size` is the global batch: each of the `world` workers takes `batch_size // world` images
a step, its own disjoint shard of the training set each epoch (a seeded permutation dealt out by rank, cut to
equal length so every rank runs the same number of steps). Rank r's k-th batch is every world-th image of the
one-worker run's k-th batch, so 1 and N workers take the same steps over the same batches at the same LRs, and
each image's random augmentation is seeded by (seed, epoch, image), not by rank. What still depends on the
number of workers: the dropout and drop-connect masks, and float summation order (benchmarks/README.md,
"DDP agreement").

The body's batch norm keeps its pretrained running statistics while fine-tuning (its scale and shift still
train): normalising by each worker's few images made training see other activations than evaluation does, and
made the result depend on the number of workers. On dogs-vs-cats (one process, the same recipe) the first
unfrozen epoch ended at validation loss 0.044 frozen against 0.081 training the statistics, at 10.8 against
8.2 img/s (benchmarks/README.md).
Each rank validates on its slice of the validation set, and the exact global metrics come from an all-reduce
of sums: no padded duplicates.

Unfreezing has to pay: when a head-only model exists, a short trial (the first `trial_images` training
images of the first unfrozen epoch, or the whole epoch when it is shorter) must lower the validation loss
below the head-only model's, or training stops there and the job keeps the head-only model. After that,
early stopping ends training once the validation loss has not improved for `patience` epochs. Past the planned
`epochs`, training goes on one epoch at a time while each lowers the validation loss (`max_epochs`): each such
epoch is a one-cycle of its own at half the previous peak LR, so stopping after any of them leaves a model whose
LR has annealed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pydantic import BaseModel
from torch import nn
from torch.utils.data import DataLoader, Subset

from core.backbones import BACKBONES, Classifier, freeze_batchnorm_statistics
from core.images import normalize
from jobs.data import ImageItems
from jobs.unfrozen_config import TrainLoopConfig

# Decoded-image memory per worker and split: ~1,000 presized 224 px training images, ~3,300 validation crops.
DECODED_CACHE_BYTES = 512 << 20
# A validation loss must fall by more than this to count as an improvement (early stopping, the trial).
MIN_DELTA = 0.01
# Shards are reported (for the job's DDP record) only while they are small enough to keep in metrics.
MAX_REPORTED_SHARD = 2000
# Each epoch past the planned ones is a one-cycle of its own at this fraction of the previous cycle's peak.
EXTENSION_LR_DECAY = 0.5


class EarlyStopping(BaseModel):
    """Validation-loss bookkeeping shared by every rank (the losses are all-reduced, so all ranks agree)."""

    best_loss: float = math.inf
    bad_epochs: int = 0

    def improved(self, valid_loss: float) -> bool:
        if valid_loss < self.best_loss - MIN_DELTA:
            self.best_loss, self.bad_epochs = valid_loss, 0
            return True
        self.bad_epochs += 1
        return False


@dataclass(frozen=True)
class Worker:
    """Where this copy of the loop runs: its rank, the world size and its device."""

    rank: int
    world: int
    device: torch.device


# What a report does with an epoch's (or the trial's) metrics, the state to checkpoint (None for the trial) and
# the epoch's validation logits in validation order (None for the trial).
Report = Callable[[dict[str, Any], dict[str, Any] | None, torch.Tensor | None], None]
# A stop rule of the caller's (the job's cost cap: `jobs.cost_cap.epoch_check`), asked on every rank at the end of
# each epoch no other rule ends, with the epoch's number and a sum across ranks: why to stop and what to report, or
# None.
EpochCheck = Callable[[int, Callable[[float], float]], tuple[str, dict[str, Any]] | None]


def worker_batch_size(batch_size: int, world: int) -> int:
    """Each worker's share of the global batch (the global batch is rounded down to a multiple of `world`)."""
    return max(1, batch_size // world)


def trial_steps(train_images: int, global_batch: int, steps_per_epoch: int, trial_images: int) -> int:
    """Steps of the first unfrozen epoch after which the trial validates (all of them: at the epoch's end)."""
    return min(steps_per_epoch, max(1, math.ceil(min(trial_images, train_images) / global_batch)))


def shard_indices(n: int, rank: int, world: int, seed: int) -> list[int]:
    """Disjoint, equal-length shards of a seeded permutation (up to world-1 samples sit out each epoch)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    per_rank = n // world
    return order[rank::world][:per_rank]


def _sum_across_ranks(*values: float, device: torch.device) -> list[float]:
    # On the device the process group's backend speaks: NCCL refuses CPU tensors ("No backend type associated
    # with device type cpu"), which gloo on CPU never shows; found by the first run on a GPU machine.
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def train_mode(model: nn.Module, body: nn.Module) -> None:
    model.train()
    freeze_batchnorm_statistics(body)


def _batch(images: torch.Tensor, arch: str, device: torch.device) -> torch.Tensor:
    batch = normalize(images, BACKBONES[arch].normalization).to(device, non_blocking=True)
    return batch.contiguous(memory_format=torch.channels_last)  # as the model's weights: see channels_last


def datasets(root: Path, cfg: TrainLoopConfig) -> tuple[ImageItems, ImageItems]:
    """The training and validation images, each decoded once and kept as uint8 for the later epochs (the loader
    runs in this process: one copy per worker)."""
    train = ImageItems(
        root, [i.path for i in cfg.train], [i.label for i in cfg.train], cfg.image_size, True, DECODED_CACHE_BYTES
    )
    valid = ImageItems(
        root, [i.path for i in cfg.valid], [i.label for i in cfg.valid], cfg.image_size, False, DECODED_CACHE_BYTES
    )
    return train, valid


@torch.no_grad()
def evaluate_shard(
    model: nn.Module, data: ImageItems, indices: list[int], cfg: TrainLoopConfig, device: torch.device
) -> tuple[dict[str, float], torch.Tensor]:
    """Global validation metrics, and this shard's logits (in `indices` order)."""
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    chunks = []
    loader = DataLoader(Subset(data, indices), batch_size=cfg.batch_size, shuffle=False)
    for images, labels in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(_batch(images, cfg.arch, device)).float()
        labels = labels.to(device)
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        count += len(labels)
        chunks.append(logits.cpu())
        time.sleep(cfg.batch_delay_s)
    loss_sum, correct, count = _sum_across_ranks(loss_sum, correct, count, device=device)
    metrics = {"valid_loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "valid_count": count}
    return metrics, torch.cat(chunks) if chunks else torch.zeros(0, len(cfg.classes))


def gather_logits(indices: list[int], logits: torch.Tensor, total: int) -> torch.Tensor:
    """Every rank's validation logits put back in validation order (all ranks get them; rank 0 saves them)."""
    shards: list[Any] = [(indices, logits)]
    if dist.is_available() and dist.is_initialized():
        shards = [None] * dist.get_world_size()
        dist.all_gather_object(shards, (indices, logits))
    out = torch.zeros(total, logits.shape[1] if logits.ndim == 2 else 0)
    for shard_indices_, shard_logits in shards:
        out[shard_indices_] = shard_logits
    return out


def _cycle(
    optimizer: torch.optim.Optimizer, cfg: TrainLoopConfig, scale: float, steps: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[cfg.body_lr * scale, cfg.head_lr * scale],
        total_steps=steps,
        pct_start=0.3,
        div_factor=5.0,  # fastai's fine_tune starts its unfrozen cycle at max_lr / 5
    )


def _extension_scale(epoch: int, cfg: TrainLoopConfig) -> float:
    """The peak-LR scale of an epoch past the planned ones (epoch > cfg.epochs): halved at each."""
    return EXTENSION_LR_DECAY ** (epoch - cfg.epochs)


def run_unfrozen(
    cfg: TrainLoopConfig,
    worker: Worker,
    ddp_model: nn.Module,
    module: Classifier,
    train_data: ImageItems,
    valid_data: ImageItems,
    report: Report,
    resume: dict[str, Any] | None = None,
    first_epoch_facts: dict[str, Any] | None = None,
    epoch_check: EpochCheck | None = None,
) -> None:
    """The unfrozen epochs on this worker; `ddp_model` wraps `module` (or is it, with one worker)."""
    rank, world, device = worker.rank, worker.world, worker.device
    valid_shard = list(range(rank, len(valid_data), world))
    per_rank = len(train_data) // world
    batch_size = worker_batch_size(cfg.batch_size, world)
    steps_per_epoch = max(1, math.ceil(per_rank / batch_size))

    # Discriminative LRs: the pretrained body moves far less than the new head.
    optimizer = torch.optim.AdamW(
        [
            {"params": module.body.parameters(), "lr": cfg.body_lr},
            {"params": module.head.parameters(), "lr": cfg.head_lr},
        ],
        weight_decay=0.01,
    )
    scheduler = _cycle(optimizer, cfg, 1.0, cfg.epochs * steps_per_epoch)

    first_epoch = 1
    stopping = EarlyStopping(best_loss=cfg.baseline_valid_loss if cfg.baseline_valid_loss is not None else math.inf)
    if resume is not None:  # a restarted worker group: resume where the last checkpoint left off
        module.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if resume["epoch"] > cfg.epochs:  # within the extension: the schedule was that epoch's own cycle
            scheduler = _cycle(optimizer, cfg, _extension_scale(resume["epoch"], cfg), steps_per_epoch)
        scheduler.load_state_dict(resume["scheduler"])
        if "early_stopping" in resume:
            stopping = EarlyStopping.model_validate(resume["early_stopping"])
        first_epoch = resume["epoch"] + 1
    # A worker lost during the first unfrozen epoch leaves no checkpoint: the group restarts that epoch from
    # the head-only weights (head_state). The head-only model itself was checkpointed by the driver.
    trial_at = None
    if first_epoch == 1 and cfg.patience is not None and cfg.baseline_valid_loss is not None:
        trial_at = trial_steps(len(train_data), batch_size * world, steps_per_epoch, cfg.trial_images)

    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(first_epoch, cfg.last_epoch + 1):
        started = time.monotonic()
        if epoch > cfg.epochs:
            scheduler = _cycle(optimizer, cfg, _extension_scale(epoch, cfg), steps_per_epoch)
        shard = shard_indices(len(train_data), rank, world, cfg.seed * 1000 + epoch)
        train_data.augment_seed = cfg.seed * 1000 + epoch
        train_size = cfg.epoch_sizes[epoch - 1] if cfg.epoch_sizes and epoch <= len(cfg.epoch_sizes) else cfg.image_size
        train_data.train_at(train_size)
        loader = DataLoader(Subset(train_data, shard), batch_size=batch_size, shuffle=False)
        train_mode(ddp_model, module.body)
        loss_sum, seen, validating = 0.0, 0, 0.0
        for step, (images, labels) in enumerate(loader, start=1):
            if epoch == 1 and trial_at is not None and step == trial_at + 1:
                trial_started = time.monotonic()
                if not _trial_pays(module, valid_data, valid_shard, cfg, worker, stopping, step - 1, report):
                    return
                train_mode(ddp_model, module.body)
                validating = time.monotonic() - trial_started
            labels = labels.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(ddp_model(_batch(images, cfg.arch, device)).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(labels)
            seen += len(labels)
            time.sleep(cfg.batch_delay_s)
        training = time.monotonic() - started - validating  # the steps alone: what images/s is measured over
        train_loss_sum, train_count = _sum_across_ranks(loss_sum, seen, device=device)
        scores, shard_logits = evaluate_shard(module, valid_data, valid_shard, cfg, device)
        metrics: dict[str, Any] = dict(scores)
        valid_logits = gather_logits(valid_shard, shard_logits, len(valid_data))
        metrics |= {
            "epoch": cfg.epoch_offset + epoch,
            "stage": "unfrozen",
            "train_loss": train_loss_sum / max(train_count, 1),
            "rank": rank,
            "rank_samples": seen,
            "seconds": round(time.monotonic() - started, 3),
            "train_seconds": round(training, 3),
            "image_size": train_size,
            "images_per_second": round(train_count / max(training, 1e-9), 2),
        }
        if epoch == first_epoch:  # what each rank trained on, and where: the job's DDP and cost records
            metrics |= first_epoch_facts or {}
            if len(shard) <= MAX_REPORTED_SHARD:
                metrics["shard"] = shard
        previous_best = stopping.best_loss
        stop_reason = None
        if cfg.patience is not None:
            improved = stopping.improved(metrics["valid_loss"])
            if epoch == 1 and trial_at == steps_per_epoch:  # the trial was this whole epoch: its verdict
                metrics["trial_verdict"] = {"pays": improved, "steps": steps_per_epoch}
            if epoch == 1 and trial_at == steps_per_epoch and not improved:
                stop_reason = "unfreezing did not lower the validation loss below the head-only model's"
            elif epoch >= cfg.epochs and epoch < cfg.last_epoch:
                if improved:
                    metrics["extend"] = _extension_facts(epoch, cfg, previous_best, metrics["valid_loss"])
                else:
                    stop_reason = f"the validation loss did not fall by more than {MIN_DELTA} in epoch {epoch}"
            elif stopping.bad_epochs >= cfg.patience and epoch < cfg.epochs:
                stop_reason = f"the validation loss did not improve for {stopping.bad_epochs} epoch(s)"
            elif epoch == cfg.last_epoch > cfg.epochs and improved:
                stop_reason = (
                    f"max_epochs ({cfg.last_epoch}) reached while the validation loss still fell "
                    f"({previous_best:.4f} -> {metrics['valid_loss']:.4f}): raise max_epochs to go on"
                )
        # Every rank reaches this with the same stop_reason (from all-reduced losses): the check is collective.
        if epoch_check is not None and not stop_reason and epoch < cfg.last_epoch:
            stop = epoch_check(cfg.epoch_offset + epoch, lambda usd: _sum_across_ranks(usd, device=device)[0])
            if stop is not None:
                stop_reason, facts = stop
                metrics |= facts
        if stop_reason:
            metrics["stop_reason"] = stop_reason
        state = {
            "model": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "early_stopping": stopping.model_dump(),
        }
        report(metrics, state, valid_logits)
        if stop_reason:
            return


def _extension_facts(epoch: int, cfg: TrainLoopConfig, previous: float, now: float) -> dict[str, Any]:
    """Why training goes on past epoch `epoch`: the numbers the job's `unfrozen_extended` event shows."""
    return {
        "epoch": cfg.epoch_offset + epoch + 1,
        "unfrozen_epoch": epoch + 1,
        "max_epochs": cfg.last_epoch,
        "previous_valid_loss": round(previous, 5) if math.isfinite(previous) else None,
        "valid_loss": round(now, 5),
        "min_delta": MIN_DELTA,
        "lr_scale": _extension_scale(epoch + 1, cfg),
    }


def _trial_pays(
    module: nn.Module,
    valid_data: ImageItems,
    valid_shard: list[int],
    cfg: TrainLoopConfig,
    worker: Worker,
    stopping: EarlyStopping,
    steps: int,
    report: Report,
) -> bool:
    """Validate mid-way through the first unfrozen epoch; report the verdict (every rank reports)."""
    metrics, _ = evaluate_shard(module, valid_data, valid_shard, cfg, worker.device)
    pays = stopping.improved(metrics["valid_loss"])
    stopping.bad_epochs = 0  # the trial is not an epoch: patience counts whole epochs after it
    trial = {"trial": True, "pays": pays, "steps": steps, "epoch": cfg.epoch_offset + 1, "stage": "unfrozen"}
    report(metrics | trial | {"rank": worker.rank}, None, None)
    return pays

"""What each Ray Train worker runs: unfrozen fine-tuning with DDP, one-cycle and discriminative LRs.

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
Rank 0 checkpoints model, optimizer and schedule every epoch, so a restarted worker group resumes, and
saves that epoch's validation logits beside it: the job's final evaluation reads them instead of running
the validation set through the model once more.

Unfreezing has to pay: when a head-only model exists, a short trial (the first `trial_images` training
images of the first unfrozen epoch, or the whole epoch when it is shorter) must lower the validation loss
below the head-only model's, or training stops there and the job keeps the head-only model. After that,
early stopping ends training once the validation loss has not improved for `patience` epochs, and the job's
`max_cost_usd`, when set, before an epoch that would pass it (`jobs.cost_cap`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from pydantic import BaseModel
from torch import nn
from torch.utils.data import DataLoader, Subset

from core.backbones import BACKBONES, Classifier, build_classifier, channels_last, freeze_batchnorm_statistics
from core.images import normalize
from core.s3 import s3_client
from core.settings import get_settings
from jobs.cost_cap import CapWatch, CostCap
from jobs.data import ImageItems
from jobs.dataset import Item
from jobs.dataset_cache import fetch_dataset
from jobs.training_progress import CHECKPOINT_FILE, PREDICTIONS_FILE
from jobs.usage import this_node
from jobs.weights import resolve_weights

# Decoded-image memory per worker and split: ~1,000 presized 224 px training images, ~3,300 validation crops.
DECODED_CACHE_BYTES = 512 << 20
# A validation loss must fall by more than this to count as an improvement (early stopping, the trial).
MIN_DELTA = 0.01
# Shards are reported (for the job's DDP record) only while they are small enough to keep in metrics.
MAX_REPORTED_SHARD = 2000


class TrainLoopConfig(BaseModel):
    """Parsed once at the top of the loop: no string-keyed config lookups further down."""

    job_id: str
    dataset_uri: str
    classes: list[str]
    train: list[Item]
    valid: list[Item]
    arch: str
    weights_uri: str | None
    image_size: int
    epoch_sizes: list[int] | None = None  # training image size per unfrozen epoch (progressive resizing)
    batch_size: int  # global: split across the workers
    epochs: int
    head_lr: float
    body_lr: float
    seed: int
    head_state: bytes | None = None  # the head trained on cached features, if any
    epoch_offset: int = 0  # epochs already run on features, so epoch numbers continue
    batch_delay_s: float = 0.0  # fault-injection tests only (Settings.fault_delays["worker_batch"])
    baseline_valid_loss: float | None = None  # the head-only model's, measured on the cached features
    patience: int | None = None  # None: run every epoch, no trial
    trial_images: int = 512
    cost_cap: CostCap | None = None


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


def epoch_image_sizes(image_size: int, epochs: int, fraction: float | None) -> list[int]:
    """Progressive resizing: the first of `epochs` unfrozen epochs at `fraction` x `image_size`, growing evenly to
    `image_size` at the last; sizes are rounded to 16 px (at least 32) and never exceed `image_size`.

    On dogs-vs-cats (one process, frozen batch norm) an epoch at 160 px then one at 224 reached validation loss
    0.047 and 199/200, against 0.039 and 198/200 for two at 224, with the first epoch 1.3x as fast."""
    if fraction is None or fraction >= 1 or epochs == 1:
        return [image_size] * epochs
    sizes = []
    for epoch in range(epochs):
        scale = fraction + (1 - fraction) * epoch / (epochs - 1)
        sizes.append(min(image_size, max(32, round(image_size * scale / 16) * 16)))
    sizes[-1] = image_size
    return sizes


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


def _save_checkpoint(state: dict[str, Any], metrics: dict[str, Any], valid_logits: torch.Tensor) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / CHECKPOINT_FILE)
        torch.save({"valid_logits": valid_logits}, Path(tmp) / PREDICTIONS_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _record_start(cfg: TrainLoopConfig, world: int, epoch: int, resumed: bool) -> None:
    """Say in the job's event log that the workers run, and from where: after a worker died, this is the proof
    of where training resumed. Best effort: a store that does not answer must not stop training."""
    from core.store import JobStore

    how = f"resuming at epoch {epoch} from the last checkpoint" if resumed else f"starting at epoch {epoch}"
    try:
        store = JobStore.from_url(get_settings().resolved_database_url)
        data = {"epoch": epoch, "resumed": resumed}
        store.add_event(cfg.job_id, "training_started", f"{world} training workers running, {how}", data)
        store.engine.dispose()
    except Exception:
        logging.getLogger("trainyard.train").warning("could not record the training start", exc_info=True)


def train_loop_per_worker(raw_config: dict[str, Any]) -> None:
    # When this rank began to hold its resources (wall clock, compared with the driver's): its share of the cost.
    started_at = time.time()
    cfg = TrainLoopConfig.model_validate(raw_config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed + rank)
    if device.type == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    settings = get_settings()
    s3 = s3_client(settings)
    root = fetch_dataset(s3, cfg.dataset_uri, settings.resolved_cache_dir).root  # a cache hit on this node
    weights = resolve_weights(cfg.arch, cfg.weights_uri, s3, settings.resolved_cache_dir)
    model: Classifier = build_classifier(cfg.arch, len(cfg.classes), weights)
    if cfg.head_state is not None:
        model.head.load_state_dict(torch.load(io.BytesIO(cfg.head_state), weights_only=True))
    model = channels_last(model)
    # Moves to the device and wraps in DDP when world > 1. The buffers (batch-norm statistics) never change while
    # frozen and start equal on every rank: no broadcast before each forward.
    ddp_model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"forward_sync_buffers": False})
    module: Classifier = ddp_model.module if hasattr(ddp_model, "module") else ddp_model  # type: ignore[assignment]

    # Decoded once, kept as uint8 for the later epochs (the loader runs in this process: one copy per worker).
    train_data = ImageItems(
        root, [i.path for i in cfg.train], [i.label for i in cfg.train], cfg.image_size, True, DECODED_CACHE_BYTES
    )
    valid_data = ImageItems(
        root, [i.path for i in cfg.valid], [i.label for i in cfg.valid], cfg.image_size, False, DECODED_CACHE_BYTES
    )
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
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[cfg.body_lr, cfg.head_lr],
        total_steps=cfg.epochs * steps_per_epoch,
        pct_start=0.3,
        div_factor=5.0,  # fastai's fine_tune starts its unfrozen cycle at max_lr / 5
    )

    first_epoch = 1
    stopping = EarlyStopping(best_loss=cfg.baseline_valid_loss if cfg.baseline_valid_loss is not None else math.inf)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restarted worker group: resume where the last checkpoint left off
        with checkpoint.as_directory() as path:
            state = torch.load(Path(path) / CHECKPOINT_FILE, map_location=device, weights_only=True)
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "early_stopping" in state:
            stopping = EarlyStopping.model_validate(state["early_stopping"])
        first_epoch = state["epoch"] + 1
    if rank == 0:
        _record_start(cfg, world, cfg.epoch_offset + first_epoch, resumed=checkpoint is not None)
    # A worker lost during the first unfrozen epoch leaves no checkpoint: the group restarts that epoch from
    # the head-only weights (head_state). The head-only model itself was checkpointed by the driver.
    trial_at = None
    if first_epoch == 1 and cfg.patience is not None and cfg.baseline_valid_loss is not None:
        trial_at = trial_steps(len(train_data), batch_size * world, steps_per_epoch, cfg.trial_images)

    loss_fn = nn.CrossEntropyLoss()
    cap = CapWatch(cfg.cost_cap, started_at, this_node()[1], settings.node_types) if cfg.cost_cap else None

    def all_ranks(usd: float) -> float:
        return _sum_across_ranks(usd, device=device)[0]

    for epoch in range(first_epoch, cfg.epochs + 1):
        started = time.monotonic()
        shard = shard_indices(len(train_data), rank, world, cfg.seed * 1000 + epoch)
        train_data.augment_seed = cfg.seed * 1000 + epoch
        train_size = cfg.epoch_sizes[epoch - 1] if cfg.epoch_sizes else cfg.image_size
        train_data.train_at(train_size)
        loader = DataLoader(Subset(train_data, shard), batch_size=batch_size, shuffle=False)
        train_mode(ddp_model, module.body)
        loss_sum, seen, validating = 0.0, 0, 0.0
        for step, (images, labels) in enumerate(loader, start=1):
            if epoch == 1 and trial_at is not None and step == trial_at + 1:
                trial_started = time.monotonic()
                if not _trial_pays(module, valid_data, valid_shard, cfg, device, stopping, rank, step - 1):
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
            node_id, node_type = this_node()
            metrics |= {"node_id": node_id, "node_type": node_type, "started_at": started_at}
            if len(shard) <= MAX_REPORTED_SHARD:
                metrics["shard"] = shard
        stop_reason = None
        if cfg.patience is not None:
            improved = stopping.improved(metrics["valid_loss"])
            if epoch == 1 and trial_at == steps_per_epoch and not improved:
                stop_reason = "unfreezing did not lower the validation loss below the head-only model's"
            elif stopping.bad_epochs >= cfg.patience and epoch < cfg.epochs:
                stop_reason = f"the validation loss did not improve for {stopping.bad_epochs} epoch(s)"
        # The same on every rank, so the collective check runs on all or none.
        hit = cap.check(cfg.epoch_offset + epoch, all_ranks) if cap and not stop_reason and epoch < cfg.epochs else None
        if hit:
            stop_reason = f"max_cost_usd: {hit.message()}"
            metrics["cost_cap"] = hit.model_dump_json()  # a string: reported metrics may be flattened
        if stop_reason:
            metrics["stop_reason"] = stop_reason
        state = {
            "model": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "early_stopping": stopping.model_dump(),
        }
        if rank == 0:
            _save_checkpoint(state, metrics, valid_logits)
        else:
            ray.train.report(metrics)
        if stop_reason:
            return


def _trial_pays(
    module: nn.Module,
    valid_data: ImageItems,
    valid_shard: list[int],
    cfg: TrainLoopConfig,
    device: torch.device,
    stopping: EarlyStopping,
    rank: int,
    steps: int,
) -> bool:
    """Validate mid-way through the first unfrozen epoch; report the verdict (every rank reports)."""
    metrics, _ = evaluate_shard(module, valid_data, valid_shard, cfg, device)
    pays = stopping.improved(metrics["valid_loss"])
    stopping.bad_epochs = 0  # the trial is not an epoch: patience counts whole epochs after it
    ray.train.report(
        metrics
        | {
            "trial": True,
            "pays": pays,
            "steps": steps,
            "epoch": cfg.epoch_offset + 1,
            "stage": "unfrozen",
            "rank": rank,
        }
    )
    return pays

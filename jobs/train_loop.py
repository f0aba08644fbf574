"""What each Ray Train worker runs: unfrozen fine-tuning with DDP, one-cycle and discriminative LRs.

Every worker reads its own disjoint shard of the training set each epoch (a seeded permutation split by
rank, cut to equal length so every rank runs the same number of steps), validates on its slice of the
validation set, and the exact global metrics come from an all-reduce of sums: no padded duplicates.
Rank 0 checkpoints model, optimizer and schedule every epoch, so a restarted worker group resumes.
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

from core.backbones import BACKBONES, Classifier, build_classifier
from core.images import normalize
from core.s3 import s3_client
from core.settings import get_settings
from jobs.data import ImageItems
from jobs.stages.fetch import fetch_dataset
from jobs.stages.validate import Item
from jobs.usage import this_node
from jobs.weights import resolve_weights

CHECKPOINT_FILE = "model.pt"
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
    batch_size: int
    epochs: int
    head_lr: float
    body_lr: float
    seed: int
    head_state: bytes | None = None  # the head trained on cached features, if any
    epoch_offset: int = 0  # epochs already run on features, so epoch numbers continue
    batch_delay_s: float = 0.0  # fault-injection tests only (Settings.fault_delays["worker_batch"])


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


def _batch(images: torch.Tensor, arch: str, device: torch.device) -> torch.Tensor:
    batch = normalize(images, BACKBONES[arch].normalization).to(device, non_blocking=True)
    if device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


@torch.no_grad()
def evaluate_shard(
    model: nn.Module, data: ImageItems, indices: list[int], cfg: TrainLoopConfig, device: torch.device
) -> dict[str, float]:
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    loader = DataLoader(Subset(data, indices), batch_size=cfg.batch_size * 2, shuffle=False)
    for images, labels in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(_batch(images, cfg.arch, device))
        labels = labels.to(device)
        loss_sum += nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        count += len(labels)
        time.sleep(cfg.batch_delay_s)
    loss_sum, correct, count = _sum_across_ranks(loss_sum, correct, count, device=device)
    return {"valid_loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "valid_count": count}


def _save_checkpoint(state: dict[str, Any], metrics: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / CHECKPOINT_FILE)
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
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    ddp_model = ray.train.torch.prepare_model(model)  # moves to device, wraps in DDP when world > 1
    module: Classifier = ddp_model.module if hasattr(ddp_model, "module") else ddp_model  # type: ignore[assignment]

    train_data = ImageItems(root, [i.path for i in cfg.train], [i.label for i in cfg.train], cfg.image_size, True)
    valid_data = ImageItems(root, [i.path for i in cfg.valid], [i.label for i in cfg.valid], cfg.image_size, False)
    valid_shard = list(range(rank, len(valid_data), world))
    per_rank = len(train_data) // world
    steps_per_epoch = max(1, math.ceil(per_rank / cfg.batch_size))

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
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restarted worker group: resume where the last checkpoint left off
        with checkpoint.as_directory() as path:
            state = torch.load(Path(path) / CHECKPOINT_FILE, map_location=device, weights_only=True)
        module.load_state_dict(state["model"])
        # The head-only checkpoint (epoch 0) has no optimizer or schedule yet: a worker lost during the first
        # unfrozen epoch restarts that epoch from the head-only weights with fresh ones.
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        first_epoch = state["epoch"] + 1
    if rank == 0:
        _record_start(cfg, world, cfg.epoch_offset + first_epoch, resumed=checkpoint is not None)
    if checkpoint is None and cfg.head_state is not None:
        # The head-only model is a candidate too: if unfreezing hurts, the best checkpoint is this one.
        baseline: dict[str, Any] = evaluate_shard(module, valid_data, valid_shard, cfg, device)
        baseline |= {"epoch": cfg.epoch_offset, "stage": "frozen", "baseline": True, "rank": rank}
        if rank == 0:
            _save_checkpoint({"model": module.state_dict(), "epoch": 0}, baseline)
        else:
            ray.train.report(baseline)

    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(first_epoch, cfg.epochs + 1):
        started = time.monotonic()
        shard = shard_indices(len(train_data), rank, world, cfg.seed * 1000 + epoch)
        loader = DataLoader(Subset(train_data, shard), batch_size=cfg.batch_size, shuffle=False)
        ddp_model.train()
        loss_sum, seen = 0.0, 0
        for images, labels in loader:
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
        train_loss_sum, train_count = _sum_across_ranks(loss_sum, seen, device=device)
        metrics: dict[str, Any] = evaluate_shard(module, valid_data, valid_shard, cfg, device)
        metrics |= {
            "epoch": cfg.epoch_offset + epoch,
            "stage": "unfrozen",
            "train_loss": train_loss_sum / max(train_count, 1),
            "rank": rank,
            "rank_samples": seen,
            "seconds": round(time.monotonic() - started, 3),
            "images_per_second": round(train_count / max(time.monotonic() - started, 1e-9), 2),
        }
        if epoch == first_epoch:  # what each rank trained on, and where: the job's DDP and cost records
            node_id, node_type = this_node()
            metrics |= {"node_id": node_id, "node_type": node_type, "started_at": started_at}
            if len(shard) <= MAX_REPORTED_SHARD:
                metrics["shard"] = shard
        state = {
            "model": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
        }
        if rank == 0:
            _save_checkpoint(state, metrics)
        else:
            ray.train.report(metrics)

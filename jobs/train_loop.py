"""What each Ray Train worker runs: unfrozen fine-tuning with DDP (`jobs.unfrozen`), fed and reported through Ray.

This module is the Ray side: the worker's rank, device and process group come from Ray Train, the dataset and the
backbone's weights from the node's cache (S3), and each report goes to Ray Train's controller. Rank 0 checkpoints
model, optimizer and schedule every epoch, so a restarted worker group resumes, and saves that epoch's validation
logits beside it: the job's final evaluation reads them instead of running the validation set through the model
once more. The steps, schedule, validation and stopping rules are `jobs.unfrozen`'s; the job's `max_cost_usd` is
checked at each epoch's end at this rank's rate, its node type's (`jobs.cost_cap`).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from core.backbones import Classifier, build_classifier, channels_last
from core.cost import work_rate
from core.s3 import s3_client
from core.settings import get_settings
from jobs.cost_cap import CapWatch, epoch_check
from jobs.dataset_cache import fetch_dataset
from jobs.training_progress import CHECKPOINT_FILE, PREDICTIONS_FILE
from jobs.unfrozen import Worker, datasets, run_unfrozen
from jobs.unfrozen_config import TrainLoopConfig
from jobs.usage import this_node
from jobs.weights import resolve_weights


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
    worker = Worker(context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device())
    torch.manual_seed(cfg.seed + worker.rank)
    if worker.device.type == "cpu":
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
    train_data, valid_data = datasets(root, cfg)

    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restarted worker group: resume where the last checkpoint left off
        with checkpoint.as_directory() as path:
            resume = torch.load(Path(path) / CHECKPOINT_FILE, map_location=worker.device, weights_only=True)
    if worker.rank == 0:
        first = resume["epoch"] + 1 if resume is not None else 1
        _record_start(cfg, worker.world, cfg.epoch_offset + first, resumed=resume is not None)
    node_id, node_type = this_node()

    def report(metrics: dict[str, Any], state: dict[str, Any] | None, valid_logits: torch.Tensor | None) -> None:
        if state is not None and valid_logits is not None and worker.rank == 0:
            _save_checkpoint(state, metrics, valid_logits)
        else:
            ray.train.report(metrics)

    facts = {"node_id": node_id, "node_type": node_type, "started_at": started_at}
    check = None
    if (cap := cfg.cost_cap) is not None:
        rate = work_rate(node_type, cap.worker_cpus, cap.worker_gpus, settings.node_types)
        check = epoch_check(CapWatch(cap, started_at, rate))
    run_unfrozen(cfg, worker, ddp_model, module, train_data, valid_data, report, resume, facts, check)

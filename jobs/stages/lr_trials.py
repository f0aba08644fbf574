"""Stage 3, the other way: an LR sweep of real trials on Ray Tune (`lr_sweep: {"method": "trials", ...}`).

Where the range test reads a learning rate off one loss curve, this runs `trials` short trainings at
log-spaced LRs between `min_lr` and `max_lr`, as many at once as the cluster has CPUs (one CPU each, spread
over its nodes), and keeps the LR whose trial ends with the lowest validation loss. Each trial is the job's
own frozen stage, shortened: one-cycle AdamW on the head over the cached backbone features (what the
sweep stage already computed), so a trial costs a worker start plus well under a second of compute on a
few hundred images. ASHA stops the trials whose validation loss lags after `grace_epochs`, halving the
field at each rung. The winner's LR then drives the full run exactly as the range test's would.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from torch import nn

from core.backbones import make_head
from core.s3 import arrow_filesystem
from core.settings import Settings
from core.spec import TrialsSweep
from jobs.features import Features
from jobs.paths import artifact_location

# Halve the field at each rung: with 8 trials over 4 epochs, 4 reach epoch 2 and 2 reach epoch 4.
ASHA_REDUCTION_FACTOR = 2


class Trial(BaseModel):
    lr: float
    epochs: int  # how many it ran before it finished or ASHA stopped it
    valid_loss: float
    accuracy: float
    stopped_early: bool


class LrTrialsResult(BaseModel):
    suggested_lr: float
    method: str = "trials"
    trials: list[Trial]
    seconds: float  # wall time of the whole sweep, worker start-up included
    trial_epochs: int  # epochs run over all trials: the compute the sweep spent


def trial_lrs(sweep: TrialsSweep) -> list[float]:
    """`trials` learning rates, evenly spaced in log space from min_lr to max_lr (both included)."""
    return [float(f"{v:.4g}") for v in np.geomspace(sweep.min_lr, sweep.max_lr, sweep.trials)]


def middle_out(lrs: list[float]) -> list[float]:
    """The LRs in the order trials start: the middle of the range first, the extremes last.

    ASHA judges each trial against those that reached the same epoch before it. Started in ascending order,
    every new trial would beat the lower LRs before it and nothing would stop; started from the middle,
    the likely-good LRs set the bar and the extremes (too timid, or diverging) stop at their first rung.
    """
    centre = (len(lrs) - 1) / 2
    return [lrs[i] for i in sorted(range(len(lrs)), key=lambda i: (abs(i - centre), i))]


def _train_trial(config: dict[str, Any], x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> None:
    """One trial (runs in a Ray Tune worker): the frozen stage's one-cycle head training, reporting every epoch."""
    torch.set_num_threads(1)  # one CPU per trial: the trials share the cluster's cores
    torch.manual_seed(config["seed"])
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    valid_x, valid_y = torch.from_numpy(vx), torch.from_numpy(vy)
    head = make_head(features.shape[1], config["num_classes"])
    batch_size = min(config["batch_size"], len(features))
    steps = math.ceil(len(features) / batch_size)
    epochs = config["epochs"]
    optimizer = torch.optim.AdamW(head.parameters(), lr=config["lr"], weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config["lr"], total_steps=epochs * steps)
    generator = torch.Generator().manual_seed(config["seed"])
    for epoch in range(1, epochs + 1):
        head.train()
        for index in torch.randperm(len(features), generator=generator).split(batch_size):
            loss = nn.functional.cross_entropy(head(features[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        head.eval()
        with torch.no_grad():
            logits = head(valid_x)
            valid_loss = nn.functional.cross_entropy(logits, valid_y).item()
            accuracy = (logits.argmax(1) == valid_y).float().mean().item()
        # A diverged trial reports a huge loss rather than NaN, so ASHA and the ranking still order it last.
        valid_loss = valid_loss if math.isfinite(valid_loss) else 1e9
        tune.report({"epoch": epoch, "valid_loss": valid_loss, "accuracy": accuracy})


def lr_trials(
    job_id: str,
    features: Features,
    num_classes: int,
    sweep: TrialsSweep,
    batch_size: int,
    seed: int,
    settings: Settings,
) -> LrTrialsResult:
    started = time.monotonic()
    trainable = tune.with_resources(
        tune.with_parameters(
            _train_trial, x=features.train_x, y=features.train_y, vx=features.valid_x, vy=features.valid_y
        ),
        {"cpu": 1},
    )
    # Trial results go beside the job's checkpoints: the trials may run on any node, as training does.
    artifacts = artifact_location(settings, job_id)
    tuner = tune.Tuner(
        trainable,
        param_space={
            "lr": tune.grid_search(middle_out(trial_lrs(sweep))),
            "epochs": sweep.epochs,
            "batch_size": batch_size,
            "num_classes": num_classes,
            "seed": seed,
        },
        tune_config=tune.TuneConfig(
            metric="valid_loss",
            mode="min",
            scheduler=ASHAScheduler(
                time_attr="epoch",
                max_t=sweep.epochs,
                grace_period=sweep.grace_epochs,
                reduction_factor=ASHA_REDUCTION_FACTOR,
            ),
            reuse_actors=True,  # one worker start per CPU, not per trial
        ),
        run_config=tune.RunConfig(
            name="lr_trials",
            storage_path=f"{artifacts.bucket}/{artifacts.prefix}lr_trials",
            storage_filesystem=arrow_filesystem(settings),
            verbose=0,
        ),
    )
    grid = tuner.fit()
    trials = []
    for index in range(len(grid)):
        result = grid[index]
        if result.error is not None or not result.metrics or not result.config:
            raise RuntimeError(f"an LR trial failed: {result.error}")
        metrics = result.metrics
        trials.append(
            Trial(
                lr=float(result.config["lr"]),
                epochs=int(metrics["epoch"]),
                valid_loss=round(float(metrics["valid_loss"]), 5),
                accuracy=round(float(metrics["accuracy"]), 5),
                stopped_early=int(metrics["epoch"]) < sweep.epochs,
            )
        )
    trials.sort(key=lambda t: t.lr)
    # The winner must have run the whole course: a trial ASHA stopped was judged worse at its rung.
    finished = [t for t in trials if not t.stopped_early] or trials
    best = min(finished, key=lambda t: (t.valid_loss, -t.accuracy))
    return LrTrialsResult(
        suggested_lr=best.lr,
        trials=trials,
        seconds=round(time.monotonic() - started, 3),
        trial_epochs=sum(t.epochs for t in trials),
    )

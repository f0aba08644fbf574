"""Stage 3: Leslie Smith's learning-rate range test, on precomputed features (as fastai's `lr_find`).

The LR grows exponentially from `start_lr` to `end_lr`, one mini-batch per step; the loss is smoothed
(debiased exponential moving average) and the test stops once it diverges (4x the best). Suggestions:
- valley (the default choice): the middle of the longest stretch over which the loss keeps falling;
- steep: where the loss falls fastest per unit of log-LR;
- minimum: a tenth of the LR at the lowest loss;
- slide: fastai's interval slide rule: a 15-point window slides leftwards from the end of the curve while the
  slopes at its two ends differ; the LR at its left edge when they last differed, i.e. where the steady descent
  is about to bend into the climb.
Which one is used is the job's `lr_sweep.suggestion` (valley by default, as in fastai).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from core.backbones import make_head
from core.spec import LrSuggestion

SMOOTHING = 0.98
DIVERGENCE_FACTOR = 4.0


class LrSweepResult(BaseModel):
    suggested_lr: float
    method: str
    suggestions: dict[str, float]
    lrs: list[float]
    losses: list[float]
    steps: int
    diverged: bool
    seconds: float


def _batches(n: int, batch_size: int, generator: torch.Generator):  # type: ignore[no-untyped-def]
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def lr_range_test(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    batch_size: int,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    seed: int = 0,
    suggestion: LrSuggestion = "valley",
) -> LrSweepResult:
    started = time.monotonic()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    head = make_head(features.shape[1], num_classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=start_lr, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    growth = (end_lr / start_lr) ** (1 / (num_it - 1))
    batches = _batches(len(features), min(batch_size, len(features)), generator)

    lrs: list[float] = []
    losses: list[float] = []
    average, best, diverged = 0.0, math.inf, False
    for step in range(num_it):
        lr = start_lr * growth**step
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = next(batches)
        loss = loss_fn(head(features[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        average = SMOOTHING * average + (1 - SMOOTHING) * loss.item()
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        if not math.isfinite(smoothed):
            diverged = True
            break
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > DIVERGENCE_FACTOR * best:
            diverged = True
            break

    suggestions = suggest(lrs, losses)
    return LrSweepResult(
        suggested_lr=suggestions[suggestion],
        method=suggestion,
        suggestions=suggestions,
        lrs=[float(f"{v:.4g}") for v in lrs],
        losses=[round(v, 5) for v in losses],
        steps=len(lrs),
        diverged=diverged,
        seconds=round(time.monotonic() - started, 3),
    )


def suggest(lrs: list[float], losses: list[float]) -> dict[str, float]:
    """The four suggestion rules over the curve, ignoring its noisy first tenth and last few points."""
    if len(lrs) < 8:
        raise ValueError("the LR range test needs at least 8 steps to suggest a learning rate")
    lo, hi = len(lrs) // 10, max(len(lrs) // 10 + 4, len(lrs) - 5)
    lr, loss = np.array(lrs[lo:hi]), np.array(losses[lo:hi])
    return {
        "valley": float(lr[_valley_index(loss)]),
        "steep": float(lr[int(np.argmin(np.gradient(loss, np.log(lr))))]),
        "minimum": float(lr[int(np.argmin(loss))] / 10),
        "slide": float(lr[_slide_index(loss)]),
    }


# fastai's defaults for the slide rule: a 15-point window, slopes "equal" within 0.005 loss per step.
SLIDE_WINDOW = 15
SLIDE_THRESHOLD = 0.005


def _slide_index(loss: np.ndarray) -> int:
    # Slopes per step (not per log-LR), as fastai computes them, so its threshold keeps its meaning.
    slope = np.gradient(loss)
    right = len(loss) - 1
    left = max(0, right - SLIDE_WINDOW)
    chosen = left
    while left >= 0 and abs(slope[right] - slope[left]) > SLIDE_THRESHOLD:
        chosen = left
        right, left = right - 1, left - 1
    return chosen


def _valley_index(loss: np.ndarray) -> int:
    # Longest decreasing subsequence ending at each point (O(n^2), n <= 100): the longest one is the valley.
    n = len(loss)
    length = [1] * n
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if loss[i] < loss[j] and length[j] + 1 > length[i]:
                length[i] = length[j] + 1
        if length[i] > length[best_end]:
            best_end = i
    best_start = best_end - length[best_end] + 1
    # Halfway down the valley: far enough from the start to learn fast, far from the cliff at its end.
    return best_start + (best_end - best_start) // 2

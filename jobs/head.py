"""The head-only epochs: fastai's frozen stage, trained on the cached backbone features in seconds.

No Ray and no S3: the pipeline runs it in the driver, `benchmarks/gpu_check.py` on a machine without either.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from core.backbones import make_head
from jobs.features import Features


class HeadResult(BaseModel):
    state: bytes
    epochs: list[dict[str, Any]]
    valid_logits: bytes = b""  # torch.save'd float tensor [n_valid, classes], from the cached features


def _head_metrics(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    head.eval()
    with torch.no_grad():
        logits = head(x)
        return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train_head(features: Features, num_classes: int, lr: float, epochs: int, batch_size: int, seed: int) -> HeadResult:
    """One-cycle AdamW on the cached features (fastai's frozen stage: pct_start 0.99)."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(features.train_x), torch.from_numpy(features.train_y)
    vx, vy = torch.from_numpy(features.valid_x), torch.from_numpy(features.valid_y)
    head = make_head(x.shape[1], num_classes)
    batch_size = min(batch_size, len(x))
    steps = math.ceil(len(x) / batch_size)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps, pct_start=0.99)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        head.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(head(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
        valid_loss, accuracy = _head_metrics(head, vx, vy)
        history.append(
            {
                "epoch": epoch,
                "stage": "frozen",
                "train_loss": round(total / len(x), 5),
                "valid_loss": round(valid_loss, 5),
                "accuracy": round(accuracy, 5),
                "seconds": round(time.monotonic() - started, 4),
            }
        )
    buffer = io.BytesIO()
    torch.save(head.state_dict(), buffer)
    head.eval()
    with torch.no_grad():
        logits = io.BytesIO()
        torch.save(head(vx).float(), logits)
    return HeadResult(state=buffer.getvalue(), epochs=history, valid_logits=logits.getvalue())

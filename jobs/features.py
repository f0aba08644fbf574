"""Precomputed backbone features: the frozen body runs once over the data, the head trains on the cache.

This is what makes the LR range test and the head-only epochs cost seconds instead of minutes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch.utils.data import DataLoader

from core.backbones import BACKBONES, channels_last
from core.images import normalize
from jobs.data import ImageItems
from jobs.dataset import Item


class Features(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    train_x: np.ndarray
    train_y: np.ndarray
    valid_x: np.ndarray
    valid_y: np.ndarray
    images_per_second: float


@torch.inference_mode()
def _embed(body: torch.nn.Module, dataset: ImageItems, arch: str, batch_size: int, device: torch.device) -> np.ndarray:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    norm = BACKBONES[arch].normalization
    chunks = [body(normalize(images, norm).to(device)).float().cpu().numpy() for images, _ in loader]
    return np.concatenate(chunks)


def compute_features(
    root: Path,
    train: list[Item],
    valid: list[Item],
    arch: str,
    weights: Path,
    image_size: int,
    device: str = "cpu",
    batch_size: int = 64,
) -> Features:
    started = time.monotonic()
    body = channels_last(BACKBONES[arch].build(weights).eval().to(device))
    target = torch.device(device)
    xs = []
    for items in (train, valid):
        data = ImageItems(root, [i.path for i in items], [i.label for i in items], image_size, train=False)
        xs.append(_embed(body, data, arch, batch_size, target))
    elapsed = time.monotonic() - started
    return Features(
        train_x=xs[0],
        train_y=np.array([i.label for i in train], dtype=np.int64),
        valid_x=xs[1],
        valid_y=np.array([i.label for i in valid], dtype=np.int64),
        images_per_second=round((len(train) + len(valid)) / max(elapsed, 1e-9), 2),
    )

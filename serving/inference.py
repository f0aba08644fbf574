"""What a replica does to an image, without Ray: preprocess, the forward in the fastest layout, top-k.

Kept apart from the deployment so the benchmark's raw-model rows run exactly this code: the limit it measures
is the limit of what the replica runs.
"""

from __future__ import annotations

import os

import torch

from core.backbones import Normalization
from core.images import decode_image, eval_tensor, normalize


def replica_threads(assigned_cpus: float | None) -> int:
    """Torch intra-op threads for a replica: the CPUs Ray gave it, or, with none reserved, the CPUs it may run on.

    A constant is wrong both ways: one thread leaves cores idle on a dedicated node, and more threads than
    owned cores thrash when another process takes one (FIELD-NOTES: ~5 ms per tiny op).
    """
    if assigned_cpus is not None and assigned_cpus >= 1:
        return int(assigned_cpus)
    return max(1, len(os.sched_getaffinity(0)))


def preprocess(data: bytes, image_size: int, norm: Normalization, tta: bool = False) -> torch.Tensor:
    """Image bytes -> normalized float rows [1, C, H, W] ([2, …] with its mirror image for test-time augmentation).

    Raises `core.images.InvalidImage` for bytes that do not decode. Runs in the replica's preprocessing pool.
    """
    x = normalize(eval_tensor(decode_image(data), image_size), norm).unsqueeze(0)
    return torch.cat([x, x.flip(-1)]) if tta else x


def prepare(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    return model.to(memory_format=torch.channels_last) if channels_last else model


@torch.inference_mode()
def forward(model: torch.nn.Module, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Class probabilities for a batch of preprocessed rows."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x).float().softmax(1)


def merge_tta(probs: torch.Tensor, tta: bool) -> torch.Tensor:
    """One probability row per image: the mean over an image and its mirror when `tta` doubled the rows."""
    return probs.view(-1, 2, probs.shape[-1]).mean(1) if tta else probs


def top_k(probs: torch.Tensor, classes: list[str], k: int) -> list[dict[str, float | str]]:
    top = torch.topk(probs, k=min(k, len(classes)))
    return [
        {"label": classes[i], "probability": round(p, 6)}
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]

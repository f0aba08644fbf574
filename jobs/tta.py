"""Test-time augmentation: predict each image from a few deterministic views and average the probabilities.

The views are what the training augmentation teaches the model to expect (flips, crops of part of the
image): the centre crop, its mirror, a closer centre crop (the short side resized to 1/0.85 of the
training size, as a random crop of ~70% of the area would see it) and its mirror. Deterministic views,
unlike fastai's random ones, give the same answer on every run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

from core.backbones import BACKBONES, Classifier
from core.images import eval_tensor, normalize
from jobs.data import load_rgb
from jobs.dataset import Item

ZOOM = 1 / 0.85
VIEWS = 4  # centre, its mirror, closer, its mirror


def tta_views(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """(views, C, H, W) uint8 from a uint8 CHW image of any size."""
    centre = F.center_crop(F.resize(image, [image_size], antialias=True), [image_size, image_size])
    closer = F.center_crop(F.resize(image, [round(image_size * ZOOM)], antialias=True), [image_size, image_size])
    return torch.stack([centre, F.horizontal_flip(centre), closer, F.horizontal_flip(closer)])


class _ViewItems(Dataset[torch.Tensor]):
    def __init__(self, root: Path, items: list[Item], image_size: int) -> None:
        self.root, self.items, self.image_size = root, items, image_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        # Decoded at twice the size (as for evaluation) so the closer crop still has real pixels.
        image = load_rgb(self.root / self.items[index].path, self.image_size)
        return tta_views(eval_tensor(image, self.image_size * 2), self.image_size)


@torch.inference_mode()
def tta_probabilities(
    model: Classifier, root: Path, items: list[Item], arch: str, image_size: int, per_view: bool = False
) -> torch.Tensor:
    """(images, classes): each image's class probabilities averaged over its views; (images, views, classes)
    with `per_view` (the first two views are what serving's `tta=true` averages: the image and its mirror)."""
    norm = BACKBONES[arch].normalization
    batches = []
    for views in DataLoader(_ViewItems(root, items, image_size), batch_size=16):
        n, v = views.shape[:2]
        probs = model(normalize(views.flatten(0, 1), norm)).softmax(1)
        batches.append(probs.view(n, v, -1) if per_view else probs.view(n, v, -1).mean(1))
    return torch.cat(batches)

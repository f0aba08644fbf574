"""Datasets and transforms for training and evaluation, read from the local dataset cache."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from core.images import eval_tensor, to_rgb


def load_rgb(path: Path, image_size: int) -> Image.Image:
    image = Image.open(path)
    # JPEG decodes at the smallest scale still >= 2x the target: much faster on large photos, same result.
    image.draft("RGB", (image_size * 2, image_size * 2))
    return to_rgb(image)


def train_transform(image_size: int) -> T.Compose:
    # fastai's default recipe, in spirit: random crops of at least a third of the image, flips, mild colour.
    return T.Compose(
        [
            T.PILToTensor(),
            T.RandomResizedCrop(image_size, scale=(0.35, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.2, contrast=0.2),
        ]
    )


class ImageItems(Dataset[tuple[torch.Tensor, int]]):
    """(uint8 CHW image, label) pairs; normalisation happens on the batch, on the training device."""

    def __init__(self, root: Path, paths: Sequence[str], labels: Sequence[int], image_size: int, train: bool) -> None:
        self.root = root
        self.paths = list(paths)
        self.labels = list(labels)
        self.image_size = image_size
        self.transform = train_transform(image_size) if train else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_rgb(self.root / self.paths[index], self.image_size)
        tensor = self.transform(image) if self.transform else eval_tensor(image, self.image_size)
        return tensor, self.labels[index]

"""Datasets and transforms for training and evaluation, read from the local dataset cache.

Each image is decoded and resized once per process: training images to `PRESIZE_MARGIN` x the training
size (room for the random crops, as fastai's presizing), validation images to their final centre crop.
The uint8 results stay in memory up to `cache_bytes`, so later epochs only augment and compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from core.images import draft_for, eval_tensor, to_rgb

# Training images are kept at 1.5x the training size: random crops of a third of the area still upsample
# little, at 2.25x the memory of the final size (fastai presizes to ~2x).
PRESIZE_MARGIN = 1.5


def load_rgb(path: Path, image_size: int) -> Image.Image:
    return to_rgb(draft_for(Image.open(path), image_size))


def train_transform(image_size: int) -> T.Compose:
    # fastai's default recipe, in spirit: random crops of at least a third of the image, flips, mild colour.
    return T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=(0.35, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.2, contrast=0.2),
        ]
    )


def presized_tensor(image: Image.Image, image_size: int) -> torch.Tensor:
    """uint8 CHW with the short side at PRESIZE_MARGIN x the training size (never upscaled)."""
    tensor = F.pil_to_tensor(image)
    short = min(tensor.shape[-2:])
    target = round(image_size * PRESIZE_MARGIN)
    return F.resize(tensor, [target], antialias=True) if short > target else tensor


class ImageItems(Dataset[tuple[torch.Tensor, int]]):
    """(uint8 CHW image, label) pairs; normalisation happens on the batch, on the training device.

    With `augment_seed` set, each training image's random augmentation is drawn from its own generator seeded by
    (augment_seed, index): the same image gets the same crop in an epoch whichever worker, batch or position
    it lands in, so the augmentation does not depend on the number of workers. Unset, it draws from torch's
    global generator.

    `cache_bytes` > 0 keeps each decoded image (presized, or the final eval crop) in memory until that many
    bytes are held: a worker with DataLoader worker processes gets a copy per process, so use it with none.
    """

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        labels: Sequence[int],
        image_size: int,
        train: bool,
        cache_bytes: int = 0,
    ) -> None:
        self.root = root
        self.paths = list(paths)
        self.labels = list(labels)
        self.image_size = image_size
        self.transform = train_transform(image_size) if train else None
        self.cache_bytes = cache_bytes
        self.cached: dict[int, torch.Tensor] = {}
        self.held = 0
        self.decodes = 0
        self.augment_seed: int | None = None

    def train_at(self, size: int) -> None:
        """Crop training images to `size` from now on (progressive resizing); the decoded cache stays valid."""
        self.transform = train_transform(size)

    def __len__(self) -> int:
        return len(self.paths)

    def _decoded(self, index: int) -> torch.Tensor:
        if (hit := self.cached.get(index)) is not None:
            return hit
        image = load_rgb(self.root / self.paths[index], self.image_size)
        self.decodes += 1
        tensor = presized_tensor(image, self.image_size) if self.transform else eval_tensor(image, self.image_size)
        size = tensor.numel() * tensor.element_size()
        if self.held + size <= self.cache_bytes:
            self.cached[index] = tensor
            self.held += size
        return tensor

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        tensor = self._decoded(index)
        if self.transform is None:
            return tensor, self.labels[index]
        if self.augment_seed is None:
            return self.transform(tensor), self.labels[index]
        # torchvision's transforms draw from the global generator: fork it, so seeding here touches nothing else.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.augment_seed, index))
            return self.transform(tensor), self.labels[index]


def _mix(seed: int, index: int) -> int:
    """One 63-bit seed per (seed, index), so neighbouring images and epochs get unrelated streams."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]) >> 1

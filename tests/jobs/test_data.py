"""The data path: each image decoded once per process, presized for the random crops, within a memory cap."""

from __future__ import annotations

from pathlib import Path

import torch

from core.images import eval_tensor
from infra.local.sample_data import make_shapes
from jobs.data import PRESIZE_MARGIN, ImageItems, load_rgb
from jobs.stages.validate import validate_dataset


def _items(tmp_path: Path) -> tuple[Path, list[str], list[int]]:
    root = make_shapes(tmp_path / "data", train_per_class=2, valid_per_class=1, size=96)
    dataset = validate_dataset(root, "s3://b/p", max_bad_fraction=0.1)
    return root, [i.path for i in dataset.train], [i.label for i in dataset.train]


def test_training_images_are_decoded_once_and_augmented_every_epoch(tmp_path: Path) -> None:
    root, paths, labels = _items(tmp_path)
    data = ImageItems(root, paths, labels, image_size=32, train=True, cache_bytes=1 << 20)
    first = [data[i][0] for i in range(len(data))]
    second = [data[i][0] for i in range(len(data))]
    assert data.decodes == len(paths)  # the second epoch decoded nothing
    assert all(t.shape == (3, 32, 32) and t.dtype == torch.uint8 for t in first + second)
    assert any(not torch.equal(a, b) for a, b in zip(first, second, strict=True))  # fresh random crops
    assert min(data.cached[0].shape[-2:]) == round(32 * PRESIZE_MARGIN)  # presized, with room for the crops


def test_seeded_augmentation_depends_on_the_image_and_epoch_not_on_the_order_or_process(tmp_path: Path) -> None:
    # What makes 1-worker and 2-worker training see the same crops: an image's augmentation is a function of
    # (seed, epoch, image), not of which worker draws it or what that worker drew before.
    root, paths, labels = _items(tmp_path)
    forward = ImageItems(root, paths, labels, image_size=32, train=True)
    backward = ImageItems(root, paths, labels, image_size=32, train=True)
    forward.augment_seed = backward.augment_seed = 1001
    torch.manual_seed(0)
    in_order = [forward[i][0] for i in range(len(paths))]
    torch.manual_seed(123)  # another worker's global generator state
    reversed_order = [backward[i][0] for i in reversed(range(len(paths)))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(in_order, reversed_order, strict=True))
    forward.augment_seed = 1002  # the next epoch: fresh crops
    assert any(not torch.equal(a, forward[i][0]) for i, a in enumerate(in_order))
    # Seeding an image's crop leaves the global generator where it was (dropout and the rest draw from it).
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    forward[0]
    assert torch.equal(torch.rand(1), expected)


def test_validation_images_are_cached_as_their_final_crop_and_the_cap_holds(tmp_path: Path) -> None:
    root, paths, labels = _items(tmp_path)
    data = ImageItems(root, paths, labels, image_size=32, train=False, cache_bytes=2 * 3 * 32 * 32)
    for _ in range(2):
        for i in range(len(data)):
            assert torch.equal(data[i][0], eval_tensor(load_rgb(root / paths[i], 32), 32))
    assert len(data.cached) == 2 and data.held <= 2 * 3 * 32 * 32  # only what fits the cap is kept
    assert data.decodes == 2 + 2 * (len(paths) - 2)  # the rest is decoded every time, as before

"""Every image format a real photo folder holds decodes to the RGB the model expects, in training and serving."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.images import decode_image
from infra.local.sample_data import make_shapes
from jobs.data import load_rgb
from jobs.stages.validate import validate_dataset


def _save(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), colour).quantize(4) for colour in ((200, 30, 30), (30, 30, 200))]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _transparent_png() -> bytes:
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # fully transparent, hidden colour black
    return _save(image, "PNG")


def _sixteen_bit_png() -> bytes:
    return _save(Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16)), "PNG")  # mid-grey at 16 bits


FORMATS: dict[str, tuple[Callable[[], bytes], tuple[int, int, int], int]] = {
    # name: (file bytes, expected pixel, tolerance)
    "animated gif (first frame)": (_animated_gif, (200, 30, 30), 8),
    "palette gif": (lambda: _save(Image.new("RGB", (16, 16), (10, 200, 10)).quantize(4), "GIF"), (10, 200, 10), 8),
    "png with alpha (white backdrop)": (_transparent_png, (255, 255, 255), 0),
    "cmyk jpeg": (lambda: _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"), (255, 0, 0), 12),
    "grayscale jpeg": (lambda: _save(Image.new("L", (16, 16), 90), "JPEG"), (90, 90, 90), 3),
    "16-bit png (scaled, not clipped)": (_sixteen_bit_png, (128, 128, 128), 1),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_decodes_to_rgb_in_serving_and_training(name: str, tmp_path: Path) -> None:
    make, expected, tolerance = FORMATS[name]
    data = make()
    path = tmp_path / "image"
    path.write_bytes(data)
    for image in (decode_image(data), decode_image(data, 32), load_rgb(path, 32)):
        assert image.mode == "RGB"
        pixel = image.getpixel((8, 8))
        assert isinstance(pixel, tuple)
        assert all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True)), (name, pixel)


def test_odd_formats_pass_validation_and_broken_files_are_still_skipped(tmp_path: Path) -> None:
    root = make_shapes(tmp_path, train_per_class=20, valid_per_class=2, size=32)
    suffixes = {"animated gif (first frame)": ".gif", "cmyk jpeg": ".jpg", "16-bit png (scaled, not clipped)": ".png"}
    for name, suffix in suffixes.items():
        (root / "train" / "circle" / f"odd{len(name)}{suffix}").write_bytes(FORMATS[name][0]())
    (root / "train" / "square" / "truncated.gif").write_bytes(_animated_gif()[:20])
    dataset = validate_dataset(root, "s3://b/p", max_bad_fraction=0.1)
    assert dataset.summary.counts["train"]["circle"] == 23
    assert [(s.path, s.reason.split(" (")[0]) for s in dataset.summary.skipped] == [
        ("train/square/truncated.gif", "cannot be decoded")
    ]

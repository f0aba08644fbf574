"""A small generated image dataset (coloured shapes) and an uploader, for the demo and the tests.

Generated rather than bundled: a few hundred KB of PNGs appear in a second, identical on every machine,
and a pretrained backbone separates the classes well, so accuracy far above chance is a real signal.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle")


def _draw(shape: str, size: int, rng: random.Random) -> Image.Image:
    background = tuple(rng.randint(0, 255) for _ in range(3))
    foreground = tuple((c + rng.randint(90, 166)) % 256 for c in background)  # always well apart
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    extent = rng.uniform(0.35, 0.7) * size
    cx, cy = rng.uniform(extent / 2, size - extent / 2), rng.uniform(extent / 2, size - extent / 2)
    half = extent / 2
    if shape == "circle":
        draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=foreground)
    elif shape == "square":
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=foreground)
    else:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=foreground)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def make_shapes(
    root: Path, train_per_class: int = 40, valid_per_class: int = 15, size: int = 96, seed: int = 0
) -> Path:
    """Write train/<shape>/*.png and valid/<shape>/*.png under `root`; returns `root`."""
    rng = random.Random(seed)
    for split, count in (("train", train_per_class), ("valid", valid_per_class)):
        for shape in SHAPES:
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _draw(shape, size, rng).save(folder / f"{shape}_{i:03d}.png")
    return root


def ensure_bucket(s3: Any, bucket: str) -> None:
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)


def upload_folder(s3: Any, root: Path, bucket: str, prefix: str) -> int:
    """Upload every file under `root` to s3://bucket/prefix/<relative path>; creates the bucket if needed.

    Files already there with the same content (single-part ETag = MD5) are skipped, so uploading the same
    folder again (a second demo run) sends nothing. Returns how many files were uploaded.
    """
    ensure_bucket(s3, bucket)
    prefix = prefix.strip("/")
    existing: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        existing.update({o["Key"]: o["ETag"].strip('"') for o in page.get("Contents", [])})
    uploaded = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key, body = f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes()
        if existing.get(key) == hashlib.md5(body, usedforsecurity=False).hexdigest():
            continue
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        uploaded += 1
    return uploaded

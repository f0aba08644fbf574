"""Datasets an attacker (or a careless upload) produces: hostile S3 keys and files that only look like images.

Each file gets its own clear reason in the validation summary; nothing crashes a job, nothing is written
outside the dataset's cache. (Odd-but-valid formats: tests/core/test_images.py; `..` keys:
tests/jobs/test_fetch.py.)
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

from infra.local.sample_data import make_shapes
from jobs.dataset_cache import fetch_dataset
from jobs.stages.validate import validate_dataset


def _jpeg(size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 10, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header that claims `width`×`height` pixels, with one tiny compressed row: a bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


HOSTILE_FILES: dict[str, tuple[bytes, str]] = {
    # file name: (bytes, the start of its reason)
    "empty.jpg": (b"", "empty file"),
    "truncated.jpg": (_jpeg()[:200], "cannot be decoded"),
    "bomb.png": (_png_claiming(100_000, 100_000), "too large to decode"),
    "just-over-the-limit.png": (_png_claiming(9_000, 8_000), "too large to decode"),
    "page.jpg": (b"<html><body>not a photo</body></html>", "cannot be decoded"),
    "script.png": (b"#!/bin/sh\nrm -rf /\n", "cannot be decoded"),
    "notes.txt": (b"hello", "not an image file"),
}


def test_each_hostile_file_is_skipped_with_its_own_reason(tmp_path: Path) -> None:
    root = make_shapes(tmp_path, train_per_class=40, valid_per_class=2, size=32)
    for name, (data, _) in HOSTILE_FILES.items():
        (root / "train" / "circle" / name).write_bytes(data)
    dataset = validate_dataset(root, "s3://b/p", max_bad_fraction=0.1)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in dataset.summary.skipped}
    assert set(reasons) == set(HOSTILE_FILES)
    for name, (_, reason) in HOSTILE_FILES.items():
        assert reasons[name].startswith(reason), (name, reasons[name])
    assert dataset.summary.counts["train"]["circle"] == 40


def _put(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    s3.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_hostile_keys_are_skipped_and_unicode_keys_are_kept(permissive_s3: Any, cache_dir: Path) -> None:
    image = _jpeg()
    too_long = "x" * 300 + ".jpg"  # one path component over the usual 255-byte filesystem limit
    _put(
        permissive_s3,
        "hostile-keys",
        {
            "ds/train/猫/1.jpg": image,  # unicode class and file names are ordinary data
            "ds/train/chien/éèê 🐶.jpg": image,
            "ds/train/chien/" + too_long: image,
            "ds//etc/passwd": b"x",  # an absolute path below the prefix
            "ds/train/../../../../tmp/escape.jpg": b"x",
            "ds/./train/chien/dot.jpg": b"x",
        },
    )
    result = fetch_dataset(permissive_s3, "s3://hostile-keys/ds", cache_dir)
    assert (result.root / "train/猫/1.jpg").read_bytes() == image
    assert (result.root / "train/chien/éèê 🐶.jpg").read_bytes() == image
    assert set(result.unsafe_keys) == {
        "ds/train/chien/" + too_long,
        "ds//etc/passwd",
        "ds/train/../../../../tmp/escape.jpg",
        "ds/./train/chien/dot.jpg",
    }
    written = [p for p in cache_dir.parent.rglob("*") if p.is_file()]
    assert not [p for p in written if p.name in ("passwd", "escape.jpg", "dot.jpg")]

"""Backbone features kept in S3, so a second job on the same data skips the extraction (and its Ray task).

The key covers everything the numbers depend on: the dataset's objects (every relative path with its ETag),
the backbone and the exact weights file, the image size, and which images are in which split with which
label. A changed object (new ETag), other weights, another size or another split is a miss.
"""

from __future__ import annotations

import hashlib
import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from core.spec import S3Location
from jobs.dataset import Item
from jobs.features import Features

FORMAT_VERSION = 1  # bump when what compute_features returns changes meaning (transform, pooling)


@lru_cache(maxsize=8)
def weights_digest(weights: Path) -> str:
    """sha256 of the weights file: ~50 ms for 18 MB, once per process per file."""
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def feature_key(
    etags_digest: str, arch: str, weights: Path, image_size: int, train: list[Item], valid: list[Item]
) -> str:
    splits = [[(i.path, i.label) for i in items] for items in (train, valid)]
    identity = json.dumps(
        {
            "version": FORMAT_VERSION,
            "dataset": etags_digest,
            "arch": arch,
            "weights": weights_digest(weights),
            "image_size": image_size,
            "splits": splits,
        }
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def cache_location(artifact_uri: str, key: str) -> S3Location:
    return S3Location.parse(artifact_uri).child("feature-cache", key)


def load_features(s3: Any, location: S3Location) -> Features | None:
    try:
        body = s3.get_object(Bucket=location.bucket, Key=f"{location.prefix}features.npz")["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    with np.load(io.BytesIO(body)) as arrays:
        return Features(
            train_x=arrays["train_x"],
            train_y=arrays["train_y"],
            valid_x=arrays["valid_x"],
            valid_y=arrays["valid_y"],
            images_per_second=float(arrays["images_per_second"]),
        )


def save_features(s3: Any, location: S3Location, features: Features) -> None:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        train_x=features.train_x,
        train_y=features.train_y,
        valid_x=features.valid_x,
        valid_y=features.valid_y,
        images_per_second=np.float64(features.images_per_second),
    )
    # A new key per content: never overwritten in place (s3rver writes objects in place).
    s3.put_object(Bucket=location.bucket, Key=f"{location.prefix}features.npz", Body=buffer.getvalue())

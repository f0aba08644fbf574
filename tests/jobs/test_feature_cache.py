"""The feature cache: its key changes exactly when the features could, and it round-trips through S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from infra.local.sample_data import ensure_bucket
from jobs.dataset import Item
from jobs.feature_cache import cache_location, feature_key, load_features, save_features
from jobs.features import Features

TRAIN = [Item(path="train/a/1.png", label=0), Item(path="train/b/2.png", label=1)]
VALID = [Item(path="valid/a/3.png", label=0)]


def test_key_changes_with_etags_weights_size_and_split(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights one")
    other_weights = tmp_path / "w2.pt"
    other_weights.write_bytes(b"weights two")
    key = feature_key("etags-1", "efficientnet_lite0", weights, 64, TRAIN, VALID)
    assert key == feature_key("etags-1", "efficientnet_lite0", weights, 64, TRAIN, VALID)
    assert key != feature_key("etags-2", "efficientnet_lite0", weights, 64, TRAIN, VALID)  # an object changed
    assert key != feature_key("etags-1", "resnet18", weights, 64, TRAIN, VALID)
    assert key != feature_key("etags-1", "efficientnet_lite0", other_weights, 64, TRAIN, VALID)
    assert key != feature_key("etags-1", "efficientnet_lite0", weights, 32, TRAIN, VALID)
    assert key != feature_key("etags-1", "efficientnet_lite0", weights, 64, TRAIN[:1], [*VALID, TRAIN[1]])


def test_features_round_trip_and_a_missing_key_is_a_miss(s3: Any) -> None:
    ensure_bucket(s3, "feature-cache-test")
    location = cache_location("s3://feature-cache-test", "k1")
    assert load_features(s3, location) is None
    rng = np.random.default_rng(0)
    features = Features(
        train_x=rng.normal(size=(4, 8)).astype(np.float32),
        train_y=np.array([0, 1, 0, 1]),
        valid_x=rng.normal(size=(2, 8)).astype(np.float32),
        valid_y=np.array([1, 0]),
        images_per_second=12.5,
    )
    save_features(s3, location, features)
    loaded = load_features(s3, location)
    assert loaded is not None
    np.testing.assert_array_equal(loaded.train_x, features.train_x)
    np.testing.assert_array_equal(loaded.valid_y, features.valid_y)
    assert loaded.images_per_second == 12.5

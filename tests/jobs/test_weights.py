from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from jobs.errors import StageError
from jobs.weights import resolve_weights


def test_offline_default_backbone_needs_nothing(s3: Any, cache_dir: Path) -> None:
    assert resolve_weights("efficientnet_lite0", None, s3, cache_dir).stat().st_size > 10_000_000


def test_torchvision_backbone_without_weights_says_how_to_provide_them(
    s3: Any, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(StageError) as error:
        resolve_weights("resnet18", None, s3, cache_dir)
    assert error.value.code == "weights_unavailable"
    assert "weights_uri" in error.value.message


def test_weights_uri_is_cached_by_etag_and_a_missing_object_is_named(s3: Any, cache_dir: Path) -> None:
    s3.create_bucket(Bucket="weights")
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buffer)
    s3.put_object(Bucket="weights", Key="r18.pth", Body=buffer.getvalue())
    first = resolve_weights("resnet18", "s3://weights/r18.pth", s3, cache_dir)
    assert torch.load(first, weights_only=True)["w"].sum() == 3
    modified = first.stat().st_mtime_ns
    assert resolve_weights("resnet18", "s3://weights/r18.pth", s3, cache_dir) == first
    assert first.stat().st_mtime_ns == modified  # same ETag: not downloaded again
    s3.delete_object(Bucket="weights", Key="r18.pth")
    with pytest.raises(StageError, match=r"s3://weights/r18\.pth could not be read"):
        resolve_weights("resnet18", "s3://weights/r18.pth", s3, cache_dir)

"""The evaluate stage: least-certain beside most-wrong, the held-out test split scored, thumbnails in S3."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from core.backbones import build_classifier
from core.spec import S3Location
from infra.local.sample_data import ensure_bucket, make_shapes
from jobs.stages.evaluate import LEAST_CERTAIN, evaluate_model
from jobs.stages.validate import validate_dataset
from jobs.thumbnails import THUMBNAIL_PX, attach_thumbnails


def test_evaluation_scores_test_split_and_lists_least_certain(tmp_path: Path) -> None:
    root = make_shapes(tmp_path / "data", train_per_class=2, valid_per_class=4, size=48)
    (root / "valid").rename(root / "val")
    make_shapes(tmp_path / "held", train_per_class=0, valid_per_class=2, size=48, seed=1)
    (tmp_path / "held" / "valid").rename(root / "test")
    dataset = validate_dataset(root, "s3://b/p", max_bad_fraction=0.1)
    torch.manual_seed(0)
    model = build_classifier("efficientnet_lite0", 3, weights=None).eval()  # untrained: uncertain, often wrong
    evaluation = evaluate_model(
        model, root, dataset.valid, dataset.summary.classes, "efficientnet_lite0", 32, test=dataset.test
    )
    assert evaluation.images == 12 and sum(map(sum, evaluation.confusion_matrix)) == 12
    assert evaluation.test is not None
    assert evaluation.test.images == 6 and sum(map(sum, evaluation.test.confusion_matrix)) == 6
    assert set(evaluation.test.per_class) == {"circle", "square", "triangle"}
    unsure = [e["probability"] for e in evaluation.least_certain]
    assert len(unsure) == LEAST_CERTAIN and unsure == sorted(unsure)
    assert all(e["path"].startswith("val/") for e in evaluation.least_certain + evaluation.most_wrong)
    assert all(e["actual"] != e["predicted"] for e in evaluation.most_wrong)


def test_thumbnails_are_small_jpegs_in_s3_named_on_the_entries(tmp_path: Path, s3: Any) -> None:
    root = make_shapes(tmp_path, train_per_class=1, valid_per_class=0, size=300)
    path = "train/circle/circle_000.png"
    location = S3Location.parse("s3://thumbs-test/jobs/job-1")
    ensure_bucket(s3, location.bucket)
    entries = attach_thumbnails(s3, location, root, [{"path": path, "actual": "circle"}, {"path": path}])
    assert entries[0]["thumbnail_uri"] == entries[1]["thumbnail_uri"]
    uri = S3Location.parse(entries[0]["thumbnail_uri"])
    assert uri.key.startswith("jobs/job-1/thumbnails/") and uri.key.endswith(".jpg")
    body = s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read()
    with Image.open(io.BytesIO(body)) as image:
        assert image.format == "JPEG" and max(image.size) == THUMBNAIL_PX

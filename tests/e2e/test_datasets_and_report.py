"""Datasets as users ship them, trained through the real stack, and the job's report opened in a real browser.

1. The PyTorch transfer-learning tutorial's layout: train/ + val/ + a held-out test/, one image a .gif,
   POSTed small: it trains, says it used val/, and scores test/.
2. A labels.csv with no split column: the validation split is carved (20%, stratified) and reported.
The first job's report is then opened in headless Chromium: every image loads, no console errors, and a
screenshot lands in build/.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from infra.local.sample_data import SHAPES, make_shapes, upload_folder
from infra.local.stack import LocalStack
from tests.utils.browser import visit
from tests.utils.jobs import wait_job

pytestmark = pytest.mark.e2e

# Layouts and the report are what this module is about, not fine-tuning: at 64 px three head-only epochs classify
# these shapes perfectly, so each job keeps the head-only model and starts no Ray Train run.
SMALL = {"image_size": 64, "epochs": 1, "freeze_epochs": 3, "batch_size": 8}
SCREENSHOT = Path(__file__).resolve().parents[2] / "build" / "report.png"


@pytest.fixture(scope="module")
def api(stack_api: httpx.Client) -> httpx.Client:
    return stack_api


def _tutorial_layout(root: Path) -> Path:
    """train/ + val/ + test/, as torchvision's tutorial ships hymenoptera_data; one training image a GIF."""
    make_shapes(root, train_per_class=12, valid_per_class=4, size=64)
    (root / "valid").rename(root / "val")
    make_shapes(root / "held-out", train_per_class=0, valid_per_class=3, size=64, seed=7)
    (root / "held-out" / "valid").rename(root / "test")
    shutil.rmtree(root / "held-out")
    png = root / "train" / "circle" / "circle_000.png"
    Image.open(png).convert("RGB").quantize(64).save(png.with_suffix(".gif"))
    png.unlink()
    return root


def _labels_csv_layout(root: Path) -> Path:
    """All images in one folder, the classes in labels.csv (no split column: Trainyard carves one)."""
    source = make_shapes(root.parent / "csv-source", train_per_class=10, valid_per_class=0, size=64, seed=3)
    (root / "images").mkdir(parents=True)
    lines = ["path,label"]
    for shape in SHAPES:
        for png in sorted((source / "train" / shape).iterdir()):
            shutil.copy(png, root / "images" / png.name)
            lines.append(f"images/{png.name},{shape}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def jobs(api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    from core.s3 import s3_client

    s3 = s3_client()
    data = tmp_path_factory.mktemp("user-datasets")
    upload_folder(s3, _tutorial_layout(data / "tutorial"), "user-data", "hymenoptera")
    upload_folder(s3, _labels_csv_layout(data / "csv"), "user-data", "from-csv")
    ids = {
        "tutorial": api.post("/v1/jobs", json={"dataset_uri": "s3://user-data/hymenoptera", **SMALL}),
        "csv": api.post("/v1/jobs", json={"dataset_uri": "s3://user-data/from-csv", "deploy": False, **SMALL}),
    }
    assert all(r.status_code == 202 for r in ids.values()), [r.text for r in ids.values()]
    return {name: wait_job(api, r.json()["id"], timeout=600) for name, r in ids.items()}


def test_tutorial_layout_trains_with_val_and_scores_test(jobs: dict[str, dict[str, Any]]) -> None:
    job = jobs["tutorial"]
    assert job["status"] == "succeeded", job["error"]
    dataset = job["dataset"]
    assert dataset["layout"] == "folders"
    assert {s: v["source"] for s, v in dataset["splits"].items()} == {
        "train": "train/",
        "valid": "val/",
        "test": "test/",
    }
    assert dataset["counts"]["train"]["circle"] == 12 and dataset["num_skipped"] == 0  # the .gif counted
    test = job["evaluation"]["test"]
    assert test["images"] == 9 and sum(map(sum, test["confusion_matrix"])) == 9 and 0 <= test["accuracy"] <= 1
    assert sum(map(sum, job["evaluation"]["confusion_matrix"])) == 12  # selection saw val/ only
    unsure = job["evaluation"]["least_certain"]
    assert unsure and all(e["thumbnail_uri"].endswith(".jpg") for e in unsure)


def test_labels_csv_trains_on_a_reported_automatic_split(jobs: dict[str, dict[str, Any]]) -> None:
    job = jobs["csv"]
    assert job["status"] == "succeeded", job["error"]
    dataset = job["dataset"]
    assert dataset["layout"] == "labels_csv"
    assert dataset["splits"]["valid"]["source"] == "carved 20% of labels.csv (stratified, seed 0)"
    assert dataset["counts"]["valid"] == {name: 2 for name in SHAPES}
    assert sum(map(sum, job["evaluation"]["confusion_matrix"])) == 6


def test_report_opens_in_headless_chromium(jobs: dict[str, dict[str, Any]], api_stack: LocalStack) -> None:
    job = jobs["tutorial"]
    page = visit(f"{api_stack.config.api_url}/v1/jobs/{job['id']}/report", SCREENSHOT, headers=api_stack.api_headers())
    assert page.status == 200
    assert job["id"] in page.title or (job["name"] or "") in page.title
    assert page.console_errors == [] and page.failed_requests == []
    # The LR curve, the training curves and a thumbnail per most-wrong / least-certain image, all decoded.
    expected = 2 + len(job["evaluation"]["most_wrong"]) + len(job["evaluation"]["least_certain"])
    assert len(page.images) == expected
    assert all(width > 0 for _, width in page.images), page.images
    assert SCREENSHOT.stat().st_size > 20_000

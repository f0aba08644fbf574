"""GET /v1/jobs/{id}/report: one self-contained HTML page for a job in any state, over real HTTP and real S3."""

from __future__ import annotations

import io
import re
from typing import Any

from PIL import Image
from service_testkit import Api, ApiFactory

from core.spec import Phase
from infra.local.sample_data import ensure_bucket

DATASET = {
    "layout": "folders",
    "classes": ["cat", "dog"],
    "splits": {"train": {"source": "train/", "images": 8}, "valid": {"source": "val/", "images": 4}},
    "counts": {"train": {"cat": 4, "dog": 4}, "valid": {"cat": 2, "dog": 2}},
    "skipped": [{"path": "train/cat/notes.txt", "reason": "not an image file (suffix '.txt')"}],
    "num_skipped": 1,
}
SWEEP = {
    "suggested_lr": 2e-3,
    "chosen_lr": 2e-3,
    "method": "valley",
    "suggestions": {"valley": 2e-3, "steep": 5e-3, "minimum": 1e-3},
    "steps": 60,
    "diverged": True,
}
EPOCH = {"epoch": 1, "stage": "frozen", "train_loss": 0.9, "valid_loss": 0.7, "accuracy": 0.75, "seconds": 0.1}


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _img_sources(html: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)


def _assert_self_contained(html: str) -> None:
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page must not load anything from elsewhere"
    assert all(src.startswith("data:image/") for src in _img_sources(html))


def test_unknown_job_is_404_like_the_other_routes(api: Api) -> None:
    response = api.http.get("/v1/jobs/job-nope/report")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"


def test_failed_job_shows_what_exists_and_the_error_with_its_phase(api: Api) -> None:
    job_id = api.create_job(name="pets")["id"]
    api.store.set_phase(job_id, Phase.training, 0.5)
    api.store.set_result(job_id, "dataset", DATASET)
    api.store.set_result(job_id, "lr_sweep", SWEEP)
    api.store.add_epoch(job_id, EPOCH)
    api.store.fail(job_id, "training_failed", "distributed training failed: RuntimeError: out of memory")

    response = api.http.get(f"/v1/jobs/{job_id}/report")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    _assert_self_contained(html)
    assert "Failed during training" in html and "training_failed" in html and "out of memory" in html
    assert "val/" in html and "train/cat/notes.txt" in html  # where the splits came from, what was skipped
    assert "2.00e-03" in html and "5.00e-03" in html  # the chosen LR and the other suggestions
    assert "0.7500" in html  # the epoch table
    assert "No deployed model for this job" in html


def test_running_job_without_results_renders(api: Api) -> None:
    job_id = api.create_job()["id"]
    api.store.set_phase(job_id, Phase.fetching, 0.01)
    html = api.http.get(f"/v1/jobs/{job_id}/report").text
    assert "now fetching" in html and "Not validated yet" in html and "No deployed model yet" in html
    _assert_self_contained(html)


def test_finished_job_inlines_plots_and_thumbnails_and_gives_copy_paste_lines(s3: Any, make_api: ApiFactory) -> None:
    api = make_api()  # after `s3`: the API's settings point at the test S3 server
    ensure_bucket(s3, "report-test")
    s3.put_object(Bucket="report-test", Key="jobs/x/lr_sweep.png", Body=_png())
    s3.put_object(Bucket="report-test", Key="jobs/x/thumbnails/a.jpg", Body=_jpeg((200, 0, 0)))
    job_id = api.create_job()["id"]
    api.store.set_phase(job_id, Phase.evaluating, 0.9)
    api.store.set_result(job_id, "dataset", DATASET)
    api.store.set_result(job_id, "lr_sweep", SWEEP)
    api.store.set_result(job_id, "artifacts", {"lr_sweep.png": "s3://report-test/jobs/x/lr_sweep.png"})
    entry = {"path": "val/cat/1.jpg", "actual": "cat", "predicted": "dog", "probability": 0.93, "loss": 2.6}
    thumb = "s3://report-test/jobs/x/thumbnails/a.jpg"
    api.store.set_result(
        job_id,
        "evaluation",
        {
            "accuracy": 0.75,
            "loss": 0.6,
            "images": 4,
            "classes": ["cat", "dog"],
            "per_class": {n: {"precision": 0.75, "recall": 0.75, "support": 2} for n in ("cat", "dog")},
            "confusion_matrix": [[1, 1], [0, 2]],
            "most_wrong": [entry | {"thumbnail_uri": thumb}],
            "least_certain": [entry | {"probability": 0.51, "thumbnail_uri": thumb}],
            "test": {
                "accuracy": 0.5,
                "loss": 0.9,
                "images": 2,
                "per_class": {n: {"precision": 0.5, "recall": 0.5, "support": 1} for n in ("cat", "dog")},
                "confusion_matrix": [[1, 0], [1, 0]],
            },
        },
    )
    model_id = job_id.replace("job-", "mdl-", 1)
    api.store.succeed(job_id, model_id)

    html = api.http.get(f"/v1/jobs/{job_id}/report").text
    _assert_self_contained(html)
    sources = _img_sources(html)
    assert sum(src.startswith("data:image/png;base64,") for src in sources) == 1  # the LR curve
    assert sum(src.startswith("data:image/jpeg;base64,") for src in sources) == 2  # most wrong + least certain
    assert "93%" in html and "51%" in html and "val/cat/1.jpg" in html
    predict = f"{api.settings.public_url}/v1/models/{model_id}/predict"
    header = '-H "Authorization: Bearer $TRAINYARD_API_KEY"'  # pasted as is, it sends the key users export
    assert f'curl -s {header} "{predict}?top_k=3" --data-binary @image.jpg' in html.replace("&#34;", '"')
    assert f"trainyard predict {model_id} image.jpg" in html
    assert "test accuracy" in html and "50.0%" in html


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (0, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()

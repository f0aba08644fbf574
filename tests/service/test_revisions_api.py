"""POST/GET /v1/jobs/{id}/revisions over real HTTP and the real S3 server: marks become a new dataset.

A job is laid out as the driver leaves it (its dataset in S3, its dataset.csv listing the split it used);
the revision must list exactly the marked changes, copy what it lists, and never touch the original.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from service_testkit import Api, ApiFactory, FakeLauncher

from core.dataset_listing import DATASET_LISTING, ListedImage, listing_csv
from core.spec import Phase
from infra.local.sample_data import make_shapes, upload_folder
from jobs.layouts import find_layout


def _objects(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def _rows(body: bytes) -> dict[str, tuple[str, str]]:
    return {row["path"]: (row["label"], row["split"]) for row in csv.DictReader(io.StringIO(body.decode()))}


@pytest.fixture
def finished_job(s3: Any, make_api: ApiFactory, tmp_path: Path) -> tuple[Api, dict[str, Any], list[ListedImage]]:
    api = make_api(launcher=FakeLauncher())  # after `s3`: the API's settings point at the test S3 server
    root = make_shapes(tmp_path / "shapes", train_per_class=4, valid_per_class=2, size=32)
    upload_folder(s3, root, "revision-data", "shapes")
    images = [
        ListedImage(path=str(p.relative_to(root)), label=p.parent.name, split=p.parent.parent.name)
        for p in sorted(root.rglob("*.png"))
    ]
    s3.put_object(Bucket="revision-data", Key="artifacts/dataset.csv", Body=listing_csv(images))
    job = api.create_job(dataset_uri="s3://revision-data/shapes", name="shapes", image_size=64, epochs=2)
    api.store.set_phase(job["id"], Phase.evaluating, 0.9)
    classes = sorted({i.label for i in images})
    api.store.set_result(job["id"], "dataset", {"classes": classes})
    api.store.set_result(job["id"], "artifacts", {DATASET_LISTING: "s3://revision-data/artifacts/dataset.csv"})
    api.store.succeed(job["id"], None)
    return api, job, images


def test_relabelling_two_and_excluding_one_writes_exactly_those_changes(
    s3: Any, finished_job: tuple[Api, dict[str, Any], list[ListedImage]], tmp_path: Path
) -> None:
    api, job, images = finished_job
    before = _objects(s3, "revision-data", "shapes/")
    a, b, c = images[0], images[5], images[-1]
    other = next(label for label in {i.label for i in images} if label != a.label)
    other_b = next(label for label in {i.label for i in images} if label != b.label)
    marks = [
        {"path": a.path, "action": "relabel", "label": other},
        {"path": b.path, "action": "relabel", "label": other_b},
        {"path": c.path, "action": "exclude"},
        {"path": images[1].path, "action": "fine"},
    ]
    response = api.http.post(f"/v1/jobs/{job['id']}/revisions", json={"marks": marks, "retrain": True})
    assert response.status_code == 201, response.text
    revision = response.json()
    assert revision["changes"] == {"relabelled": 2, "excluded": 1, "fine": 1}
    assert revision["images"] == len(images) - 1
    assert revision["dataset_uri"].startswith(f"s3://{api.settings.upload_bucket}/revisions/admin/rev-")

    # The original, byte for byte and key for key.
    assert _objects(s3, "revision-data", "shapes/") == before
    # labels.csv: the job's listing with exactly the three changes, every split kept.
    bucket, prefix = revision["dataset_uri"].removeprefix("s3://").split("/", 1)
    copied = _objects(s3, bucket, prefix)
    written = _rows(copied[f"{prefix}labels.csv"])
    original = {i.path: (i.label, i.split) for i in images}
    changed = {p for p in original if written.get(p) != original[p]}
    assert changed == {a.path, b.path, c.path}
    assert written[a.path] == (other, a.split) and written[b.path] == (other_b, b.split) and c.path not in written
    assert set(written) == set(original) - {c.path}
    # Every listed image is a copy of its original; the excluded one is not copied.
    assert all(copied[prefix + p] == before[f"shapes/{p}"] for p in written)
    assert prefix + c.path not in copied
    # It is a dataset a job reads: the labels_csv layout, with the marks' labels and the job's splits.
    local = tmp_path / "revision"
    for key, body in copied.items():
        (local / key.removeprefix(prefix)).parent.mkdir(parents=True, exist_ok=True)
        (local / key.removeprefix(prefix)).write_bytes(body)
    layout = find_layout(local, revision["dataset_uri"])
    assert layout.layout == "labels_csv"
    assert {cand.path: cand.label for split in layout.splits.values() for cand in split}[a.path] == other

    # The retrain: a new job on the revision with the same parameters, queued.
    retrain = api.http.get(f"/v1/jobs/{revision['retrain_job_id']}").json()
    assert retrain["params"] == job["params"] | {"dataset_uri": revision["dataset_uri"]}
    listed = api.http.get(f"/v1/jobs/{retrain['id']}/revisions").json()
    assert listed["trained_on"]["id"] == revision["id"] and listed["trained_on"]["job_id"] == job["id"]
    assert [r["id"] for r in api.http.get(f"/v1/jobs/{job['id']}/revisions").json()["revisions"]] == [revision["id"]]


@pytest.mark.parametrize(
    ("mark", "code", "field"),
    [
        ({"path": "train/nope.png", "action": "exclude"}, "unknown_image", "marks[0].path"),
        ({"path": "FIRST", "action": "relabel", "label": "hexagon"}, "unknown_label", "marks[0].label"),
        ({"path": "FIRST", "action": "relabel", "label": "SAME"}, "same_label", "marks[0].label"),
        ({"path": "FIRST", "action": "exclude", "label": "x"}, "unexpected_label", "marks[0].label"),
    ],
)
def test_a_mark_that_cannot_apply_is_a_422_naming_it(
    finished_job: tuple[Api, dict[str, Any], list[ListedImage]], mark: dict[str, str], code: str, field: str
) -> None:
    api, job, images = finished_job
    mark = {k: v.replace("FIRST", images[0].path).replace("SAME", images[0].label) for k, v in mark.items()}
    response = api.http.post(f"/v1/jobs/{job['id']}/revisions", json={"marks": [mark]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)


def test_another_tenant_cannot_revise_or_read_a_jobs_revisions(
    finished_job: tuple[Api, dict[str, Any], list[ListedImage]],
) -> None:
    api, job, images = finished_job
    other = api.tenant_client("team-b")
    body = {"marks": [{"path": images[0].path, "action": "exclude"}]}
    assert other.post(f"/v1/jobs/{job['id']}/revisions", json=body).status_code == 404
    assert other.get(f"/v1/jobs/{job['id']}/revisions").status_code == 404


def test_a_job_without_its_image_list_answers_409(api: Api) -> None:
    job = api.create_job()
    response = api.http.post(f"/v1/jobs/{job['id']}/revisions", json={"marks": [{"path": "a.jpg", "action": "fine"}]})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_dataset_listing"


def test_a_tenant_may_train_on_its_own_revisions_outside_the_allow_list(s3: Any, make_api: ApiFactory) -> None:
    api = make_api(launcher=FakeLauncher(), dataset_prefixes=["s3://allowed/data"])
    client = api.tenant_client("team-a")
    own = f"s3://{api.settings.upload_bucket}/revisions/team-a/rev-1/"
    theirs = f"s3://{api.settings.upload_bucket}/revisions/team-b/rev-1/"
    assert client.post("/v1/jobs", json={"dataset_uri": own}).status_code == 202
    refused = client.post("/v1/jobs", json={"dataset_uri": theirs})
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "dataset_uri"


def test_the_sdk_and_the_cli_make_the_same_revisions(
    finished_job: tuple[Api, dict[str, Any], list[ListedImage]],
) -> None:
    from typer.testing import CliRunner

    from trainyard import Client
    from trainyard.cli import app

    api, job, images = finished_job
    other = next(label for label in {i.label for i in images} if label != images[0].label)
    with Client(url=api.url, api_key=api.admin_key) as client:
        made = client.revise(job["id"], relabel={images[0].path: other}, exclude=[images[1].path], retrain=True)
        assert made.changes == {"relabelled": 1, "excluded": 1, "fine": 0} and made.retrain_job_id
        assert client.get_job(made.retrain_job_id).params["dataset_uri"] == made.dataset_uri
        _, trained_on = client.revisions(made.retrain_job_id)
        assert trained_on is not None and trained_on.job_id == job["id"]
        assert [j.id for j in client.list_jobs(name="SHAPES").jobs][-1] == job["id"]

    runner = CliRunner()
    cli = ["--url", api.url, "--api-key", api.admin_key, "revise", job["id"]]
    result = runner.invoke(app, [*cli, "--relabel", f"{images[2].path}={other}", "--exclude", images[3].path])
    assert result.exit_code == 0, result.output
    assert "1 relabelled, 1 excluded" in result.stdout and "retrain" not in result.stdout
    bad = runner.invoke(app, [*cli, "--relabel", images[2].path])
    assert bad.exit_code == 2 and "PATH=LABEL" in bad.output
    refused = runner.invoke(app, [*cli, "--exclude", "no/such.png", "--json"])
    assert refused.exit_code == 3 and "unknown_image" in refused.output

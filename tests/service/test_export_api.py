"""GET /v1/models/{ref}/export and its preprocessing JSON, through the real API, the SDK and the CLI.

The files are the ones the publish stage builds (`jobs.export`, on a tiny random-init model), in the local stack's
S3 server; the API streams them back. That they run without Trainyard and answer as the endpoint does is
tests/e2e/test_integrations.py's part.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from core.artifact import ARTIFACT_NAME, artifact_meta
from core.backbones import build_classifier
from core.exports import FILE_NAMES, MANIFEST_FILE, ExportFormat, ExportManifest, export_folder
from core.spec import JobParams
from core.store import ModelRecord
from jobs.export import build_exports, write_exports
from tests.utils.api_server import Api, ApiFactory
from trainyard import Client
from trainyard.cli import app as cli_app

CLASSES = ["cat", "dog"]
BUCKET = "trainyard-artifacts"


@pytest.fixture(scope="module")
def built() -> tuple[ExportManifest, dict[ExportFormat, bytes]]:
    """One tiny model's exports (built once: tracing and ONNX conversion take seconds)."""
    model = build_classifier("efficientnet_lite0", len(CLASSES), weights=None)
    return build_exports(model, artifact_meta("job-x", "efficientnet_lite0", CLASSES, 32, {}))


def add_model(api: Api, s3: Any, name: str | None = "pets", exported: Any = None, tenant: str = "admin") -> ModelRecord:
    """A model in the store with its artifact in S3; with `exported` (from `built`) its exports too."""
    job, _ = api.store.create_job(JobParams(dataset_uri="s3://bucket/pets", name=name), tenant=tenant)
    artifact_uri = f"s3://{BUCKET}/jobs/{job.id}/{ARTIFACT_NAME}"
    s3.put_object(Bucket=BUCKET, Key=f"jobs/{job.id}/{ARTIFACT_NAME}", Body=b"weights")
    if exported is not None:
        write_exports(s3, artifact_uri, *exported)
    record = ModelRecord(
        id=job.id.replace("job-", "mdl-"),
        job_id=job.id,
        artifact_uri=artifact_uri,
        arch="efficientnet_lite0",
        classes=CLASSES,
        created_at=datetime.now(UTC),
        name=name,
    )
    return api.store.add_model(record)


@pytest.fixture
def exported_api(s3: Any, make_api: ApiFactory, built: Any) -> tuple[Api, ModelRecord]:
    api = make_api()
    return api, add_model(api, s3, exported=built)


def test_each_format_downloads_as_the_file_published_beside_the_model(
    exported_api: tuple[Api, ModelRecord], s3: Any
) -> None:
    api, model = exported_api
    folder = export_folder(model.artifact_uri)
    for export_format, suffix in (
        ("onnx", ".onnx"),
        ("torchscript", ".torchscript.pt"),
        ("state_dict", ".state_dict.pt"),
    ):
        response = api.http.get("/v1/models/pets@1/export", params={"format": export_format})
        assert response.status_code == 200, response.text
        stored = s3.get_object(Bucket=folder.bucket, Key=folder.prefix + FILE_NAMES[ExportFormat(export_format)])
        assert response.content == stored["Body"].read()
        assert response.headers["content-disposition"] == f'attachment; filename="pets-v1{suffix}"'
        assert (response.headers["trainyard-model-id"], response.headers["trainyard-model-version"]) == (model.id, "1")
    assert api.http.get(f"/v1/models/{model.id}/export").headers["content-disposition"].endswith('.onnx"')  # default


def test_the_preprocessing_json_names_the_model_version_size_normalisation_and_classes(
    exported_api: tuple[Api, ModelRecord],
) -> None:
    api, model = exported_api
    body = api.http.get("/v1/models/pets/export/preprocessing").json()
    assert (body["model_id"], body["name"], body["version"]) == (model.id, "pets", 1)
    assert body["classes"] == CLASSES and body["image_size"] == 32
    assert body["preprocessing"]["resize_short_side"] == body["preprocessing"]["center_crop"] == 32
    assert body["preprocessing"]["mean"] == [127 / 255] * 3  # EfficientNet-Lite's (x - 127) / 128
    assert body["files"] == {
        "torchscript": "model.torchscript.pt",
        "onnx": "model.onnx",
        "state_dict": "model.state_dict.pt",
    }


def test_an_unknown_format_is_a_422_naming_the_field(exported_api: tuple[Api, ModelRecord]) -> None:
    api, _ = exported_api
    response = api.http.get("/v1/models/pets/export", params={"format": "tflite"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "format" and "onnx" in error["message"] and "torchscript" in error["message"]


def test_a_model_published_without_exports_says_how_to_get_them(s3: Any, make_api: ApiFactory) -> None:
    api = make_api()
    model = add_model(api, s3, name="old")
    for path in (f"/v1/models/{model.id}/export", "/v1/models/old/export/preprocessing"):
        response = api.http.get(path)
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("export_not_available", "model_id")
        assert "python -m jobs.export" in error["message"] and "retrain" in error["message"]


def test_a_format_that_failed_at_publish_says_why_and_what_was_built(s3: Any, make_api: ApiFactory, built: Any) -> None:
    api = make_api()
    model = add_model(api, s3, exported=built)
    folder = export_folder(model.artifact_uri)
    manifest = json.loads(s3.get_object(Bucket=folder.bucket, Key=folder.prefix + MANIFEST_FILE)["Body"].read())
    del manifest["files"]["onnx"]
    manifest["errors"] = {"onnx": "UnsupportedOperatorError: aten::svd"}
    s3.put_object(Bucket=folder.bucket, Key=folder.prefix + MANIFEST_FILE, Body=json.dumps(manifest).encode())
    s3.delete_object(Bucket=folder.bucket, Key=folder.prefix + FILE_NAMES[ExportFormat.onnx])
    response = api.http.get(f"/v1/models/{model.id}/export", params={"format": "onnx"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("export_not_available", "format")
    assert "aten::svd" in error["message"] and "torchscript" in error["message"]


def test_another_tenants_model_cannot_be_exported(s3: Any, make_api: ApiFactory, built: Any) -> None:
    api = make_api()
    model = add_model(api, s3, exported=built, tenant="team-a")
    other = api.tenant_client("team-b")
    for path in (f"/v1/models/{model.id}/export", f"/v1/models/{model.id}/export/preprocessing"):
        assert other.get(path).json()["error"]["code"] == "model_not_found"
    assert api.client(api.new_key("team-a")).get(f"/v1/models/{model.id}/export").status_code == 200


def test_the_sdk_and_the_cli_write_the_file_and_the_json_beside_it(
    exported_api: tuple[Api, ModelRecord], tmp_path: Path
) -> None:
    api, model = exported_api
    with Client(api.url, api.admin_key) as client:
        exported = client.export("pets@1", tmp_path / "model.onnx", format="onnx")
    assert exported.path.read_bytes() == api.http.get(f"/v1/models/{model.id}/export").content
    assert exported.preprocessing_path == tmp_path / "model.json"
    assert (
        json.loads(exported.preprocessing_path.read_text())["classes"] == CLASSES == exported.preprocessing["classes"]
    )

    out = tmp_path / "cli" / "pets.torchscript.pt"
    out.parent.mkdir()
    args = ["--url", api.url, "--api-key", api.admin_key, "export", "pets", "--format", "torchscript", "-o", str(out)]
    result = CliRunner().invoke(cli_app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert Path(written["path"]) == out and out.stat().st_size > 1000
    assert Path(written["preprocessing_path"]) == out.with_suffix(".json")

    missing = CliRunner().invoke(cli_app, ["--url", api.url, "--api-key", api.admin_key, "export", "nope"])
    assert missing.exit_code != 0 and "no model" in missing.output and "Traceback" not in missing.output


def test_while_the_exports_are_built_a_download_is_told_to_retry_and_the_sdk_waits(
    s3: Any, make_api: ApiFactory, built: tuple[ExportManifest, dict[ExportFormat, bytes]], tmp_path: Path
) -> None:
    api = make_api()
    model = add_model(api, s3)
    announced, files = built[0].model_copy(update={"files": {}, "building_since": datetime.now(UTC)}), built[1]
    write_exports(s3, model.artifact_uri, announced, {})  # what the publish stage writes before the job succeeds
    response = api.http.get(f"/v1/models/{model.id}/export", params={"format": "onnx"})
    assert (response.status_code, response.headers["retry-after"]) == (503, "5")
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("export_building", "format") and "being built" in error["message"]
    assert api.http.get(f"/v1/models/{model.id}/export/preprocessing").json()["classes"] == CLASSES

    told_to_wait = threading.Event()

    def on_response(answer: httpx.Response) -> None:
        if answer.status_code == 503:
            told_to_wait.set()

    with Client(api.url, api.admin_key) as client:
        client._http.event_hooks["response"].append(on_response)
        downloads = ThreadPoolExecutor(1)
        download = downloads.submit(client.export, model.id, tmp_path / "m.onnx")
        assert told_to_wait.wait(30)
        write_exports(s3, model.artifact_uri, built[0], files)  # the driver finishes
        exported = download.result(timeout=60)
        downloads.shutdown()
    assert exported.path.read_bytes() == files[ExportFormat.onnx]


def test_exports_a_stopped_driver_never_finished_are_not_waited_for(
    s3: Any, make_api: ApiFactory, built: tuple[ExportManifest, dict[ExportFormat, bytes]]
) -> None:
    api = make_api()
    model = add_model(api, s3)
    stale = built[0].model_copy(update={"files": {}, "building_since": datetime.now(UTC) - timedelta(hours=1)})
    write_exports(s3, model.artifact_uri, stale, {})
    error = api.http.get(f"/v1/models/{model.id}/export").json()["error"]
    assert error["code"] == "export_not_available" and "python -m jobs.export" in error["message"]

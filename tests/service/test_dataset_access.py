"""Each tenant's data is its own: a key trains only on its uploads, its tenant's prefixes and the global list.

Real HTTP to the API under uvicorn, real uploads to the local stack's S3 server through the SDK, two real
tenant keys, and the real admin command as an operator runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_testkit import Api, ApiFactory, FakeLauncher

from core.tenancy import Tenancy
from infra.local.sample_data import make_shapes
from trainyard import Client

REPO = Path(__file__).resolve().parents[2]


def _refused(response: httpx.Response, field: str) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    error = dict(response.json()["error"])
    assert (error["code"], error["field"]) == ("dataset_not_allowed", field)
    assert "service.admin tenants allow" in error["message"]  # the fix
    return error


def _admin(api: Api, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m service.admin …` as an operator runs it, beside the API's configuration."""
    env = {**os.environ, "TRAINYARD_DATABASE_URL": api.settings.resolved_database_url, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "service.admin", *args], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )


@pytest.fixture
def two_tenants(make_api: ApiFactory, s3: Any, tmp_path: Path) -> tuple[Api, dict[str, str]]:
    # `s3`: the local stack's S3 server, where the SDK uploads (its endpoint is in this process's environment).
    api = make_api(launcher=FakeLauncher())
    return api, {"team-a": api.new_key("team-a"), "team-b": api.new_key("team-b")}


def test_a_tenant_trains_on_its_own_upload_and_no_other_tenant_can(
    two_tenants: tuple[Api, dict[str, str]], tmp_path: Path
) -> None:
    api, keys = two_tenants
    a, b = api.client(keys["team-a"]), api.client(keys["team-b"])
    with Client(url=api.url, api_key=keys["team-a"]) as sdk:
        assert sdk.me().upload_uri == "s3://trainyard-uploads/uploads/team-a/"
        upload = sdk.upload(make_shapes(tmp_path / "photos", train_per_class=2, valid_per_class=1, size=16))
    assert upload.uri.startswith("s3://trainyard-uploads/uploads/team-a/photos-") and upload.uploaded == 9

    mine = a.post("/v1/jobs", json={"dataset_uri": upload.uri})
    assert mine.status_code == 202, mine.text
    job_a = mine.json()["id"]

    theirs = _refused(b.post("/v1/jobs", json={"dataset_uri": upload.uri}), "dataset_uri")
    assert "other tenants' uploads" in theirs["message"]
    assert "s3://trainyard-uploads/uploads/team-b/" in theirs["message"]  # where B's own data may be
    artifacts = _refused(
        b.post("/v1/jobs", json={"dataset_uri": f"s3://trainyard-artifacts/jobs/{job_a}/"}), "dataset_uri"
    )
    assert "artifact store" in artifacts["message"]
    weights = b.post(
        "/v1/jobs",
        json={
            "dataset_uri": "s3://trainyard-uploads/uploads/team-b/pets/",
            "arch": "resnet18",
            "weights_uri": f"s3://trainyard-artifacts/jobs/{job_a}/model.pt",
        },
    )
    _refused(weights, "weights_uri")
    _refused(b.post("/v1/jobs", json={"dataset_uri": "s3://trainyard-uploads/uploads/"}), "dataset_uri")
    _refused(b.post("/v1/jobs", json={"dataset_uri": "s3://payroll/2026"}), "dataset_uri")
    assert [j.tenant for j in api.store.list_jobs(limit=10)] == ["team-a"]  # nothing refused was stored

    # An operator shares A's upload with B: the next job is accepted; taking it back refuses it again.
    allowed = _admin(api, "tenants", "allow", "team-b", upload.uri)
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["dataset_prefixes"] == [upload.uri]
    assert b.get("/v1/me").json()["dataset_prefixes"] == [upload.uri, *api.settings.dataset_prefixes]
    shared = b.post("/v1/jobs", json={"dataset_uri": upload.uri})
    assert shared.status_code == 202, shared.text
    assert _admin(api, "tenants", "disallow", "team-b", upload.uri).returncode == 0
    _refused(b.post("/v1/jobs", json={"dataset_uri": upload.uri}), "dataset_uri")


def test_a_broad_prefix_never_opens_other_tenants_uploads_or_the_artifact_store(make_api: ApiFactory) -> None:
    # Whole buckets in the global list that hold the shared areas: their other folders open, the areas do not.
    api = make_api(
        launcher=FakeLauncher(),
        artifact_uri="s3://company-ml/trainyard",
        dataset_prefixes=["s3://trainyard-uploads", "s3://company-ml"],
    )
    b = api.tenant_client("team-b")
    for allowed in ("s3://company-ml/datasets/pets", "s3://trainyard-uploads/elsewhere"):
        assert b.post("/v1/jobs", json={"dataset_uri": allowed}).status_code == 202, allowed
    _refused(b.post("/v1/jobs", json={"dataset_uri": "s3://trainyard-uploads/uploads/team-a/x/"}), "dataset_uri")
    error = _refused(b.post("/v1/jobs", json={"dataset_uri": "s3://company-ml/trainyard/jobs/job-1/"}), "dataset_uri")
    assert "artifact store" in error["message"]
    # Named on purpose, inside the shared area, an entry opens exactly that folder.
    Tenancy(api.store.engine).allow_prefixes("team-b", ["s3://trainyard-uploads/uploads/team-a/shared"])
    shared = b.post("/v1/jobs", json={"dataset_uri": "s3://trainyard-uploads/uploads/team-a/shared/v2"})
    assert shared.status_code == 202, shared.text
    _refused(
        b.post("/v1/jobs", json={"dataset_uri": "s3://trainyard-uploads/uploads/team-a/shared-not"}), "dataset_uri"
    )


def test_prefixes_match_whole_path_segments_and_lists_add_up(make_api: ApiFactory) -> None:
    api = make_api(launcher=FakeLauncher(), dataset_prefixes=["s3://datasets/shared"])
    Tenancy(api.store.engine).allow_prefixes("team-a", ["s3://team-a-data"])
    a, b = api.tenant_client("team-a"), api.tenant_client("team-b")
    for allowed in ("s3://datasets/shared/pets", "s3://datasets/shared", "s3://team-a-data/cats"):
        assert a.post("/v1/jobs", json={"dataset_uri": allowed}).status_code == 202, allowed
    for refused in ("s3://datasets/shared-secrets/x", "s3://datasets/other", "s3://team-a-data-old/x"):
        _refused(a.post("/v1/jobs", json={"dataset_uri": refused}), "dataset_uri")
    _refused(b.post("/v1/jobs", json={"dataset_uri": "s3://team-a-data/cats"}), "dataset_uri")
    assert a.get("/v1/me").json()["dataset_prefixes"] == ["s3://team-a-data", "s3://datasets/shared"]


def test_an_admin_key_and_auth_off_read_anywhere(make_api: ApiFactory) -> None:
    # The single-user local stack: its admin key (or no auth at all) needs no configuration.
    api = make_api(launcher=FakeLauncher())
    for uri in ("s3://trainyard-demo/shapes", "s3://trainyard-uploads/uploads/team-a/x/"):
        assert api.http.post("/v1/jobs", json={"dataset_uri": uri}).status_code == 202, uri
    off = make_api(launcher=FakeLauncher(), auth=False)
    assert off.client(None).post("/v1/jobs", json={"dataset_uri": "s3://my-bucket/pets"}).status_code == 202
    assert off.client(None).get("/v1/me").json()["upload_uri"] == "s3://trainyard-uploads/uploads/default/"

"""The dataset allow-list: the service's S3 credentials read only where the settings and the tenant allow."""

from __future__ import annotations

from core.tenancy import Tenancy, Tenant
from tests.utils.api_server import ApiFactory, FakeLauncher


def test_the_global_allow_list_matches_whole_path_segments(make_api: ApiFactory) -> None:
    api = make_api(launcher=FakeLauncher(), dataset_prefixes=["s3://datasets/shared", "s3://public-data"])
    for allowed in ("s3://datasets/shared/pets", "s3://datasets/shared", "s3://public-data/anything/at/all"):
        assert api.http.post("/v1/jobs", json={"dataset_uri": allowed}).status_code == 202, allowed
    for refused in ("s3://datasets/shared-secrets/x", "s3://datasets/other", "s3://payroll/2026"):
        response = api.http.post("/v1/jobs", json={"dataset_uri": refused})
        assert response.status_code == 403, refused
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("dataset_not_allowed", "dataset_uri")
        assert "s3://datasets/shared, s3://public-data" in error["message"]
        assert "service.admin tenants set" in error["message"]  # the fix
    assert len(api.store.list_jobs(limit=10)) == 3  # nothing refused was stored


def test_a_tenants_own_list_narrows_it_and_covers_weights(make_api: ApiFactory) -> None:
    api = make_api(launcher=FakeLauncher())  # no global list: any bucket, unless the tenant has one
    Tenancy(api.store.engine).set_limits(Tenant(name="team-a", dataset_prefixes=["s3://team-a-data"]))
    a, b = api.tenant_client("team-a"), api.tenant_client("team-b")
    assert a.post("/v1/jobs", json={"dataset_uri": "s3://team-a-data/cats"}).status_code == 202
    assert b.post("/v1/jobs", json={"dataset_uri": "s3://team-b-data/dogs"}).status_code == 202
    refused = a.post("/v1/jobs", json={"dataset_uri": "s3://team-b-data/dogs"})
    assert refused.status_code == 403
    assert "tenant team-a's allow-list (s3://team-a-data)" in refused.json()["error"]["message"]
    weights = a.post(
        "/v1/jobs",
        json={"dataset_uri": "s3://team-a-data/cats", "arch": "resnet18", "weights_uri": "s3://team-b-data/w.pt"},
    )
    assert weights.status_code == 403 and weights.json()["error"]["field"] == "weights_uri"

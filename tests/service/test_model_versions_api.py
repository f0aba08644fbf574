"""Versions, aliases and DELETE through the real API (uvicorn, SQLite); the model server is a stand-in that
records which model id each prediction was routed to. The real Serve side: tests/e2e/test_model_versions.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from test_models_api import IMAGE, FakeServe

from core.spec import JobParams
from core.store import ModelRecord
from serving.registry import ModelPointer, pointer_uri, write_pointer
from tests.utils.api_server import Api, ApiFactory, serve


def add_version(api: Api, s3: Any, name: str | None, accuracy: float) -> ModelRecord:
    """What a job's deploy stage leaves behind: the artifact and pointer objects, and the store's row."""
    # In the admin key's tenant: a model name resolves in the caller's own tenant.
    job, _ = api.store.create_job(JobParams(dataset_uri="s3://bucket/pets", name=name), tenant="admin")
    model_id = job.id.replace("job-", "mdl-", 1)
    artifact_key = f"jobs/{job.id}/model.pt"
    s3.put_object(Bucket="trainyard-artifacts", Key=artifact_key, Body=b"weights")
    uri = f"s3://trainyard-artifacts/{artifact_key}"
    write_pointer(s3, api.settings, ModelPointer(model_id=model_id, artifact_uri=uri))
    record = ModelRecord(
        id=model_id,
        job_id=job.id,
        artifact_uri=uri,
        arch="efficientnet_lite0",
        classes=["cat", "dog"],
        metrics={"accuracy": accuracy},
        created_at=datetime.now(UTC),
        name=name,
    )
    return api.store.add_model(record)


@pytest.fixture
def fake_serve() -> FakeServe:
    return FakeServe()


@pytest.fixture
def served(s3: Any, make_api: ApiFactory, fake_serve: FakeServe) -> Iterator[Api]:
    with serve(fake_serve.app) as serve_url:
        yield make_api(serve_url=serve_url, max_image_bytes=len(IMAGE))


def predict(api: Api, ref: str) -> Any:
    return api.http.post(f"/v1/models/{ref}/predict", content=IMAGE, headers={"content-type": "image/png"})


def test_each_job_of_a_name_adds_a_version_and_moves_latest(served: Api, s3: Any) -> None:
    v1 = add_version(served, s3, "pets", 0.8)
    v2 = add_version(served, s3, "pets", 0.9)
    other = add_version(served, s3, None, 0.5)
    assert (v1.version, v2.version, other.version) == (1, 2, None)

    listed = {m["id"]: m for m in served.http.get("/v1/models").json()["models"]}
    assert (listed[v1.id]["name"], listed[v1.id]["version"], listed[v1.id]["aliases"]) == ("pets", 1, [])
    assert (listed[v2.id]["version"], listed[v2.id]["aliases"]) == (2, ["latest"])
    assert listed[v2.id]["metrics"] == {"accuracy": 0.9}
    assert listed[other.id]["name"] is None and listed[other.id]["aliases"] == []
    assert served.http.get("/v1/models/pets@1").json()["id"] == v1.id
    assert served.http.get("/v1/models/pets").json()["id"] == v2.id


def test_moving_an_alias_reroutes_the_very_next_prediction(served: Api, s3: Any, fake_serve: FakeServe) -> None:
    v1 = add_version(served, s3, "pets", 0.8)
    v2 = add_version(served, s3, "pets", 0.9)

    moved = served.http.post("/v1/models/pets/aliases/production", json={"version": 2})
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"name": "pets", "alias": "production", "model_id": v2.id, "version": 2}
    first = predict(served, "pets@production")
    assert first.headers["Trainyard-Model-Id"] == v2.id and first.headers["Trainyard-Model-Version"] == "2"

    # Rollback: point production back at version 1, by id this time; the next request follows.
    assert served.http.post("/v1/models/pets/aliases/production", json={"model_id": v1.id}).status_code == 200
    assert predict(served, "pets@production").headers["Trainyard-Model-Id"] == v1.id
    assert predict(served, "pets").headers["Trainyard-Model-Id"] == v1.id  # a bare name prefers production
    assert predict(served, "pets@latest").headers["Trainyard-Model-Id"] == v2.id
    assert predict(served, "pets@2").headers["Trainyard-Model-Id"] == v2.id
    assert [c["model_id"] for c in fake_serve.calls] == [v2.id, v1.id, v1.id, v2.id, v2.id]

    traffic = {m["id"]: m["traffic"] for m in served.http.get("/v1/models").json()["models"]}
    assert traffic == {v1.id: {"requests": 2, "errors": 0}, v2.id: {"requests": 3, "errors": 0}}
    assert (
        f'trainyard_model_predictions_total{{model_id="{v2.id}",outcome="ok"}} 3.0' in served.http.get("/metrics").text
    )


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "field"),
    [
        ("/v1/models/nope/aliases/production", {"version": 1}, 404, "model_not_found", "name"),
        ("/v1/models/pets/aliases/production", {"version": 7}, 404, "model_not_found", "version"),
        ("/v1/models/pets/aliases/production", {"model_id": "mdl-elsewhere"}, 404, "model_not_found", "model_id"),
        ("/v1/models/pets/aliases/latest", {"version": 1}, 409, "alias_managed", "alias"),
        ("/v1/models/pets/aliases/Prod!", {"version": 1}, 422, "invalid_alias", "alias"),
        ("/v1/models/pets/aliases/production", {"version": 1, "model_id": "x"}, 422, "validation_error", None),
    ],
)
def test_alias_errors_name_the_field_and_the_fix(
    served: Api, s3: Any, path: str, body: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    add_version(served, s3, "pets", 0.8)
    response = served.http.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field


def test_unknown_alias_or_version_is_a_404_that_says_which(served: Api, s3: Any) -> None:
    add_version(served, s3, "pets", 0.8)
    for ref, words in (("pets@production", "has no alias 'production'"), ("pets@9", "has no version 9")):
        response = predict(served, ref)
        assert response.status_code == 404
        assert words in response.json()["error"]["message"]


def test_delete_undeploys_a_version_and_latest_falls_back(served: Api, s3: Any) -> None:
    v1 = add_version(served, s3, "pets", 0.8)
    v2 = add_version(served, s3, "pets", 0.9)

    assert served.http.delete(f"/v1/models/{v2.id}").status_code == 204
    assert [m["id"] for m in served.http.get("/v1/models").json()["models"]] == [v1.id]
    assert served.http.get("/v1/models/pets@latest").json()["id"] == v1.id
    assert predict(served, v2.id).status_code == 404
    assert served.http.delete(f"/v1/models/{v2.id}").status_code == 404
    pointer = pointer_uri(served.settings, v2.id).removeprefix("s3://trainyard-artifacts/")
    assert "Contents" not in s3.list_objects_v2(Bucket="trainyard-artifacts", Prefix=pointer)
    # Version numbers are never reused: the next job of the name is version 3.
    assert add_version(served, s3, "pets", 0.95).version == 3


def test_delete_refuses_a_version_an_alias_still_serves(served: Api, s3: Any) -> None:
    v1 = add_version(served, s3, "pets", 0.8)
    add_version(served, s3, "pets", 0.9)
    served.http.post("/v1/models/pets/aliases/production", json={"version": 1})

    response = served.http.delete(f"/v1/models/{v1.id}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "model_has_aliases"
    assert "POST /v1/models/pets/aliases/production" in response.json()["error"]["message"]
    assert served.http.get(f"/v1/models/{v1.id}").status_code == 200

"""GET /v1/models and POST /v1/models/{id}/predict, with the model server down or played by a tiny stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from service_testkit import Api, ApiFactory, serve

from core.spec import JobParams
from core.store import ModelRecord

MODEL_ID = "model-pets-1"
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # bytes are forwarded untouched; the API never decodes


def add_model(api: Api, model_id: str = MODEL_ID, s3: Any = None) -> None:
    """A model in the store; with `s3`, its artifact and pointer objects too (a model that could answer)."""
    job, _ = api.store.create_job(JobParams(dataset_uri="s3://bucket/pets"))
    artifact_key = f"jobs/{job.id}/model.pt"
    if s3 is not None:
        s3.put_object(Bucket="trainyard-artifacts", Key=artifact_key, Body=b"weights")
        s3.put_object(Bucket="trainyard-artifacts", Key=f"models/{model_id}.json", Body=b"{}")
    api.store.add_model(
        ModelRecord(
            id=model_id,
            job_id=job.id,
            artifact_uri=f"s3://trainyard-artifacts/{artifact_key}",
            arch="efficientnet_lite0",
            classes=["cat", "dog"],
            metrics={"accuracy": 0.93},
            created_at=datetime.now(UTC),
        )
    )


class FakeServe:
    """Plays Ray Serve's /classify: records what the API forwarded and answers as told."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status = 200
        self.body: bytes = json.dumps({"predictions": [{"label": "dog", "probability": 0.9}]}).encode()
        self.headers: dict[str, str] = {}
        self.first_answers: list[tuple[int, bytes]] = []  # answered (status, body) in turn before `status`/`body`
        self.app = FastAPI()
        self.app.add_api_route("/classify", self.classify, methods=["POST"])
        self.app.add_api_route("/classify/batch", self.classify, methods=["POST"])

    async def classify(self, request: Request) -> Response:
        self.calls.append(
            {
                "model_id": request.headers.get("serve_multiplexed_model_id"),
                "top_k": request.query_params.get("top_k"),
                "body": await request.body(),
                "content_type": request.headers.get("content-type"),
                "path": request.url.path,
                "tta": request.query_params.get("tta"),
            }
        )
        if self.first_answers:
            status, body = self.first_answers.pop(0)
            return Response(body, status_code=status, media_type="text/plain")
        return Response(self.body, status_code=self.status, media_type="application/json", headers=self.headers)


@pytest.fixture
def fake_serve() -> FakeServe:
    return FakeServe()


@pytest.fixture
def served_api(s3: Any, make_api: ApiFactory, fake_serve: FakeServe) -> Iterator[Api]:
    with serve(fake_serve.app) as serve_url:
        api = make_api(serve_url=serve_url, max_image_bytes=len(IMAGE))
        add_model(api, s3=s3)
        yield api


def error_of(response: httpx.Response) -> dict[str, Any]:
    return dict(response.json()["error"])


def test_models_list_and_get(api: Api) -> None:
    add_model(api)
    listed = api.http.get("/v1/models")
    assert listed.status_code == 200
    [model] = listed.json()["models"]
    assert model["id"] == MODEL_ID
    assert model["classes"] == ["cat", "dog"]
    assert model["predict_url"] == f"{api.settings.public_url}/v1/models/{MODEL_ID}/predict"
    assert api.http.get(f"/v1/models/{MODEL_ID}").json() == model


def test_unknown_model_is_404(api: Api) -> None:
    for response in (api.http.get("/v1/models/nope"), api.http.post("/v1/models/nope/predict", content=IMAGE)):
        assert response.status_code == 404
        assert response.json() == {
            "error": {
                "code": "model_not_found",
                "message": "no model with id 'nope'; list models with GET /v1/models",
                "field": "model_id",
            }
        }


def test_predict_with_the_model_server_down_is_503(s3: Any, api: Api) -> None:
    add_model(api, s3=s3)
    response = api.http.post(f"/v1/models/{MODEL_ID}/predict", content=IMAGE, headers={"content-type": "image/png"})
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "serving_unavailable",
        "message": "the model server is not reachable; retry shortly",
        "field": None,
    }
    assert response.headers["Retry-After"] == "1"


def test_a_model_whose_objects_are_gone_is_unavailable_and_answers_410(s3: Any, api: Api) -> None:
    add_model(api, s3=s3)
    add_model(api, "model-without-objects")  # listed in the store; nothing in the artifact store

    listed = {m["id"]: m for m in api.http.get("/v1/models").json()["models"]}
    assert listed[MODEL_ID]["available"] is True and listed[MODEL_ID]["unavailable_reason"] is None
    gone = listed["model-without-objects"]
    assert gone["available"] is False and "model.pt is missing from the artifact store" in gone["unavailable_reason"]

    response = api.http.post("/v1/models/model-without-objects/predict", content=IMAGE)
    assert response.status_code == 410
    assert error_of(response)["code"] == "model_artifact_missing"
    assert "s3://trainyard-artifacts/jobs/" in error_of(response)["message"]


def test_predict_forwards_raw_bytes_with_the_model_id(served_api: Api, fake_serve: FakeServe) -> None:
    response = served_api.http.post(
        f"/v1/models/{MODEL_ID}/predict", params={"top_k": 1}, content=IMAGE, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200
    assert response.json()["predictions"] == [{"label": "dog", "probability": 0.9}]
    [call] = fake_serve.calls
    assert (call["model_id"], call["top_k"], call["body"], call["content_type"]) == (MODEL_ID, "1", IMAGE, "image/png")
    assert (call["path"], call["tta"]) == ("/classify", "false")


def test_predict_accepts_a_multipart_file(served_api: Api, fake_serve: FakeServe) -> None:
    response = served_api.http.post(f"/v1/models/{MODEL_ID}/predict", files={"file": ("cat.jpg", IMAGE, "image/jpeg")})
    assert response.status_code == 200
    [call] = fake_serve.calls
    assert (call["body"], call["content_type"], call["top_k"]) == (IMAGE, "image/jpeg", "5")


def test_model_server_client_errors_are_relayed(served_api: Api, fake_serve: FakeServe) -> None:
    fake_serve.status = 415
    fake_serve.body = json.dumps(
        {"error": {"code": "invalid_image", "message": "not a JPEG, PNG or WebP image", "field": "body"}}
    ).encode()
    response = served_api.http.post(
        f"/v1/models/{MODEL_ID}/predict", content=b"plain text", headers={"content-type": "image/png"}
    )
    assert response.status_code == 415
    assert response.content == fake_serve.body


def test_model_server_failures_are_not_leaked(served_api: Api, fake_serve: FakeServe) -> None:
    fake_serve.status = 500
    fake_serve.body = b"Traceback (most recent call last): ... /secret/path.py"
    response = served_api.http.post(f"/v1/models/{MODEL_ID}/predict", content=IMAGE)
    assert response.status_code == 502
    assert error_of(response)["code"] == "serving_error"
    assert len(fake_serve.calls) == 2, "a failure of the model server itself is retried once before giving up"
    assert "Traceback" not in response.text and "secret" not in response.text


def test_a_request_lost_with_a_dying_replica_is_retried_once(served_api: Api, fake_serve: FakeServe) -> None:
    # What Serve's proxy answers for a request whose replica was killed under it: its own plain-text 500.
    fake_serve.first_answers = [(500, b"ray.exceptions.ActorDiedError: The actor died unexpectedly")]
    response = served_api.http.post(f"/v1/models/{MODEL_ID}/predict", content=IMAGE)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [{"label": "dog", "probability": 0.9}]
    assert len(fake_serve.calls) == 2


def test_model_server_without_the_route_is_unavailable(served_api: Api, fake_serve: FakeServe) -> None:
    # Serve's proxy answers 404 in plain text while the application is still deploying.
    fake_serve.status = 404
    fake_serve.body = b"Path '/classify' not found."
    response = served_api.http.post(f"/v1/models/{MODEL_ID}/predict", content=IMAGE)
    assert response.status_code == 503
    assert error_of(response)["code"] == "serving_unavailable"


def test_oversized_image_is_413(served_api: Api, fake_serve: FakeServe) -> None:
    url = f"/v1/models/{MODEL_ID}/predict"
    too_big = IMAGE + b"x"
    declared = served_api.http.post(url, content=too_big)  # refused on Content-Length alone

    def chunks() -> Iterator[bytes]:
        yield too_big[:100]
        yield too_big[100:]

    streamed = served_api.http.post(url, content=chunks())  # chunked: no Content-Length, counted while read
    multipart = served_api.http.post(url, files={"file": ("big.png", too_big, "image/png")})
    for response in (declared, streamed, multipart):
        assert response.status_code == 413, response.text
        error = error_of(response)
        assert (error["code"], error["field"]) == ("payload_too_large", "body")
        assert f"the limit is {len(IMAGE)} bytes" in error["message"]
    assert fake_serve.calls == []


def test_empty_image_is_422(served_api: Api, fake_serve: FakeServe) -> None:
    url = f"/v1/models/{MODEL_ID}/predict"
    empty = served_api.http.post(url, content=b"")
    no_file = served_api.http.post(url, files={"image": ("cat.png", IMAGE, "image/png")})
    for response in (empty, no_file):
        assert response.status_code == 422
        error = error_of(response)
        assert (error["code"], error["field"]) == ("empty_body", "body")
        assert "send the image bytes as the request body or as multipart field 'file'" in error["message"]
    assert fake_serve.calls == []


def test_top_k_is_bounded(served_api: Api) -> None:
    response = served_api.http.post(f"/v1/models/{MODEL_ID}/predict", params={"top_k": 0}, content=IMAGE)
    assert response.status_code == 422
    assert error_of(response)["field"] == "top_k"


SERVED = {
    "model_id": MODEL_ID,
    "model_version": "job-1",
    "predictions": [{"label": "dog", "probability": 0.9}],
    "batch_size": 3,
    "timing_ms": {"preprocess": 2.0, "queue": 1.0, "inference": 20.0, "replica": 24.0},
}


def test_predict_answers_carry_the_version_and_timing_and_feed_the_metrics(
    served_api: Api, fake_serve: FakeServe
) -> None:
    fake_serve.body = json.dumps(SERVED).encode()
    response = served_api.http.post(f"/v1/models/{MODEL_ID}/predict", params={"tta": "true"}, content=IMAGE)
    assert response.status_code == 200
    answer = response.json()
    assert (answer["model_version"], answer["batch_size"]) == ("job-1", 3)
    # The replica's split, plus the API's own total (which includes both Serve hops).
    assert answer["timing_ms"]["inference"] == 20.0
    assert answer["timing_ms"]["total"] >= 0
    assert fake_serve.calls[0]["tta"] == "true"

    metrics = served_api.http.get("/metrics").text
    stage = 'trainyard_predict_stage_seconds_bucket{le="0.02",model_id="model-pets-1",stage="inference"} 1.0'
    assert stage in metrics
    assert 'trainyard_predict_batch_size_bucket{le="4.0",model_id="model-pets-1"} 1.0' in metrics
    assert 'trainyard_predict_requests_total{model_id="model-pets-1",route="predict",status="200"} 1.0' in metrics


def test_predict_batch_forwards_the_form_to_the_batch_route(served_api: Api, fake_serve: FakeServe) -> None:
    fake_serve.body = json.dumps(
        {**{k: v for k, v in SERVED.items() if k != "predictions"}, "results": [{"predictions": []}] * 2}
    ).encode()
    files = [("files", ("a.png", IMAGE, "image/png")), ("files", ("b.png", IMAGE, "image/png"))]
    response = served_api.http.post(f"/v1/models/{MODEL_ID}/predict:batch", params={"top_k": 2}, files=files)
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 2
    [call] = fake_serve.calls
    assert (call["path"], call["top_k"]) == ("/classify/batch", "2")
    assert call["content_type"].startswith("multipart/form-data; boundary=")
    assert call["body"].count(IMAGE) == 2


def test_a_type_that_is_not_an_image_is_415(served_api: Api, fake_serve: FakeServe) -> None:
    single = served_api.http.post(
        f"/v1/models/{MODEL_ID}/predict", content=b'{"a": 1}', headers={"content-type": "application/json"}
    )
    batch = served_api.http.post(
        f"/v1/models/{MODEL_ID}/predict:batch", content=IMAGE, headers={"content-type": "image/png"}
    )
    for response, hint in ((single, "a JSON body is not an image"), (batch, "send multipart/form-data")):
        assert response.status_code == 415
        error = error_of(response)
        assert (error["code"], error["field"]) == ("unsupported_media_type", "content-type")
        assert hint in error["message"]
    assert fake_serve.calls == []


def test_an_overloaded_model_server_is_503_with_retry_after(served_api: Api, fake_serve: FakeServe) -> None:
    # What Serve's proxy answers past max_queued_requests (backpressure_config gives it a Retry-After).
    fake_serve.status = 503
    fake_serve.body = b"Request dropped due to backpressure (num_queued_requests=2, max_queued_requests=2)."
    fake_serve.headers = {"Retry-After": "1"}
    response = served_api.http.post(f"/v1/models/{MODEL_ID}/predict", content=IMAGE)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert error_of(response)["code"] == "overloaded"
    metrics = served_api.http.get("/metrics").text
    assert 'trainyard_predict_requests_total{model_id="model-pets-1",route="predict",status="503"} 1.0' in metrics

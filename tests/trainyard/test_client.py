"""The SDK against the real API over HTTP: typed results, and the API's errors as typed exceptions."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image

from core.spec import JobParams
from core.store import ModelRecord
from service.launcher import RayJobState
from tests.utils.models import deployed_job
from trainyard import Client, InvalidRequest, JobFailed, NotFound, Unauthorized, Unavailable
from trainyard.client import _image_body
from trainyard.errors import from_response

from .conftest import LiveApi


@pytest.fixture
def client(live_api: LiveApi) -> Client:
    return Client(url=live_api.url)


def test_submit_get_list_cancel_round_trip(client: Client) -> None:
    job = client.submit("s3://bucket/pets", epochs=2, name="pets", idempotency_key="k1")
    assert (job.status, job.name, job.params["epochs"], job.params["dataset_uri"]) == (
        "queued",
        "pets",
        2,
        "s3://bucket/pets",
    )
    assert client.submit("s3://bucket/pets", epochs=2, name="pets", idempotency_key="k1").id == job.id
    assert job.refresh().id == job.id
    assert [j.id for j in client.list_jobs(status="queued").jobs] == [job.id]
    assert [j.id for j in client.iter_jobs()] == [job.id]
    cancelled = job.cancel()
    assert cancelled.status == "cancelled" and cancelled.terminal
    assert [e.kind for e in client.events(job.id)][-1] == "cancelled"


def test_a_422_names_the_field_and_the_fix(client: Client) -> None:
    with pytest.raises(InvalidRequest) as caught:
        client.submit("s3://bucket/pets", epochs=0)
    error = caught.value
    assert (error.status, error.code, error.field) == (422, "validation_error", "epochs")
    assert "must be ≥ 1" in error.message and "epochs" in str(error)


def test_unknown_job_is_not_found_with_the_apis_message(client: Client) -> None:
    with pytest.raises(NotFound) as caught:
        client.get_job("job-nope")
    assert (caught.value.status, caught.value.code, caught.value.field) == (404, "job_not_found", "job_id")
    assert "GET /v1/jobs" in caught.value.message


def test_retry_runs_a_failed_job_again_as_its_next_attempt(client: Client, live_api: LiveApi) -> None:
    job = client.submit("s3://bucket/pets")
    with pytest.raises(InvalidRequest) as caught:  # still queued: nothing to retry
        client.retry_job(job.id)
    assert (caught.value.status, caught.value.code) == (409, "job_not_retryable")
    live_api.store.fail(job.id, "driver_died", "the driver died")
    live_api.launcher.states[job.id] = RayJobState.failed
    retried = client.retry_job(job.id)
    assert (retried.id, retried.status) == (job.id, "queued")


def test_wait_raises_job_failed_with_phase_and_message(client: Client, live_api: LiveApi) -> None:
    job = client.submit("s3://bucket/pets")
    live_api.store.fail(job.id, "invalid_layout", "needs at least two classes; found 1: a", phase=None)
    with pytest.raises(JobFailed) as caught:
        job.wait(poll_interval=0.05, timeout=10)
    assert caught.value.code == "invalid_layout" and caught.value.job_id == job.id
    assert "needs at least two classes" in str(caught.value)
    assert job.wait(raise_on_failure=False, timeout=10).status == "failed"


def test_unreachable_api_is_unavailable_with_the_fix(client_env: object) -> None:
    with Client(url="http://127.0.0.1:9") as client, pytest.raises(Unavailable) as caught:
        client.list_models()
    assert caught.value.code == "unreachable" and "trainyard up" in caught.value.message


def test_a_5xx_without_the_error_shape_is_unavailable() -> None:
    response = httpx.Response(502, text="<html>bad gateway</html>", request=httpx.Request("GET", "http://x/v1/jobs"))
    error = from_response(response)
    assert isinstance(error, Unavailable) and error.status == 502 and "retry shortly" in error.message


def test_predict_on_an_unknown_model_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound) as caught:
        client.predict("mdl-nope", b"\x89PNG")
    assert caught.value.code == "model_not_found"


def test_versions_and_alias_moves(client: Client, live_api: LiveApi) -> None:
    for _ in range(2):
        job, _ = live_api.store.create_job(JobParams(dataset_uri="s3://bucket/pets", name="pets"), tenant="admin")
        live_api.store.add_model(
            ModelRecord(
                id=job.id.replace("job-", "mdl-", 1),
                job_id=job.id,
                artifact_uri=f"s3://trainyard-artifacts/jobs/{job.id}/model.pt",
                arch="efficientnet_lite0",
                classes=["cat", "dog"],
                created_at=datetime.now(UTC),
                name="pets",
            )
        )
    assert [(m.name, m.version, m.aliases) for m in client.list_models()] == [
        ("pets", 2, ["latest"]),
        ("pets", 1, []),
    ]
    production = client.move_alias("pets", "production", version=1)
    assert (production.version, production.aliases) == (1, ["production"])
    assert client.get_model("pets").id == production.id
    with pytest.raises(NotFound) as caught:
        client.move_alias("pets", "production", version=9)
    assert caught.value.field == "version"


def test_images_are_sent_as_files_bytes_or_pil(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8), "red")
    body, content_type = _image_body(image)
    assert content_type == "image/png" and Image.open(io.BytesIO(body)).size == (8, 8)
    image.save(tmp_path / "red.jpg")
    assert _image_body(tmp_path / "red.jpg") == ((tmp_path / "red.jpg").read_bytes(), "image/jpeg")
    assert _image_body(str(tmp_path / "red.jpg"))[1] == "image/jpeg"
    assert _image_body(b"raw") == (b"raw", "application/octet-stream")
    with pytest.raises(TypeError, match=r"path, bytes or a PIL\.Image"):
        _image_body(42)


STATUS_EXCEPTIONS = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    410: NotFound,
    409: InvalidRequest,
    413: InvalidRequest,
    422: InvalidRequest,
    503: Unavailable,
}


@pytest.mark.parametrize(("status", "expected"), STATUS_EXCEPTIONS.items())
def test_each_status_maps_to_its_exception_with_the_apis_fields(status: int, expected: type[Exception]) -> None:
    body = {"error": {"code": "some_code", "message": "what went wrong and the fix", "field": "epochs"}}
    response = httpx.Response(status, json=body, request=httpx.Request("POST", "http://x/v1/jobs"))
    error = from_response(response)
    assert type(error) is expected
    assert (error.status, error.code, error.field) == (status, "some_code", "epochs")
    assert error.message.startswith("what went wrong and the fix")


def test_every_object_the_sdk_returns_is_bound_to_its_client(live_api: LiveApi) -> None:
    job_id = deployed_job(live_api.store).job_id
    client = Client(url=live_api.url, max_retries=0)  # the model server is down: its 503 at once
    found = [
        client.get_job(job_id).model,
        client.get_job(job_id).wait(timeout=5).model,
        client.list_jobs().jobs[0].model,
        next(client.iter_jobs()).model,
        client.list_models()[0],
        client.get_model("pets"),
    ]
    for model in found:
        assert model is not None and model.client is client
        # Bound: the call reaches the API (the model server is down here: 503, not "not bound").
        with pytest.raises(Unavailable):
            model.predict(b"\x89PNG\r\n\x1a\n")


def test_a_503_with_retry_after_is_waited_out_within_bounds(client_env: object) -> None:
    """Against a stand-in API that is briefly overloaded: the wait it asks for is honoured, a long one is not."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from tests.service.service_testkit import serve

    answers: list[tuple[int, dict[str, str]]] = []
    stand_in = FastAPI()

    @stand_in.get("/healthz")
    def healthz() -> JSONResponse:
        status, headers = answers.pop(0) if answers else (200, {})
        body = {"error": {"code": "overloaded", "message": "busy", "field": None}} if status != 200 else {}
        return JSONResponse({"status": "ok"} if status == 200 else body, status_code=status, headers=headers)

    with serve(stand_in) as url, Client(url=url) as client:
        answers[:] = [(503, {"Retry-After": "1"}), (429, {"Retry-After": "0"})]
        began = time.monotonic()
        assert client.health() == {"status": "ok"}
        assert not answers and 1.0 <= time.monotonic() - began < 10
        for headers in ({"Retry-After": "120"}, {}):  # longer than the client waits by itself, or no wait given
            answers[:] = [(503, headers)]
            with pytest.raises(Unavailable):
                client.health()

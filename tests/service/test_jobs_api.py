"""POST/GET /v1/jobs, cancel and events, over real HTTP against the app under uvicorn."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from core.spec import Phase
from service.launcher import RayJobState
from tests.utils.api_server import Api, ApiFactory, FakeLauncher


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) >= {"code", "message", "field"}, body
    return dict(body["error"])


# --- validation ------------------------------------------------------------------------------------------


def test_unknown_field_is_named_with_the_allowed_ones(api: Api) -> None:
    response = api.http.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "epoch": 3})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert error["field"] == "epoch"
    assert error["message"].startswith("unknown field 'epoch'; allowed fields: dataset_uri, name, arch")
    assert "epochs" in error["message"]


def test_out_of_range_number_names_the_field_and_the_bound(api: Api) -> None:
    response = api.http.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "epochs": 1000})
    assert response.status_code == 422
    error = error_of(response)
    assert (error["code"], error["field"]) == ("validation_error", "epochs")
    assert error["message"] == "epochs: must be ≤ 100, got 1000"
    assert error["details"] == [{"field": "epochs", "code": "less_than_equal", "message": error["message"]}]


@pytest.mark.parametrize("uri", ["http://x/y", "s3://"])
def test_dataset_uri_must_be_an_s3_uri(api: Api, uri: str) -> None:
    response = api.http.post("/v1/jobs", json={"dataset_uri": uri})
    assert response.status_code == 422
    error = error_of(response)
    assert error["field"] == "dataset_uri"
    assert "s3://bucket/prefix" in error["message"] and repr(uri) in error["message"]


def test_missing_dataset_uri_shows_an_example(api: Api) -> None:
    response = api.http.post("/v1/jobs", json={"epochs": 2})
    assert response.status_code == 422
    error = error_of(response)
    assert error["field"] == "dataset_uri"
    assert error["message"] == 'dataset_uri: required, e.g. "s3://my-bucket/pets"'


def test_every_problem_is_listed_in_details(api: Api) -> None:
    response = api.http.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "arch": "vgg", "lr": 0})
    assert response.status_code == 422
    error = error_of(response)
    assert [d["field"] for d in error["details"]] == ["arch", "lr"]
    assert error["message"].startswith("arch: must be one of 'efficientnet_lite0', 'efficientnet_lite1'")
    assert "1 more problem" in error["message"]


def test_invalid_json(api: Api) -> None:
    response = api.http.post("/v1/jobs", content=b'{"dataset_uri": ', headers={"content-type": "application/json"})
    assert response.status_code == 422
    error = error_of(response)
    assert (error["code"], error["field"]) == ("invalid_json", "body")
    assert "not valid JSON" in error["message"] and "s3://my-bucket/pets" in error["message"]


def test_body_that_is_not_a_json_object(api: Api) -> None:
    response = api.http.post("/v1/jobs", content=b"dataset_uri=s3://b/p", headers={"content-type": "text/plain"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["field"] == "body"
    assert "Content-Type: application/json" in error["message"]


def test_overlong_idempotency_key(api: Api) -> None:
    response = api.http.post(
        "/v1/jobs", json={"dataset_uri": "s3://bucket/pets"}, headers={"Idempotency-Key": "k" * 256}
    )
    assert response.status_code == 422
    assert error_of(response)["field"] == "Idempotency-Key"


# --- submit ----------------------------------------------------------------------------------------------


def test_submit_with_ray_down_is_accepted_and_stays_queued(api: Api) -> None:
    response = api.http.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "name": "pets", "epochs": 2})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["name"] == "pets"
    assert job["params"]["epochs"] == 2 and job["params"]["arch"] == "efficientnet_lite0"
    assert (job["phase"], job["progress"], job["model"], job["error"], job["metrics"]) == (None, 0.0, None, None, [])
    assert "Idempotent-Replayed" not in response.headers
    again = api.http.get(response.headers["Location"])
    assert again.status_code == 200 and again.json() == job


def test_submit_hands_the_job_to_the_launcher(make_api: ApiFactory) -> None:
    launcher = FakeLauncher()
    api = make_api(launcher=launcher)
    job = api.create_job()
    assert launcher.submitted == [job["id"]]


def test_idempotency_replay_returns_the_same_job(make_api: ApiFactory) -> None:
    launcher = FakeLauncher()
    api = make_api(launcher=launcher)
    body = {"dataset_uri": "s3://bucket/pets", "epochs": 2}
    first = api.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-42"})
    second = api.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-42"})
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"]
    assert launcher.submitted == [first.json()["id"]]  # submitted once
    assert len(api.http.get("/v1/jobs").json()["jobs"]) == 1


def test_idempotency_key_with_another_body_conflicts(api: Api) -> None:
    api.http.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets"}, headers={"Idempotency-Key": "k1"})
    response = api.http.post(
        "/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "epochs": 9}, headers={"Idempotency-Key": "k1"}
    )
    assert response.status_code == 409
    error = error_of(response)
    assert (error["code"], error["field"]) == ("idempotency_conflict", "Idempotency-Key")


# --- read ------------------------------------------------------------------------------------------------


def test_unknown_job_is_404(api: Api) -> None:
    response = api.http.get("/v1/jobs/job-nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "job_not_found",
            "message": "no job with id 'job-nope'; list jobs with GET /v1/jobs",
            "field": "job_id",
        }
    }
    for path in ("/v1/jobs/job-nope/events", "/v1/jobs/job-nope/events?stream=true"):
        assert error_of(api.http.get(path))["code"] == "job_not_found"
    assert api.http.post("/v1/jobs/job-nope/cancel").status_code == 404


def test_job_shows_what_the_driver_recorded(api: Api) -> None:
    job_id = api.create_job()["id"]
    api.store.set_phase(job_id, Phase.training, 0.5)
    api.store.add_epoch(job_id, {"epoch": 0, "train_loss": 1.0, "valid_loss": 0.9, "accuracy": 0.6})
    api.store.set_result(job_id, "lr_sweep", {"suggested_lr": 0.003})
    api.store.succeed(job_id, "model-1")
    job = api.http.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    assert job["metrics"] == [{"epoch": 0, "train_loss": 1.0, "valid_loss": 0.9, "accuracy": 0.6}]
    assert job["lr_sweep"] == {"suggested_lr": 0.003}
    assert job["model"] == {"id": "model-1", "predict_url": f"{api.settings.public_url}/v1/models/model-1/predict"}
    assert job["started_at"] is not None and job["finished_at"] is not None


def test_unknown_artifact_is_404_listing_what_exists(api: Api) -> None:
    job_id = api.create_job()["id"]
    api.store.set_result(job_id, "artifacts", {"lr_sweep.png": "s3://bucket/jobs/x/lr_sweep.png"})
    job = api.http.get(f"/v1/jobs/{job_id}").json()
    assert job["artifacts"] == {"lr_sweep.png": f"{api.settings.public_url}/v1/jobs/{job_id}/artifacts/lr_sweep.png"}
    error = error_of(api.http.get(f"/v1/jobs/{job_id}/artifacts/report.html"))
    assert (error["code"], error["field"]) == ("artifact_not_found", "name")
    assert error["message"] == f"job '{job_id}' has no artifact 'report.html'; it has: lr_sweep.png"


def test_list_newest_first_with_status_filter_and_cursor(api: Api) -> None:
    ids = [api.create_job(name=f"job{i}")["id"] for i in range(5)]
    api.store.cancel(ids[1])
    api.store.cancel(ids[3])

    listed = api.http.get("/v1/jobs").json()
    assert [j["id"] for j in listed["jobs"]] == ids[::-1]
    assert listed["next_cursor"] is None

    pages: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.http.get("/v1/jobs", params=params).json()
        pages += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == ids[::-1]

    cancelled = api.http.get("/v1/jobs", params={"status": "cancelled"}).json()
    assert [j["id"] for j in cancelled["jobs"]] == [ids[3], ids[1]]


def test_list_rejects_bad_status_limit_and_cursor(api: Api) -> None:
    response = api.http.get("/v1/jobs", params={"status": "done"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["field"] == "status"
    assert "'queued', 'running', 'succeeded', 'failed' or 'cancelled'" in error["message"]

    response = api.http.get("/v1/jobs", params={"limit": 201})
    assert (response.status_code, error_of(response)["field"]) == (422, "limit")

    response = api.http.get("/v1/jobs", params={"cursor": "job-unknown"})
    assert response.status_code == 422
    assert error_of(response)["field"] == "cursor"


# --- cancel ----------------------------------------------------------------------------------------------


def test_cancel_is_idempotent_with_ray_down(api: Api) -> None:
    job_id = api.create_job()["id"]
    first = api.http.post(f"/v1/jobs/{job_id}/cancel")
    second = api.http.post(f"/v1/jobs/{job_id}/cancel")
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["status"] == second.json()["status"] == "cancelled"
    assert second.json()["finished_at"] == first.json()["finished_at"]
    assert api.http.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_cancel_stops_the_driver_once(make_api: ApiFactory) -> None:
    launcher = FakeLauncher()
    api = make_api(launcher=launcher)
    job_id = api.create_job()["id"]
    launcher.states[job_id] = RayJobState.running
    for _ in range(2):
        assert api.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    assert launcher.stopped == [job_id]


def test_cancel_of_a_finished_job_changes_nothing(api: Api) -> None:
    job_id = api.create_job()["id"]
    api.store.fail(job_id, "dataset_invalid", "no images")
    response = api.http.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert response.json()["error"]["code"] == "dataset_invalid"


# --- events ----------------------------------------------------------------------------------------------


def test_events_list_and_after(api: Api) -> None:
    job_id = api.create_job()["id"]
    api.store.set_phase(job_id, Phase.fetching, 0.0)
    api.http.post(f"/v1/jobs/{job_id}/cancel")
    events = api.http.get(f"/v1/jobs/{job_id}/events").json()["events"]
    assert [e["kind"] for e in events] == ["queued", "phase", "cancelled"]
    assert events[1]["data"] == {"phase": "fetching"}
    later = api.http.get(f"/v1/jobs/{job_id}/events", params={"after": events[0]["id"]}).json()["events"]
    assert [e["kind"] for e in later] == ["phase", "cancelled"]


def test_event_stream_ends_when_the_job_ends(api: Api) -> None:
    job_id = api.create_job()["id"]
    received: list[tuple[str, str]] = []
    with api.http.stream("GET", f"/v1/jobs/{job_id}/events", params={"stream": "true"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind, data = "message", ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
            elif line == "" and data:
                received.append((kind, data))
                if kind == "message" and json.loads(data)["kind"] == "queued":
                    # The job moves on while the client is connected; the stream must pick it up.
                    api.store.set_phase(job_id, Phase.fetching, 0.0)
                    api.store.fail(job_id, "dataset_invalid", "no images under the prefix")
                kind, data = "message", ""
    kinds = [json.loads(d)["kind"] if k == "message" else k for k, d in received]
    assert kinds == ["queued", "phase", "failed", "end"]
    assert json.loads(received[-1][1]) == {"status": "failed"}


def test_a_waiting_job_says_what_it_waits_for(api: Api) -> None:
    job = api.create_job()
    waiting = {
        "message": "waiting for 2 GPU worker(s); the cluster is scaling up (waited 12 s)",
        "since": "2026-11-26T13:00:00Z",
        "waited_s": 12.0,
        "resources": {"CPU": 2.0, "GPU": 2.0},
        "workers": 2,
    }
    api.store.set_waiting(job["id"], waiting)
    assert api.http.get(f"/v1/jobs/{job['id']}").json()["waiting"]["message"] == waiting["message"]
    api.store.set_waiting(job["id"], None)
    assert api.http.get(f"/v1/jobs/{job['id']}").json()["waiting"] is None

"""Liveness, readiness, metrics, and the error shape for what no route handles."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI

from service.ray_cluster import ServeState
from tests.utils.api_server import Api, ApiFactory, FakeCluster, FakeLauncher, add_model


def test_healthz(api: Api) -> None:
    response = api.http.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_keeps_the_api_in_rotation_for_reads_while_ray_is_down(api: Api) -> None:
    response = api.http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "degraded",
        "checks": {"store": "ok", "ray": "unreachable", "serve": "unknown"},
        "degraded": ["ray", "serve"],
    }
    assert api.http.get("/v1/jobs").status_code == 200  # what readiness keeps in rotation: reads
    strict = api.http.get("/readyz/strict")
    assert strict.status_code == 503
    assert strict.json()["error"]["code"] == "not_ready"
    assert "ray, serve" in strict.json()["error"]["message"]


def test_readyz_when_everything_answers(make_api: ApiFactory) -> None:
    api = make_api(launcher=FakeLauncher())
    for path in ("/readyz", "/readyz/strict"):
        response = api.http.get(path)
        assert response.status_code == 200
        # No model is listed: Serve need not run, and nothing is degraded.
        assert response.json() == {
            "status": "ready",
            "checks": {"store": "ok", "ray": "ok", "serve": "idle"},
            "degraded": [],
        }


def test_readyz_names_serve_when_listed_models_have_no_serve_application(make_api: ApiFactory) -> None:
    cluster = FakeCluster()
    api = make_api(launcher=cluster.launcher, cluster=cluster)
    add_model(api.store)
    body = api.http.get("/readyz").json()
    assert (body["status"], body["checks"]["serve"], body["degraded"]) == ("degraded", "down", ["serve"])
    assert api.http.get("/readyz/strict").status_code == 503
    cluster.serve = ServeState.running
    assert api.http.get("/readyz/strict").json()["checks"]["serve"] == "ok"


def test_metrics(api: Api) -> None:
    api.create_job()
    api.http.get("/v1/jobs/job-nope")
    api.http.post("/v1/models/nope/predict", content=b"x")
    text = api.http.get("/metrics").text
    assert 'trainyard_http_requests_total{method="POST",route="/v1/jobs",status="202"} 1.0' in text
    # The route template, not the path, so job ids do not multiply time series.
    assert 'trainyard_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 1.0' in text
    assert 'trainyard_http_request_duration_seconds_count{method="POST",route="/v1/jobs",status="202"} 1.0' in text
    assert "# TYPE trainyard_predict_duration_seconds histogram" in text
    assert "trainyard_jobs_submitted_total 1.0" in text
    assert 'trainyard_jobs{status="queued"} 1.0' in text
    assert 'trainyard_jobs{status="running"} 0.0' in text


def test_apps_keep_separate_metrics(make_api: ApiFactory) -> None:
    first, second = make_api(), make_api()
    first.create_job()
    assert "trainyard_jobs_submitted_total 1.0" in first.http.get("/metrics").text
    assert "trainyard_jobs_submitted_total 0.0" in second.http.get("/metrics").text


def test_unknown_route_and_method(api: Api) -> None:
    response = api.http.get("/v2/jobs")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "no route GET /v2/jobs; the API lives under /v1 (see /docs)",
        "field": None,
    }
    response = api.http.delete("/v1/jobs")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_unexpected_errors_are_500_without_a_traceback(make_api: ApiFactory, caplog: pytest.LogCaptureFixture) -> None:
    def add_broken_route(app: FastAPI) -> None:
        def broken() -> None:
            raise RuntimeError("postgresql://admin:hunter2@db/trainyard is down")

        app.add_api_route("/v1/broken", broken)

    api = make_api(app_hook=add_broken_route)
    with caplog.at_level(logging.ERROR, logger="service"):
        response = api.http.get("/v1/broken")
    assert response.status_code == 500
    request_id = response.headers["X-Request-ID"]
    assert response.json() == {
        "error": {
            "code": "internal",
            "message": f"internal error; see the server log (request id {request_id})",
            "field": None,
        }
    }
    assert "hunter2" not in response.text
    [record] = [r for r in caplog.records if request_id in r.getMessage()]
    assert record.exc_info is not None  # the traceback is in the server log
    assert 'route="/v1/broken",status="500"' in api.http.get("/metrics").text


def test_request_id_is_echoed_when_plain(api: Api) -> None:
    assert api.http.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    forged = api.http.get("/healthz", headers={"X-Request-ID": "a\tb"}).headers["X-Request-ID"]
    assert forged != "a\tb" and len(forged) == 32


def test_job_cost_is_in_the_job_and_in_metrics(api: Api) -> None:
    from datetime import date

    from core.cost import WorkUsage, job_cost
    from core.settings import NodeType

    job = api.create_job()
    usage = [WorkUsage(work="training", node_id="n", node_type="gpu", cpus=1, gpus=1, seconds=1800, rank=0)]
    cost = job_cost(usage, {"gpu": NodeType(resources={"CPU": 4, "GPU": 1}, usd_per_hour=2.0)}, date(2026, 11, 1))
    api.store.set_result(job["id"], "cost", cost.model_dump(mode="json"))
    api.store.fail(job["id"], "training_failed", "x")
    shown = api.http.get(f"/v1/jobs/{job['id']}").json()["cost"]
    assert shown["cpu_seconds"] == shown["gpu_seconds"] == 1800
    assert shown["estimated_usd"] == 1.0 and shown["rates_as_of"] == "2026-11-01"
    assert shown["usage"][0]["node_type"] == "gpu"
    text = api.http.get("/metrics").text
    assert 'trainyard_job_gpu_seconds{status="failed"} 1800.0' in text
    assert 'trainyard_job_estimated_cost_usd{status="failed"} 1.0' in text
    assert 'trainyard_job_cpu_seconds{status="succeeded"} 0.0' in text

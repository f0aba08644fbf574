"""Fuzz the API from its own OpenAPI schema with schemathesis, over real HTTP against the app under uvicorn.

Every operation gets valid (positive) and invalid (negative) requests generated from the schema the API
publishes at /openapi.json; each response must not be a 5xx and must conform to the schema: a declared
status, a declared content type, a body that validates. Path parameters are random strings (mostly 404s),
and then the ids of real jobs and a real model, so the routes behind the 404 are fuzzed too.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.spec import JobParams
from core.store import ModelRecord
from service import serve_forwarding
from service.ray_cluster import ServeState
from tests.utils.api_server import Api, ApiFactory, FakeCluster, FakeLauncher

# Examples per (operation, generation mode, path-parameter source); the test prints each run's count and time
# (benchmarks/README.md has the figures). Derandomized: the count is stable.
EXAMPLES = 70
MIN_REQUESTS = 1000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def fuzzed_api(make_api: ApiFactory, s3: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    # `s3`: the stack's S3 server answers the model routes' availability checks (a missing object, a 410).
    # A small image limit, so generated bodies reach the 413 path.
    # Ray and Serve answer (a 503 from /readyz/strict would be right, but not what is fuzzed here).
    # No model server listens, so every prediction that passes validation is retried once after a pause, then
    # answered 503: the pause would be most of the test's time (0.5 s for each of ~170 such requests).
    # tests/service/test_models_api.py covers the retry.
    monkeypatch.setattr(serve_forwarding, "SERVE_RETRY_DELAY_S", 0.0)
    launcher = FakeLauncher()
    cluster = FakeCluster(launcher=launcher, serve=ServeState.running)
    api = make_api(launcher=launcher, cluster=cluster, max_image_bytes=64 * 1024)
    yield api


def _session(api: Api) -> requests.Session:
    session = requests.Session()
    # The fixtures' client carries whatever headers the API needs (auth, once it lands).
    session.headers.update({k: v for k, v in api.http.headers.items() if k.lower() == "authorization"})
    return session


def _run(strategy: Any, call: Callable[[Any], None]) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests on every run: a CI failure reproduces locally
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking: report, don't minimise
    )
    @hypothesis.given(case=strategy)
    def fuzz(case: Any) -> None:
        call(case)

    fuzz()


def _finished_job_with_a_model(api: Api) -> tuple[str, str]:
    # Finished, so `?stream=true` on its events ends at once instead of following the job forever.
    job, _ = api.store.create_job(JobParams(dataset_uri="s3://bucket/pets", name="fuzzed"))
    api.store.add_event(job.id, "note", "an event to list")
    model_id = f"model-{job.id}"
    api.store.add_model(
        ModelRecord(
            id=model_id,
            job_id=job.id,
            artifact_uri=f"s3://trainyard-artifacts/jobs/{job.id}/model.pt",
            arch="efficientnet_lite0",
            classes=["cat", "dog"],
            metrics={"accuracy": 0.9},
            created_at=datetime.now(UTC),
        )
    )
    assert api.store.succeed(job.id, model_id)
    return job.id, model_id


def _plan(operation: APIOperation, ids: dict[str, str]) -> list[tuple[GenerationMode, dict[str, str]]]:
    """Which (mode, fixed path parameters) runs are worth their time for `operation`.

    Negative runs only where something besides a path parameter can be invalid (any string is a valid id, so
    Hypothesis would search in vain); runs on a real id only where something else still varies.
    """
    others = [*operation.query, *operation.headers, *([operation.body] if operation.body else [])]
    path_names = [p.name for p in operation.path_parameters]
    real = {name: ids[name] for name in path_names if name in ids}
    varies_with_real_ids = bool(others) or len(real) < len(path_names)
    modes = [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if others else [])]
    runs: list[tuple[GenerationMode, dict[str, str]]] = [(mode, {}) for mode in modes]
    if real and varies_with_real_ids:
        runs += [(mode, real) for mode in modes]
    return runs


@pytest.mark.slow  # over half a minute on its own
def test_fuzz_the_api_from_its_openapi_schema(fuzzed_api: Api) -> None:
    api = fuzzed_api
    job_id, model_id = _finished_job_with_a_model(api)
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    session = _session(api)
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    def call(case: Any) -> None:
        if case.operation.path == "/v1/events" and case.query and "stream" in case.query:
            # The feed of all jobs stays open until the client leaves; test_events_feed.py covers its stream.
            case.query["stream"] = "false"
        try:
            response = case.call(base_url=api.url, session=session, timeout=30)
        except requests.RequestException as e:  # a dropped connection or a broken response is a failure too
            failures.append(f"{case.method} {case.formatted_path}: {type(e).__name__}: {str(e)[:300]}")
            return
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Failure, FailureGroup) as e:  # collect every distinct failure, not just the first
            kinds = [f.title for f in (e.exceptions if isinstance(e, FailureGroup) else [e])]
            failures.append(f"{case.method} {case.operation.path} -> {response.status_code}: {kinds}\n{str(e)[:600]}")

    ids = {"job_id": job_id, "model_id": model_id}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"an operation of the API's own schema is invalid: {result}"
        operation = result.ok()
        for mode, fixed in _plan(operation, ids):
            began, before = time.perf_counter(), sum(statuses.values())
            _run(operation.as_strategy(mode, path_parameters=fixed or None), call)
            took = time.perf_counter() - began
            print(f"{operation.label} {mode.value} {sorted(fixed)}: {sum(statuses.values()) - before} in {took:.1f}s")

    total = sum(statuses.values())
    print(f"\nfuzz: {total} requests, statuses {dict(sorted(statuses.items()))}, {len(failures)} failures")
    distinct = {f.split("\n", 1)[0]: f for f in failures}
    assert not distinct, "\n\n".join(distinct.values())
    assert total >= MIN_REQUESTS
    assert not [s for s in statuses if s >= 500]

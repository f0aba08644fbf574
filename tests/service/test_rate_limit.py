"""Per-key rate limits over real HTTP: a token bucket per key, 429 with Retry-After past it, per tenant.

The limits here are slow (one request per two seconds refills the bucket) so that a busy test machine never
refills a bucket between two requests the test means to send back to back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response
from test_models_api import IMAGE

from tests.utils.api_server import Api, ApiFactory, FakeLauncher, serve
from tests.utils.models import deployed_job
from trainyard import Client, RateLimited

REPO = Path(__file__).resolve().parents[2]
SLOW = {"rate_limit_per_s": 0.5, "rate_limit_burst": 3}


def _burst(client: httpx.Client, count: int) -> list[httpx.Response]:
    return [client.get("/v1/jobs") for _ in range(count)]


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    return make_api(launcher=FakeLauncher(), **SLOW)


def test_a_key_past_its_burst_gets_429_with_retry_after_naming_the_limit(api: Api) -> None:
    a1, a2 = api.tenant_client("team-a"), api.tenant_client("team-a")
    answers = _burst(a1, 4)
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.headers["Retry-After"] in ("1", "2")  # whole seconds, at least 1: one token every 2 s
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("rate_limited", "Authorization")
    assert error["limit"] == {"per_second": 0.5, "burst": 3, "scope": "per API key, per API process"}
    assert "0.5 requests/s (burst 3)" in error["message"] and "tenants set" in error["message"]
    # Refusals are rendered once and answered many times: each still carries its own request id, and only one.
    again = a1.get("/v1/jobs")
    assert again.status_code == 429 and again.json()["error"]["limit"] == error["limit"]
    ids = [r.headers.get_list("X-Request-ID") for r in (refused, again)]
    assert [len(i) for i in ids] == [1, 1] and ids[0] != ids[1], ids
    # Per key: another key of the same tenant, and the API's admin key, are not held back by it.
    assert [r.status_code for r in _burst(a2, 3)] == [200, 200, 200]
    assert {r.status_code for r in _burst(api.http, 10)} == {200}
    # Unknown keys are not metered (no bucket to fill memory with): they get their 401.
    assert api.client("ty_unknown").get("/v1/jobs").status_code == 401
    # The 429s are counted like every answer.
    counted = [line for line in api.http.get("/metrics").text.splitlines() if 'status="429"' in line]
    assert 'trainyard_http_requests_total{method="GET",route="/v1/jobs",status="429"} 2.0' in counted, counted


def test_each_tenants_limit_is_its_own_and_set_by_the_admin_command(api: Api) -> None:
    key = api.new_key("team-b")
    b = api.client(key)
    assert b.get("/v1/me").json()["rate_limit"] == {"per_second": 0.5, "burst": 3}
    env = {**os.environ, "TRAINYARD_DATABASE_URL": api.settings.resolved_database_url, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "service.admin", "tenants", "set", "team-b", "--rate-limit", "0"]
    assert subprocess.run(command, env=env, cwd=REPO, capture_output=True, timeout=60).returncode == 0
    # Unlimited from its next request on: the bucket follows the tenant's row.
    assert {r.status_code for r in _burst(b, 12)} == {200}
    assert b.get("/v1/me").json()["rate_limit"] is None
    command[-1:] = ["0.5", "--burst", "1"]
    assert subprocess.run(command, env=env, cwd=REPO, capture_output=True, timeout=60).returncode == 0
    b.get("/v1/jobs")  # the request that learns the new limit
    assert [r.status_code for r in _burst(b, 2)][-1] == 429


def test_the_sdk_waits_out_retry_after_and_gives_up_when_told_to(api: Api) -> None:
    key = api.new_key("team-c")
    with Client(url=api.url, api_key=key) as patient, Client(url=api.url, api_key=key, max_retries=0) as hasty:
        for _ in range(3):
            patient.list_jobs()
        patient.list_jobs()  # the fourth waits the 1-2 s the API asks for, then goes through
        with pytest.raises(RateLimited) as caught:
            for _ in range(4):
                hasty.list_jobs()
    assert (caught.value.status, caught.value.code, caught.value.field) == (429, "rate_limited", "Authorization")


class HeldServe:
    """A model server that holds every request until `gate` opens, counting how many it holds at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.holding = 0
        self.most = 0
        self.app = FastAPI()
        self.app.add_api_route("/classify", self.classify, methods=["POST"])

    def classify(self) -> Response:  # sync: each held request takes a thread of the stand-in's pool
        with self.lock:
            self.holding += 1
            self.most = max(self.most, self.holding)
        self.gate.wait(30)
        with self.lock:
            self.holding -= 1
        return Response(
            json.dumps({"predictions": [{"label": "cat", "probability": 1.0}]}), media_type="application/json"
        )


class HeldWork:
    """A route of the API's own (`/v1/held?n=NAME`) whose requests each hold a thread of its pool until their own
    gate opens: work of the API process, as a status read or a submission is. Records the order they start in."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.started: list[str] = []
        self.lock = threading.Lock()

    def gate(self, name: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(name, threading.Event())

    def add_to(self, app: FastAPI) -> None:
        def held(n: str) -> dict[str, str]:  # sync: FastAPI runs it in its thread pool, like the real routes
            with self.lock:
                self.started.append(n)
            self.gate(n).wait(30)
            return {"n": n}

        app.add_api_route("/v1/held", held)


def test_a_keys_burst_is_worked_on_one_at_a_time_behind_other_keys_requests(make_api: ApiFactory) -> None:
    work = HeldWork()
    api = make_api(app_hook=work.add_to, rate_limit_per_s=100, rate_limit_burst=100, rate_limit_in_flight=1)
    busy, other = api.tenant_client("team-a"), api.tenant_client("team-b")
    busy.get("/v1/me")  # a key's first request makes its bucket (and so its turns)
    other.get("/v1/me")
    with ThreadPoolExecutor(6) as pool:
        burst = {n: pool.submit(busy.get, "/v1/held", params={"n": n}) for n in ("b1", "b2", "b3")}
        wait_for(lambda: len(work.started) == 1, "the burst's first request at work")
        time.sleep(0.5)  # the rest of the burst would have started by now, were it let through
        assert len(work.started) == 1, work.started
        late = pool.submit(other.get, "/v1/held", params={"n": "o1"})
        wait_for(lambda: "o1" in work.started, "the other key's request beside it")  # not behind the burst
        # The burst's next request, free to go as far as its own key is concerned, lets o1 finish first ...
        work.gate(work.started[0]).set()
        time.sleep(0.3)
        assert len(work.started) == 2, f"the burst went on beside another key's request: {work.started}"
        # ... but for `DEFER_MAX_S` at most: other keys' work never starves it.
        wait_for(lambda: len(work.started) == 3, "the burst's next request after the bounded wait", timeout=10)
        for name in ("b1", "b2", "b3", "o1"):
            work.gate(name).set()
        assert [f.result().status_code for f in (*burst.values(), late)] == [200] * 4
    assert sorted(work.started) == ["b1", "b2", "b3", "o1"]  # each request worked on once


def test_predictions_waiting_on_the_model_server_hold_no_turn(make_api: ApiFactory) -> None:
    held = HeldServe()
    with serve(held.app) as serve_url:
        api = make_api(serve_url=serve_url, rate_limit_per_s=100, rate_limit_burst=100, rate_limit_in_flight=1)
        model = deployed_job(api.store, "pets", tenant="team-a").id
        client = api.tenant_client("team-a")
        client.get("/v1/me")
        with ThreadPoolExecutor(4) as pool:
            burst = [pool.submit(client.post, f"/v1/models/{model}/predict", content=IMAGE) for _ in range(4)]
            # All four at the model server at once (where Serve batches them), one turn notwithstanding.
            wait_for(lambda: held.holding == 4 or any(f.done() for f in burst), "the key's predictions at the server")
            assert held.holding == 4, [f.result().text for f in burst if f.done()]
            held.gate.set()
            assert [f.result().status_code for f in burst] == [200] * 4


def wait_for(check: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)

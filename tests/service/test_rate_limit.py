"""Per-key rate limits over real HTTP: a token bucket per key, 429 with Retry-After past it, per tenant.

The limits here are slow (one request per two seconds refills the bucket) so that a busy test machine never
refills a bucket between two requests the test means to send back to back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from service_testkit import Api, ApiFactory, FakeLauncher

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
    # Per key: another key of the same tenant, and the API's admin key, are not held back by it.
    assert [r.status_code for r in _burst(a2, 3)] == [200, 200, 200]
    assert {r.status_code for r in _burst(api.http, 10)} == {200}
    # Unknown keys are not metered (no bucket to fill memory with): they get their 401.
    assert api.client("ty_unknown").get("/v1/jobs").status_code == 401
    # The 429s are counted like every answer.
    counted = [line for line in api.http.get("/metrics").text.splitlines() if 'status="429"' in line]
    assert 'trainyard_http_requests_total{method="GET",route="/v1/jobs",status="429"} 1.0' in counted, counted


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

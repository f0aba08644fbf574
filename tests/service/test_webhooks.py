"""Webhooks through the real API, to a real receiver on loopback: signed, once per terminal state, retried,
kept across a restart, and never sent to the service's own networks.

The jobs end as their drivers (or a cancel through the API) would end them: through the store. The receiver's
loopback address is allowed by `TRAINYARD_WEBHOOK_ALLOWED_NETWORKS`, as an operator would allow a receiver on
a private network; the refusals run with no such allowance.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from core.settings import get_settings
from core.spec import Phase
from core.store import JobStore, ModelRecord
from core.store.batch import BatchStore
from core.tenancy import Tenancy
from core.webhooks import Outbox, WebhookSecrets
from service.admin import app as admin_app
from service.launcher import RayJobState
from service.main import create_app
from service.notify import Notifier
from tests.utils.api_server import Api, ApiFactory, FakeLauncher, listening_socket, make_settings, serve
from tests.utils.jobs import poll
from tests.utils.models import deployed_job
from tests.utils.schema import migrated
from tests.utils.webhook_receiver import Received, WebhookReceiver

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
FAST = {"webhook_retry_base_s": 0.2, "webhook_poll_interval_s": 0.05}
ALLOW_LOOPBACK = {"webhook_allowed_networks": ["127.0.0.1/32"], **FAST}


def docs_verify() -> Callable[[str, bytes, str], bool]:
    """The verification snippet of docs/api.md, run as written: what a receiver would paste."""
    section = DOC.read_text().split("## Webhooks", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "docs/api.md's Webhooks section has no python snippet"
    namespace: dict[str, Any] = {}
    exec(match.group(1), namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver().running() as running:
        yield running


def start(make_api: ApiFactory, **settings: Any) -> tuple[Api, Notifier]:
    apps: list[FastAPI] = []
    api = make_api(launcher=FakeLauncher(), app_hook=apps.append, **settings)
    return api, apps[0].state.notifier


def more_passes(notifier: Notifier, count: int = 3) -> None:
    """Let the notifier finish `count` more passes: long enough for anything it would still send."""
    target = notifier.passes + count
    poll(lambda: notifier.passes >= target, 30, f"{count} more webhook passes", interval=0.02)


def events(store: JobStore, job_id: str, kind: str) -> list[Any]:
    return [e for e in store.events(job_id) if e.kind == kind]


def end_as_the_driver_would(store: JobStore, job_id: str, outcome: str) -> None:
    store.set_phase(job_id, Phase.training, 0.5)
    if outcome == "succeeded":
        record = ModelRecord(
            id=job_id.replace("job-", "mdl-"),
            job_id=job_id,
            artifact_uri="s3://a/m.pt",
            arch="resnet18",
            classes=["a", "b"],
            created_at=datetime.now(UTC),
        )
        assert store.succeed_with_model(job_id, record)
    else:
        assert store.fail(job_id, "internal_error", "the worker ran out of memory")


def test_a_signed_webhook_arrives_once_per_terminal_state(make_api: ApiFactory, receiver: WebhookReceiver) -> None:
    api, notifier = start(make_api, **ALLOW_LOOPBACK)
    url = f"{receiver.url}/hooks/trainyard?token=s3cr3t"
    ids = {o: api.create_job(notify_url=url, name=f"pets-{o}")["id"] for o in ("succeeded", "failed", "cancelled")}
    api.create_job(name="no-webhook")  # asks for none: gets none
    end_as_the_driver_would(api.store, ids["succeeded"], "succeeded")
    end_as_the_driver_would(api.store, ids["failed"], "failed")
    assert api.http.post(f"/v1/jobs/{ids['cancelled']}/cancel").json()["status"] == "cancelled"

    received = receiver.wait_for(3)
    more_passes(notifier)
    assert len(receiver.requests) == 3  # once each, however many passes follow

    secret = WebhookSecrets(api.store.engine).get("admin")
    assert secret is not None and secret.startswith("whsec_")
    verify = docs_verify()
    by_job = {json.loads(r.body)["data"]["id"]: r for r in received}
    assert set(by_job) == set(ids.values())
    for outcome, job_id in ids.items():
        request = by_job[job_id]
        body = json.loads(request.body)
        assert body["type"] == request.headers["trainyard-event"] == f"job.{outcome}"
        assert body["id"] == request.headers["trainyard-delivery"]
        assert (body["data"]["status"], body["data"]["name"], body["data"]["tenant"]) == (
            outcome,
            f"pets-{outcome}",
            "admin",
        )
        assert body["data"]["url"].endswith(f"/v1/jobs/{job_id}")
        assert request.path == "/hooks/trainyard?token=s3cr3t"
        assert request.headers["content-type"] == "application/json"
        assert verify(secret, request.body, request.headers["trainyard-signature"])
        assert not verify(secret, request.body + b" ", request.headers["trainyard-signature"])
        assert not verify("whsec_another", request.body, request.headers["trainyard-signature"])
        delivered = events(api.store, job_id, "webhook")
        assert len(delivered) == 1 and delivered[0].data["status"] == 200
        assert "s3cr3t" not in delivered[0].message and receiver.url in delivered[0].message
    success = json.loads(by_job[ids["succeeded"]].body)["data"]
    assert success["model"]["id"] == ids["succeeded"].replace("job-", "mdl-") and success["error"] is None
    failure = json.loads(by_job[ids["failed"]].body)["data"]
    assert failure["error"] == {
        "code": "internal_error",
        "message": "the worker ran out of memory",
        "phase": "training",
    }


def test_a_webhook_answered_with_a_500_is_tried_again(make_api: ApiFactory, receiver: WebhookReceiver) -> None:
    api, _ = start(make_api, **ALLOW_LOOPBACK)
    receiver.answers = [500]
    job_id = api.create_job(notify_url=receiver.url)["id"]
    end_as_the_driver_would(api.store, job_id, "succeeded")

    first, second = receiver.wait_for(2)
    assert first.body == second.body  # the same delivery, signed anew
    assert first.headers["trainyard-delivery"] == second.headers["trainyard-delivery"]
    secret = WebhookSecrets(api.store.engine).get("admin")
    assert secret is not None and all(
        docs_verify()(secret, r.body, r.headers["trainyard-signature"]) for r in (first, second)
    )
    delivered = poll(lambda: events(api.store, job_id, "webhook") or None, 30, "the delivered event")
    (retry,) = events(api.store, job_id, "webhook_retry")
    assert "HTTP 500" in retry.message and retry.data["try"] == 1
    assert delivered[0].data["try"] == 2


def test_tries_are_bounded(make_api: ApiFactory, receiver: WebhookReceiver) -> None:
    api, notifier = start(make_api, webhook_max_tries=3, **ALLOW_LOOPBACK)
    receiver.answers = [503] * 10
    job_id = api.create_job(notify_url=receiver.url)["id"]
    end_as_the_driver_would(api.store, job_id, "failed")
    (gave_up,) = poll(lambda: events(api.store, job_id, "webhook_failed") or None, 30, "giving up")
    assert "after 3 tries" in gave_up.message and "HTTP 503" in gave_up.message
    more_passes(notifier)
    assert len(receiver.requests) == 3 and len(events(api.store, job_id, "webhook_retry")) == 2


def test_a_delivery_cut_off_by_an_api_restart_is_sent_by_the_next_api(tmp_path: Path, closed_port: int) -> None:
    """The API stops while the receiver has the request but has not answered: the delivery is still owed, and the
    API started next sends it (same delivery id: receivers drop repeats by it)."""
    settings = make_settings(tmp_path / "api", closed_port, webhook_lease_s=1.0, **ALLOW_LOOPBACK)
    migrated(settings.resolved_database_url)
    store = JobStore.from_url(settings.resolved_database_url)
    key = Tenancy(store.engine).create_key("admin", admin=True)[1]
    hold = threading.Event()
    with WebhookReceiver(hold=hold).running() as receiver:
        with serve(create_app(settings, FakeLauncher()), listening_socket()) as url:
            headers = {"Authorization": f"Bearer {key}"}
            job = httpx.post(
                f"{url}/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "notify_url": receiver.url}, headers=headers
            )
            job_id = job.json()["id"]
            end_as_the_driver_would(store, job_id, "succeeded")
            (cut_off,) = receiver.wait_for(1)
        hold.set()  # the first API is gone; its request ends unanswered
        assert events(store, job_id, "webhook") == []
        with serve(create_app(settings, FakeLauncher()), listening_socket()):
            _, again = receiver.wait_for(2)
            poll(lambda: events(store, job_id, "webhook") or None, 30, "the delivered event")
    assert again.headers["trainyard-delivery"] == cut_off.headers["trainyard-delivery"] and again.body == cut_off.body
    store.engine.dispose()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:8000/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://0.0.0.0:8080/", "unspecified"),
        ("http://localhost:9/hook", "loopback"),
    ],
)
def test_notify_urls_into_the_services_own_networks_are_refused_at_submit(api: Api, url: str, kind: str) -> None:
    response = api.http.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "notify_url": url})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("notify_url_not_allowed", "notify_url")
    assert f"a {kind} address" in error["message"] and "TRAINYARD_WEBHOOK_ALLOWED_NETWORKS" in error["message"]
    assert api.http.get("/v1/jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://hooks.example.com/x", "http:// or https://"),
        ("https://user:pass@hooks.example.com/x", "user or password"),
        ("https:///no-host", "must name a host"),
    ],
)
def test_notify_urls_that_are_not_http_urls_are_422s_naming_the_field(api: Api, url: str, words: str) -> None:
    response = api.http.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "notify_url": url})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "notify_url" and words in error["message"]


def test_a_public_address_is_accepted_and_the_tenant_gets_a_secret(api: Api) -> None:
    tenant = api.tenant_client("team-vision")
    response = tenant.post(
        "/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "notify_url": "https://93.184.216.34/h"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["params"]["notify_url"] == "https://93.184.216.34/h"
    assert (WebhookSecrets(api.store.engine).get("team-vision") or "").startswith("whsec_")


def test_an_allowed_network_is_reachable_and_nothing_else_is(make_api: ApiFactory) -> None:
    api, _ = start(make_api, **ALLOW_LOOPBACK)
    accepted = api.http.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "notify_url": "http://127.0.0.1:9/h"})
    assert accepted.status_code == 202
    refused = api.http.post("/v1/jobs", json={"dataset_uri": "s3://bucket/p", "notify_url": "http://169.254.169.254/"})
    assert refused.json()["error"]["field"] == "notify_url"


def test_every_try_checks_the_address_again(make_api: ApiFactory, receiver: WebhookReceiver) -> None:
    """A delivery owed to an address that is not allowed (by now) is refused before any connection is made."""
    api, notifier = start(make_api, **FAST)  # loopback not allowed
    job_id = api.create_job()["id"]
    end_as_the_driver_would(api.store, job_id, "succeeded")
    Outbox(api.store.engine).enqueue(
        kind="job", resource_id=job_id, attempt=1, tenant="admin", url=receiver.url, status="succeeded", data={}
    )
    (refused,) = poll(lambda: events(api.store, job_id, "webhook_failed") or None, 30, "the refusal")
    assert "loopback" in refused.message and "after 1 tries" in refused.message
    more_passes(notifier)
    assert receiver.connections == 0


def test_a_host_name_is_called_at_its_checked_address_with_its_own_host_header(make_api: ApiFactory) -> None:
    with WebhookReceiver().running() as receiver:
        api, _ = start(make_api, **ALLOW_LOOPBACK)
        job_id = api.create_job(notify_url=f"http://localhost:{receiver.port}/hook")["id"]
        end_as_the_driver_would(api.store, job_id, "succeeded")
        (request,) = receiver.wait_for(1)
    assert request.headers["host"] == f"localhost:{receiver.port}"


def test_received_requests_are_recorded(receiver: WebhookReceiver) -> None:
    """The receiver itself: what the tests above rely on."""
    assert httpx.post(receiver.url + "/x", content=b"{}").status_code == 200
    assert receiver.wait_for(1) == [Received("/x", receiver.requests[0].headers, b"{}")]


def test_the_admin_command_hands_out_and_rotates_the_secret_that_signs(
    make_api: ApiFactory, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, _ = start(make_api, **ALLOW_LOOPBACK)
    monkeypatch.setenv("TRAINYARD_DATABASE_URL", api.settings.resolved_database_url)
    get_settings.cache_clear()
    runner, verify = CliRunner(), docs_verify()
    try:
        shown = runner.invoke(admin_app, ["tenants", "webhook-secret", "admin"])
        assert shown.exit_code == 0, shown.output
        first = shown.stdout.strip()
        assert runner.invoke(admin_app, ["tenants", "webhook-secret", "admin"]).stdout.strip() == first  # kept
        job_id = api.create_job(notify_url=receiver.url)["id"]
        end_as_the_driver_would(api.store, job_id, "succeeded")
        (signed,) = receiver.wait_for(1)
        assert verify(first, signed.body, signed.headers["trainyard-signature"])

        rotated = runner.invoke(admin_app, ["tenants", "webhook-secret", "admin", "--rotate"]).stdout.strip()
        assert rotated.startswith("whsec_") and rotated != first
        job_id = api.create_job(notify_url=receiver.url)["id"]
        end_as_the_driver_would(api.store, job_id, "failed")
        _, resigned = receiver.wait_for(2)
        assert verify(rotated, resigned.body, resigned.headers["trainyard-signature"])
        assert not verify(first, resigned.body, resigned.headers["trainyard-signature"])

        bad = runner.invoke(admin_app, ["tenants", "webhook-secret", "Not Valid"])
        assert bad.exit_code == 2 and "is not valid" in bad.stderr
    finally:
        get_settings.cache_clear()


def test_a_batch_run_notifies_like_a_job(make_api: ApiFactory, receiver: WebhookReceiver) -> None:
    """A batch prediction run with a notify_url: refused into the service's own networks at submit, and once
    allowed, one signed `batch.<status>` webhook per attempt's end, its tries in the run's events."""
    refused_api = make_api(launcher=FakeLauncher())
    model_id = deployed_job(refused_api.store).id
    body = {"input_uri": "s3://photos/incoming", "notify_url": "http://127.0.0.1:9/hook"}
    refused = refused_api.http.post(f"/v1/models/{model_id}/batch-predictions", json=body)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("notify_url_not_allowed", "notify_url")

    launcher, apps = FakeLauncher(), list[FastAPI]()
    api = make_api(launcher=launcher, app_hook=apps.append, **ALLOW_LOOPBACK)
    notifier = apps[0].state.notifier
    model_id = deployed_job(api.store).id
    body["notify_url"] = f"{receiver.url}/hooks/batch"
    run = api.http.post(f"/v1/models/{model_id}/batch-predictions", json=body).json()
    runs = BatchStore(api.store)
    assert runs.fail(run["id"], "driver_died", "the driver process died during predicting")
    (request,) = receiver.wait_for(1)
    launcher.states[run["id"]] = RayJobState.failed  # its driver is gone
    retried = api.http.post(f"/v1/batch-predictions/{run['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert runs.succeed(run["id"], None, {"rows": 12, "errors": 1, "shards": 1})
    _, second = receiver.wait_for(2)
    more_passes(notifier)
    assert len(receiver.requests) == 2

    secret = WebhookSecrets(api.store.engine).get("admin")
    assert secret is not None
    for got, status, attempt in ((request, "failed", 1), (second, "succeeded", 2)):
        assert docs_verify()(secret, got.body, got.headers["trainyard-signature"])
        sent = json.loads(got.body)
        assert sent["type"] == got.headers["trainyard-event"] == f"batch.{status}"
        assert (sent["data"]["kind"], sent["data"]["id"], sent["data"]["attempt"]) == ("batch", run["id"], attempt)
        assert sent["data"]["url"].endswith(f"/v1/batch-predictions/{run['id']}")
        assert sent["data"]["output_uri"] == run["params"]["output_uri"]
    assert json.loads(request.body)["data"]["error"]["code"] == "driver_died"
    assert json.loads(second.body)["data"]["rows"] == 12
    logged = api.http.get(f"/v1/batch-predictions/{run['id']}/events").json()["events"]
    assert [e["data"]["event"] for e in logged if e["kind"] == "webhook"] == ["batch.failed", "batch.succeeded"]

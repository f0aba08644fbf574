"""The batch prediction routes over real HTTP, with the Ray side played by `FakeLauncher` and the local S3 server.

What a run does on the cluster is tests/e2e/test_batch_*.py; here: the contract of the resource (202 and
Location, errors naming the field, tenant scoping, cancel, retry, events) and the reconciler's pass over runs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from core.spec import JobParams
from core.store import ModelRecord, new_id
from infra.local.stack import LocalStack
from service.launcher import RayJobState
from service.reconciler import reconcile_once
from tests.utils.api_server import Api, ApiFactory, FakeLauncher


def add_model(api: Api, tenant: str = "admin", name: str = "pets") -> str:
    """A finished job's model in `tenant` (its artifact is never read by these tests)."""
    job, _ = api.store.create_job(JobParams(dataset_uri="s3://bucket/pets", name=name), tenant=tenant)
    model = ModelRecord(
        id=new_id("mdl"), job_id=job.id, artifact_uri="s3://trainyard-artifacts/m.pt", arch="efficientnet_lite0",
        classes=["cat", "dog"], created_at=datetime.now(UTC), name=name,
    )  # fmt: skip
    assert api.store.succeed_with_model(job.id, model)
    return model.id


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def batch_api(make_api: ApiFactory, launcher: FakeLauncher, stack: LocalStack) -> Api:
    """The API with a fake Ray and the session's S3 server (cancel writes the manifest there)."""
    return make_api(launcher=launcher, s3_endpoint_url=stack.config.s3_url)


def submit(api: Api, ref: str, client: Any = None, **body: Any) -> Any:
    return (client or api.http).post(
        f"/v1/models/{ref}/batch-predictions", json={"input_uri": "s3://photos/incoming", **body}
    )


def test_a_run_is_accepted_by_model_name_and_handed_to_ray(batch_api: Api, launcher: FakeLauncher) -> None:
    model_id = add_model(batch_api)
    answer = submit(batch_api, "pets@latest", top_k=3, format="csv")
    assert answer.status_code == 202, answer.text
    run = answer.json()
    assert answer.headers["location"] == f"/v1/batch-predictions/{run['id']}"
    assert run["status"] == "queued" and run["id"].startswith("bp-")
    assert run["model"] == {"id": model_id, "ref": "pets@latest", "name": "pets", "version": 1}
    assert run["params"]["output_uri"] == f"s3://trainyard-artifacts/tenants/admin/batch-predictions/{run['id']}/"
    assert (run["params"]["top_k"], run["params"]["format"]) == (3, "csv")
    assert run["progress"] == {"images_done": 0, "images_total": None, "fraction": 0.0}
    assert launcher.submitted == [run["id"]]
    assert batch_api.http.get(f"/v1/batch-predictions/{run['id']}").json()["id"] == run["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"top_k": 0}, "top_k"), ({"format": "xml"}, "format"), ({"input_uri": "http://photos/x"}, "input_uri"),
     ({"num_workers": 0}, "num_workers"), ({"colour": "red"}, "colour"), ({"notify_url": "ftp://x"}, "notify_url")],
)  # fmt: skip
def test_invalid_requests_name_the_field(batch_api: Api, body: dict[str, Any], field: str) -> None:
    add_model(batch_api)
    answer = submit(batch_api, "pets", **body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


def test_an_unknown_model_is_404(batch_api: Api) -> None:
    add_model(batch_api)
    for ref in ("mdl-nope", "nope", "pets@7", "pets@staging"):
        answer = submit(batch_api, ref)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "model_not_found", (ref, answer.text)


def test_locations_outside_the_allow_list_are_403_naming_the_field(make_api: ApiFactory, stack: LocalStack) -> None:
    api = make_api(launcher=FakeLauncher(), s3_endpoint_url=stack.config.s3_url, dataset_prefixes=["s3://photos"])
    model_id = add_model(api, tenant="alice")
    alice = api.tenant_client("alice")
    uploads = api.settings.upload_uri.rstrip("/")
    refused = {
        "input_uri": ["s3://elsewhere/x", f"{uploads}/bob/photos", api.settings.artifact_uri],
        "output_uri": ["s3://elsewhere/out", f"{uploads}/bob/out", f"{api.settings.artifact_uri.rstrip('/')}/x"],
    }
    for field, uris in refused.items():
        for uri in uris:
            answer = submit(api, model_id, alice, **{field: uri})
            assert answer.status_code == 403, (field, uri, answer.text)
            assert answer.json()["error"] | {"message": ""} == {
                "code": "dataset_not_allowed",
                "field": field,
                "message": "",
            }
    s3 = stack.s3_client()
    bucket = uploads.removeprefix("s3://").split("/")[0]
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket)
    own = submit(api, model_id, alice, input_uri=f"{uploads}/alice/photos", output_uri=f"{uploads}/alice/out")
    assert own.status_code == 202, own.text


def test_an_output_that_holds_objects_or_has_no_bucket_is_refused(batch_api: Api, s3: Any) -> None:
    add_model(batch_api)
    s3.put_object(Bucket="trainyard-artifacts", Key="taken/part-00000.jsonl", Body=b"{}")
    taken = submit(batch_api, "pets", output_uri="s3://trainyard-artifacts/taken")
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "output_not_empty"
    assert taken.json()["error"]["field"] == "output_uri"
    missing = submit(batch_api, "pets", output_uri="s3://no-such-bucket-for-batch/out")
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "output_uri"


def test_another_tenants_run_answers_404_everywhere(batch_api: Api) -> None:
    alice, bob = batch_api.tenant_client("alice"), batch_api.tenant_client("bob")
    model_id = add_model(batch_api, tenant="alice")
    assert submit(batch_api, model_id, bob).status_code == 404, "bob cannot use alice's model"
    run = submit(batch_api, model_id, alice, input_uri=f"{batch_api.settings.upload_uri.rstrip('/')}/alice/in").json()
    assert run["params"]["output_uri"].endswith(f"/tenants/alice/batch-predictions/{run['id']}/")
    for method, path in [("GET", ""), ("GET", "/events"), ("POST", "/cancel"), ("POST", "/retry")]:
        answer = bob.request(method, f"/v1/batch-predictions/{run['id']}{path}")
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["error"] == {
            "code": "batch_prediction_not_found",
            "message": f"no batch prediction with id {run['id']!r}; list them with GET /v1/batch-predictions",
            "field": "batch_id",
        }
    assert bob.get("/v1/batch-predictions").json()["batch_predictions"] == []
    assert [r["id"] for r in alice.get("/v1/batch-predictions").json()["batch_predictions"]] == [run["id"]]
    assert run["id"] in [r["id"] for r in batch_api.http.get("/v1/batch-predictions").json()["batch_predictions"]]


def test_cancel_stops_the_driver_and_leaves_a_manifest_saying_cancelled(
    batch_api: Api, launcher: FakeLauncher, s3: Any
) -> None:
    add_model(batch_api)
    run = submit(batch_api, "pets").json()
    s3.put_object(Bucket="trainyard-artifacts", Key=f"tenants/admin/batch-predictions/{run['id']}/part-00000.jsonl",
                  Body=b"")  # fmt: skip
    first = batch_api.http.post(f"/v1/batch-predictions/{run['id']}/cancel")
    again = batch_api.http.post(f"/v1/batch-predictions/{run['id']}/cancel")
    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == "cancelled" and launcher.stopped == [run["id"]], "one stop, however many calls"
    key = f"tenants/admin/batch-predictions/{run['id']}/manifest.json"
    manifest = json.loads(s3.get_object(Bucket="trainyard-artifacts", Key=key)["Body"].read())
    assert (manifest["status"], manifest["run_id"]) == ("cancelled", run["id"])
    assert manifest["shards"] == [{"name": "part-00000.jsonl", "rows": None}]
    events = batch_api.http.get(f"/v1/batch-predictions/{run['id']}/events").json()["events"]
    assert [e["kind"] for e in events] == ["queued", "cancelled"]
    streamed = batch_api.http.get(f"/v1/batch-predictions/{run['id']}/events", params={"stream": "true"})
    assert streamed.text.count("data: ") == 3 and 'event: end\ndata: {"status": "cancelled"}' in streamed.text


def test_retry_runs_a_cancelled_run_again_once_its_driver_is_gone(batch_api: Api, launcher: FakeLauncher) -> None:
    add_model(batch_api)
    run_id = submit(batch_api, "pets").json()["id"]
    queued = batch_api.http.post(f"/v1/batch-predictions/{run_id}/retry")
    assert queued.status_code == 409 and queued.json()["error"]["code"] == "batch_prediction_not_retryable"
    batch_api.http.post(f"/v1/batch-predictions/{run_id}/cancel")
    launcher.states[run_id] = RayJobState.running  # still stopping on Ray
    stopping = batch_api.http.post(f"/v1/batch-predictions/{run_id}/retry")
    assert stopping.status_code == 409 and stopping.json()["error"]["code"] == "previous_attempt_running"
    launcher.states[run_id] = RayJobState.stopped
    retried = batch_api.http.post(f"/v1/batch-predictions/{run_id}/retry")
    assert retried.status_code == 202 and retried.json()["attempt"] == 2
    assert launcher.submitted == [run_id, f"{run_id}-attempt2"]


def test_a_run_accepted_while_ray_is_down_is_submitted_by_the_reconciler(
    batch_api: Api, launcher: FakeLauncher
) -> None:
    add_model(batch_api)
    launcher.reachable = False
    run_id = submit(batch_api, "pets").json()["id"]
    assert launcher.submitted == []
    launcher.reachable = True
    reconcile_once(batch_api.store, launcher)
    assert launcher.submitted == [run_id]


@pytest.mark.parametrize(
    ("ray_state", "code", "words"),
    [(RayJobState.failed, "driver_died", "driver process died during predicting"),
     (RayJobState.missing, "driver_lost", "no longer known to the Ray cluster"),
     (RayJobState.stopped, "driver_stopped", "without a cancel through this API")],
)  # fmt: skip
def test_the_reconciler_fails_a_run_whose_driver_is_gone(
    batch_api: Api, launcher: FakeLauncher, ray_state: RayJobState, code: str, words: str
) -> None:
    from core.batch_spec import BatchPhase
    from core.store.batch import BatchStore

    add_model(batch_api)
    run_id = submit(batch_api, "pets").json()["id"]
    assert BatchStore(batch_api.store).set_phase(run_id, BatchPhase.predicting)
    launcher.states[run_id] = ray_state
    reconcile_once(batch_api.store, launcher)
    run = batch_api.http.get(f"/v1/batch-predictions/{run_id}").json()
    assert run["status"] == "failed" and run["error"]["code"] == code and run["error"]["phase"] == "predicting"
    assert words in run["error"]["message"] and f"batch-predictions retry {run_id}" in run["error"]["message"]


def test_the_list_pages_newest_first_and_filters_by_status(batch_api: Api) -> None:
    add_model(batch_api)
    ids = [submit(batch_api, "pets").json()["id"] for _ in range(3)]
    batch_api.http.post(f"/v1/batch-predictions/{ids[0]}/cancel")
    page = batch_api.http.get("/v1/batch-predictions", params={"limit": 2}).json()
    assert [r["id"] for r in page["batch_predictions"]] == ids[:0:-1] and page["next_cursor"] == ids[1]
    rest = batch_api.http.get("/v1/batch-predictions", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [r["id"] for r in rest["batch_predictions"]] == [ids[0]] and rest["next_cursor"] is None
    cancelled = batch_api.http.get("/v1/batch-predictions", params={"status": "cancelled"}).json()
    assert [r["id"] for r in cancelled["batch_predictions"]] == [ids[0]]
    bad = batch_api.http.get("/v1/batch-predictions", params={"cursor": "bp-nope"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "cursor"

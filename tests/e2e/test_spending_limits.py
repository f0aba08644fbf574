"""Spending limits on the local stack, with configured rates: a job stops at its `max_cost_usd` and keeps its best
checkpoint so far, deployed; a tenant over its monthly budget gets new jobs refused with 402 and the figures.

The stack's one node is priced as a type of 1 CPU at $36 an hour (a cent a second), so a one-worker job pays a cent
for every second its Ray Train worker holds its CPU, counted from the worker's training function's start. The
capped job gives its learning rate and trains no head-only epoch, so nothing is priced before training, and its
cap is one second of the worker. At the end of the first epoch the worker has held its CPU for its model's build
and that epoch (well over half a second on any machine), and another epoch estimated at as much would pass the
cap: training stops after its first epoch (the cap checks at epoch ends: the first epoch is what a job can pass
its cap by), deterministically.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.settings import NodeType
from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack
from tests.utils.jobs import submit, wait_job
from tests.utils.stack import own_stack

pytestmark = pytest.mark.e2e

RATES = {"local": NodeType(resources={"CPU": 1}, usd_per_hour=36.0)}
CAP_USD = 0.01  # one second of the worker
JOB = {"lr": 0.01, "freeze_epochs": 0, "epochs": 4, "patience": None, "num_workers": 1, "batch_size": 8,
       "image_size": 32, "max_cost_usd": CAP_USD}  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = {"TRAINYARD_NODE_TYPES": json.dumps({name: t.model_dump() for name, t in RATES.items()})}
    with own_stack(tmp_path_factory.mktemp("spending"), env=env) as local:
        yield local


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> Iterator[httpx.Client]:
    with stack.api_client(timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def capped(stack: LocalStack, api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = make_shapes(tmp_path_factory.mktemp("data") / "shapes", train_per_class=8, valid_per_class=3, size=32)
    upload_folder(stack.s3_client(), data, "spending", "shapes")
    job = wait_job(api, submit(api, "s3://spending/shapes", **JOB), timeout=420)
    image = next((data / "valid" / "circle").iterdir()).read_bytes()
    return {"job": job, "events": api.get(f"/v1/jobs/{job['id']}/events").json()["events"], "image": image}


def test_a_job_stops_at_its_cost_cap_with_the_figures(capped: dict[str, Any]) -> None:
    job = capped["job"]
    assert job["status"] == "failed", job
    error = job["error"]
    assert (error["code"], error["phase"]) == ("cost_cap_reached", "training")
    assert f"of its max_cost_usd ${CAP_USD:.4f}" in error["message"] and "another epoch" in error["message"]
    unfrozen = [m for m in job["metrics"] if m["stage"] == "unfrozen"]
    assert [m["epoch"] for m in unfrozen] == [1], unfrozen  # stopped after its first epoch, of four
    stop = [e for e in capped["events"] if e["kind"] == "early_stop"]
    assert stop and "max_cost_usd" in stop[0]["message"]
    # Priced at the configured rate: what the worker held, a cent a second, which the error's figure is.
    cost = job["cost"]
    [rank] = [u for u in cost["usage"] if u["work"] == "training"]
    assert rank["usd_per_hour"] == 36.0 and rank["estimated_usd"] == pytest.approx(rank["seconds"] / 100, rel=1e-3)
    said = float(error["message"].split("estimated at $", 1)[1].split(" ", 1)[0])
    next_epoch = float(error["message"].split("(about $", 1)[1].split(")", 1)[0])
    assert said + next_epoch > CAP_USD  # why it stopped: another epoch would have passed the cap
    assert said <= cost["estimated_usd"] + 1e-4  # measured at the epoch's end, before the workers left


def test_its_best_checkpoint_so_far_is_kept_and_deployed(capped: dict[str, Any], api: httpx.Client) -> None:
    job = capped["job"]
    assert job["best"]["epoch"] == max(m["epoch"] for m in job["metrics"])
    assert f"epoch {job['best']['epoch']}" in job["error"]["message"]
    assert job["model"] and job["model"]["id"] in job["error"]["message"]
    assert "model.pt" in job["artifacts"]
    prediction = api.post(f"/v1/models/{job['model']['id']}/predict", content=capped["image"])
    assert prediction.status_code == 200, prediction.text
    assert "trainyard_jobs_cost_capped 1.0" in api.get("/metrics").text


def _admin(stack: LocalStack, *args: str) -> dict[str, Any]:
    """`python -m service.admin ...` where the API's configuration is, as an operator runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "service.admin", *args], env=stack.env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_a_tenant_over_its_monthly_budget_gets_new_jobs_refused(
    stack: LocalStack, api: httpx.Client, capped: dict[str, Any]
) -> None:
    tenant = stack.config.env_overrides.get("TRAINYARD_BOOTSTRAP_TENANT", "admin")  # the stack's own key
    spent = capped["job"]["cost"]["estimated_usd"]
    assert _admin(stack, "tenants", "budget", tenant, "--monthly-usd", f"{spent / 2:.6f}")["monthly_budget_usd"]
    try:
        refused = api.post("/v1/jobs", json={"dataset_uri": "s3://spending/shapes", **JOB})
        assert refused.status_code == 402, refused.text
        figures = refused.json()["error"]["budget"]
        assert figures["tenant"] == tenant and figures["spent_usd"] == pytest.approx(spent, abs=1e-5)
        assert figures["budget_usd"] == pytest.approx(spent / 2, abs=1e-5)
        metrics = api.get("/metrics").text
        assert f'trainyard_tenant_budget_usd{{tenant="{tenant}"}}' in metrics
        assert f'trainyard_tenant_spend_usd{{tenant="{tenant}"}}' in metrics
    finally:
        _admin(stack, "tenants", "budget", tenant, "--none")

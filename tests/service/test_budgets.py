"""Spending limits at the API: a tenant's monthly budget (set with the admin command) refuses its new jobs with
402 and the figures once spent; a job's own max_cost_usd is validated like any parameter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date

import pytest
from typer.testing import CliRunner

from core.cost import WorkUsage, job_cost
from core.settings import NodeType, get_settings
from service.admin import app as admin_app
from tests.utils.api_server import Api

RATE = {"cpu": NodeType(resources={"CPU": 1}, usd_per_hour=3.6)}  # $0.001 a second


def spend(api: Api, job_id: str, seconds: float) -> None:
    """Record `seconds` of one CPU on the job, as its driver would: $0.001 a second."""
    usage = [WorkUsage(work="training", node_id="n", node_type="cpu", cpus=1, gpus=0, seconds=seconds, rank=0)]
    api.store.set_result(job_id, "cost", job_cost(usage, RATE, date(2026, 11, 1)).model_dump(mode="json"))


@pytest.fixture
def admin(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("TRAINYARD_DATABASE_URL", api.settings.resolved_database_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def budget(runner: CliRunner, *args: str) -> dict[str, object]:
    result = runner.invoke(admin_app, ["tenants", "budget", *args])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_a_tenant_over_its_budget_gets_new_jobs_refused_with_the_figures(api: Api, admin: CliRunner) -> None:
    team = api.tenant_client("team-a")
    spend(api, team.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets"}).json()["id"], seconds=3000)  # $3
    assert budget(admin, "team-a", "--monthly-usd", "5")["monthly_budget_usd"] == 5.0
    assert team.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets"}).status_code == 202  # $3 of $5

    assert budget(admin, "team-a", "--monthly-usd", "2.5")["monthly_budget_usd"] == 2.5
    refused = team.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets"})
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "spent $3.00 of its monthly budget $2.50" in error["message"] and "tenants budget team-a" in error["message"]
    figures = error["budget"]
    assert (figures["tenant"], figures["spent_usd"], figures["budget_usd"]) == ("team-a", 3.0, 2.5)
    assert figures["period_start"][8:10] == "01" and figures["period_start"] < figures["period_end"]
    # Another tenant's jobs, and reads, are not affected.
    assert api.tenant_client("team-b").post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets"}).status_code == 202
    assert team.get("/v1/jobs").status_code == 200

    text = api.http.get("/metrics").text
    assert 'trainyard_tenant_spend_usd{tenant="team-a"} 3.0' in text
    assert 'trainyard_tenant_budget_usd{tenant="team-a"} 2.5' in text
    assert 'trainyard_http_requests_total{method="POST",route="/v1/jobs",status="402"} 1.0' in text

    budget(admin, "team-a", "--none")
    assert team.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets"}).status_code == 202


def test_the_budget_command_needs_one_of_its_options(admin: CliRunner) -> None:
    result = admin.invoke(admin_app, ["tenants", "budget", "team-a"])
    assert result.exit_code == 2 and "--monthly-usd" in result.output


@pytest.mark.parametrize("bad", [0, -1, "lots"])
def test_max_cost_usd_must_be_a_positive_amount(api: Api, bad: object) -> None:
    response = api.http.post("/v1/jobs", json={"dataset_uri": "s3://bucket/pets", "max_cost_usd": bad})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "max_cost_usd"


def test_a_capped_job_is_counted_on_metrics(api: Api) -> None:
    job = api.create_job(max_cost_usd=0.5)
    assert job["params"]["max_cost_usd"] == 0.5
    api.store.fail(job["id"], "cost_cap_reached", "stopped at its cost cap")
    assert "trainyard_jobs_cost_capped 1.0" in api.http.get("/metrics").text

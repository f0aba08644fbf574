"""infra/grafana/trainyard.json queries only metrics that the real API exports on /metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from service_testkit import Api

DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "trainyard.json"

# What a PromQL expression contains besides metric names.
_LABEL_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRINGS = re.compile(r'"[^"]*"')
_IDENTIFIER = re.compile(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "unknown": ("",),
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions and aggregations are followed by '(')."""
    for pattern in (_STRINGS, _LABEL_MATCHERS, _RANGES, _GROUPING):
        expr = pattern.sub(" ", expr)
    return {m.group(0) for m in _IDENTIFIER.finditer(expr) if m.group(0).lower() not in _KEYWORDS}


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    panels = [*dashboard["panels"], *(p for row in dashboard["panels"] for p in row.get("panels", []))]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def exported_names(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    return names


def test_the_expression_parser_finds_metric_names() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, route) (rate(x_bucket{route="/v1/jobs"}[5m]))) / max(y_total) or z'
    assert metric_names(expr) == {"x_bucket", "y_total", "z"}


def test_every_metric_the_dashboard_queries_is_exported(api: Api) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 10
    queried = set().union(*(metric_names(e) for e in exprs))
    api.create_job()  # so the request counters have a sample too
    exported = exported_names(api.http.get("/metrics").text)
    assert queried <= exported, f"not exported: {sorted(queried - exported)}"
    # The job metrics an operator watches are all on the dashboard.
    for name in (
        "trainyard_jobs",
        "trainyard_jobs_running_by_phase",
        "trainyard_job_phase_duration_seconds_sum",
        "trainyard_job_queue_wait_seconds_bucket",
        "trainyard_training_images_total",
        "trainyard_s3_fetched_bytes_total",
    ):
        assert name in queried


def test_every_panel_reads_the_dashboards_prometheus_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${" + variable["name"] + "}"

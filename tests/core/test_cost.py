"""Pricing a job's Ray work: CPU-/GPU-seconds and the estimate from the node-type rate table."""

from __future__ import annotations

from datetime import date

import pytest

from core.cost import WorkUsage, job_cost
from core.settings import DEFAULT_NODE_TYPES, NodeType, Settings

TYPES = {
    "cpu": NodeType(resources={"CPU": 4}, usd_per_hour=0.36),
    "a10g": NodeType(resources={"CPU": 4, "GPU": 1}, usd_per_hour=1.2),
    "h100x8": NodeType(resources={"CPU": 192, "GPU": 8}, usd_per_hour=80.0),
}
AS_OF = date(2026, 11, 1)


def usage(cpus: float, gpus: float, seconds: float, node_type: str | None = None) -> WorkUsage:
    return WorkUsage(work="training", node_id="n1", node_type=node_type, cpus=cpus, gpus=gpus, seconds=seconds)


def test_seconds_are_resources_times_time() -> None:
    cost = job_cost([usage(1, 0, 100), usage(1, 0, 50), usage(2, 1, 10)], TYPES, AS_OF)
    assert (cost.cpu_seconds, cost.gpu_seconds) == (170, 10)
    assert cost.rates_as_of == AS_OF


def test_work_is_charged_its_share_of_the_node_type_it_ran_on() -> None:
    # 1 of 8 H100s for an hour: an eighth of the node's hourly rate, whatever the CPUs.
    assert job_cost([usage(1, 1, 3600, "h100x8")], TYPES, AS_OF).estimated_usd == pytest.approx(10.0)
    # 2 of 4 CPUs for an hour on a CPU node: half its rate.
    assert job_cost([usage(2, 0, 3600, "cpu")], TYPES, AS_OF).estimated_usd == pytest.approx(0.18)


def test_a_node_without_a_known_type_is_priced_as_the_cheapest_that_fits() -> None:
    assert job_cost([usage(1, 1, 3600)], TYPES, AS_OF).estimated_usd == pytest.approx(1.2)  # a10g, not h100x8
    assert job_cost([usage(1, 0, 3600, "unknown")], TYPES, AS_OF).estimated_usd == pytest.approx(0.09)


def test_work_no_type_can_hold_costs_nothing_rather_than_guessing() -> None:
    assert job_cost([usage(1, 16, 3600)], TYPES, AS_OF).estimated_usd == 0


def test_rates_are_configurable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_NODE_TYPES", '{"gpu": {"resources": {"CPU": 8, "GPU": 1}, "usd_per_hour": 2.5}}')
    monkeypatch.setenv("TRAINYARD_RATES_AS_OF", "2026-10-01")
    settings = Settings()
    assert settings.node_types["gpu"].usd_per_hour == 2.5
    assert settings.rates_as_of == date(2026, 10, 1)
    assert Settings.model_fields["node_types"].default_factory is not None
    assert all(t.usd_per_hour for t in DEFAULT_NODE_TYPES.values())


def test_a_node_is_priced_by_its_type_name_as_kuberay_and_the_launcher_name_it() -> None:
    # The chart's groups: two GPU types with the same resources; the name decides which rate applies.
    chart = {
        "gpu-a10g": NodeType(resources={"CPU": 3, "GPU": 1}, usd_per_hour=1.006, spot_usd_per_hour=0.45),
        "gpu-l4": NodeType(resources={"CPU": 3, "GPU": 1}, usd_per_hour=0.805, spot_usd_per_hour=0.35),
        "cpu": NodeType(resources={"CPU": 7}, usd_per_hour=0.384),
    }
    a10g = job_cost([usage(1, 1, 3600, "gpu-a10g")], chart, AS_OF)
    assert a10g.estimated_usd == pytest.approx(1.006)  # not the cheaper L4 that would also fit
    assert a10g.usage[0].usd_per_hour == pytest.approx(1.006) and a10g.usage[0].estimated_usd == pytest.approx(1.006)
    # CPU work on the CPU group: its share of the group's rate, never $0.
    assert job_cost([usage(1, 0, 3600, "cpu")], chart, AS_OF).estimated_usd == pytest.approx(0.384 / 7, abs=1e-6)


def test_spot_capacity_is_billed_at_the_spot_rate() -> None:
    spot = {"gpu-a10g": NodeType(resources={"CPU": 3, "GPU": 1}, usd_per_hour=1.006, spot_usd_per_hour=0.45,
                                 capacity_type="spot")}  # fmt: skip
    assert job_cost([usage(1, 1, 7200, "gpu-a10g")], spot, AS_OF).estimated_usd == pytest.approx(0.9)
    with pytest.raises(ValueError, match="spot_usd_per_hour"):
        NodeType(resources={"CPU": 1}, usd_per_hour=1.0, capacity_type="spot")


def test_the_items_add_up_to_the_total() -> None:
    cost = job_cost([usage(1, 0, 1000, "cpu"), usage(2, 1, 500, "a10g"), usage(1, 0, 10)], TYPES, AS_OF)
    assert sum(u.estimated_usd or 0 for u in cost.usage) == pytest.approx(cost.estimated_usd, abs=1e-6)
    assert cost.total_usd is None and cost.spent_usd == cost.estimated_usd

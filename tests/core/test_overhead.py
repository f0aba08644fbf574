"""Scale-up overhead: which job pays a started node's boot and its idle tail, at the node's whole rate."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.cost import WorkUsage
from core.overhead import NodeLife, Span, Wait, scale_up_overhead, spans, waits_from_events
from core.settings import NodeType

TYPES = {"cpu": NodeType(resources={"CPU": 2}, usd_per_hour=3.6)}  # $0.001 a second


def node(node_id: str, started: float, ended: float | None, head: bool = False) -> NodeLife:
    return NodeLife(node_id=node_id, is_head=head, started_at=started, ended_at=ended)


def test_a_node_started_for_the_job_costs_its_boot_and_its_idle_tail() -> None:
    # The job waited from t=100; the node joined at t=130; the job's work ran on it 131-200; released at 260.
    overhead = scale_up_overhead(
        "job-a",
        {"n1": "cpu"},
        [Wait(since=100, until=131)],
        [Span("job-a", "n1", 131, 200)],
        {"n1": node("n1", 130, 260)},
        TYPES,
    )
    [n1] = overhead.nodes
    assert (n1.boot_seconds, n1.idle_seconds, n1.usd_per_hour) == (30, 60, 3.6)
    assert overhead.estimated_usd == pytest.approx(0.09) and overhead.settled


def test_the_tail_is_unsettled_while_the_node_runs_and_goes_to_the_last_job_on_it() -> None:
    both = [Span("job-a", "n1", 131, 200), Span("job-b", "n1", 210, 300)]
    alive = {"n1": node("n1", 130, None)}
    first = scale_up_overhead("job-a", {"n1": "cpu"}, [Wait(100, 131)], both, alive, TYPES)
    assert first.nodes[0].boot_seconds == 30 and first.nodes[0].idle_seconds == 0 and first.settled
    second = scale_up_overhead("job-b", {"n1": "cpu"}, [], both, alive, TYPES)
    assert second.nodes[0].idle_seconds is None and not second.settled  # its tail is not over yet
    released = scale_up_overhead("job-b", {"n1": "cpu"}, [], both, {"n1": node("n1", 130, 360)}, TYPES)
    assert released.nodes[0].boot_seconds == 0 and released.nodes[0].idle_seconds == 60 and released.settled


def test_a_node_that_was_there_before_the_wait_or_the_head_is_no_overhead() -> None:
    lives = {"n1": node("n1", 10, None), "head": node("head", 0, None, head=True)}
    work = [Span("job-a", "n1", 131, 200), Span("job-a", "head", 120, 130)]
    overhead = scale_up_overhead("job-a", {"n1": "cpu", "head": None}, [Wait(100, 131)], work, lives, TYPES)
    # n1 joined long before the job waited: no boot; it still runs, so its tail is pending.
    assert [(n.node_id, n.boot_seconds, n.idle_seconds) for n in overhead.nodes] == [("n1", 0, None)]


def test_waits_and_spans_come_from_the_job_record() -> None:
    at = datetime(2026, 11, 1, 12, 0, 10, tzinfo=UTC)
    waits = waits_from_events(
        [("waiting", at, {"since": "2026-11-01T12:00:08+00:00"}), ("resources", at.replace(second=40), None)]
    )
    assert waits == [Wait(since=at.timestamp() - 2, until=at.timestamp() + 30)]
    usage = [
        WorkUsage(work="features", node_id="n1", node_type="cpu", cpus=1, gpus=0, seconds=5, started_at=50),
        WorkUsage(work="training", node_id="n1", node_type="cpu", cpus=1, gpus=0, seconds=5),  # an older record
    ]
    assert spans("job-a", usage) == [Span("job-a", "n1", 50, 55)]

"""The cost cap's arithmetic, as each Ray Train rank runs it at an epoch's end."""

from __future__ import annotations

import time

from jobs.cost_cap import CapWatch, CostCap, epoch_check, reached_before_training

RATE = 3.6  # USD an hour: $0.001 a second for each rank


def two_ranks(usd: float) -> float:
    return 2 * usd  # what the all-reduce gives when the other rank spent the same


def test_training_stops_before_an_epoch_that_would_pass_the_cap() -> None:
    cap = CostCap(max_usd=0.06, spent_before_usd=0.01, worker_cpus=1, worker_gpus=0)
    watch = CapWatch(cap, time.time() - 10, RATE)  # each rank has held its CPU for 10 s
    # Spent 0.01 + 2 x 0.01 = 0.03; the next epoch (like the last, 0.02) would end at 0.05: within 0.06.
    assert watch.check(2, two_ranks) is None
    watch.started_at -= 1  # one more second each: 0.032 spent, and the next epoch looks like 0.002
    assert watch.check(3, two_ranks) is None
    watch.started_at -= 8  # 0.048 spent, the last epoch cost 0.016: another would end past 0.06
    hit = watch.check(4, two_ranks)
    assert hit is not None and hit.epoch == 4 and hit.max_usd == 0.06
    assert abs(hit.spent_usd - 0.048) < 1e-3 and abs(hit.next_epoch_usd - 0.016) < 1e-3
    assert "of its max_cost_usd $0.0600" in hit.message()


def test_a_cap_already_reached_before_training_is_known_without_a_rank() -> None:
    reached = reached_before_training(CostCap(max_usd=0.01, spent_before_usd=0.02, worker_cpus=1, worker_gpus=0), 1)
    assert reached is not None and reached.spent_usd == 0.02
    assert reached_before_training(CostCap(max_usd=1, spent_before_usd=0.02, worker_cpus=1, worker_gpus=0), 1) is None


def test_as_the_loops_epoch_check_it_says_why_and_reports_the_figures() -> None:
    cap = CostCap(max_usd=0.01, spent_before_usd=0.0, worker_cpus=1, worker_gpus=0)
    why, facts = epoch_check(CapWatch(cap, time.time() - 10, RATE))(2, two_ranks) or ("", {})
    assert why.startswith("max_cost_usd: the job's work is estimated at $0.02")
    assert '"epoch":2' in facts["cost_cap"]

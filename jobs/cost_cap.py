"""A job's spending limit (`max_cost_usd`) as its training enforces it.

The job's work before training (feature extraction) is priced by the driver; training is priced where it runs:
each Ray Train rank knows its node's type and so its rate (`core.cost.work_rate`, looked up by `jobs.train_loop`:
this module is pydantic only, as the training loop's config that carries it), and at the end of every epoch
the ranks add up what they have held so far (an all-reduce, so every rank takes the same decision). Training stops
before an epoch that would take the job past its cap, estimating the next epoch at the cost of the last one, and
keeps the checkpoint of the epoch it stopped after. The check runs at epoch ends, where a checkpoint exists, so a
job can pass its cap by Ray Train's start-up and its first epoch (a cap smaller than those stops it after that
epoch), and by the error of taking the last epoch as the next one's estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel


class CostCap(BaseModel):
    """What training needs to know of the job's cap."""

    max_usd: float
    spent_before_usd: float  # the job's work priced before training began (features, earlier attempts)
    worker_cpus: float
    worker_gpus: float


class CostCapHit(BaseModel):
    """Why training stopped: the figures the job's error names."""

    spent_usd: float
    max_usd: float
    next_epoch_usd: float
    epoch: int

    def message(self) -> str:
        return (
            f"the job's work is estimated at ${self.spent_usd:.4f} of its max_cost_usd ${self.max_usd:.4f}, and "
            f"another epoch (about ${self.next_epoch_usd:.4f}) would pass it"
        )


def reached_before_training(cap: CostCap, epoch: int) -> CostCapHit | None:
    """The cap, already reached by the work before training (training would only add to it)."""
    if cap.spent_before_usd < cap.max_usd:
        return None
    return CostCapHit(spent_usd=cap.spent_before_usd, max_usd=cap.max_usd, next_epoch_usd=0.0, epoch=epoch)


class CapWatch:
    """One rank's view: its own rate, and what all ranks have spent at each epoch's end."""

    def __init__(self, cap: CostCap, started_at: float, usd_per_hour: float) -> None:
        self.cap = cap
        self.started_at = started_at
        self.usd_per_second = usd_per_hour / 3600
        self._spent_at_last_epoch = 0.0

    def check(self, epoch: int, sum_across_ranks: Callable[[float], float]) -> CostCapHit | None:
        """At an epoch's end, on every rank (it is collective): the hit when another epoch would pass the cap."""
        training = sum_across_ranks(self.usd_per_second * (time.time() - self.started_at))
        last_epoch = training - self._spent_at_last_epoch
        self._spent_at_last_epoch = training
        spent = self.cap.spent_before_usd + training
        if spent + last_epoch <= self.cap.max_usd:
            return None
        return CostCapHit(
            spent_usd=round(spent, 6), max_usd=self.cap.max_usd, next_epoch_usd=round(last_epoch, 6), epoch=epoch
        )


def epoch_check(watch: CapWatch) -> Callable[[int, Callable[[float], float]], tuple[str, dict[str, str]] | None]:
    """The cap as `jobs.unfrozen.run_unfrozen`'s `epoch_check`: why to stop and what to report, or None."""

    def check(epoch: int, sum_across_ranks: Callable[[float], float]) -> tuple[str, dict[str, str]] | None:
        hit = watch.check(epoch, sum_across_ranks)
        if hit is None:
            return None
        # A JSON string: Ray Train may flatten nested reported metrics; `jobs.stages.fine_tune` reads it back.
        return f"max_cost_usd: {hit.message()}", {"cost_cap": hit.model_dump_json()}

    return check

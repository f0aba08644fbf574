"""The README's first command runs every stage: the demo's parameters on its generated shapes.

`finished_job` (tests/conftest.py) is the demo's own code (`infra.local.demo.run`) run on the shared stack: it
uploads the generated shapes, POSTs the demo's job, follows it, prints one line per stage and asks the
deployed model about unseen images. On these shapes the head-only model is imperfect and unfreezing pays,
so the job must go through the unfrozen stage on two Ray Train DDP workers and deploy an unfrozen model.
"""

from __future__ import annotations

import re

import pytest

from infra.local.demo import DEMO_JOB
from infra.local.sample_data import SHAPES
from infra.local.stages_report import SKIPPED, STAGES, stage_results
from jobs.unfrozen import MIN_DELTA
from tests.utils.jobs import FinishedJob, kinds

pytestmark = pytest.mark.e2e


def test_every_stage_of_the_demo_runs_and_prints_its_result(finished_job: FinishedJob) -> None:
    results = stage_results(finished_job.job, finished_job.events)
    assert list(results) == list(STAGES)
    assert not [f"{stage}: {line}" for stage, line in results.items() if line.startswith(SKIPPED)], results
    assert results["unfrozen"].startswith("Ray Train DDP on 2 workers, 2 epoch(s)"), results["unfrozen"]
    printed = finished_job.printed
    for stage, line in results.items():
        assert f"  {stage:<9} {line}" in printed, f"the demo did not print its {stage} line:\n{printed}"
    for shape in SHAPES:  # the deployed model's answer about an unseen image of each shape
        assert re.search(rf"^  {shape:<8} -> \w+ \(\d+\.\d%\)$", printed, re.MULTILINE), printed


def test_where_unfrozen_training_pays_the_job_unfreezes_and_deploys_the_unfrozen_model(
    finished_job: FinishedJob,
) -> None:
    """Measured on this set: head-only 24/30 at validation loss 0.612, then the unfrozen epochs 0.581 and 0.408
    (0.547 and 0.540 while the body's batch-norm statistics still trained). With those statistics training, what
    paid was mostly the head training on, on augmented images: with the body's LR at zero the unfrozen epochs
    ended at the same loss (0.523 against 0.520). No generated set was found whose frozen features cannot
    separate the classes while one unfrozen epoch can (benchmarks/README.md, "Time to a deployed model")."""
    job, events = finished_job.job, finished_job.events
    (head_only,) = [e for e in job["metrics"] if e["stage"] == "frozen"]
    unfrozen = [e for e in job["metrics"] if e["stage"] == "unfrozen"]
    assert head_only["accuracy"] < 1.0, "the head alone is perfect here: the unfrozen stage would be skipped"
    # The trial (here the whole first epoch) beat the head-only model's validation loss: training went on.
    (trial,) = kinds(events, "unfreeze_trial")
    assert trial["data"]["pays"] is True, trial["message"]
    assert unfrozen[0]["valid_loss"] < head_only["valid_loss"] - MIN_DELTA
    assert len(unfrozen) == DEMO_JOB["epochs"] and not kinds(events, "early_stop")
    assert job["training"]["world_size"] == DEMO_JOB["num_workers"] == 2
    # The deployed model is an unfrozen checkpoint, better than the head-only one, scored from its own logits.
    print(f"\nhead-only {head_only['valid_loss']:.4f}; unfrozen {[e['valid_loss'] for e in unfrozen]}")
    assert job["best"]["stage"] == "unfrozen" and job["best"]["value"] > head_only["accuracy"]
    assert kinds(events, "evaluated") and job["evaluation"]["accuracy"] == job["best"]["value"]
    assert job["model"] and job["model"]["id"]

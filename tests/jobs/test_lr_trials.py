"""The trials LR sweep: real short trainings at several LRs on Ray Tune, ASHA stopping the laggards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.spec import TrialsSweep
from infra.local.stack import LOOPBACK, LocalStack
from jobs.stages.lr_trials import LrTrialsResult, middle_out, trial_lrs

REPO = Path(__file__).resolve().parents[2]


# Run as a Ray driver in a process of its own, as the job driver runs: it reads the stack's Ray address and
# auth token from its environment at start-up (this test process imported Ray before the stack existed).
SWEEP = """
import json, sys
import numpy as np
from core.settings import get_settings
from core.spec import TrialsSweep
from jobs.features import Features
from jobs.stages.lr_trials import lr_trials
from test_lr_trials import _blobs
import ray
ray.init()
x, y = _blobs(96, seed=1)
vx, vy = _blobs(48, seed=2)
features = Features(train_x=x, train_y=y, valid_x=vx, valid_y=vy, images_per_second=0.0)
sweep = TrialsSweep.model_validate_json(sys.argv[1])
result = lr_trials("job-trials-test", features, 3, sweep, batch_size=16, seed=0, settings=get_settings())
print(result.model_dump_json())
"""


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Three well separated clusters in 32 dimensions: a good LR reaches ~100% in a few epochs, a tiny one cannot.
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(0, 1, size=(3, 32))
    y = rng.integers(0, 3, size=n)
    return (centres[y] + rng.normal(0, 0.5, size=(n, 32))).astype(np.float32), y.astype(np.int64)


def test_trial_lrs_are_log_spaced_and_include_both_ends() -> None:
    lrs = trial_lrs(TrialsSweep(method="trials", trials=5, min_lr=1e-5, max_lr=1e-1))
    assert lrs == pytest.approx([1e-5, 1e-4, 1e-3, 1e-2, 1e-1])


def test_trials_start_from_the_middle_of_the_range() -> None:
    assert middle_out([1.0, 2.0, 3.0, 4.0, 5.0]) == [3.0, 2.0, 4.0, 1.0, 5.0]
    assert middle_out([1.0, 2.0, 3.0, 4.0]) == [2.0, 3.0, 1.0, 4.0]


def test_trials_run_on_ray_tune_and_asha_stops_the_laggards(ray_stack: LocalStack) -> None:
    sweep = TrialsSweep(method="trials", trials=4, min_lr=1e-6, max_lr=1e-1, epochs=4, grace_epochs=1)
    address = f"{LOOPBACK}:{ray_stack.config.gcs_port}"
    env = ray_stack.env() | {"RAY_ADDRESS": address, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests' / 'jobs'}"}
    run = subprocess.run(
        [sys.executable, "-c", SWEEP, sweep.model_dump_json()], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = LrTrialsResult.model_validate_json(run.stdout.strip().splitlines()[-1])
    assert [t.lr for t in result.trials] == pytest.approx(trial_lrs(sweep))
    # ASHA (reduction factor 2) keeps half the field at each rung: some trials stop before the last epoch.
    assert any(t.stopped_early for t in result.trials)
    assert any(t.epochs == sweep.epochs for t in result.trials)
    assert result.trial_epochs == sum(t.epochs for t in result.trials) < sweep.trials * sweep.epochs
    # The winner is a finished trial with the lowest validation loss, and it learned: not the tiniest LR.
    winner = next(t for t in result.trials if t.lr == result.suggested_lr)
    assert not winner.stopped_early and winner.accuracy > 0.9
    assert winner.valid_loss == min(t.valid_loss for t in result.trials if not t.stopped_early)
    assert result.suggested_lr > 1e-4

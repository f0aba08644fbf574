"""Unfrozen training past the planned epochs while it pays (`max_epochs`), in one process without Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from core.backbones import build_classifier, channels_last, local_pretrained_weights
from infra.local.sample_data import make_shapes
from jobs.stages.validate import validate_dataset
from jobs.unfrozen import EXTENSION_LR_DECAY, MIN_DELTA, Worker, datasets, run_unfrozen
from jobs.unfrozen_config import TrainLoopConfig


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("shapes"), train_per_class=6, valid_per_class=3, size=32)


def _run(root: Path, sink: list[dict[str, Any]] | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The epochs' reports (`sink`, when given, gets every report, the trial's included)."""
    torch.manual_seed(0)
    data = validate_dataset(root, str(root), 1.0)
    cfg = TrainLoopConfig.model_validate(
        {
            "job_id": "job-test",
            "dataset_uri": "s3://bucket/shapes",
            "classes": data.summary.classes,
            "train": data.train,
            "valid": data.valid,
            "arch": "efficientnet_lite0",
            "weights_uri": None,
            "image_size": 32,
            "batch_size": 6,
            "epochs": 1,
            "head_lr": 3e-3,
            "body_lr": 3e-5,
            "seed": 0,
            "epoch_offset": 1,
        }
        | overrides
    )
    model = channels_last(build_classifier(cfg.arch, len(cfg.classes), local_pretrained_weights(cfg.arch)))
    reports: list[dict[str, Any]] = [] if sink is None else sink
    worker = Worker(rank=0, world=1, device=torch.device("cpu"))
    run_unfrozen(cfg, worker, model, model, *datasets(root, cfg), lambda m, state, logits: reports.append(m))
    return [r for r in reports if not r.get("trial")]


def test_training_goes_on_while_each_epoch_lowers_the_validation_loss_and_says_why(shapes: Path) -> None:
    # Any first epoch beats a baseline of 100, so the first decision is always to go on.
    epochs = _run(shapes, max_epochs=3, patience=1, baseline_valid_loss=100.0)
    first = epochs[0]["extend"]
    assert first["unfrozen_epoch"] == 2 and first["epoch"] == 3 and first["max_epochs"] == 3
    assert first["previous_valid_loss"] == 100.0 and first["valid_loss"] == round(epochs[0]["valid_loss"], 5)
    assert first["lr_scale"] == EXTENSION_LR_DECAY
    assert [e["epoch"] for e in epochs] == list(range(2, 2 + len(epochs))) and len(epochs) <= 3
    best = 100.0
    for number, epoch in enumerate(epochs, start=1):  # every decision follows from the losses it reports
        improved = epoch["valid_loss"] < best - MIN_DELTA
        best = epoch["valid_loss"] if improved else best
        if number < 3:
            assert ("extend" in epoch) == improved, epoch
            assert ("stop_reason" in epoch) == (not improved), epoch
            if not improved:
                assert "did not fall" in epoch["stop_reason"] and epoch is epochs[-1]
        elif improved:
            assert "max_epochs (3) reached while the validation loss still fell" in epoch["stop_reason"]


def test_without_patience_or_max_epochs_exactly_the_planned_epochs_run(shapes: Path) -> None:
    assert len(_run(shapes, max_epochs=3, patience=None, baseline_valid_loss=100.0)) == 1
    only = _run(shapes, max_epochs=None, patience=1, baseline_valid_loss=100.0)
    assert len(only) == 1 and "extend" not in only[0] and "stop_reason" not in only[0]


def _reports(root: Path, **overrides: Any) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    _run(root, sink=reports, **overrides)
    return reports


@pytest.mark.parametrize(("baseline", "pays"), [(100.0, True), (0.0, False)])
def test_a_trial_as_long_as_the_first_epoch_reports_its_verdict_with_that_epoch(
    shapes: Path, baseline: float, pays: bool
) -> None:
    # 18 images at a batch of 6: 3 steps an epoch, fewer than the 512 trial images, so the trial is epoch 1.
    reports = _reports(shapes, max_epochs=None, epochs=2, patience=1, baseline_valid_loss=baseline)
    assert not [r for r in reports if r.get("trial")], "no separate mid-epoch trial"
    assert reports[0]["trial_verdict"] == {"pays": pays, "steps": 3}
    assert ("stop_reason" in reports[0]) == (not pays) and len(reports) == (2 if pays else 1)


def test_a_short_trial_reports_mid_epoch_and_the_epoch_carries_no_verdict(shapes: Path) -> None:
    reports = _reports(shapes, max_epochs=None, patience=1, baseline_valid_loss=100.0, trial_images=6)
    trial, epoch = reports
    assert trial["trial"] is True and trial["pays"] is True and trial["steps"] == 1
    assert "trial_verdict" not in epoch

"""Waiting for a job away from a terminal: one plain line per change, no control codes."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from trainyard.models import Job
from trainyard.progress import LiveDisplay, PlainDisplay, make_display

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def _job(status: str, phase: str | None, progress: float, epochs: int = 0, **extra: Any) -> Job:
    metrics = [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "valid_loss": 0.5, "accuracy": 0.9} for i in range(epochs)]
    return Job(
        id="job-1",
        status=status,  # type: ignore[arg-type]
        phase=phase,
        progress=progress,
        created_at=NOW,
        params={"epochs": 2, "freeze_epochs": 1},
        metrics=metrics,
        **extra,
    )


def test_plain_output_prints_one_line_per_change() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    display = make_display(console)
    assert isinstance(display, PlainDisplay)
    sequence = [
        _job("queued", None, 0.0),
        _job("running", "fetching", 0.02),
        _job("running", "fetching", 0.04),  # same phase and epoch: no new line
        _job("running", "training", 0.4, epochs=1),
        _job("running", "training", 0.6, epochs=2),
        _job("failed", "training", 0.6, epochs=2, error={"code": "x", "message": "disk full", "phase": "training"}),
    ]
    with display:
        for job in sequence:
            display.update(job)
    lines = out.getvalue().splitlines()
    assert lines == [
        "job job-1  queued  0%",
        "job job-1  running fetching  2%",
        "job job-1  running training  40%  epoch 1/3  train_loss 1, valid_loss 0.5, accuracy 0.9",
        "job job-1  running training  60%  epoch 2/3  train_loss 0.5, valid_loss 0.5, accuracy 0.9",
        "job job-1  failed in training: disk full  60%  epoch 2/3  train_loss 0.5, valid_loss 0.5, accuracy 0.9",
    ]
    assert "\x1b" not in out.getvalue()


def test_a_terminal_gets_the_live_display() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    display = make_display(console)
    assert isinstance(display, LiveDisplay)
    with display:
        display.update(_job("running", "training", 0.5, epochs=2))
    assert "epoch 2/3" in console.file.getvalue()  # type: ignore[attr-defined]

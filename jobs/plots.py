"""The job's pictures, as the fastai lesson shows them: the LR finder curve, training curves, confusion matrix."""

from __future__ import annotations

import io
from typing import Any

# Figures made directly, as matplotlib recommends for servers, not through pyplot: no display backend and no
# global figure registry to close, and 0.3 s less import on the job's path (the LR plot waits for it).
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def lr_sweep_png(lrs: list[float], losses: list[float], suggestions: dict[str, float], chosen: float) -> bytes:
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    markers = {"valley": "o", "steep": "^", "minimum": "s"}
    for name, lr in suggestions.items():
        nearest = min(range(len(lrs)), key=lambda i: abs(lrs[i] - lr))
        ax.plot(lr, losses[nearest], markers.get(name, "x"), label=f"{name}: {lr:.2e}")
    ax.axvline(chosen, color="grey", linestyle="--", linewidth=1)
    ax.legend()
    ax.set_title("LR range test")
    return _png(figure)


def training_curves_png(epochs: list[dict[str, Any]]) -> bytes:
    figure = Figure(figsize=(10, 4), layout="constrained")
    losses, accuracy = figure.subplots(1, 2)
    x = [e["epoch"] for e in epochs]
    losses.plot(x, [e["train_loss"] for e in epochs], marker="o", label="train")
    losses.plot(x, [e["valid_loss"] for e in epochs], marker="o", label="valid")
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss")
    losses.legend()
    accuracy.plot(x, [e["accuracy"] for e in epochs], marker="o", color="green")
    accuracy.set_xlabel("epoch")
    accuracy.set_ylabel("validation accuracy")
    unfrozen = [e["epoch"] for e in epochs if e["stage"] == "unfrozen"]
    for ax in (losses, accuracy):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if unfrozen:
            ax.axvline(unfrozen[0] - 0.5, color="grey", linestyle="--", linewidth=1)  # the unfreeze
    figure.suptitle("frozen (head on cached features) | unfrozen (whole network, DDP)")
    return _png(figure)


def confusion_matrix_png(matrix: list[list[int]], classes: list[str]) -> bytes:
    size = max(4.0, 0.6 * len(classes) + 2)
    figure = Figure(figsize=(size, size), layout="constrained")
    ax = figure.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    ax.set_title("confusion matrix (validation set)")
    return _png(figure)

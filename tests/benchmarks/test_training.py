"""benchmarks/training.py's plan and table: one Trainyard row per backbone beside the peers, each row named by
what its job was asked for. The runs themselves take minutes on the whole stack and live in benchmarks/README.md."""

from __future__ import annotations

from typing import Any

from benchmarks.training import Run, _system, child_arguments, table

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def test_trainyard_gets_one_child_per_backbone_and_the_peers_one_each() -> None:
    assert child_arguments("trainyard", LITES) == [[f"--arch={arch}"] for arch in LITES]
    assert child_arguments("trainyard", ["efficientnet_lite0"]) == [["--arch=efficientnet_lite0"]]
    assert child_arguments("fastai", LITES) == [[]]
    assert child_arguments("plain", LITES) == [[]]


def test_a_trainyard_row_names_its_backbone_and_the_options_it_was_given() -> None:
    assert _system({"arch": "efficientnet_lite0", "max_epochs": None, "tta": False}) == "trainyard efficientnet_lite0"
    assert _system({"arch": "efficientnet_lite2", "max_epochs": 3}) == "trainyard efficientnet_lite2 max_epochs 3"
    assert _system({"arch": "efficientnet_lite1", "tta": True}) == "trainyard efficientnet_lite1 tta"


def test_the_table_shows_tta_beside_the_plain_accuracy_and_serving_for_every_row() -> None:
    def row(system: str, correct: int, **serving: Any) -> Run:
        phases = {"lr_sweep": 20.0}
        return Run(system=system, total_seconds=100.0, phases=phases, train_images_per_second=9.0,
                   valid_correct=correct, valid_images=200, lr=0.002, **serving)  # fmt: skip

    tta = {"accuracy": 0.91, "loss": 0.3, "correct": 182, "images": 200, "views": 4}
    rows = [
        row("trainyard efficientnet_lite1 tta", 180, serving_p50_ms=50.0, serving_images_per_second=30.0,
            extra={"tta": tta}),
        row("fastai 2.8 lr_find + fine_tune", 150),
    ]  # fmt: skip
    lines = table("flowers-5", rows, {"start": "1.00 1.00 1.00", "end": "2.00 2.00 2.00"}).splitlines()
    assert lines[0].startswith("**flowers-5**") and "at start 1.00 1.00 1.00, at end 2.00 2.00 2.00" in lines[0]
    assert lines[4] == (
        "| trainyard efficientnet_lite1 tta | 100 | lr_sweep 20 | 9.0 | 180/200 (90.0%); TTA 182/200 (91.0%) "
        "| 0.002 | 50.0 | 30.0 |"
    )
    assert lines[5].endswith("| 150/200 (75.0%) | 0.002 | — | — |")

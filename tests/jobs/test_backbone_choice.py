"""`arch: auto`: the largest EfficientNet-Lite whose estimated unfrozen training fits the budget."""

from __future__ import annotations

import pytest

from core.spec import JobParams
from jobs.backbone_choice import BUDGET_S, CPU_RATES, choose_backbone, describe, estimates


def _params(**extra: object) -> JobParams:
    return JobParams.model_validate({"dataset_uri": "s3://bucket/data", "arch": "auto", **extra})


def test_a_small_set_on_cpu_gets_the_largest_backbone_at_its_native_size() -> None:
    params, facts = choose_backbone(_params(), train_images=500)
    assert (params.arch, params.image_size) == ("efficientnet_lite2", 260)
    assert facts["estimated_train_s"]["efficientnet_lite2"] <= BUDGET_S
    assert "efficientnet_lite2 at 260 px" in describe(facts) and "500 training images" in describe(facts)


def test_the_choice_shrinks_as_the_dataset_grows_and_grows_back_on_gpus() -> None:
    lite1 = BUDGET_S * CPU_RATES["efficientnet_lite1"] * 2  # just fits Lite1 on 2 CPU workers, not Lite2
    assert choose_backbone(_params(), train_images=int(lite1))[0].arch == "efficientnet_lite1"
    huge, facts = choose_backbone(_params(), train_images=1_000_000)
    assert huge.arch == "efficientnet_lite0" and "none fits, so the fastest" in describe(facts)
    assert choose_backbone(_params(use_gpu=True), train_images=int(lite1))[0].arch == "efficientnet_lite2"


def test_an_image_size_the_user_gave_is_kept_and_max_epochs_counts_in_the_estimate() -> None:
    assert choose_backbone(_params(image_size=128), train_images=100)[0].image_size == 128
    one = estimates(_params(), 1000)["efficientnet_lite0"]
    assert estimates(_params(max_epochs=3), 1000)["efficientnet_lite0"] == pytest.approx(3 * one, abs=0.2)

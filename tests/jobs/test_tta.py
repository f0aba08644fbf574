"""Test-time augmentation: the views, their averaged probabilities, and TTA scored beside plain accuracy."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.backbones import BACKBONES, build_classifier
from core.images import normalize
from infra.local.sample_data import make_shapes
from jobs.data import load_rgb
from jobs.stages.evaluate import evaluate_model
from jobs.stages.validate import validate_dataset
from jobs.tta import VIEWS, tta_probabilities, tta_views


def test_views_are_the_centre_crop_a_closer_crop_and_their_mirrors() -> None:
    image = torch.arange(3 * 40 * 60, dtype=torch.int64).remainder(256).to(torch.uint8).view(3, 40, 60)
    views = tta_views(image, 32)
    assert views.shape == (VIEWS, 3, 32, 32) and views.dtype == torch.uint8
    assert torch.equal(views[1], views[0].flip(-1)) and torch.equal(views[3], views[2].flip(-1))
    assert not torch.equal(views[0], views[2])  # the closer crop sees less of the image


class _LeftBright(nn.Module):
    """Votes for class 0 when the left half is brighter: a model that flips change the mind of."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        score = x[..., :half].mean((1, 2, 3)) - x[..., half:].mean((1, 2, 3))
        return torch.stack([score, -score], 1) * 10


def test_probabilities_are_the_mean_over_the_views(tmp_path: Path) -> None:
    root = make_shapes(tmp_path / "data", train_per_class=1, valid_per_class=2, size=48)
    dataset = validate_dataset(root, "s3://b/p", max_bad_fraction=0.1)
    model = _LeftBright()
    probs = tta_probabilities(model, root, dataset.valid, "efficientnet_lite0", 32)  # type: ignore[arg-type]
    norm = BACKBONES["efficientnet_lite0"].normalization
    for item, got in zip(dataset.valid, probs, strict=True):
        views = tta_views(_double(root / item.path), 32)
        expected = model(normalize(views, norm)).softmax(1).mean(0)
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.allclose(got.sum(), torch.tensor(1.0))
        # A mirror pair gives opposite votes to this model, so the averaged answer is close to a coin toss.
        assert abs(got[0].item() - 0.5) < abs(model(normalize(views[:1], norm)).softmax(1)[0, 0].item() - 0.5) + 1e-6


def _double(path: Path) -> torch.Tensor:
    from core.images import eval_tensor

    return eval_tensor(load_rgb(path, 32), 64)


def test_evaluation_reports_tta_beside_unchanged_plain_scores(tmp_path: Path) -> None:
    root = make_shapes(tmp_path / "data", train_per_class=1, valid_per_class=3, size=48)
    dataset = validate_dataset(root, "s3://b/p", max_bad_fraction=0.1)
    torch.manual_seed(0)
    model = build_classifier("efficientnet_lite0", 3, weights=None).eval()
    args = (model, root, dataset.valid, dataset.summary.classes, "efficientnet_lite0", 32)
    plain = evaluate_model(*args)
    with_tta = evaluate_model(*args, tta=True)
    assert plain.tta is None
    assert with_tta.tta is not None
    assert (with_tta.tta.images, with_tta.tta.views) == (9, VIEWS)
    assert with_tta.tta.accuracy == round(with_tta.tta.correct / 9, 5)
    assert with_tta.model_dump(exclude={"tta"}) == plain.model_dump(exclude={"tta"})

"""Stage 5: score the best checkpoint on the validation set, as the fastai lesson shows it.

Accuracy and loss, per-class precision and recall, the confusion matrix, the most-wrong images
(highest loss: confidently wrong predictions are where labelling mistakes hide) and the least-certain ones
(lowest top probability: where the model hesitates, often ambiguous or mislabelled images). A held-out
`test/` split, when the dataset has one, is scored the same way here and only here: it never picks an
epoch or a learning rate. With `tta`, the validation set is scored a second time with test-time
augmentation (`jobs.tta`), reported beside the plain scores, which stay what picks and publishes the model.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn
from torch.utils.data import DataLoader

from core.backbones import BACKBONES, Classifier, build_classifier, channels_last
from core.images import normalize
from core.spec import S3Location
from jobs.data import ImageItems
from jobs.dataset import Item
from jobs.tta import VIEWS, tta_probabilities

MOST_WRONG = 9
LEAST_CERTAIN = 9


class Scores(BaseModel):
    accuracy: float
    loss: float
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]  # rows: actual class, columns: predicted class (order of `classes`)
    images: int


class TtaScores(BaseModel):
    """The validation set scored with test-time augmentation (probabilities averaged over flips and crops)."""

    accuracy: float
    loss: float
    correct: int
    images: int
    views: int


class Evaluation(Scores):
    classes: list[str]
    most_wrong: list[dict[str, Any]]
    least_certain: list[dict[str, Any]]
    test: Scores | None = None  # the held-out split, when the dataset has one
    tta: TtaScores | None = None  # when the job asked for test-time augmentation


def load_checkpoint_model(s3: Any, checkpoint_uri: str, arch: str, num_classes: int) -> Classifier:
    location = S3Location.parse(checkpoint_uri)
    data = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = build_classifier(arch, num_classes, weights=None)
    model.load_state_dict(state["model"])
    return channels_last(model.eval())


@torch.inference_mode()
def _logits(model: Classifier, root: Path, items: list[Item], arch: str, image_size: int) -> torch.Tensor:
    data = ImageItems(root, [i.path for i in items], [i.label for i in items], image_size, train=False)
    return torch.cat([model(normalize(x, BACKBONES[arch].normalization)) for x, _ in DataLoader(data, batch_size=64)])


def _scores(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> Scores:
    losses = nn.functional.cross_entropy(logits, labels, reduction="none")
    predicted = logits.argmax(1)
    n = len(classes)
    confusion = torch.zeros(n, n, dtype=torch.int64)
    for actual, guess in zip(labels.tolist(), predicted.tolist(), strict=True):
        confusion[actual, guess] += 1
    per_class = {}
    for c, name in enumerate(classes):
        true_pos = confusion[c, c].item()
        per_class[name] = {
            "precision": round(true_pos / max(confusion[:, c].sum().item(), 1), 5),
            "recall": round(true_pos / max(confusion[c, :].sum().item(), 1), 5),
            "support": int(confusion[c, :].sum().item()),
        }
    return Scores(
        accuracy=round((predicted == labels).float().mean().item(), 5),
        loss=round(losses.mean().item(), 5),
        per_class=per_class,
        confusion_matrix=confusion.tolist(),
        images=len(labels),
    )


def evaluate_model(
    model: Classifier,
    root: Path,
    valid: list[Item],
    classes: list[str],
    arch: str,
    image_size: int,
    test: list[Item] | None = None,
    tta: bool = False,
) -> Evaluation:
    logits = _logits(model, root, valid, arch, image_size)
    test_scores = None
    if test:
        test_logits = _logits(model, root, test, arch, image_size)
        test_scores = _scores(test_logits, torch.tensor([i.label for i in test]), classes)
    labels = torch.tensor([i.label for i in valid])
    tta_scores = _tta_scores(model, root, valid, labels, arch, image_size) if tta else None
    return evaluation_from_logits(logits, valid, classes, test_scores, tta_scores)


def load_predictions(s3: Any, predictions_uri: str) -> torch.Tensor:
    """The validation logits a checkpoint was saved with (see `jobs.training_progress.PREDICTIONS_FILE`)."""
    location = S3Location.parse(predictions_uri)
    data = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    logits: torch.Tensor = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)["valid_logits"]
    return logits


def evaluation_from_logits(
    logits: torch.Tensor,
    valid: list[Item],
    classes: list[str],
    test_scores: Scores | None = None,
    tta_scores: TtaScores | None = None,
) -> Evaluation:
    """The evaluation from validation logits already computed (at the checkpoint's own validation pass)."""
    labels = torch.tensor([i.label for i in valid])
    losses = nn.functional.cross_entropy(logits, labels, reduction="none")
    probs = logits.softmax(1)
    top_probability, predicted = probs.max(1)

    def entry(i: int) -> dict[str, Any]:
        return {
            "path": valid[i].path,
            "actual": classes[int(labels[i])],
            "predicted": classes[int(predicted[i])],
            "probability": round(top_probability[i].item(), 5),
            "loss": round(losses[i].item(), 5),
        }

    wrong = [i for i in losses.argsort(descending=True).tolist() if predicted[i] != labels[i]][:MOST_WRONG]
    unsure = top_probability.argsort().tolist()[:LEAST_CERTAIN]
    return Evaluation(
        **_scores(logits, labels, classes).model_dump(),
        tta=tta_scores,
        classes=classes,
        most_wrong=[entry(i) for i in wrong],
        least_certain=[entry(i) for i in unsure],
        test=test_scores,
    )


def _tta_scores(
    model: Classifier, root: Path, items: list[Item], labels: torch.Tensor, arch: str, image_size: int
) -> TtaScores:
    probs = tta_probabilities(model, root, items, arch, image_size)
    correct = int((probs.argmax(1) == labels).sum().item())
    loss = nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return TtaScores(
        accuracy=round(correct / len(labels), 5), loss=round(loss, 5), correct=correct, images=len(labels), views=VIEWS
    )

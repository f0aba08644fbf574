"""Stage 5: score the best checkpoint on the validation set, as the fastai lesson shows it.

Accuracy and loss, per-class precision and recall, the confusion matrix, and the most-wrong images
(highest loss: confidently wrong predictions are where labelling mistakes hide).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn
from torch.utils.data import DataLoader

from core.backbones import BACKBONES, Classifier, build_classifier
from core.images import normalize
from core.spec import S3Location
from jobs.data import ImageItems
from jobs.stages.validate import Item

MOST_WRONG = 9


class Evaluation(BaseModel):
    accuracy: float
    loss: float
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]  # rows: actual class, columns: predicted class (order of `classes`)
    classes: list[str]
    most_wrong: list[dict[str, Any]]


def load_checkpoint_model(s3: Any, checkpoint_uri: str, arch: str, num_classes: int) -> Classifier:
    location = S3Location.parse(checkpoint_uri)
    data = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = build_classifier(arch, num_classes, weights=None)
    model.load_state_dict(state["model"])
    return model.eval()


@torch.inference_mode()
def evaluate_model(
    model: Classifier, root: Path, valid: list[Item], classes: list[str], arch: str, image_size: int
) -> Evaluation:
    data = ImageItems(root, [i.path for i in valid], [i.label for i in valid], image_size, train=False)
    logits = torch.cat([model(normalize(x, BACKBONES[arch].normalization)) for x, _ in DataLoader(data, batch_size=64)])
    labels = torch.tensor([i.label for i in valid])
    losses = nn.functional.cross_entropy(logits, labels, reduction="none")
    probs = logits.softmax(1)
    predicted = probs.argmax(1)
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
    wrong = [i for i in losses.argsort(descending=True).tolist() if predicted[i] != labels[i]][:MOST_WRONG]
    return Evaluation(
        accuracy=round((predicted == labels).float().mean().item(), 5),
        loss=round(losses.mean().item(), 5),
        per_class=per_class,
        confusion_matrix=confusion.tolist(),
        classes=classes,
        most_wrong=[
            {
                "path": valid[i].path,
                "actual": classes[labels[i]],
                "predicted": classes[predicted[i]],
                "probability": round(probs[i, predicted[i]].item(), 5),
                "loss": round(losses[i].item(), 5),
            }
            for i in wrong
        ],
    )

r"""Unfrozen-training recipes side by side on one dataset, in one process (no Ray, no S3, no API).

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.recipe ../shared/datasets/dogs-vs-cats \
        --variants base,frozen_bn,progressive

Features from the frozen body, the LR range test on them and one head-only epoch, as Trainyard does; then each
variant continues from that same head-only model with the job's one-cycle schedule and discriminative LRs over
its epochs, and is validated after every epoch at the full image size. Prints a Markdown table (validation loss,
correct images, training img/s per epoch) and writes it as JSON to `benchmarks/results/recipe-<dataset>-<time>.json`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.training import train_one_epoch
from core.backbones import (
    BACKBONES,
    build_classifier,
    channels_last,
    freeze_batchnorm_statistics,
    local_pretrained_weights,
)
from core.images import normalize
from jobs.data import ImageItems
from jobs.stages.fine_tune import BODY_LR_MULT, UNFROZEN_LR_FACTOR
from jobs.stages.lr_sweep import lr_range_test
from jobs.stages.validate import validate_dataset

RESULTS = Path(__file__).parent / "results"
ARCH = "efficientnet_lite0"


@dataclass(frozen=True)
class Variant:
    frozen_bn: bool
    sizes: tuple[int, ...]  # training image size per unfrozen epoch


VARIANTS = {
    # Neither frozen batch-norm statistics nor progressive resizing.
    "base": Variant(frozen_bn=False, sizes=(224, 224, 224)),
    "frozen_bn": Variant(frozen_bn=True, sizes=(224, 224, 224)),
    "progressive": Variant(frozen_bn=True, sizes=(160, 224)),
    "progressive3": Variant(frozen_bn=True, sizes=(160, 192, 224)),  # today's default for 3 epochs at 224
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, help="a folder with train/<class>/ and valid/<class>/")
    parser.add_argument(
        "--variants", default="base,frozen_bn,progressive", help=f"comma-separated: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(args.seed)

    data = validate_dataset(args.dataset, str(args.dataset), 1.0)
    classes = data.summary.classes
    norm = BACKBONES[ARCH].normalization

    def items(split: list[Any], size: int, train: bool) -> ImageItems:
        return ImageItems(args.dataset, [i.path for i in split], [i.label for i in split], size, train, 1 << 30)

    valid = items(data.valid, 224, False)
    model = channels_last(build_classifier(ARCH, len(classes), local_pretrained_weights(ARCH)))
    model.eval()
    with torch.inference_mode():
        train_batches = [(model.body(normalize(i, norm)), y) for i, y in DataLoader(items(data.train, 224, False), 64)]
        valid_batches = [(model.body(normalize(i, norm)), y) for i, y in DataLoader(valid, 64)]
    x, y = torch.cat([b[0] for b in train_batches]), torch.cat([b[1] for b in train_batches])
    vx, vy = torch.cat([b[0] for b in valid_batches]), torch.cat([b[1] for b in valid_batches])
    lr = lr_range_test(x.numpy(), y.numpy(), len(classes), args.batch_size, seed=args.seed).suggested_lr
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=math.ceil(len(x) / args.batch_size), pct_start=0.99
    )
    model.head.train()
    for index in torch.randperm(len(x)).split(args.batch_size):
        loss = nn.functional.cross_entropy(model.head(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.head.eval()
    with torch.no_grad():
        logits = model.head(vx)
    head_only = {"valid_loss": round(float(nn.functional.cross_entropy(logits, vy)), 4)}
    head_only["correct"] = int((logits.argmax(1) == vy).sum())
    start = copy.deepcopy(model.state_dict())

    rows: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        variant = VARIANTS[name]
        torch.manual_seed(args.seed)
        model.load_state_dict(start)
        head_lr = lr * UNFROZEN_LR_FACTOR
        train = items(data.train, variant.sizes[-1], True)
        loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
        optimizer = torch.optim.AdamW(
            [
                {"params": model.body.parameters(), "lr": head_lr / BODY_LR_MULT},
                {"params": model.head.parameters(), "lr": head_lr},
            ],
            weight_decay=0.01,
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[head_lr / BODY_LR_MULT, head_lr],
            total_steps=len(variant.sizes) * len(loader),
            pct_start=0.3,
            div_factor=5,
        )
        rows[name] = []
        for epoch, size in enumerate(variant.sizes, start=1):
            model.train()
            if variant.frozen_bn:
                freeze_batchnorm_statistics(model.body)
            train.train_at(size)
            started = time.monotonic()
            seen = train_one_epoch(model, loader, optimizer, schedule, norm)
            seconds = time.monotonic() - started
            model.eval()
            with torch.inference_mode():
                logits = torch.cat([model(normalize(i, norm)) for i, _ in DataLoader(valid, 64)])
            row = {
                "epoch": epoch,
                "image_size": size,
                "train_seconds": round(seconds, 1),
                "images_per_second": round(seen / seconds, 2),
                "valid_loss": round(float(nn.functional.cross_entropy(logits, vy)), 4),
                "correct": int((logits.argmax(1) == vy).sum()),
            }
            rows[name].append(row)
            print(name, row, flush=True)

    print(f"\n**{args.dataset.name}**: LR {lr:.3g}; head-only {head_only['valid_loss']} / {head_only['correct']}")
    print(f"of {len(vy)}\n\n| variant | epoch: size px, validation loss, correct, train img/s |\n|---|---|")
    for name, epochs in rows.items():
        cells = "; ".join(
            f"{r['epoch']}: {r['image_size']}, {r['valid_loss']}, {r['correct']}, {r['images_per_second']}"
            for r in epochs
        )
        print(f"| {name} | {cells} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"recipe-{args.dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"dataset": args.dataset.name, "lr": lr, "head_only": head_only, "variants": rows}))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()

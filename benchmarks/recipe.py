r"""Unfrozen-training recipes side by side on one dataset, in one process (no Ray, no S3, no API).

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.recipe ../shared/datasets/dogs-vs-cats \
        --variants base,frozen_bn,progressive
    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.recipe ../shared/datasets/flowers-5 \
        --arch efficientnet_lite2 --variants one,cycles3 --tta

`cycles3` runs up to 3 epochs, each its own one-cycle at half the previous one's peak LR: what the job's
`max_epochs` continuation does; the rows say where the validation loss stopped falling. With `--tta`, each
variant's last model is also scored with the serving mirror (2 views) and the evaluation's 4 views.

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
from core.spec import NATIVE_SIZES
from jobs.data import ImageItems
from jobs.stages.lr_sweep import lr_range_test
from jobs.stages.validate import validate_dataset
from jobs.tta import tta_probabilities
from jobs.unfrozen_config import BODY_LR_MULT, UNFROZEN_LR_FACTOR

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Variant:
    frozen_bn: bool
    sizes: tuple[float, ...]  # training image size per unfrozen epoch, as a fraction of the native size
    cycle_per_epoch: bool = False  # each epoch its own one-cycle, at half the previous peak


VARIANTS = {
    # Neither frozen batch-norm statistics nor progressive resizing.
    "base": Variant(frozen_bn=False, sizes=(1, 1, 1)),
    "frozen_bn": Variant(frozen_bn=True, sizes=(1, 1, 1)),
    "one": Variant(frozen_bn=True, sizes=(1,)),  # the job's default: one unfrozen epoch
    "progressive": Variant(frozen_bn=True, sizes=(0.75, 1)),
    "progressive3": Variant(frozen_bn=True, sizes=(0.75, 0.875, 1)),  # the default for 3 epochs
    "cycles3": Variant(frozen_bn=True, sizes=(1, 1, 1), cycle_per_epoch=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, help="a folder with train/<class>/ and valid/<class>/")
    parser.add_argument(
        "--variants", default="base,frozen_bn,progressive", help=f"comma-separated: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", default="efficientnet_lite0", choices=tuple(NATIVE_SIZES))
    parser.add_argument("--tta", action="store_true", help="score each variant's last model with TTA too")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    load_at_start = os.getloadavg()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(args.seed)

    data = validate_dataset(args.dataset, str(args.dataset), 1.0)
    classes = data.summary.classes
    arch, native = args.arch, NATIVE_SIZES[args.arch]
    norm = BACKBONES[arch].normalization

    def items(split: list[Any], size: int, train: bool) -> ImageItems:
        return ImageItems(args.dataset, [i.path for i in split], [i.label for i in split], size, train, 1 << 30)

    valid = items(data.valid, native, False)
    model = channels_last(build_classifier(arch, len(classes), local_pretrained_weights(arch)))
    model.eval()
    started = time.monotonic()
    with torch.inference_mode():
        train_eval = DataLoader(items(data.train, native, False), 64)
        train_batches = [(model.body(normalize(i, norm)), y) for i, y in train_eval]
        valid_batches = [(model.body(normalize(i, norm)), y) for i, y in DataLoader(valid, 64)]
    x, y = torch.cat([b[0] for b in train_batches]), torch.cat([b[1] for b in train_batches])
    vx, vy = torch.cat([b[0] for b in valid_batches]), torch.cat([b[1] for b in valid_batches])
    features_rate = round((len(data.train) + len(data.valid)) / (time.monotonic() - started), 2)
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
        sizes = [round(native * f / 16) * 16 if f < 1 else native for f in variant.sizes]
        train = items(data.train, native, True)
        loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
        optimizer = torch.optim.AdamW(
            [
                {"params": model.body.parameters(), "lr": head_lr / BODY_LR_MULT},
                {"params": model.head.parameters(), "lr": head_lr},
            ],
            weight_decay=0.01,
        )

        def cycle(optimizer: torch.optim.Optimizer, peak: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
            return torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[peak / BODY_LR_MULT, peak], total_steps=steps, pct_start=0.3, div_factor=5
            )

        schedule = cycle(optimizer, head_lr, (1 if variant.cycle_per_epoch else len(sizes)) * len(loader))
        rows[name] = []
        for epoch, size in enumerate(sizes, start=1):
            if variant.cycle_per_epoch and epoch > 1:
                schedule = cycle(optimizer, head_lr * 0.5 ** (epoch - 1), len(loader))
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
            if args.tta and epoch in (1, len(sizes)):  # the default's model (one epoch) and the longest run's
                row["tta"] = _tta(model, args.dataset, data.valid, arch, native)
            rows[name].append(row)
            print(name, row, flush=True)

    print(f"\n**{args.dataset.name}** ({arch}, {native} px, features {features_rate} img/s): LR {lr:.3g}; ", end="")
    print(f"head-only {head_only['valid_loss']} / {head_only['correct']}")
    print(f"of {len(vy)}\n\n| variant | epoch: size px, validation loss, correct, train img/s |\n|---|---|")
    for name, epochs in rows.items():
        cells = "; ".join(
            f"{r['epoch']}: {r['image_size']}, {r['valid_loss']}, {r['correct']}, {r['images_per_second']}"
            for r in epochs
        )
        print(f"| {name} | {cells} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"recipe-{args.dataset.name}-{arch}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    body = {"dataset": args.dataset.name, "arch": arch, "image_size": native, "lr": lr, "head_only": head_only}
    body |= {"features_images_per_second": features_rate, "load_average_at_start": load_at_start, "variants": rows}
    out.write_text(json.dumps(body))
    print(f"\nwritten {out}")


def _tta(model: nn.Module, root: Path, valid: list[Any], arch: str, size: int) -> dict[str, Any]:
    """Correct validation images with serving's mirror TTA (2 views) and the evaluation's 4 views."""
    started = time.monotonic()
    probs = tta_probabilities(model, root, valid, arch, size, per_view=True)
    labels = torch.tensor([i.label for i in valid])
    return {
        "mirror_correct": int((probs[:, :2].mean(1).argmax(1) == labels).sum()),
        "four_views_correct": int((probs.mean(1).argmax(1) == labels).sum()),
        "four_views_seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    main()

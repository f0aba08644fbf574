"""What moves the unfrozen epochs' validation numbers: world size, batch-norm statistics, dropout seeds.

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.unfrozen_noise --image-size 64 --batch-size 24 --epochs 2

One process, no Ray: generated shapes (the tests' sets), features from the frozen body, the LR range test and
one head-only epoch as a job runs them, then the unfrozen epochs with the job's schedule, discriminative LRs,
shards and per-image augmentation seeds. `world` 2 computes what DDP computes: each rank's half of the global
batch goes through the model on its own (its own batch-norm statistics) and the two mean losses are averaged.
(Unlike DDP, the running statistics here see both halves; a real 2-worker run keeps rank 0's.) Each row runs
with the dropout seed, with dropout on or off, and with batch norm training (batch statistics) or frozen
(running statistics, as at evaluation). Prints one line per setting: validation loss and accuracy per epoch.
"""

from __future__ import annotations

import argparse
import io
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.backbones import BACKBONES, build_classifier, local_pretrained_weights
from core.images import normalize
from infra.local.sample_data import make_shapes
from jobs.data import ImageItems
from jobs.features import compute_features
from jobs.head import train_head
from jobs.stages.lr_sweep import lr_range_test
from jobs.stages.validate import validate_dataset
from jobs.unfrozen import shard_indices, worker_batch_size
from jobs.unfrozen_config import BODY_LR_MULT, UNFROZEN_LR_FACTOR

ARCH = "efficientnet_lite0"
SETTINGS = [  # (world, dropout seed, dropout on, batch norm frozen)
    (1, 0, True, True),  # the recipe since batch norm is frozen: its dropout noise, and world 2
    (1, 1, True, True),
    (1, 2, True, True),
    (2, 0, True, True),
    (1, 0, True, False),
    (1, 1, True, False),
    (1, 2, True, False),
    (2, 0, True, False),
    (1, 0, False, False),
    (2, 0, False, False),
    (1, 0, False, True),
    (2, 0, False, True),
]


def unfrozen_epochs(
    items: tuple[ImageItems, ImageItems],
    head_state: bytes,
    lr: float,
    args: argparse.Namespace,
    setting: tuple[int, int, bool, bool],
) -> list[tuple[float, float]]:
    world, dropout_seed, dropout, freeze_bn = setting
    train, valid = items
    torch.manual_seed(dropout_seed)
    model = build_classifier(ARCH, args.classes, local_pretrained_weights(ARCH))
    model.head.load_state_dict(torch.load(io.BytesIO(head_state), weights_only=True))
    if not dropout:  # the head's dropout and the body's drop-connect: the draws that depend on the RNG stream
        for module in model.head.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        net: Any = model.body.net  # efficientnet_lite_pytorch reads its drop-connect rate from these
        net._global_params = net._global_params._replace(drop_connect_rate=0.0)
    head_lr = lr * UNFROZEN_LR_FACTOR
    body_lr = head_lr / BODY_LR_MULT
    per_worker = worker_batch_size(args.batch_size, world)
    steps = math.ceil(len(train) // world / per_worker)
    optimizer = torch.optim.AdamW(
        [{"params": model.body.parameters(), "lr": body_lr}, {"params": model.head.parameters(), "lr": head_lr}],
        weight_decay=0.01,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[body_lr, head_lr], total_steps=args.epochs * steps, pct_start=0.3, div_factor=5.0
    )
    norm = BACKBONES[ARCH].normalization
    scores = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        if freeze_bn:
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        train.augment_seed = args.seed * 1000 + epoch
        shards = [shard_indices(len(train), rank, world, args.seed * 1000 + epoch) for rank in range(world)]
        for step in range(steps):
            losses = []
            for shard in shards:
                batch = [train[i] for i in shard[step * per_worker : (step + 1) * per_worker]]
                images, labels = torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch])
                losses.append(nn.functional.cross_entropy(model(normalize(images, norm)), labels))
            loss = torch.stack(losses).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            images, labels = torch.stack([valid[i][0] for i in range(len(valid))]), torch.tensor(valid.labels)
            logits = model(normalize(images, norm))
            loss_value = nn.functional.cross_entropy(logits, labels).item()
            scores.append((round(loss_value, 4), round((logits.argmax(1) == labels).float().mean().item(), 3)))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=24, help="the global batch")
    parser.add_argument("--train-per-class", type=int, default=24)
    parser.add_argument("--valid-per-class", type=int, default=10)
    parser.add_argument("--data-seed", type=int, default=4)
    parser.add_argument("--freeze-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2, help="unfrozen epochs")
    parser.add_argument("--lr", type=float, default=None, help="default: the range test's pick")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a Ray Train worker runs here
    with tempfile.TemporaryDirectory() as tmp:
        root = make_shapes(
            Path(tmp),
            train_per_class=args.train_per_class,
            valid_per_class=args.valid_per_class,
            size=round(args.image_size * 1.25),
            seed=args.data_seed,
        )
        dataset = validate_dataset(root, "s3://bench/shapes", max_bad_fraction=0.1)
        args.classes = len(dataset.summary.classes)
        size = args.image_size
        features = compute_features(root, dataset.train, dataset.valid, ARCH, local_pretrained_weights(ARCH), size)
        lr = args.lr or lr_range_test(features.train_x, features.train_y, args.classes, args.batch_size).suggested_lr
        head = train_head(features, args.classes, lr, args.freeze_epochs, args.batch_size, args.seed)
        last = head.epochs[-1]
        print(f"lr {lr:.4g}; head-only: loss {last['valid_loss']:.4f}, accuracy {last['accuracy']:.3f}")
        train, valid = (
            ImageItems(root, [i.path for i in split], [i.label for i in split], size, split is dataset.train, 1 << 28)
            for split in (dataset.train, dataset.valid)
        )
        for setting in SETTINGS:
            world, dropout_seed, dropout, freeze_bn = setting
            scores = unfrozen_epochs((train, valid), head.state, lr, args, setting)
            print(
                f"world {world}, dropout {'seed ' + str(dropout_seed) if dropout else 'off'}, "
                f"batch norm {'frozen' if freeze_bn else 'training'}: (loss, accuracy) per epoch {scores}",
                flush=True,
            )


if __name__ == "__main__":
    main()

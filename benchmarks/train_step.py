"""Training-step and inference cost of a backbone on this machine, with and without the malloc tuning.

    .venv/bin/python -m benchmarks.train_step --dataset ../shared/datasets/cats-vs-whales

Runs the measurement in child processes (glibc reads MALLOC_* only at start-up), one torch thread each,
as a Ray Train worker runs here, and prints ms per image for each setting side by side.
Writes benchmarks/results/train-step-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from core.runtime_env import TORCH_MALLOC_ENV

RESULTS = Path(__file__).parent / "results"


def measure(dataset: Path, arch: str, image_size: int, batch_size: int, steps: int) -> dict[str, float]:
    import torch

    from core.backbones import BACKBONES, build_classifier, local_pretrained_weights
    from core.images import normalize
    from jobs.data import ImageItems
    from jobs.stages.validate import validate_dataset

    torch.set_num_threads(1)
    items = validate_dataset(dataset, str(dataset), 1.0).train[: batch_size * 2]
    data = ImageItems(dataset, [i.path for i in items], [i.label for i in items], image_size, train=True)
    started = time.perf_counter()
    samples = [data[i] for i in range(batch_size)]
    load_ms = (time.perf_counter() - started) / batch_size * 1000
    x = normalize(torch.stack([s[0] for s in samples]), BACKBONES[arch].normalization)
    y = torch.tensor([s[1] for s in samples])
    model = build_classifier(arch, 2, local_pretrained_weights(arch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    timings = []
    for _ in range(steps + 1):  # the first step warms the allocator up and is not counted
        started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - started)
    model.eval()
    with torch.inference_mode():
        started = time.perf_counter()
        model(x)
        eval_ms = (time.perf_counter() - started) / batch_size * 1000
    train_ms = sorted(timings[1:])[len(timings[1:]) // 2] / batch_size * 1000
    return {
        "load_ms_per_image": round(load_ms, 2),
        "train_ms_per_image": round(train_ms, 1),
        "eval_ms_per_image": round(eval_ms, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.dataset, args.arch, args.image_size, args.batch_size, args.steps)))
        return

    rows = {}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    for name, extra in (("glibc default", {}), ("malloc tuned", TORCH_MALLOC_ENV)):
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.train_step", *sys.argv[1:], "--child"],
            env=base_env | extra | {"OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            check=True,
        )
        rows[name] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"\n{args.arch} at {args.image_size}px, batch {args.batch_size}, 1 thread (ms per image)")
    print(f"{'setting':<16}{'decode+aug':>12}{'train step':>12}{'inference':>11}")
    for name, row in rows.items():
        print(f"{name:<16}{row['load_ms_per_image']:>12}{row['train_ms_per_image']:>12}{row['eval_ms_per_image']:>11}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"train-step-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": rows}, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()

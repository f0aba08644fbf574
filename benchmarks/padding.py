"""EfficientNet-Lite0 with its symmetric padding folded into the convolutions, against the package's separate pads.

    .venv/bin/python -m benchmarks.padding

Both models are built in one process from the same weights and stepped in turn (channels-last, frozen batch-norm
statistics, batch 16), so the machine's load falls on both alike; medians over `--rounds`. Each setting runs in a
child process with the malloc settings (glibc reads MALLOC_* only at start-up). Prints a table and writes
benchmarks/results/padding-<time>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from core.runtime_env import TORCH_MALLOC_ENV

RESULTS = Path(__file__).parent / "results"
SETTINGS = [("training step", 1, 160), ("training step", 1, 224), ("inference", 2, 224)]


def measure(training: bool, threads: int, size: int, rounds: int) -> dict[str, float]:
    import torch
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding
    from torch import nn

    from core.backbones import build_classifier, channels_last, freeze_batchnorm_statistics, local_pretrained_weights

    torch.set_num_threads(threads)
    folded = build_classifier("efficientnet_lite0", 2, local_pretrained_weights("efficientnet_lite0"))
    separate = copy.deepcopy(folded)
    for layer in separate.modules():  # undo core.backbones.fold_symmetric_padding: the package's own layers
        if isinstance(layer, Conv2dStaticSamePadding) and layer.padding != (0, 0):
            top, left = layer.padding
            layer.static_padding, layer.padding = nn.ZeroPad2d((left, left, top, top)), (0, 0)
    models = {"separate": channels_last(separate), "folded": channels_last(folded)}
    x = torch.randn(16, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (16,))
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-6) for name, m in models.items()}
    for model in models.values():
        model.train(training)
        freeze_batchnorm_statistics(model.body)
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(rounds + 1):  # round 0 warms the allocator and oneDNN up and is not counted
        for name, model in models.items():
            started = time.perf_counter()
            if training:
                loss = nn.functional.cross_entropy(model(x), y)
                optimizers[name].zero_grad()
                loss.backward()
                optimizers[name].step()
            else:
                with torch.inference_mode():
                    model(x)
            if round_:
                times[name].append(time.perf_counter() - started)
    return {name: round(statistics.median(t) * 1000, 1) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # pass, threads, size: one measurement
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0] == "train", int(args.child[1]), int(args.child[2]), args.rounds)))
        return
    rows = []
    for what, threads, size in SETTINGS:
        argv = [sys.executable, "-m", "benchmarks.padding", "--rounds", str(args.rounds), "--child"]
        argv += ["train" if what == "training step" else "eval", str(threads), str(size)]
        out = subprocess.run(argv, env=os.environ | TORCH_MALLOC_ENV, capture_output=True, text=True, check=True).stdout
        ms = json.loads(out.strip().splitlines()[-1])
        rows.append(
            {"pass": what, "threads": threads, "size": size, **ms, "ratio": round(ms["folded"] / ms["separate"], 3)}
        )
    print("| pass | threads | size | separate pad (ms/batch of 16) | folded | ratio |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['pass']} | {r['threads']} | {r['size']} px | {r['separate']} | {r['folded']} | {r['ratio']} |")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"padding-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps({"rows": rows, "load_average": os.getloadavg()}, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()

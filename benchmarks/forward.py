"""A replica's forward pass, eager PyTorch vs the TorchScript graph it now runs, alone and beside busy Python.

    .venv/bin/python -m benchmarks.forward
    .venv/bin/python -m benchmarks.forward --batches 1 16 --rounds 9

Eager PyTorch takes the GIL back between every op; a Serve replica has other Python threads (its event loops,
metrics pushers, the decode pool) that hold it meanwhile. "Beside busy Python" runs one such thread doing pure
Python work, the worst case of a replica's neighbours. Both modules come from the same weights
(`serving.inference.prepare` with and without the graph), channels-last, on the replica's torch threads (all
cores but one: 1 here); the two are stepped in turn, medians over `--rounds`. Run with the replica's malloc
settings (`core.runtime_env.TORCH_MALLOC_ENV`: the script restarts itself with them). Prints a table and writes
benchmarks/results/forward-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import torch

from core.runtime_env import TORCH_MALLOC_ENV
from serving import inference

RESULTS = Path(__file__).parent / "results"


class BusyPython:
    """A thread that only runs Python bytecode (so it holds the GIL whenever it runs), until stopped."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        while not self._stop.is_set():
            sum(range(1000))

    def __enter__(self) -> BusyPython:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def time_ms(model: torch.nn.Module, x: torch.Tensor) -> float:
    began = time.perf_counter()
    inference.forward(model, x, channels_last=True)
    return (time.perf_counter() - began) * 1000


def measure(batches: list[int], rounds: int, threads: int) -> list[dict[str, object]]:
    from core.backbones import build_classifier, local_pretrained_weights

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    weights = local_pretrained_weights("efficientnet_lite0")
    eager = inference.prepare(build_classifier("efficientnet_lite0", 2, weights).eval(), True)
    began = time.perf_counter()
    graph = inference.prepare(build_classifier("efficientnet_lite0", 2, weights).eval(), True, graph_size=224)
    print(f"trace + copy + warm-up: {time.perf_counter() - began:.2f} s", flush=True)
    rows: list[dict[str, object]] = []
    for neighbour in ("none", "busy Python thread"):
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224)
            for model in (eager, graph):  # warm: the first call at a size allocates
                time_ms(model, x)
            times: dict[str, list[float]] = {"eager": [], "graph": []}
            with BusyPython() if neighbour != "none" else contextlib.nullcontext():
                for _ in range(rounds):
                    times["eager"].append(time_ms(eager, x))
                    times["graph"].append(time_ms(graph, x))
            eager_ms, graph_ms = (round(statistics.median(times[k]), 1) for k in ("eager", "graph"))
            eager_img_s, graph_img_s = round(batch * 1000 / eager_ms, 1), round(batch * 1000 / graph_ms, 1)
            rows.append(
                {
                    "neighbour": neighbour,
                    "batch": batch,
                    "eager_ms": eager_ms,
                    "graph_ms": graph_ms,
                    "eager_img_s": eager_img_s,
                    "graph_img_s": graph_img_s,
                }
            )
            print(
                f"{neighbour:<20}{batch:>6}{eager_ms:>10}{graph_ms:>10}{eager_img_s:>10}{graph_img_s:>10}", flush=True
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if any(os.environ.get(k) != v for k, v in TORCH_MALLOC_ENV.items()):  # glibc reads them only at start-up
        os.execve(
            sys.executable, [sys.executable, "-m", "benchmarks.forward", *sys.argv[1:]], os.environ | TORCH_MALLOC_ENV
        )
    threads = inference.replica_threads(None)
    print(f"{'neighbour':<20}{'batch':>6}{'eager ms':>10}{'graph ms':>10}{'eager/s':>10}{'graph/s':>10}", flush=True)
    rows = measure(args.batches, args.rounds, threads)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"forward-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"threads": threads, "rounds": args.rounds, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

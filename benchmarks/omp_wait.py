"""PyTorch's OpenMP threads waiting by spinning (libgomp's default) or asleep (`OMP_WAIT_POLICY=PASSIVE`), alone on
the machine and beside processes that keep every core busy.

    .venv/bin/python -m benchmarks.omp_wait
    .venv/bin/python -m benchmarks.omp_wait --sizes 32 224 --batches 1 16 --passes 20

Each cell is a fresh process (libgomp reads the policy once, when torch loads it) running `--passes` forward
passes of the default backbone on torch's default thread count (one per core), with the malloc settings every
PyTorch process of the stack gets. "Busy" starts one pure-Python loop per core beside it first, as a test suite's
or a single machine's other processes are. Reported: the process's CPU seconds and its wall seconds for the passes.
Prints a table and writes benchmarks/results/omp_wait-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from core.runtime_env import TORCH_MALLOC_ENV

RESULTS = Path(__file__).parent / "results"
POLICIES = {"spin (default)": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}
NEIGHBOURS = ("none", "busy")

# The measured child: forward passes on torch's default threads, then its CPU and wall seconds as JSON.
CHILD = """
import json, sys, time, torch
from core.backbones import build_classifier
size, batch, passes = (int(a) for a in sys.argv[1:4])
model = build_classifier("efficientnet_lite0", 3, None).eval()
x = torch.randn(batch, 3, size, size)
with torch.no_grad():
    model(x)  # the first call at a size allocates
    cpu, wall = time.process_time(), time.monotonic()
    for _ in range(passes):
        model(x)
print(json.dumps({"cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall,
                  "threads": torch.get_num_threads()}))
"""


@contextmanager
def busy_cores(busy: bool) -> Iterator[None]:
    loops: list[subprocess.Popen[bytes]] = []
    for _ in range((os.cpu_count() or 1) if busy else 0):
        loops.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def measure_one(extra_env: dict[str, str], size: int, batch: int, passes: int) -> dict[str, float]:
    inherited = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # the default row sets none
    env = inherited | TORCH_MALLOC_ENV | extra_env
    argv = [sys.executable, "-c", CHILD, str(size), str(batch), str(passes)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--passes", type=int, default=30)
    args = parser.parse_args()
    print(f"{'neighbours':<11}{'size':>5}{'batch':>6}{'policy':>16}{'CPU s':>8}{'wall s':>8}{'ms/pass':>9}", flush=True)
    rows: list[dict[str, object]] = []
    for neighbours in NEIGHBOURS:
        with busy_cores(neighbours == "busy"):
            time.sleep(0.5)
            for size in args.sizes:
                for batch in args.batches:
                    for policy, extra in POLICIES.items():
                        got = measure_one(extra, size, batch, args.passes)
                        row = {"neighbours": neighbours, "size": size, "batch": batch, "policy": policy,
                               "passes": args.passes, **got}  # fmt: skip
                        rows.append(row)
                        print(
                            f"{neighbours:<11}{size:>5}{batch:>6}{policy:>16}{got['cpu_s']:>8.2f}{got['wall_s']:>8.2f}"
                            f"{got['wall_s'] * 1000 / args.passes:>9.1f}",
                            flush=True,
                        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"omp_wait-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

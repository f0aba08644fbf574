"""Prediction latency and throughput of a deployed model, through the API and straight to Ray Serve.

    .venv/bin/python -m benchmarks.predict --model <model id> --image path/to.jpg [--home .trainyard]

Sequential requests give latency (p50/p95); `--concurrency` parallel clients give throughput, which is
where `@serve.batch` earns its keep. Writes benchmarks/results/predict-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

from infra.local.stack import LocalStack, default_home

RESULTS = Path(__file__).parent / "results"


def run(url: str, headers: dict[str, str], body: bytes, requests: int, concurrency: int) -> dict[str, float]:
    with httpx.Client(timeout=60) as client:

        def one(_: int) -> float:
            started = time.perf_counter()
            client.post(url, content=body, headers=headers).raise_for_status()
            return time.perf_counter() - started

        one(0)  # warm: the model is loaded, connections are open
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = sorted(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - started
    return {
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 1),
        "images_per_second": round(requests / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=default_home())
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    stack = LocalStack.load(args.home.resolve())
    body = args.image.read_bytes()
    targets = {
        "API": (f"{stack.config.api_url}/v1/models/{args.model}/predict", stack.api_headers()),
        "Serve direct": (f"{stack.config.serve_url}/classify", {"serve_multiplexed_model_id": args.model}),
    }
    results = {}
    print(f"{'path':<14}{'clients':>8}{'p50 ms':>9}{'p95 ms':>9}{'img/s':>8}")
    for name, (url, headers) in targets.items():
        for clients in (1, args.concurrency):
            row = run(url, headers, body, args.requests, clients)
            results[f"{name} c={clients}"] = row
            print(f"{name:<14}{clients:>8}{row['p50_ms']:>9}{row['p95_ms']:>9}{row['images_per_second']:>8}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"predict-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"model": args.model, "image": str(args.image), "results": results}, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()

"""A batch prediction run beside the raw model's best batched throughput, in the same run on the same machine.

    .venv/bin/python -m benchmarks.batch_predict                    # its own stack, 1,000 JPEGs at 224 px
    .venv/bin/python -m benchmarks.batch_predict --images 2000 --image photo.jpg --num-workers 2

(a) the raw model: decode + preprocess + forward in one process, as a Serve replica runs them, at batches 8, 16
    and 32, with every thread count and layout `benchmarks.serving` tries, and the malloc settings the model
    actors run with, measured before and after the batch run; the best batched row of either is the ceiling;
(b) a batch run through the API on the benchmark's own local stack (S3 server, Ray head, API): POST -> a Ray
    job -> Ray Data -> the model actors, over `--images` copies of one JPEG in S3. Its steady rate counts the
    images after the first scored batch over the time after it (the run's `result.timing.images_per_s`);
    start-up is reported beside it: POST -> first scored batch, and the driver's start -> first scored batch.

The model is published untrained (`infra.local.sample_model`): throughput does not depend on what the weights
learned. The machine is shared and noisy: only ratios within one run mean anything. Writes
benchmarks/results/batch_predict-<time>.json; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.serving import sample_jpeg

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
# The batch run must reach this share of the raw model's best batched rate once started (the bar).
TARGET = 0.8


def _upload_copies(s3: Any, image: bytes, count: int) -> str:
    from concurrent.futures import ThreadPoolExecutor

    from infra.local.sample_data import ensure_bucket

    ensure_bucket(s3, "bench-batch")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket="bench-batch", Key=f"in/{i:06d}.jpg", Body=image), range(count)))
    return "s3://bench-batch/in/"


def _raw_rows(artifact: Path, image: bytes, image_size: int, seconds: float, env: dict[str, str]) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.serving", "--raw", str(artifact), "--image-file", "-",
            "--raw-seconds", str(seconds), "--image-size", str(image_size)]  # fmt: skip
    out = subprocess.run(argv, input=image, cwd=REPO, env=env, capture_output=True, check=True).stdout
    rows: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return rows


def _wait(api: Any, run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = api.get(f"/v1/batch-predictions/{run_id}").raise_for_status().json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.5)
    raise TimeoutError(f"batch run {run_id} did not end within {timeout:.0f}s")


def _seconds_between(start: str, end: str) -> float:
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 2)


def run_benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from core.settings import Settings
    from core.store import JobStore
    from infra.local.sample_model import publish_untrained_model
    from infra.local.stack import LocalStack, StackConfig

    image = args.image.read_bytes() if args.image else sample_jpeg()
    load_at_start = os.getloadavg()
    stack = LocalStack(StackConfig.with_free_ports(work / "home"))
    try:
        stack.start_s3()
        stack.start_ray()
        stack.start_api()
        s3 = stack.s3_client()
        store = JobStore.from_url(stack.database_url)
        model = publish_untrained_model(
            store, s3, Settings(home=stack.config.home), ["a", "b"], image_size=args.image_size, arch=args.arch
        )
        store.engine.dispose()
        artifact = work / "model.pt"
        bucket, key = model.artifact_uri.removeprefix("s3://").split("/", 1)
        artifact.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        input_uri = _upload_copies(s3, image, args.images)

        raw_before = _raw_rows(artifact, image, args.image_size, args.raw_seconds, stack.env())

        body: dict[str, Any] = {"input_uri": input_uri, "format": "parquet"}
        if args.num_workers:
            body["num_workers"] = args.num_workers
        if args.use_gpu:
            body["use_gpu"] = True
        with stack.api_client() as api:
            posted = time.monotonic()
            answer = api.post(f"/v1/models/{model.id}/batch-predictions", json=body).raise_for_status().json()
            run = _wait(api, answer["id"], args.timeout)
            wall = round(time.monotonic() - posted, 2)
        if run["status"] != "succeeded":
            raise RuntimeError(f"the batch run did not succeed: {run['error']}")
        # The raw rows again after the run: on a shared machine a neighbour can slow either side; the ceiling
        # is the best of both measurements.
        raw_after = _raw_rows(artifact, image, args.image_size, args.raw_seconds, stack.env())
        batched = {
            f"{name} ({when})": row
            for when, raw in (("before", raw_before), ("after", raw_after))
            for name, row in raw.items()
            if not name.endswith(" batch 1")
        }
        best_name = max(batched, key=lambda name: batched[name]["images_per_second"])
        best = batched[best_name]["images_per_second"]
        timing = run["result"]["timing"]
        steady = timing["images_per_s"]
        rows = {
            f"raw best batched ({best_name.removeprefix('raw ')})": {"images_per_second": best},
            "batch run, steady (after its first batch)": {"images_per_second": steady},
            "start-up: POST -> first scored batch (s)": {
                "seconds": _seconds_between(run["created_at"], timing["first_batch_at"])
            },
            "start-up: driver start -> first scored batch (s)": {"seconds": timing["startup_s"]},
            "  of which: driver start -> Ray connected (s)": {"seconds": timing["ray_connected_s"]},
            "  of which: driver start -> first actor constructing (s)": {"seconds": timing["first_actor_s"]},
            "whole run: POST -> succeeded (s)": {"seconds": wall},
        }
        checks = {
            f"batch steady >= {TARGET}x raw best batched": [steady, round(TARGET * best, 1), steady >= TARGET * best]
        }
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "arch": args.arch,
            "image_size": args.image_size,
            "image_bytes": len(image),
            "images": args.images,
            "actors": timing["actors"],
            "cpus": len(os.sched_getaffinity(0)),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "raw_rows": {"before": raw_before, "after": raw_after},
            "rows": rows,
            "ratio": round(steady / best, 3),
            "checks": checks,
            "run": {k: run[k] for k in ("id", "plan", "result", "cost")},
        }
    finally:
        stack.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--image", type=Path, help="a JPEG to score (default: a generated 640x480 JPEG)")
    parser.add_argument("--images", type=int, default=1000, help="copies of the image in S3 to score")
    parser.add_argument("--num-workers", type=int, help="model actors (default: one per CPU)")
    parser.add_argument(
        "--use-gpu", action="store_true", help="GPU actors (the raw rows stay on CPU: compare runs, not the ratio)"
    )
    parser.add_argument("--raw-seconds", type=float, default=4, help="seconds per raw-model row")
    parser.add_argument("--timeout", type=float, default=900, help="seconds the batch run may take")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as work:
        result = run_benchmark(args, Path(work))
    print(f"{'row':<52}{'value':>10}")
    for name, row in result["rows"].items():
        value = row.get("images_per_second", row.get("seconds"))
        print(f"{name:<52}{value:>10}")
    print(f"ratio (steady / raw best): {result['ratio']}   actors: {result['actors']}   load: "
          f"{result['load_average_at_start'][0]:.1f} -> {result['load_average_at_end'][0]:.1f}")  # fmt: skip
    print(json.dumps(result["checks"], indent=2))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"batch_predict-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

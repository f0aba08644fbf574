"""End-to-end pipeline benchmark through the REST API on the local stack: wall time per phase and accuracy.

    .venv/bin/python -m benchmarks.pipeline --dataset ../shared/datasets/cats-vs-whales --image-size 224

Prints a table and writes benchmarks/results/pipeline-<dataset>-<time>.json. Not a test: numbers vary
with the machine's load, so compare runs made side by side. `--runs 2` POSTs the same job twice, one after
the other: the second shows what the dataset and feature caches save.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from core.s3 import s3_client
from infra.local.config import stack_home
from infra.local.sample_data import upload_folder
from infra.local.stack import LocalStack

RESULTS = Path(__file__).parent / "results"


def phase_durations(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds spent in each phase, from the timestamps of the job's event log."""
    marks = [(e["data"]["phase"], datetime.fromisoformat(e["at"])) for e in events if e["kind"] == "phase"]
    end = datetime.fromisoformat(events[-1]["at"])
    durations = {}
    for (phase, start), nxt in zip(marks, [*marks[1:], (None, end)], strict=True):
        durations[phase] = round((nxt[1] - start).total_seconds(), 2)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=stack_home())
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--freeze-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1, help="POST the same job this many times, one after another")
    args = parser.parse_args()

    stack = LocalStack.load(args.home.resolve())
    stack.up()
    stack.export_env()
    s3 = s3_client()
    name = args.dataset.resolve().name
    upload_folder(s3, args.dataset.resolve(), "trainyard-bench", name)
    request = {
        "dataset_uri": f"s3://trainyard-bench/{name}",
        "epochs": args.epochs,
        "freeze_epochs": args.freeze_epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "seed": args.seed,
    }
    for run in range(1, args.runs + 1):
        print(f"\nrun {run} of {args.runs}")
        _run_once(stack, name, request)


def _run_once(stack: LocalStack, name: str, request: dict[str, Any]) -> None:
    started = time.monotonic()
    with stack.api_client() as api:
        job_id = api.post("/v1/jobs", json=request).raise_for_status().json()["id"]
        while (job := api.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(1)
        wall = time.monotonic() - started
        events = api.get(f"/v1/jobs/{job_id}/events").json()["events"]
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job['status']}: {job.get('error')}")

    phases = phase_durations(events)
    result = {
        "dataset": name,
        "request": request,
        "job_id": job_id,
        "wall_seconds": round(wall, 1),
        "phases_seconds": phases,
        "lr": job["lr_sweep"]["chosen_lr"],
        "lr_suggestions": job["lr_sweep"].get("suggestions"),
        "features_images_per_second": job["lr_sweep"].get("features_images_per_second"),
        "epochs": job["metrics"],
        "best": job["best"],
        "accuracy": job["evaluation"]["accuracy"],
        "features_cache": [e["data"]["cache"] for e in events if e["kind"] == "features"],
        "events": [{"at": e["at"], "kind": e["kind"], "message": e["message"]} for e in events],
    }
    print(f"\n{name}: {job['evaluation']['accuracy']:.2%} validation accuracy, {wall:.0f}s from POST to deployed")
    print(f"{'phase':<12}{'seconds':>9}")
    for phase, seconds in phases.items():
        print(f"{phase:<12}{seconds:>9.1f}")
    print(f"\n{'epoch':<7}{'stage':<10}{'train_loss':>11}{'valid_loss':>11}{'accuracy':>10}{'seconds':>9}")
    for row in job["metrics"]:
        print(
            f"{row['epoch']:<7}{row['stage']:<10}{row['train_loss']:>11.4f}{row['valid_loss']:>11.4f}"
            f"{row['accuracy']:>10.2%}{row.get('seconds', 0):>9.1f}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"pipeline-{name}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()

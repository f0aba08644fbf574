"""The README's first command: the whole loop on this machine, through the REST API.

Starts the local stack (S3-compatible server, Ray head, API), uploads a small generated image dataset,
POSTs a training job, follows it to the end, asks the deployed model about images it never saw, and
leaves everything running. `--dataset DIR` trains on your own image folder (train/<class>/*, valid/<class>/*).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from core.s3 import s3_client
from infra.local.config import stack_home
from infra.local.sample_data import SHAPES, make_shapes, upload_folder
from infra.local.stack import LocalStack


def _print_epochs(metrics: list[dict[str, Any]], shown: int) -> int:
    for row in metrics[shown:]:
        print(
            f"  epoch {row['epoch']:>2} ({row['stage']:>8}): train_loss {row['train_loss']:.4f}  "
            f"valid_loss {row['valid_loss']:.4f}  accuracy {row['accuracy']:.2%}"
        )
    return len(metrics)


def follow(api: httpx.Client, job_id: str, poll_s: float = 1.0) -> dict[str, Any]:
    """Poll the job and its event log, printing each phase and epoch as it lands; returns the final job."""
    last_event, shown, started = 0, 0, time.monotonic()
    while True:
        job = api.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        events = api.get(f"/v1/jobs/{job_id}/events", params={"after": last_event}).raise_for_status().json()
        for event in events["events"]:
            last_event = event["id"]
            if event["kind"] == "phase":
                print(f"[{time.monotonic() - started:>5.1f}s] {event['data']['phase']}")
            elif event["kind"] == "fetched":
                print(f"  {event['message']}")
        if job.get("lr_sweep") and shown == 0 and job["metrics"]:
            sweep = job["lr_sweep"]
            print(f"  learning rate: {sweep['chosen_lr']:.2e} (chosen by: {sweep.get('method')})")
        shown = _print_epochs(job["metrics"], shown)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job  # type: ignore[no-any-return]
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=stack_home())
    parser.add_argument("--dataset", type=Path, help="an image folder to train on instead of the generated shapes")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--freeze-epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    started = time.monotonic()
    stack = LocalStack.load(args.home.resolve())
    print("Starting the local stack (S3 server, Ray head, API) ...")
    stack.up()
    stack.export_env()
    s3 = s3_client()

    with tempfile.TemporaryDirectory() as tmp:
        if args.dataset:
            folder, prefix = args.dataset.resolve(), args.dataset.resolve().name
        else:
            folder, prefix = make_shapes(Path(tmp) / "shapes", train_per_class=40, valid_per_class=15), "shapes"
        total = sum(1 for p in folder.rglob("*") if p.is_file())
        uploaded = upload_folder(s3, folder, "trainyard-demo", prefix)
    dataset_uri = f"s3://trainyard-demo/{prefix}"
    print(f"Uploaded {uploaded} of {total} images to {dataset_uri} (the rest were there from an earlier run)")

    request = {
        "dataset_uri": dataset_uri,
        "name": f"demo-{prefix}",
        "epochs": args.epochs,
        "freeze_epochs": args.freeze_epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": 2,
    }
    with stack.api_client() as api:
        response = api.post("/v1/jobs", json=request)
        if response.status_code != 202:
            print(f"The API refused the job: {response.status_code} {response.text}", file=sys.stderr)
            return 1
        job_id = response.json()["id"]
        print(f"POST /v1/jobs -> 202, job {job_id}")
        job = follow(api, job_id)
        if job["status"] != "succeeded":
            error = job.get("error") or {}
            print(f"Job {job['status']} in {error.get('phase')}: {error.get('message')}", file=sys.stderr)
            return 1
        evaluation = job.get("evaluation") or {}
        print(f"Validation accuracy: {evaluation.get('accuracy', 0):.2%} (best epoch {job['best']['epoch']})")
        print(f"Best checkpoint: {job['best']['checkpoint_uri']}")
        model = job["model"]
        print(f"Deployed model {model['id']}: POST {model['predict_url']}")

        if not args.dataset:
            with tempfile.TemporaryDirectory() as tmp:
                held_out = make_shapes(Path(tmp), train_per_class=0, valid_per_class=1, seed=12345)
                for shape in SHAPES:
                    image = next((held_out / "valid" / shape).iterdir()).read_bytes()
                    answer = api.post(f"/v1/models/{model['id']}/predict?top_k=1", content=image).json()
                    top = answer["predictions"][0]
                    print(f"  held-out {shape:<8} -> {top['label']} ({top['probability']:.1%})")
    print(f"\nDone in {time.monotonic() - started:.0f}s. Trainyard keeps running:\n{stack.describe()}")
    print(f"Stop it with: .venv/bin/trainyard down --home {stack.config.home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

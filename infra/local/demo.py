"""The README's first command: the whole loop on this machine, through the REST API.

Starts the local stack (S3-compatible server, Ray head, API), uploads a small generated image dataset,
POSTs a training job, follows it to the end, prints each stage's result, asks the deployed model about
images it never saw, and leaves everything running. `--dataset DIR` trains on your own image folder
(train/<class>/*, valid/<class>/*).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from infra.local.config import stack_home
from infra.local.sample_data import SHAPES, make_shapes, upload_folder
from infra.local.stack import LocalStack
from infra.local.stages_report import stage_results

# The generated shapes and the job the demo trains on them, chosen so that every stage runs: on these images
# the frozen body's features leave the head-only model imperfect (24 of 30 validation images), and the
# unfrozen epochs on two Ray Train DDP workers lower the validation loss by more than the trial asks, so
# training goes on and the unfrozen model is deployed. tests/e2e/test_demo.py fails if that stops being so.
DEMO_SHAPES: dict[str, int] = {"train_per_class": 24, "valid_per_class": 10, "size": 80, "seed": 4}
# The default recipe (LR range test, one head-only epoch, early stopping) at a small size: a global batch of
# 24 makes 3 steps an epoch, so the unfrozen trial is the whole first unfrozen epoch.
DEMO_JOB: dict[str, Any] = {"image_size": 64, "batch_size": 24, "freeze_epochs": 1, "epochs": 2, "num_workers": 2}
DEMO_BUCKET = "trainyard-demo"
HELD_OUT_SEED = 12345  # images the model never saw, drawn like the training ones


def _print_epochs(metrics: list[dict[str, Any]], shown: int) -> int:
    for row in metrics[shown:]:
        print(
            f"  epoch {row['epoch']:>2} ({row['stage']:>8}): train_loss {row['train_loss']:.4f}  "
            f"valid_loss {row['valid_loss']:.4f}  accuracy {row['accuracy']:.2%}"
        )
    return len(metrics)


def events_of(api: httpx.Client, job_id: str, after: int = 0) -> list[dict[str, Any]]:
    response = api.get(f"/v1/jobs/{job_id}/events", params={"after": after}).raise_for_status()
    return list(response.json()["events"])


def follow(api: httpx.Client, job_id: str, poll_s: float = 1.0) -> dict[str, Any]:
    """Poll the job and its event log, printing each phase and epoch as it lands; returns the final job.

    The job runs on Ray, not in the API: while the API restarts (`trainyard up` after an upgrade), it carries
    on, and so does this loop."""
    last_event, shown, started = 0, 0, time.monotonic()
    while True:
        try:
            job = api.get(f"/v1/jobs/{job_id}").raise_for_status().json()
            events = events_of(api, job_id, last_event)
        except httpx.TransportError:
            time.sleep(poll_s)
            continue
        for event in events:
            last_event = event["id"]
            if event["kind"] == "phase":
                print(f"[{time.monotonic() - started:>5.1f}s] {event['data']['phase']}")
            elif event["kind"] in ("fetched", "unfreeze_trial", "unfreeze_skipped", "early_stop"):
                print(f"  {event['message']}")
        shown = _print_epochs(job["metrics"], shown)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job  # type: ignore[no-any-return]
        time.sleep(poll_s)


def upload_dataset(s3: Any, dataset: Path | None) -> str:
    """Upload `dataset`, or the generated shapes, to the demo bucket; returns its S3 URI."""
    with tempfile.TemporaryDirectory() as tmp:
        if dataset:
            folder, prefix = dataset.resolve(), dataset.resolve().name
        else:
            folder, prefix = make_shapes(Path(tmp) / "shapes", **DEMO_SHAPES), "shapes"
        total = sum(1 for p in folder.rglob("*") if p.is_file())
        uploaded = upload_folder(s3, folder, DEMO_BUCKET, prefix)
    uri = f"s3://{DEMO_BUCKET}/{prefix}"
    print(f"Uploaded {uploaded} of {total} images to {uri} (the rest were there from an earlier run)")
    return uri


def ask_held_out(api: httpx.Client, model_id: str) -> list[tuple[str, str, float]]:
    """One unseen image per shape through the deployed model: (shape, top label, its probability)."""
    answers = []
    with tempfile.TemporaryDirectory() as tmp:
        size = DEMO_SHAPES["size"]
        held_out = make_shapes(Path(tmp), train_per_class=0, valid_per_class=1, size=size, seed=HELD_OUT_SEED)
        for shape in SHAPES:
            image = next((held_out / "valid" / shape).iterdir()).read_bytes()
            response = api.post(f"/v1/models/{model_id}/predict?top_k=1", content=image).raise_for_status()
            top = response.json()["predictions"][0]
            answers.append((shape, str(top["label"]), float(top["probability"])))
    return answers


def run(
    stack: LocalStack,
    request: dict[str, Any],
    dataset: Path | None = None,
    on_submit: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Everything after the stack is up: upload, POST the job, follow it, print each stage's result and, on
    the generated shapes, the model's answers about unseen images. Returns the finished job, or None when the
    API refused it. `on_submit` is called with the job's id as soon as the API accepted it."""
    uri = upload_dataset(stack.s3_client(), dataset)
    with stack.api_client() as api:
        response = api.post("/v1/jobs", json={"dataset_uri": uri, **request})
        if response.status_code != 202:
            print(f"The API refused the job: {response.status_code} {response.text}", file=sys.stderr)
            return None
        job_id = response.json()["id"]
        print(f"POST /v1/jobs -> 202, job {job_id}")
        if on_submit is not None:
            on_submit(job_id)
        job = follow(api, job_id)
        print("\nStages:")
        for stage, result in stage_results(job, events_of(api, job_id)).items():
            print(f"  {stage:<9} {result}")
        if job["status"] != "succeeded":
            error = job.get("error") or {}
            print(f"Job {job['status']} in {error.get('phase')}: {error.get('message')}", file=sys.stderr)
            return job
        if dataset is None and job.get("model"):
            print("Unseen images:")
            for shape, label, probability in ask_held_out(api, job["model"]["id"]):
                print(f"  {shape:<8} -> {label} ({probability:.1%})")
    return job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=stack_home())
    parser.add_argument("--dataset", type=Path, help="an image folder to train on instead of the generated shapes")
    parser.add_argument("--epochs", type=int, default=DEMO_JOB["epochs"])
    parser.add_argument("--freeze-epochs", type=int, default=DEMO_JOB["freeze_epochs"])
    parser.add_argument("--image-size", type=int, default=DEMO_JOB["image_size"])
    parser.add_argument("--batch-size", type=int, default=DEMO_JOB["batch_size"])
    args = parser.parse_args(argv)

    started = time.monotonic()
    stack = LocalStack.load(args.home.resolve())
    print("Starting the local stack (S3 server, Ray head, API) ...")
    stack.up()
    stack.export_env()
    name = args.dataset.resolve().name if args.dataset else "shapes"
    request = DEMO_JOB | {
        "name": f"demo-{name}",
        "epochs": args.epochs,
        "freeze_epochs": args.freeze_epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
    }
    job = run(stack, request, args.dataset)
    if job is None or job["status"] != "succeeded":
        return 1
    print(f"\nDone in {time.monotonic() - started:.0f}s. Trainyard keeps running:\n{stack.describe()}")
    print(f"Stop it with: .venv/bin/trainyard down --home {stack.config.home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

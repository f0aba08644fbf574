"""One Trainyard job on a GPU machine, through the REST API: POST → deployed, and where the time went.

    python -m benchmarks.gpu_job DATASET_DIR [--out results.json]

Starts the local stack with every CPU of the machine (its Ray head detects the GPU), uploads the folder,
POSTs a job with `use_gpu: true` and one worker per GPU (NCCL, bf16 autocast, channels-last: the GPU path of
`jobs/train_loop.py`), follows it, then times predictions through the API. Prints one table of phases read
from the job's own event log and writes JSON. On a GPU an epoch of a small dataset takes seconds, so what
this measures is mostly fixed cost: the number the issue about time to a deployed model asks for.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from core.s3 import s3_client
from infra.local.demo import follow
from infra.local.sample_data import upload_folder
from infra.local.stack import LocalStack, StackConfig


def _gpu_facts() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False}
    return {
        "cuda": True,
        "device": torch.cuda.get_device_name(0),
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "nccl": torch.distributed.is_nccl_available(),
        "bf16": torch.cuda.is_bf16_supported(),
    }


def phase_table(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seconds between consecutive milestones of the job's event log: queued, each phase, epochs, the end."""
    marks: list[tuple[str, datetime]] = []
    for event in events:
        at = datetime.fromisoformat(event["at"])
        if event["kind"] == "phase":
            marks.append((event["data"]["phase"], at))
        elif event["kind"] in ("queued", "epoch", "published", "succeeded", "failed"):
            marks.append((event["message"] if event["kind"] == "epoch" else event["kind"], at))
    return [
        {"stretch": f"{a} → {b}", "seconds": round((tb - ta).total_seconds(), 2)}
        for (a, ta), (b, tb) in itertools.pairwise(marks)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--out", type=Path, default=Path("gpu_job.json"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--predictions", type=int, default=50)
    args = parser.parse_args(argv)

    facts = _gpu_facts()
    print(json.dumps(facts))
    home = Path(tempfile.mkdtemp(prefix="trainyard-gpu-"))
    stack = LocalStack(StackConfig.with_free_ports(home, num_cpus=os.cpu_count() or 2))
    t0 = time.monotonic()
    stack.up()
    stack.export_env()
    stack_up_s = time.monotonic() - t0
    upload_folder(s3_client(), args.dataset.resolve(), "trainyard-bench", args.dataset.name)
    request = {
        "dataset_uri": f"s3://trainyard-bench/{args.dataset.name}",
        "name": f"gpu-{args.dataset.name}",
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": max(1, int(facts.get("gpus", 1))),
        "use_gpu": bool(facts.get("cuda")),
    }
    result: dict[str, Any] = {"facts": facts, "request": request, "stack_up_s": round(stack_up_s, 1)}
    try:
        with stack.api_client(timeout=60) as api:
            posted = time.monotonic()
            job_id = api.post("/v1/jobs", json=request).raise_for_status().json()["id"]
            job = follow(api, job_id)
            result["post_to_end_s"] = round(time.monotonic() - posted, 1)
            events = api.get(f"/v1/jobs/{job_id}/events").raise_for_status().json()["events"]
            result |= {"status": job["status"], "error": job.get("error"), "phases": phase_table(events)}
            result |= {"evaluation": job.get("evaluation"), "metrics": job.get("metrics"), "events": events}
            if job["status"] == "succeeded":
                image = next(p for p in sorted(args.dataset.rglob("*.jpg")))
                url = f"/v1/models/{job['model']['id']}/predict"
                api.post(url, content=image.read_bytes()).raise_for_status()  # the first loads the model
                latencies = []
                for _ in range(args.predictions):
                    start = time.perf_counter()
                    api.post(url, content=image.read_bytes()).raise_for_status()
                    latencies.append((time.perf_counter() - start) * 1000)
                result["predict_c1_ms"] = {
                    "p50": round(statistics.median(latencies), 1),
                    "p99": round(sorted(latencies)[int(0.99 * (len(latencies) - 1))], 1),
                }
    finally:
        logs = sorted((home / "logs").glob("*"))
        if result.get("status") != "succeeded":  # the driver's and Serve's own logs say why
            session = Path(stack.config.ray_temp_dir) / "session_latest" / "logs"
            logs += sorted(session.glob("job-driver-*.log")) + sorted(session.glob("serve/*.log"))
            logs += sorted(session.glob("worker-*.err"))[-6:]
        for log in logs:
            result.setdefault("logs", {})[log.name] = log.read_text(errors="replace")[-6000:]
        args.out.write_text(json.dumps(result, indent=2, default=str))
        stack.down()
    print(f"\nstack up {result['stack_up_s']} s; POST → {result.get('status')} {result.get('post_to_end_s')} s")
    for row in result.get("phases", []):
        print(f"  {row['seconds']:>7.2f} s  {row['stretch']}")
    if result.get("evaluation"):
        print(f"accuracy {result['evaluation'].get('accuracy')}")
    print(f"predict c=1 through the API: {result.get('predict_c1_ms')}")
    return 0 if result.get("status") == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())

"""Serving speed of one published model, side by side in one run: the raw model, Trainyard's endpoint, a naive server.

    .venv/bin/python -m benchmarks.serving                      # its own stack: publish, deploy, measure, stop
    .venv/bin/python -m benchmarks.serving --requests 400 --soak-s 30 --image photo.jpg

(a) the raw model in this machine's best shape: decode + preprocess + forward in one process (batch 1 and
    the best batch, contiguous and channels-last; the torch threads the replica would use; the malloc settings
    the replica runs with): the limit;
(b) Trainyard's endpoint through the API and straight to Serve's route at concurrency 1, 8, 32 and 128, a
    fixed number of requests each, then `--soak-s` seconds at 128;
(c) a naive single-process FastAPI + torch server without batching (below, ~30 lines): what a user writes.

Every row: throughput, p50/p99 and the count of each non-200 status. The machine is shared and noisy: only
ratios within one run mean anything. Writes benchmarks/results/serving-<time>.json; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request  # module level: the naive app's postponed annotation resolves here

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
MODEL_ID = "mdl-bench"
CONCURRENCY = (1, 8, 32, 128)
DEPLOY = """
import sys, ray
from core.s3 import s3_client
from core.settings import get_settings
from serving.deploy import deploy_model
ray.init()
print(deploy_model(s3_client(), get_settings(), sys.argv[1], sys.argv[2]))
"""


# --- (c) the naive server: what a user writes by hand in a few minutes -------------------------------------
def naive_app(artifact: Path) -> Any:
    """FastAPI + torch, one process, the forward on the event loop, no batching, torch's default threads."""
    import torch
    from fastapi import FastAPI

    from core.artifact import load_artifact
    from core.images import decode_image, eval_tensor, normalize

    meta, model = load_artifact(artifact.read_bytes())
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        image = decode_image(await request.body())
        x = normalize(eval_tensor(image, meta.image_size), meta.normalization).unsqueeze(0)
        with torch.no_grad():
            probs = model(x).softmax(1)[0]
        top = torch.topk(probs, k=min(5, len(meta.classes)))
        return {
            "predictions": [
                {"label": meta.classes[i], "probability": p}
                for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
        }

    return app


# --- (a) the raw model ---------------------------------------------------------------------------------------
def raw_rows(artifact: Path, image: bytes, batches: list[int], seconds: float) -> dict[str, dict[str, float]]:
    """Decode + preprocess + forward, as the replica runs them, in this process (started with the malloc env)."""
    import torch

    from core.artifact import load_artifact
    from serving import inference

    rows: dict[str, dict[str, float]] = {}
    meta, _ = load_artifact(artifact.read_bytes())
    # The replica's threads (all but one core when it reserved none) and every core: the limit is the best of both.
    for threads, layout, channels_last in [
        (threads, layout, channels_last)
        for threads in sorted({inference.replica_threads(None), len(os.sched_getaffinity(0))})
        for layout, channels_last in (("contiguous", False), ("channels-last", True))
    ]:
        torch.set_num_threads(threads)
        _, loaded = load_artifact(artifact.read_bytes())  # a fresh copy: `prepare` converts the module in place
        model = inference.prepare(loaded, channels_last, graph_size=meta.image_size)  # as a replica on CPU runs it

        def step(batch: int, model: torch.nn.Module = model, channels_last: bool = channels_last) -> None:
            x = torch.cat([inference.preprocess(image, meta.image_size, meta.normalization) for _ in range(batch)])
            inference.forward(model, x, channels_last)

        for batch in batches:
            for _ in range(3):  # warm: first calls allocate and pick kernels
                step(batch)
            times: list[float] = []
            began = time.perf_counter()
            while time.perf_counter() - began < seconds or len(times) < 5:
                started = time.perf_counter()
                step(batch)
                times.append(time.perf_counter() - started)
            rows[f"raw {layout} {threads}t batch {batch}"] = {
                "threads": threads,
                "requests": len(times) * batch,
                "p50_ms": round(statistics.median(times) * 1000, 1),
                "images_per_second": round(batch * len(times) / sum(times), 1),
            }
    return rows


# --- (b) load against an HTTP endpoint ------------------------------------------------------------------------
async def load(
    url: str, headers: dict[str, str], body: bytes, concurrency: int, requests: int | None, seconds: float | None
) -> dict[str, Any]:
    """`concurrency` clients each sending one request after another, for `requests` in all or for `seconds`."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    splits: dict[str, list[float]] = {}
    batch_sizes: list[int] = []
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await client.post(url, content=body, headers=headers)  # warm: the model is loaded, a connection open
        began = time.perf_counter()

        async def worker() -> None:
            nonlocal sent
            while True:
                if requests is not None and sent >= requests:
                    return
                if seconds is not None and time.perf_counter() - began >= seconds:
                    return
                sent += 1
                started = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.TransportError as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    answer = response.json()
                    for name, ms in answer.get("timing_ms", {}).items():
                        splits.setdefault(name, []).append(ms)
                    if "batch_size" in answer:
                        batch_sizes.append(answer["batch_size"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    ok = statuses.get("200", 0)
    return {
        "concurrency": concurrency,
        "requests": sum(statuses.values()),
        "seconds": round(elapsed, 1),
        "images_per_second": round(ok / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1)
        if latencies
        else None,
        "errors": {status: n for status, n in statuses.items() if status != "200"},
        "server_ms_mean": {name: round(statistics.fmean(v), 1) for name, v in splits.items()},
        "batch_size_mean": round(statistics.fmean(batch_sizes), 1) if batch_sizes else None,
    }


def endpoint_rows(
    targets: dict[str, tuple[str, dict[str, str]]], body: bytes, requests: int, soak_s: float
) -> dict[str, dict[str, Any]]:
    rows = {}
    for name, (url, headers) in targets.items():
        for concurrency in CONCURRENCY:
            # c=1 needs fewer requests for a stable median; the others run the fixed count.
            count = max(50, requests // 4) if concurrency == 1 else requests
            rows[f"{name} c={concurrency}"] = asyncio.run(load(url, headers, body, concurrency, count, None))
            print(_line(f"{name} c={concurrency}", rows[f"{name} c={concurrency}"]), flush=True)
        if soak_s and name != "naive":
            key = f"{name} c=128 for {soak_s:.0f}s"
            rows[key] = asyncio.run(load(url, headers, body, 128, None, soak_s))
            print(_line(key, rows[key]), flush=True)
    return rows


def verdict(rows: dict[str, dict[str, Any]], soak_s: float) -> dict[str, Any]:
    """Where a lone request's milliseconds go, and the issue's targets checked against this run's own rows."""
    raw = {k: v for k, v in rows.items() if k.startswith("raw ")}
    best_1 = min(v["p50_ms"] for k, v in raw.items() if k.endswith(" batch 1"))
    best_batched = max(v["images_per_second"] for v in raw.values())
    api_1, serve_1 = rows["API c=1"], rows["Serve direct c=1"]
    split = serve_1["server_ms_mean"]
    result: dict[str, Any] = {
        "c=1 where the time goes (ms, means; hops from p50s)": {
            "preprocess": split.get("preprocess"),
            "queue": split.get("queue"),
            "inference": split.get("inference"),
            "proxy-replica hop": round(serve_1["p50_ms"] - split.get("replica", 0), 1),
            "API + API-Serve hop": round(api_1["p50_ms"] - serve_1["p50_ms"], 1),
        },
        "c=1 API p50 <= raw best batch-1 + 10 ms": [api_1["p50_ms"], round(best_1 + 10, 1)],
        "c=32 API img/s >= 0.8x raw best batched": [
            rows["API c=32"]["images_per_second"],
            round(0.8 * best_batched, 1),
        ],
        "c=32 API img/s >= 2x naive": [
            rows["API c=32"]["images_per_second"],
            2 * rows["naive c=32"]["images_per_second"],
        ],
    }
    soak = rows.get(f"API c=128 for {soak_s:.0f}s")
    if soak is not None:
        result["c=128 soak through the API: errors by status"] = soak["errors"]
    return result


def _line(name: str, row: dict[str, Any]) -> str:
    p50 = row.get("p50_ms")
    p99 = row.get("p99_ms", "")
    return f"{name:<34}{row['images_per_second']:>8}{p50!s:>9}{p99!s:>9}  {row.get('errors') or ''}"


# --- the set-up: a stack, a published and deployed model, the naive server -----------------------------------
def sample_jpeg() -> bytes:
    """A 640x480 JPEG with photo-like detail (noise over gradients): decoding costs what a phone photo's does."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([x * 255 / 640, y * 255 / 480, (x + y) * 255 / 1120], axis=-1)
    pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def run_benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from core.backbones import build_classifier, local_pretrained_weights
    from core.settings import Settings
    from core.spec import JobParams
    from core.store import JobStore, ModelRecord
    from infra.local.stack import LocalStack, StackConfig, free_port
    from jobs.stages.publish import publish_model

    image = args.image.read_bytes() if args.image else sample_jpeg()
    load_at_start = os.getloadavg()  # the machine is shared: say how busy it was
    stack = LocalStack(StackConfig.with_free_ports(work / "home"))
    naive: subprocess.Popen[bytes] | None = None
    try:
        stack.start_s3()
        stack.start_ray()
        stack.start_api()
        env = stack.env()
        s3 = stack.s3_client()
        settings = Settings(artifact_uri=env.get("TRAINYARD_ARTIFACT_URI") or Settings().artifact_uri)
        # Pretrained body, untrained head: the forward costs what a trained model's does, and no dataset is needed.
        torch.manual_seed(0)
        model = build_classifier(args.arch, 2, weights=local_pretrained_weights(args.arch)).eval()
        store = JobStore.from_url(stack.database_url)
        job, _ = store.create_job(JobParams(dataset_uri="s3://bench/none", image_size=args.image_size))
        uri = publish_model(s3, settings, job.id, model, args.arch, ["a", "b"], args.image_size, {})
        store.add_model(
            ModelRecord(
                id=MODEL_ID, job_id=job.id, artifact_uri=uri, arch=args.arch, classes=["a", "b"],
                created_at=datetime.now(UTC),
            )
        )  # fmt: skip
        subprocess.run(
            [sys.executable, "-c", DEPLOY, MODEL_ID, uri],
            env=env | {"RAY_ADDRESS": f"127.0.0.1:{stack.config.gcs_port}"},
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=300,
        )
        artifact = work / "model.pt"
        artifact.write_bytes(
            s3.get_object(Bucket=uri[5:].split("/", 1)[0], Key=uri[5:].split("/", 1)[1])["Body"].read()
        )

        port = free_port()
        naive = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.serving", "--naive-server", str(artifact), "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_ready(f"http://127.0.0.1:{port}/docs")

        print(f"{'row':<34}{'img/s':>8}{'p50 ms':>9}{'p99 ms':>9}  errors", flush=True)
        raw = json.loads(
            subprocess.run(
                [sys.executable, "-m", "benchmarks.serving", "--raw", str(artifact), "--image-file", "-",
                 "--raw-seconds", str(args.raw_seconds), "--image-size", str(args.image_size)],
                input=image, cwd=REPO, env=env, capture_output=True, check=True,
            ).stdout.decode().strip().splitlines()[-1]
        )  # fmt: skip
        for name, row in raw.items():
            print(f"{name:<34}{row['images_per_second']:>8}{row['p50_ms']:>9}", flush=True)
        serve_headers = {"serve_multiplexed_model_id": MODEL_ID, "content-type": "image/jpeg"}
        targets = {
            "API": (
                f"{stack.config.api_url}/v1/models/{MODEL_ID}/predict",
                {"content-type": "image/jpeg"} | stack.api_headers(),  # the benchmark's own stack's admin key
            ),
            "Serve direct": (f"{stack.config.serve_url}/classify", serve_headers),
            "naive": (f"http://127.0.0.1:{port}/predict", {"content-type": "image/jpeg"}),
        }
        rows = raw | endpoint_rows(targets, image, args.requests, args.soak_s)
        checks = verdict(rows, args.soak_s)
        print(json.dumps(checks, indent=2), flush=True)
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "arch": args.arch,
            "image_size": args.image_size,
            "image_bytes": len(image),
            "cpus": len(os.sched_getaffinity(0)),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "rows": rows,
            "checks": checks,
        }
    finally:
        if naive is not None:
            naive.terminate()
            naive.wait(timeout=15)
        stack.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--image", type=Path, help="a JPEG to send (default: a generated 640x480 JPEG)")
    parser.add_argument("--requests", type=int, default=400, help="requests per row at c=8, 32, 128")
    parser.add_argument("--soak-s", type=float, default=30, help="seconds at c=128 after the fixed rows (0: skip)")
    parser.add_argument("--raw-seconds", type=float, default=4, help="seconds per raw-model row")
    parser.add_argument("--raw", type=Path, help=argparse.SUPPRESS)  # child: raw rows of this artifact
    parser.add_argument("--image-file", help=argparse.SUPPRESS)
    parser.add_argument("--naive-server", type=Path, help=argparse.SUPPRESS)  # child: serve the naive app
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.naive_server:
        import uvicorn

        uvicorn.run(naive_app(args.naive_server), host="127.0.0.1", port=args.port, log_level="warning")
        return
    if args.raw:
        print(json.dumps(raw_rows(args.raw, sys.stdin.buffer.read(), [1, 8, 16, 32], args.raw_seconds)))
        return

    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as work:
        result = run_benchmark(args, Path(work))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"serving-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()

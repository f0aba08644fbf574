"""Trainyard vs a plain PyTorch loop vs fastai, on one dataset, in one run, on this machine.

    .venv/bin/pip install -e '.[benchmark]'          # fastai 2.8, once
    .venv/bin/python -m benchmarks.training ../shared/datasets/cats-vs-whales

Three systems, the same backbone (EfficientNet-Lite0), image size, input scaling ((x - 127) / 128) and
malloc settings (core/runtime_env.py: they decide CPU speed for every PyTorch process here):
  (a) trainyard: the local stack started as the demo starts it, the folder uploaded to its S3, a job POSTed
      through the REST API and polled to `succeeded`; phases from the job's own event log;
  (b) plain: one process, no Ray, no S3, no API, the same recipe (features, range test, head, unfrozen
      epochs at the same LRs): the floor for Trainyard's overhead; run twice, first with the stack up and idle
      beside it (the machine as Trainyard's training workers have it: the idle stack takes ~10% of 2 cores),
      then alone, so Ray Train's own cost and the stack's show apart;
  (c) fastai: `lr_find()` then `fine_tune(3, base_lr=valley)`, as the lesson does (`--fastai-epochs`).
Each system runs in a child process of its own (glibc reads MALLOC_* at start-up; memory is returned).
`--arch` is repeatable: one Trainyard row per backbone, each a first job on one stack, beside the same peers:

    .venv/bin/python -m benchmarks.training ../shared/datasets/flowers-5 --only trainyard --only fastai \
        --arch efficientnet_lite0 --arch efficientnet_lite1 --arch efficientnet_lite2
Prints one Markdown table and writes benchmarks/results/training-<dataset>-<time>.json beside it.
The machine's load (`uptime`) goes into both: on a shared machine, compare only runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from core.runtime_env import TORCH_MALLOC_ENV

if TYPE_CHECKING:
    from infra.local.stack import LocalStack

RESULTS = Path(__file__).parent / "results"
ARCH = "efficientnet_lite0"
BENCH_BUCKET = "trainyard-bench"
CURVE = ("lrs", "losses")  # the range test's curve: long, and in the job already


class Run(BaseModel):
    """One system's result: the row of the table."""

    system: str
    total_seconds: float
    phases: dict[str, float]  # name -> seconds, in order
    train_images_per_second: float | None  # unfrozen epochs, training only where the system tells them apart
    valid_correct: int
    valid_images: int
    lr: float | None
    serving_p50_ms: float | None = None  # one image at a time (Trainyard: through the API's predict endpoint)
    serving_images_per_second: float | None = None  # 8 clients at once (fastai: get_preds over the validation set)
    extra: dict[str, Any] = {}

    @property
    def accuracy(self) -> float:
        return self.valid_correct / max(self.valid_images, 1)


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# --- (a) Trainyard through its REST API ------------------------------------------------------------------


def phase_seconds(created_at: str, events: list[dict[str, Any]]) -> dict[str, float]:
    """POST → first phase ('start'), then each phase until the next one or the last event."""
    marks = [(e["data"]["phase"], datetime.fromisoformat(e["at"])) for e in events if e["kind"] == "phase"]
    end = datetime.fromisoformat(events[-1]["at"])
    seconds = {"start": (marks[0][1] - datetime.fromisoformat(created_at)).total_seconds()} if marks else {}
    for (phase, start), (_, stop) in zip(marks, [*marks[1:], (None, end)], strict=True):
        seconds[phase] = (stop - start).total_seconds()
    return {name: round(value, 1) for name, value in seconds.items()}


@contextmanager
def local_stack(args: argparse.Namespace) -> Iterator[LocalStack]:
    """The local stack, started unless it runs already; stopped afterwards only if this started it (and no
    `--keep-stack`)."""
    from infra.local.stack import LocalStack

    stack = LocalStack.load(args.home.resolve())
    was_up = stack.ray_ready()
    stack.up()
    try:
        yield stack
    finally:
        if not was_up and not args.keep_stack:
            stack.down()


def run_trainyard(dataset: Path, args: argparse.Namespace) -> Run:
    from core.s3 import s3_client
    from infra.local.sample_data import upload_folder
    from trainyard.client import Client

    with local_stack(args) as stack:
        stack.export_env()
        if args.job:  # a job this benchmark ran before: read it again (and time its model's predictions)
            with Client(url=stack.config.api_url) as client:
                raw = client.get_job(args.job).model_dump(mode="json")
                events = [e.model_dump(mode="json") for e in client.events(args.job)]
                wall = _since(raw["created_at"], events[-1]["at"])
                serving = serve_timing(stack, raw["model"]["id"], dataset) if raw.get("model") else {}
            return _trainyard_run(raw, events, wall, serving, args)
        upload_folder(s3_client(), dataset, BENCH_BUCKET, dataset.name)
        if not args.warm:
            forget_caches()
        with Client(url=stack.config.api_url) as client:  # TRAINYARD_API_KEY, once auth lands
            started = time.monotonic()
            # The SDK sends a None as null, so only what the command line set goes in: the rest takes the API's
            # defaults, as a user's job would.
            given = {
                "arch": args.arch[0],  # a child runs one backbone: main starts one child per --arch
                "epochs": args.epochs,
                "image_size": args.image_size,
                "batch_size": args.batch_size,
                "progressive_resizing": args.progressive_resizing,
                "seed": args.seed,
                "max_epochs": args.max_epochs,
                "tta": args.tta or None,
            }
            job = client.submit(
                f"s3://{BENCH_BUCKET}/{dataset.name}",
                name=f"bench-{dataset.name}",
                lr_sweep={"method": args.lr_sweep},
                **{key: value for key, value in given.items() if value is not None},
            )
            done = client.wait(job.id, timeout=args.timeout)
            wall = time.monotonic() - started
            raw = done.model_dump(mode="json")
            events = [e.model_dump(mode="json") for e in client.events(job.id)]
            serving = serve_timing(stack, raw["model"]["id"], dataset) if raw.get("model") else {}
    return _trainyard_run(raw, events, wall, serving, args)


def _system(params: dict[str, Any]) -> str:
    extension = f" max_epochs {params['max_epochs']}" if params.get("max_epochs") else ""
    tta = " tta" if params.get("tta") else ""
    return f"trainyard {params['arch']}{extension}{tta}"


def _trainyard_run(
    raw: dict[str, Any], events: list[dict[str, Any]], wall: float, serving: dict[str, float], args: argparse.Namespace
) -> Run:
    evaluation = raw["evaluation"]
    unfrozen = [e for e in raw["metrics"] if e["stage"] == "unfrozen" and e.get("images_per_second")]
    return Run(
        system=_system(raw["params"]),
        total_seconds=round(wall, 1),
        phases=phase_seconds(raw["created_at"], events),
        train_images_per_second=_mean([e["images_per_second"] for e in unfrozen]),
        valid_correct=round(evaluation["accuracy"] * evaluation["images"]),
        valid_images=evaluation["images"],
        lr=raw["lr_sweep"]["chosen_lr"],
        serving_p50_ms=serving.get("p50_ms"),
        serving_images_per_second=serving.get("images_per_second"),
        extra={
            "job_id": raw["id"],
            "params": raw["params"],
            "tta": evaluation.get("tta"),
            "lr_sweep": {k: v for k, v in raw["lr_sweep"].items() if k not in ("lrs", "losses")},
            "epochs": [{k: e.get(k) for k in EPOCH_FIELDS} for e in raw["metrics"]],
            "best": raw["best"],
            "events": [
                {"seconds": round(_since(raw["created_at"], e["at"]), 1), "kind": e["kind"], "message": e["message"]}
                for e in events
            ],
        },
    )


EPOCH_FIELDS = (
    "stage",
    "epoch",
    "image_size",
    "seconds",
    "train_seconds",
    "images_per_second",
    "valid_loss",
    "accuracy",
)


def serve_timing(stack: LocalStack, model_id: str, dataset: Path, requests: int = 40) -> dict[str, float]:
    """Predictions through the API: p50 of one at a time, then images/s with 8 clients at once."""
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    images = [p.read_bytes() for p in sorted((dataset / "valid").rglob("*.jpg"))[:requests]]
    url = f"/v1/models/{model_id}/predict"
    with stack.api_client(timeout=120) as api:
        # With its type: a body without one is held to the API's JSON limit (64 KiB), and photos are larger.
        headers = {"Content-Type": "image/jpeg"}
        api.post(url, content=images[0], headers=headers).raise_for_status()  # the replica loads the model
        latencies = []
        for image in images[: requests // 2]:
            started = time.perf_counter()
            api.post(url, content=image, headers=headers).raise_for_status()
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda body: api.post(url, content=body, headers=headers).raise_for_status(), images))
        rate = len(images) / (time.perf_counter() - started)
    return {"p50_ms": round(statistics.median(latencies) * 1000, 1), "images_per_second": round(rate, 1)}


def _since(start: str, at: str) -> float:
    return (datetime.fromisoformat(at) - datetime.fromisoformat(start)).total_seconds()


def forget_caches() -> None:
    """A first job, as a new user's: no feature cache in S3 and no downloaded copy of any dataset on the node."""
    from core.s3 import s3_client
    from core.settings import get_settings
    from core.spec import S3Location

    settings = get_settings()
    s3 = s3_client(settings)
    location = S3Location.parse(settings.artifact_uri).child("feature-cache")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.prefix):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=location.bucket, Key=item["Key"])
    shutil.rmtree(settings.resolved_cache_dir / "datasets", ignore_errors=True)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


# --- (b) plain PyTorch, one process ----------------------------------------------------------------------


def train_one_epoch(model: Any, loader: Any, optimizer: Any, schedule: Any, norm: Any) -> int:
    """One pass of plain-PyTorch training (cross-entropy, a scheduler step per batch); returns the images seen."""
    from torch import nn

    from core.images import normalize

    seen = 0
    for images, labels in loader:
        loss = nn.functional.cross_entropy(model(normalize(images, norm)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        seen += len(labels)
    return seen


def run_plain(dataset: Path, args: argparse.Namespace) -> Run:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from core.backbones import (
        BACKBONES,
        build_classifier,
        channels_last,
        freeze_batchnorm_statistics,
        local_pretrained_weights,
    )
    from core.images import normalize
    from jobs.data import ImageItems
    from jobs.stages.lr_sweep import lr_range_test
    from jobs.stages.validate import validate_dataset
    from jobs.unfrozen_config import epoch_image_sizes

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    phases: dict[str, float] = {}
    clock = time.monotonic()
    started = clock

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        phases[name] = round(phases.get(name, 0.0) + now - clock, 1)
        clock = now

    data = validate_dataset(dataset, str(dataset), 1.0)
    classes = data.summary.classes
    model = channels_last(build_classifier(ARCH, len(classes), local_pretrained_weights(ARCH)))
    norm = BACKBONES[ARCH].normalization
    size, batch = args.image_size or 224, args.batch_size

    def items(split: list[Any], train: bool) -> ImageItems:
        return ImageItems(dataset, [i.path for i in split], [i.label for i in split], size, train)

    train_eval, valid = items(data.train, False), items(data.valid, False)  # features: the frozen body, no aug
    lap("load")

    # Frozen stage on precomputed features, as Trainyard does it.
    model.eval()
    with torch.inference_mode():
        batches = [(model.body(normalize(images, norm)), labels) for images, labels in DataLoader(train_eval, 64)]
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    lap("features")
    sweep = lr_range_test(x.numpy(), y.numpy(), len(classes), batch, seed=args.seed)
    lr = sweep.suggested_lr
    lap("lr_sweep")
    head = model.head
    steps = math.ceil(len(x) / batch)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.99)
    head.train()
    for index in torch.randperm(len(x)).split(batch):
        loss = nn.functional.cross_entropy(head(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    lap("head")

    # Unfrozen: the same schedule, discriminative LRs and frozen batch-norm statistics as jobs/train_loop.py.
    head_lr = lr * 0.5
    train_items = items(data.train, True)
    train = DataLoader(train_items, batch_size=batch, shuffle=True, drop_last=False)
    sizes = epoch_image_sizes(size, args.epochs, args.progressive_resizing)
    optimizer = torch.optim.AdamW(
        [{"params": model.body.parameters(), "lr": head_lr / 100}, {"params": head.parameters(), "lr": head_lr}],
        weight_decay=0.01,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[head_lr / 100, head_lr], total_steps=args.epochs * len(train), pct_start=0.3, div_factor=5
    )
    rates, correct = [], 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        freeze_batchnorm_statistics(model.body)
        train_items.train_at(sizes[epoch - 1])
        epoch_start = time.monotonic()
        seen = train_one_epoch(model, train, optimizer, schedule, norm)
        rates.append(seen / (time.monotonic() - epoch_start))
        lap(f"epoch {epoch} train")
        model.eval()
        with torch.inference_mode():
            correct = sum(int((model(normalize(i, norm)).argmax(1) == t).sum()) for i, t in DataLoader(valid, 64))
        lap(f"epoch {epoch} valid")
    return Run(
        system="plain PyTorch (1 process)",
        total_seconds=round(time.monotonic() - started, 1),
        phases=phases,
        train_images_per_second=_mean(rates),
        valid_correct=correct,
        valid_images=len(valid),
        lr=lr,
    )


# --- (c) fastai ------------------------------------------------------------------------------------------


def run_fastai(dataset: Path, args: argparse.Namespace) -> Run:
    from fastai.vision.all import (
        Callback,
        CrossEntropyLossFlat,
        ImageDataLoaders,
        Learner,
        Normalize,
        Resize,
        accuracy,
        aug_transforms,
        params,
        valley,
    )

    from core.backbones import BACKBONES, build_classifier, local_pretrained_weights

    class EpochTimer(Callback):  # type: ignore[misc]
        """Training seconds and images per epoch, apart from validation."""

        order = 99

        def __init__(self) -> None:
            # Kept across fits: fine_tune runs two (frozen, then unfrozen) and passes this callback to both.
            self.train_seconds: list[float] = []
            self.train_images: list[int] = []

        def before_train(self) -> None:
            self.t0, self.n = time.monotonic(), 0

        def after_batch(self) -> None:
            if self.training:
                self.n += len(self.yb[0])

        def after_train(self) -> None:
            self.train_seconds.append(time.monotonic() - self.t0)
            self.train_images.append(self.n)

    started = time.monotonic()
    norm = BACKBONES[ARCH].normalization
    size = args.image_size or 224
    dls = ImageDataLoaders.from_folder(
        dataset,
        train="train",
        valid="valid",
        item_tfms=Resize(size),
        batch_tfms=[*aug_transforms(size=size), Normalize.from_stats(list(norm.mean), list(norm.std))],
        bs=args.batch_size,
        seed=args.seed,
        # Decode in-process, as the plain loop and Trainyard's workers do: on 2 cores, worker processes only
        # compete with the model for them (and lr_find's 100 steps would fork them again on every short epoch).
        num_workers=0,
    )
    model = build_classifier(ARCH, len(dls.vocab), local_pretrained_weights(ARCH))
    learn = Learner(
        dls,
        model,
        loss_func=CrossEntropyLossFlat(),
        metrics=accuracy,
        splitter=lambda m: [params(m.body), params(m.head)],
    )
    learn.freeze()
    load_seconds = time.monotonic() - started
    t0 = time.monotonic()
    with learn.no_bar(), learn.no_logging():
        lr = float(learn.lr_find(suggest_funcs=(valley,), show_plot=False).valley)
    lr_find_seconds = time.monotonic() - t0
    timer = EpochTimer()
    t0 = time.monotonic()
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(args.fastai_epochs, base_lr=lr, cbs=[timer])
    fine_tune_seconds = time.monotonic() - t0
    # Read before the predictions: predict and get_preds enter the learner as a fit does, and the recorder's
    # before_fit and after_epoch leave one [valid_loss, accuracy] row. fine_tune's: [train_loss, valid_loss, accuracy].
    epochs = [list(map(float, v)) for v in learn.recorder.values]
    final_accuracy = epochs[-1][2]
    valid_images = len(dls.valid_ds)
    latencies = []
    for path in list(dls.valid_ds.items)[:20]:
        t0 = time.perf_counter()
        learn.predict(path)
        latencies.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    learn.get_preds(dl=dls.valid)
    preds_rate = valid_images / (time.perf_counter() - t0)
    # The first timed epoch is fine_tune's frozen one; the rest are unfrozen.
    unfrozen = list(zip(timer.train_images[1:], timer.train_seconds[1:], strict=True))
    return Run(
        system="fastai 2.8 lr_find + fine_tune",
        total_seconds=round(time.monotonic() - started, 1),
        phases={
            "load": round(load_seconds, 1),
            "lr_find": round(lr_find_seconds, 1),
            "fine_tune": round(fine_tune_seconds, 1),
            **{f"epoch {i} train": round(s, 1) for i, s in enumerate(timer.train_seconds)},
        },
        train_images_per_second=_mean([n / s for n, s in unfrozen]),
        valid_correct=round(final_accuracy * valid_images),
        valid_images=valid_images,
        lr=lr,
        serving_p50_ms=round(sorted(latencies)[len(latencies) // 2] * 1000, 1),
        serving_images_per_second=round(preds_rate, 1),
        extra={"epochs": epochs},
    )


# --- the run ---------------------------------------------------------------------------------------------


def run_plain_beside_stack(dataset: Path, args: argparse.Namespace) -> Run:
    """(b) while the local stack runs idle beside it, as it does beside Trainyard's own training workers."""
    with local_stack(args):
        run = run_plain(dataset, args)
    return run.model_copy(update={"system": "plain PyTorch (1 process), the idle stack beside it"})


SYSTEMS = {
    "trainyard": run_trainyard,
    "plain-beside-stack": run_plain_beside_stack,
    "plain": run_plain,
    "fastai": run_fastai,
}


def child_arguments(system: str, archs: list[str]) -> list[list[str]]:
    """One list per child process to start for `system`: the arguments only that child gets. Trainyard runs one
    child per backbone; the plain loop and fastai always train Lite0, once."""
    return [[f"--arch={arch}"] for arch in archs] if system == "trainyard" else [[]]


def _child(system: str, dataset: Path, argv: list[str]) -> Run:
    """Run one system in a fresh process with the malloc settings, and read its result back."""
    env = os.environ | TORCH_MALLOC_ENV
    cmd = [sys.executable, "-m", "benchmarks.training", str(dataset), *argv, "--only", system, "--json-stdout"]
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    return Run.model_validate_json(out.strip().splitlines()[-1])


def table(dataset: str, runs: list[Run], load: dict[str, str]) -> str:
    lines = [
        f"**{dataset}** — {datetime.now():%Y-%m-%d %H:%M}, load average (1/5/15 min) at start {load['start']}, "
        f"at end {load['end']}",
        "",
        "| system | total s | phases (s) | train img/s | validation accuracy | LR | serving p50 ms | serving img/s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        phases = ", ".join(f"{k} {v:g}" for k, v in r.phases.items())
        rate = f"{r.train_images_per_second:.1f}" if r.train_images_per_second else "—"
        lr = f"{r.lr:.3g}" if r.lr else "—"
        accuracy = f"{r.valid_correct}/{r.valid_images} ({r.accuracy:.1%})"
        if tta := r.extra.get("tta"):  # scored beside the plain accuracy, which picks and publishes the model
            accuracy += f"; TTA {tta['correct']}/{tta['images']} ({tta['accuracy']:.1%})"
        serving = f"{r.serving_p50_ms or '—'} | {r.serving_images_per_second or '—'}"
        lines.append(f"| {r.system} | {r.total_seconds:.0f} | {phases} | {rate} | {accuracy} | {lr} | {serving} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a folder with train/<class>/ and valid/<class>/")
    parser.add_argument("--image-size", type=int, default=None, help="default: each backbone's native size")
    parser.add_argument(
        "--arch",
        action="append",
        help="Trainyard's backbone (efficientnet_lite0/1/2 or auto; default Lite0), repeatable: one Trainyard row "
        "each; the plain loop and fastai use Lite0",
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="Trainyard's max_epochs (default: the job's)")
    parser.add_argument("--tta", action="store_true", help="Trainyard's tta: true (scored beside the plain accuracy)")
    parser.add_argument("--job", help="read this earlier Trainyard job again instead of submitting one")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="Trainyard's and the plain loop's unfrozen epochs (default: Trainyard's)",
    )
    parser.add_argument("--fastai-epochs", type=int, default=3, help="fastai's fine_tune(N): the issue's N is 3")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--progressive-resizing", type=float, default=0.75, help="Trainyard's default; 1: every epoch at full size"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr-sweep", choices=("range_test", "trials"), default="range_test")
    parser.add_argument("--only", choices=tuple(SYSTEMS), action="append", help="run only these (repeatable)")
    parser.add_argument("--home", type=Path, default=Path.cwd() / ".trainyard", help="the local stack's folder")
    parser.add_argument(
        "--warm", action="store_true", help="keep the stack's feature cache and dataset copies (default: a first job)"
    )
    parser.add_argument("--keep-stack", action="store_true", help="leave a stack this run started running")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the Trainyard job")
    parser.add_argument("--json-stdout", action="store_true", help=argparse.SUPPRESS)  # a child's answer
    args = parser.parse_args()
    args.arch = args.arch or [ARCH]
    if args.job and len(args.arch) > 1:
        parser.error("--job reads one earlier job: give at most one --arch")
    if args.epochs is None:
        from core.spec import JobParams

        args.epochs = JobParams.model_fields["epochs"].default
    dataset = args.dataset.resolve()
    systems = args.only or list(SYSTEMS)

    if args.json_stdout:  # a child: one system, its Run as the last line of stdout
        sys.stdout.write(SYSTEMS[systems[0]](dataset, args).model_dump_json() + "\n")
        return

    passed = [
        *([f"--image-size={args.image_size}"] if args.image_size else []),
        *([f"--max-epochs={args.max_epochs}"] if args.max_epochs else []),
        *(["--tta"] if args.tta else []),
        *([f"--job={args.job}"] if args.job else []),
        f"--epochs={args.epochs}",
        f"--fastai-epochs={args.fastai_epochs}",
        f"--progressive-resizing={args.progressive_resizing}",
        f"--batch-size={args.batch_size}",
        f"--seed={args.seed}",
        f"--lr-sweep={args.lr_sweep}",
        f"--home={args.home}",
        f"--timeout={args.timeout}",
        *(["--keep-stack"] if args.keep_stack else []),
        *(["--warm"] if args.warm else []),
    ]
    load = {"start": load_average()}
    runs = []
    for system in systems:
        # One stack for all the Trainyard rows (each job still a first one): started once, and stopped before the
        # next system unless it was up before or --keep-stack, so fastai and the plain loop train without it.
        stack: AbstractContextManager[object] = local_stack(args) if system == "trainyard" else nullcontext()
        with stack:
            for own in child_arguments(system, args.arch):
                print(f"running {' '.join([system, *own])} on {dataset.name} ...", file=sys.stderr, flush=True)
                runs.append(_child(system, dataset, [*passed, *own]))
    load["end"] = load_average()
    print(table(dataset.name, runs, load))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"training-{dataset.name}-{datetime.now():%Y%m%d-%H%M%S}.json"
    body = {
        "dataset": dataset.name,
        "args": passed,
        "arch": args.arch,
        "load_average": load,
        "runs": [r.model_dump() for r in runs],
    }
    out.write_text(json.dumps(body, indent=2))
    print(f"\nwritten {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

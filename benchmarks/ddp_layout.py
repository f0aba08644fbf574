"""Training compute in Ray Train's layout against the plain loop's, on this machine, with no data path and no stack.

    .venv/bin/python -m benchmarks.ddp_layout                  # 224 px, global batch 32, 6 timed steps, 2 rounds

Trainyard trains with N Ray Train workers of one torch thread each, in DDP over gloo (NCCL on GPUs); the
benchmark's plain loop trains in one process with N threads. Both do the same steps on the same global batch:
this runs exactly those steps on synthetic 224 px images, side by side and in alternating rounds, so what is
left between the rows is the layout itself (intra-op threads vs data-parallel processes) and DDP's gradient
exchange, apart from decoding, augmentation, Ray and the local stack's processes:

1. plain: one process, N threads, the whole batch;
2. N processes x 1 thread, batch / N each, no gradient exchange (what data parallelism could reach);
3. N processes x 1 thread, batch / N each, DDP over gloo as `jobs.train_loop` has `ray.train.torch.prepare_model`
   wrap the model (buffers not synced before each forward: they are frozen), which is Ray Train's layout.

Each row runs in fresh processes with the malloc settings the workers get. Model: Trainyard's classifier
(channels-last, frozen batch-norm statistics, as `jobs.train_loop` trains it). Writes
benchmarks/results/ddp-layout-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from datetime import datetime
from multiprocessing.queues import Queue
from pathlib import Path

from core.runtime_env import TORCH_MALLOC_ENV

RESULTS = Path(__file__).parent / "results"
ARCH = "efficientnet_lite0"
ROWS = {
    "plain": "plain: 1 process x {n} threads",
    "parallel": "{n} processes x 1 thread, no gradient exchange",
    "ddp": "{n} processes x 1 thread, DDP over gloo (Ray Train's layout)",
}


def _steps(rank: int, world: int, threads: int, ddp: bool, args: argparse.Namespace, out: Queue) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    from core.backbones import build_classifier, channels_last, freeze_batchnorm_statistics, local_pretrained_weights

    torch.set_num_threads(threads)
    torch.manual_seed(rank)
    classifier = channels_last(build_classifier(ARCH, 2, local_pretrained_weights(ARCH)))
    classifier.train()
    freeze_batchnorm_statistics(classifier.body)
    model: nn.Module = classifier
    if ddp:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank, world_size=world)
        model = nn.parallel.DistributedDataParallel(classifier, forward_sync_buffers=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = args.batch_size // world
    x = torch.randn(batch, 3, args.image_size, args.image_size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    for step in range(args.steps + 2):  # two warm-up steps: the allocator, DDP's first-step bucket rebuild
        if step == 2:
            started = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    out.put(batch * args.steps / (time.perf_counter() - started))
    if ddp:
        dist.destroy_process_group()


def measure(row: str, args: argparse.Namespace) -> float:
    """Images per second of the whole row (the sum over its processes)."""
    context = mp.get_context("spawn")  # fresh interpreters: glibc reads MALLOC_* at start-up
    out: Queue = context.Queue()
    world, threads = (1, args.workers) if row == "plain" else (args.workers, 1)
    processes = [
        context.Process(target=_steps, args=(rank, world, threads, row == "ddp", args, out)) for rank in range(world)
    ]
    for process in processes:
        process.start()
    rates = [out.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"{row}: a process exited with {process.exitcode}")
    return sum(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers; the plain loop's threads")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch, split over the workers")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per row and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all rows, alternating")
    parser.add_argument("--port", type=int, default=29533, help="gloo's rendezvous port on loopback")
    args = parser.parse_args()
    os.environ.update(TORCH_MALLOC_ENV)  # inherited by the spawned processes

    rates: dict[str, list[float]] = {row: [] for row in ROWS}
    for _ in range(args.rounds):
        for row in ROWS:
            rates[row].append(measure(row, args))
    plain = statistics.median(rates["plain"])
    print(f"\n{ARCH}, {args.image_size} px, global batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds")
    print(f"{'layout':<62}{'img/s (median)':>16}{'rounds':>18}{'x plain':>9}")
    for row, label in ROWS.items():
        median = statistics.median(rates[row])
        each = " / ".join(f"{r:.1f}" for r in rates[row])
        print(f"{label.format(n=args.workers):<62}{median:>16.1f}{each:>18}{median / plain:>9.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ddp-layout-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "load_average": os.getloadavg(),
                "images_per_second": rates,
                "x_plain": {row: statistics.median(r) / plain for row, r in rates.items()},
            },
            indent=2,
        )
    )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()

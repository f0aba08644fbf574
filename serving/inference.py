"""What a replica does to an image, without Ray: preprocess, the forward in the fastest layout, top-k.

Kept apart from the deployment so the benchmark's raw-model rows run exactly this code: the limit it measures
is the limit of what the replica runs.
"""

from __future__ import annotations

import contextlib
import os

import torch

from core.backbones import Normalization
from core.backbones import channels_last as to_channels_last
from core.images import decode_image, eval_tensor, normalize
from serving.graphs import GRAPHS


def replica_threads(assigned_cpus: float | None) -> int:
    """Torch intra-op threads for a replica: the CPUs Ray gave it; with none reserved, all but one it may run on.

    A constant is wrong both ways: one thread leaves cores idle on a dedicated node, and more threads than
    owned cores thrash when another process takes one (benchmarks/README.md, "Process settings"). A replica that
    reserved no CPU shares its node with Serve's proxy, the API and its own decoding threads: an OpenMP team as
    wide as the node waits at every op for the member those took (benchmarks/README.md, "where the time goes"),
    so one core is left to them.
    """
    if assigned_cpus is not None and assigned_cpus >= 1:
        return int(assigned_cpus)
    return max(1, len(os.sched_getaffinity(0)) - 1)


def serve_at_normal_priority(thread_only: bool = False) -> int:
    """Undo Ray's worker niceness for this process (or only the calling thread) where allowed; returns the niceness.

    Ray starts every worker at nice 15 (its `worker_niceness`), so a replica yields the CPU to any ordinary
    process: the API and clients on the same node, a neighbour's tests. A replica answers users; a batch
    job's workers may stay at 15. On Linux niceness belongs to each thread and a new thread inherits its
    creator's, so every thread that exists now is set, and the replica's pools set their own threads as they
    start. Lowering niceness needs CAP_SYS_NICE (root here; not granted in most containers, where the pod's
    CPU limit is what isolates the replica anyway), so failing is not an error.
    """
    tids = [0] if thread_only else [int(t) for t in os.listdir("/proc/self/task")]
    for tid in tids:
        with contextlib.suppress(PermissionError, ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, tid, 0)
    return os.getpriority(os.PRIO_PROCESS, 0)


def start_pool_thread(torch_threads: int) -> None:
    """Initializer of the replica's decode and forward threads: normal priority, the replica's torch threads.

    OpenMP keeps the thread count per thread, and Ray's OMP_NUM_THREADS (1 for a replica that reserved no
    CPU) is what a new thread would otherwise start its forward with.
    """
    serve_at_normal_priority(thread_only=True)
    torch.set_num_threads(torch_threads)


def thread_settings() -> dict[str, int]:
    """How the calling thread runs torch: its intra-op threads and its niceness."""
    return {"torch_threads": torch.get_num_threads(), "nice": os.getpriority(os.PRIO_PROCESS, 0)}


def preprocess(data: bytes, image_size: int, norm: Normalization, tta: bool = False) -> torch.Tensor:
    """Image bytes -> normalized float rows [1, C, H, W] ([2, …] with its mirror image for test-time augmentation).

    Raises `core.images.InvalidImage` for bytes that do not decode. Runs in the replica's preprocessing pool.
    """
    x = normalize(eval_tensor(decode_image(data, image_size), image_size), norm).unsqueeze(0)
    return torch.cat([x, x.flip(-1)]) if tta else x


def prepare(model: torch.nn.Module, channels_last: bool, graph_size: int | None = None) -> torch.nn.Module:
    """The module a replica runs: NHWC when `channels_last`; on CPU with `graph_size`, a TorchScript graph.

    The graph (`serving/graphs.py`) runs the forward in C++ without taking the GIL between ops.
    """
    model = to_channels_last(model) if channels_last else model
    if graph_size is None or next(model.parameters()).device.type != "cpu":
        return model
    return GRAPHS.graph_of(model, graph_size, channels_last)


@torch.inference_mode()
def forward(model: torch.nn.Module, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Class probabilities for a batch of preprocessed rows."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x).float().softmax(1)


def merge_tta(probs: torch.Tensor, tta: bool) -> torch.Tensor:
    """One probability row per image: the mean over an image and its mirror when `tta` doubled the rows."""
    return probs.view(-1, 2, probs.shape[-1]).mean(1) if tta else probs


def top_k(probs: torch.Tensor, classes: list[str], k: int) -> list[dict[str, float | str]]:
    top = torch.topk(probs, k=min(k, len(classes)))
    return [
        {"label": classes[i], "probability": round(p, 6)}
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]

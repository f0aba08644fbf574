"""The Ray Data side of a batch run: image URIs -> a pool of model actors -> scored rows, streamed to the driver.

The input is a dataset of URIs in blocks of one actor call each, so no read task competes with the actors for
CPUs and the blocks spread over every actor of the pool (Ray Data hands each block to an idle actor, on
whichever node it runs). The pool is sized to the cluster: one actor per CPU, or per GPU with `use_gpu`, unless
the run names `num_workers`; on an autoscaling cluster without GPUs yet, it starts at one GPU actor and grows
as GPU nodes arrive. Ray Data holds every block back until the pool's first actors have started, so the time
to start is measured apart from the scoring (`timing` in the run's result).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from core.cost import WorkUsage
from core.runtime_env import TORCH_MALLOC_ENV
from jobs.batch.inputs import InputImage
from jobs.batch.predictor import USAGE_COLUMNS, Predictor
from jobs.errors import StageError

# Images per actor call: a whole batch for the forward (32 at 224 px is ~19 MB of floats on CPU); GPUs take more.
CPU_BATCH = 32
GPU_BATCH = 128
# How long the pool may take to start its first actors (nodes booting on an autoscaling cluster included).
START_TIMEOUT_S = 900
# GPU actors an autoscaling cluster may grow to when the run names no num_workers.
MAX_AUTOSCALED_GPU_ACTORS = 8


class Pool(BaseModel):
    min_size: int
    max_size: int
    cpus: float
    gpus: float
    batch: int


def size_pool(use_gpu: bool, num_workers: int | None, resources: dict[str, float], fixed_cluster: bool) -> Pool:
    """The actor pool for a run on a cluster offering `resources` (Ray's cluster_resources)."""
    kind, have = ("GPU", int(resources.get("GPU", 0))) if use_gpu else ("CPU", int(resources.get("CPU", 0)))
    need = num_workers or have
    if fixed_cluster and (need == 0 or need > have):
        raise StageError(
            f"not_enough_{kind.lower()}s",
            f"{f'num_workers={num_workers} needs' if num_workers else 'the run needs at least'} {max(need, 1)} "
            f"{kind}(s) for its model actors, but this Ray cluster has {have} and does not autoscale; "
            + ("set use_gpu=false or add GPU nodes" if use_gpu else "lower num_workers"),
        )
    gpus = 1.0 if use_gpu else 0.0
    batch = GPU_BATCH if use_gpu else CPU_BATCH
    if need:
        return Pool(min_size=need, max_size=need, cpus=1.0, gpus=gpus, batch=batch)
    # An autoscaling cluster with none of the resource yet: one actor brings up a node, more follow.
    top = MAX_AUTOSCALED_GPU_ACTORS if use_gpu else 1
    return Pool(min_size=1, max_size=top, cpus=1.0, gpus=gpus, batch=batch)


def scored_batches(
    images: list[tuple[InputImage, int]], artifact_uri: str, top_k: int, pool: Pool
) -> Iterator[pa.Table]:
    """Score `images` (each with its shard) on a pool of `Predictor` actors; yields result tables as they come."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.wait_for_min_actors_s = START_TIMEOUT_S
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    table = pa.table(
        {
            "uri": pa.array([image.uri for image, _ in images], pa.string()),
            "label": pa.array([image.label for image, _ in images], pa.string()),
            "shard": pa.array([shard for _, shard in images], pa.int64()),
        }
    )
    blocks = [table.slice(start, pool.batch) for start in range(0, len(table), pool.batch)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        Predictor,
        fn_constructor_kwargs={"artifact_uri": artifact_uri, "top_k": top_k, "use_gpu": pool.gpus > 0},
        batch_size=pool.batch,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size),
        num_cpus=pool.cpus,
        num_gpus=pool.gpus,
        runtime_env={"env_vars": dict(TORCH_MALLOC_ENV)},
    )
    yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2)


class ActorUsage:
    """What each model actor held, from the columns it adds to every batch: its node and when it started."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._actors: dict[str, dict[str, Any]] = {}

    def add(self, batch: pa.Table) -> pa.Table:
        """Record the batch's actor and return the batch without the usage columns."""
        first = {name: batch.column(name)[0].as_py() for name in USAGE_COLUMNS}
        seen = self._actors.setdefault(first["_actor"], first)
        seen["_at"] = max(seen["_at"], first["_at"])
        return batch.drop_columns(list(USAGE_COLUMNS))

    def usage(self) -> list[WorkUsage]:
        return [
            WorkUsage(
                work="prediction",
                node_id=actor["_node"],
                node_type=actor["_node_type"],
                cpus=self.pool.cpus,
                gpus=self.pool.gpus,
                seconds=round(max(0.0, actor["_at"] - actor["_born"]), 3),
            )
            for actor in self._actors.values()
        ]

    @property
    def first_born(self) -> float | None:
        """When the first actor began constructing (wall clock), if any batch came back."""
        return min((actor["_born"] for actor in self._actors.values()), default=None)

    @property
    def nodes(self) -> list[str]:
        return sorted({actor["_node"] for actor in self._actors.values()})

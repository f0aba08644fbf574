"""Fail fast when a job asks for more than a fixed-size Ray cluster has.

On an autoscaling cluster a missing GPU is normal: Ray Train's request for it is what brings a node up.
On a fixed cluster (one machine) the same request would wait forever, so the job fails with the numbers.
"""

from __future__ import annotations

import ray

from core.spec import JobParams
from jobs.errors import StageError


def check_cluster_fits(params: JobParams) -> None:
    total = ray.cluster_resources()
    if params.use_gpu and total.get("GPU", 0) < params.num_workers:
        raise StageError(
            "not_enough_gpus",
            f"use_gpu=true with num_workers={params.num_workers} needs {params.num_workers} GPU(s), but this Ray "
            f"cluster has {total.get('GPU', 0):g} and does not autoscale; set use_gpu=false or add GPU nodes",
        )
    if total.get("CPU", 0) < params.num_workers:
        raise StageError(
            "not_enough_cpus",
            f"num_workers={params.num_workers} needs {params.num_workers} CPU(s) for its workers, but this Ray "
            f"cluster has {total.get('CPU', 0):g} and does not autoscale; lower num_workers",
        )

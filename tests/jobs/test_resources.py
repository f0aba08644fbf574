"""Jobs that ask for more than the cluster could ever provide fail at once, with the numbers and the fix."""

from __future__ import annotations

import pytest

from core.settings import NodeType, Settings
from core.spec import JobParams
from jobs.errors import StageError
from jobs.resources import check_cluster_fits
from jobs.waiting import describe

AUTOSCALING = {
    "head": NodeType(resources={"CPU": 0}, max_workers=1),
    "cpu": NodeType(resources={"CPU": 4}, max_workers=1),
    "gpu": NodeType(resources={"CPU": 4, "GPU": 1}, max_workers=2),
}


def job(**kwargs: object) -> JobParams:
    return JobParams.model_validate({"dataset_uri": "s3://data/set", **kwargs})


def test_gpu_jobs_within_the_node_types_limits_pass() -> None:
    check_cluster_fits(job(use_gpu=True, num_workers=2), Settings(fixed_cluster=False, node_types=AUTOSCALING))


def test_a_gpu_job_beyond_every_node_type_fails_with_the_limits_and_the_fix() -> None:
    with pytest.raises(StageError) as raised:
        check_cluster_fits(job(use_gpu=True, num_workers=3), Settings(fixed_cluster=False, node_types=AUTOSCALING))
    assert raised.value.code == "not_enough_gpus"
    message = raised.value.message
    assert "num_workers=3" in message and "at most 2" in message
    assert "gpu: max_workers 2 x 1 GPU" in message and "raise max_workers" in message


def test_cpu_workers_count_every_cpu_of_every_node_type() -> None:
    check_cluster_fits(job(num_workers=12), Settings(fixed_cluster=False, node_types=AUTOSCALING))  # 4 + 2 x 4
    with pytest.raises(StageError) as raised:
        check_cluster_fits(job(num_workers=13), Settings(fixed_cluster=False, node_types=AUTOSCALING))
    assert raised.value.code == "not_enough_cpus" and "at most 12" in raised.value.message


def test_node_types_without_limits_only_price_and_never_refuse() -> None:
    unlimited = {"gpu": NodeType(resources={"CPU": 4, "GPU": 1}, usd_per_hour=1.0)}
    check_cluster_fits(
        job(use_gpu=True, num_workers=64, batch_size=256), Settings(fixed_cluster=False, node_types=unlimited)
    )


def test_the_waiting_message_says_what_and_how_long() -> None:
    gpu_bundle = {"CPU": 1.0, "GPU": 1.0}
    assert describe([gpu_bundle, gpu_bundle], 12.4) == (
        "waiting for 2 GPU worker(s); the cluster is scaling up (waited 12 s)"
    )
    assert describe([{"CPU": 1.0}], 3, autoscaling=False) == (
        "waiting for 1 CPU worker(s); other work holds the cluster's resources (waited 3 s)"
    )

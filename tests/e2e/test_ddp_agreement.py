"""DDP is the same training as one process: a 2-worker and a 1-worker job on the same seed agree.

Both jobs see the same global batches (each rank's shard is every other image of the same seeded
permutation, so two ranks of 8 together hold the 1-worker run's batch of 16) and start from the same
weights (DDP broadcasts rank 0's, seeded alike). What may still differ: the random augmentation streams and
batch-norm statistics over 8 images instead of 16. So validation accuracy must agree within a small
tolerance, and both runs must have learned (well above chance).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack
from trainyard.client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A fixed LR, and every epoch run (no early stopping), so both jobs train the same schedule. One head-only
# epoch on the cached features (one features task: the same head for both) gives both a head that has learned,
# so what the unfrozen epochs compare is DDP against one process, from the same start.
COMMON = {
    "image_size": 32,
    "epochs": 2,
    "freeze_epochs": 1,
    "lr": 0.02,
    "patience": None,
    "deploy": False,
    "seed": 0,
}
VALID_PER_CLASS = 10
# One or two of the 30 validation images may land differently; a real DDP bug (unsynchronised gradients,
# overlapping shards, a rank's metrics dropped) moves accuracy far more.
ACCURACY_TOLERANCE = 2 / (3 * VALID_PER_CLASS) + 1e-6


@pytest.fixture(scope="module")
def client(ray_stack: LocalStack) -> Iterator[Client]:
    ray_stack.start_api()
    with Client(url=ray_stack.config.api_url, api_key=ray_stack.api_key) as sdk:
        yield sdk
    ray_stack.stop_api()


def _finished(client: Client, stack: LocalStack, dataset_uri: str, workers: int, batch_size: int) -> dict[str, Any]:
    # Through the REST API: the SDK leaves `patience` at the API's default (early stopping), and this needs null.
    with stack.api_client() as api:
        body = {"dataset_uri": dataset_uri, "num_workers": workers, "batch_size": batch_size, **COMMON}
        submitted = api.post("/v1/jobs", json=body)
        assert submitted.status_code == 202, submitted.text
    done = client.wait(submitted.json()["id"], timeout=900)
    return done.model_dump()


def test_two_ddp_workers_and_one_worker_agree_on_the_same_seed(
    client: Client, stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = make_shapes(tmp_path_factory.mktemp("ddp") / "shapes", train_per_class=16, valid_per_class=10, size=40)
    upload_folder(stack.s3_client(), root, "ddp-agreement", "shapes")
    two = _finished(client, stack, "s3://ddp-agreement/shapes", workers=2, batch_size=8)
    one = _finished(client, stack, "s3://ddp-agreement/shapes", workers=1, batch_size=16)
    assert two["training"]["world_size"] == 2 and one["training"]["world_size"] == 1
    two_epochs = [e for e in two["metrics"] if e["stage"] == "unfrozen"]
    one_epochs = [e for e in one["metrics"] if e["stage"] == "unfrozen"]
    assert len(two_epochs) == len(one_epochs) == COMMON["epochs"]
    for a, b in zip(two_epochs, one_epochs, strict=True):
        print(f"epoch {a['epoch']}: 2 workers {a['accuracy']:.3f} / {a['valid_loss']:.3f}, "
              f"1 worker {b['accuracy']:.3f} / {b['valid_loss']:.3f}")  # fmt: skip
    last_two, last_one = two_epochs[-1], one_epochs[-1]
    assert last_two["accuracy"] > 0.6 and last_one["accuracy"] > 0.6  # both learned (chance is 1/3)
    assert abs(last_two["accuracy"] - last_one["accuracy"]) <= ACCURACY_TOLERANCE
    assert last_two["valid_loss"] == pytest.approx(last_one["valid_loss"], rel=0.25)

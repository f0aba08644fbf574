"""Batch predictions on a cluster made locally: a 0-CPU head (drivers only) and 1-CPU worker nodes that join it.

One input of 1,020 generated images and 3 files that do not decode is scored twice with one (seeded, untrained)
model: first on one worker node; then on two, where the run is cancelled once its first shard is written (its
actors must be freed, its manifest must say cancelled) and retried (the shards it wrote must be kept), after
which Ray's task records must show blocks on both nodes and the rows must equal the one-node rows. What the
weights learned does not matter here, so the model is published, not trained; accuracy against the evaluate
stage is test_batch_predictions.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from core.batch_output import read_manifest
from core.settings import Settings
from core.spec import S3Location
from core.store import JobStore
from infra.local.sample_data import SHAPES, make_shapes
from infra.local.sample_model import publish_untrained_model
from infra.local.stack import LocalStack, WorkerNode
from tests.utils.batch import ray_tasks, rows_of, submit_run, upload_tree, wait_run
from tests.utils.jobs import poll
from tests.utils.ray_state import alive_actors, held_resources
from tests.utils.stack import own_stack

pytestmark = pytest.mark.e2e

PER_CLASS = 340
BROKEN = {"circle/broken.png": b"not an image at all", "square/cut.jpg": b"\xff\xd8\xff\xe0" + b"\0" * 60,
          "triangle/empty.jpg": b""}  # fmt: skip
IMAGES = PER_CLASS * len(SHAPES) + len(BROKEN)
# Each model actor holds every batch this long (TRAINYARD_FAULT_DELAYS, test stacks only): a run over tiny
# images lasts long enough to be cancelled between its first shard and its last.
BATCH_DELAY_S = 0.3
# Ray Data's name for the actors of `map_batches(Predictor)`.
ACTOR_CLASS = "MapWorker(MapBatches(Predictor))"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, list[WorkerNode]]]:
    env = {"TRAINYARD_FAULT_DELAYS": f'{{"batch_predict": {BATCH_DELAY_S}}}'}
    with own_stack(tmp_path_factory.mktemp("batch-cluster"), num_cpus=0, env=env, api=False) as stack:
        workers = [stack.start_worker_node("worker-1", num_cpus=1)]
        stack.start_api()
        yield stack, workers


@pytest.fixture(scope="module")
def api(cluster: tuple[LocalStack, list[WorkerNode]]) -> Iterator[httpx.Client]:
    with cluster[0].api_client() as client:
        yield client


@pytest.fixture(scope="module")
def setup(cluster: tuple[LocalStack, list[WorkerNode]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The model and the input: 1,020 shapes in class folders, 3 files that do not decode, a README to skip."""
    stack, _ = cluster
    s3 = stack.s3_client()
    store = JobStore.from_url(stack.database_url)
    model = publish_untrained_model(store, s3, Settings(home=stack.config.home), list(SHAPES), image_size=32)
    store.engine.dispose()
    root = make_shapes(tmp_path_factory.mktemp("inputs"), train_per_class=0, valid_per_class=PER_CLASS, size=32)
    folder = root / "valid"
    for name, body in BROKEN.items():
        (folder / name).write_bytes(body)
    (folder / "README.txt").write_text("not an image: skipped")
    uploaded = upload_tree(s3, folder, "s3://batch-in/shapes")
    return {"model": model.id, "input": "s3://batch-in/shapes", "images": [u for u in uploaded if "README" not in u]}


@pytest.fixture(scope="module")
def one_node(cluster: tuple[LocalStack, list[WorkerNode]], api: httpx.Client, setup: dict[str, Any]) -> dict[str, Any]:
    """A run sized while the cluster has one worker node; the second joins while it scores (its pool stays one
    actor), so the next run finds two."""
    stack, workers = cluster
    run = submit_run(api, setup["model"], setup["input"], format="parquet", top_k=2)
    poll(lambda: _has_event(api, run["id"], "workers"), 300, "the one-node run sizing its actor pool", interval=0.2)
    with ThreadPoolExecutor(1) as pool:
        joining = pool.submit(stack.start_worker_node, "worker-2", 1)
        done = wait_run(api, run["id"])
        workers.append(joining.result())
    return done


def _has_event(api: httpx.Client, run_id: str, kind: str) -> bool:
    events = api.get(f"/v1/batch-predictions/{run_id}/events").json()["events"]
    return any(e["kind"] == kind for e in events)


@pytest.fixture(scope="module")
def two_nodes(
    cluster: tuple[LocalStack, list[WorkerNode]], api: httpx.Client, setup: dict[str, Any], one_node: dict[str, Any]
) -> dict[str, Any]:
    """A run on both worker nodes, cancelled once its first shard is written, then retried to the end."""
    stack, _ = cluster
    s3 = stack.s3_client()
    run = submit_run(api, setup["model"], setup["input"], format="parquet", top_k=2)
    output = S3Location.parse(run["params"]["output_uri"])

    def scoring_after_a_shard() -> dict[str, Any] | None:
        now: dict[str, Any] = api.get(f"/v1/batch-predictions/{run['id']}").json()
        assert now["status"] in ("queued", "running"), now
        return now if now["progress"]["images_done"] >= 256 else None

    poll(scoring_after_a_shard, 300, "the run writing its first shard", interval=0.1)
    seen: dict[str, Any] = {"actors_before": len(alive_actors(stack, ACTOR_CLASS))}
    seen["cancelled"] = api.post(f"/v1/batch-predictions/{run['id']}/cancel").json()
    seen["held_after"] = held_resources(stack, timeout=60)
    seen["actors_after"] = alive_actors(stack, ACTOR_CLASS)
    seen["manifest"] = read_manifest(s3, output)
    seen["kept"] = {s.name: s3.head_object(Bucket=output.bucket, Key=f"{output.prefix}{s.name}")
                    for s in seen["manifest"].shards}  # fmt: skip
    seen["objects"] = [o["Key"] for o in s3.list_objects_v2(Bucket=output.bucket, Prefix=output.prefix)["Contents"]]
    poll(lambda: api.post(f"/v1/batch-predictions/{run['id']}/retry").status_code == 202, 60, "the retry accepted")
    seen["run"] = wait_run(api, run["id"])
    seen["events"] = api.get(f"/v1/batch-predictions/{run['id']}/events").json()["events"]
    seen["tasks"] = ray_tasks(stack, f"{run['id']}-attempt2")
    return seen


def test_one_row_per_image_with_an_error_for_each_file_that_does_not_decode(
    cluster: tuple[LocalStack, list[WorkerNode]], setup: dict[str, Any], one_node: dict[str, Any]
) -> None:
    stack, workers = cluster
    run = one_node
    assert run["status"] == "succeeded", run["error"]
    rows = rows_of(stack.s3_client(), run)
    assert len(rows) == IMAGES >= 1000
    assert sorted(r.path for r in rows) == setup["images"]
    failed = {r.path.removeprefix(f"{setup['input']}/"): r.error for r in rows if r.error}
    assert set(failed) == set(BROKEN), failed
    assert all("not a decodable image" in error for error in failed.values() if error)
    assert all(len(r.labels) == len(r.probabilities) == 2 and r.prediction == r.labels[0] for r in rows if not r.error)
    assert run["progress"] == {"images_done": IMAGES, "images_total": IMAGES, "fraction": 1.0}
    assert (run["plan"]["images"], run["plan"]["skipped"], run["plan"]["labelled"]) == (IMAGES, 1, True)
    assert (run["result"]["rows"], run["result"]["errors"]) == (IMAGES, len(BROKEN))
    assert run["result"]["shards"] == math.ceil(IMAGES / run["plan"]["shard_size"]) > 1
    assert sum(map(sum, run["scores"]["confusion_matrix"])) == PER_CLASS * len(SHAPES)
    # Sized for the one node there was: one actor. It runs on whichever node has a free CPU when it is placed,
    # which can be the second one, joining meanwhile (the first node's CPU busy with Ray Data's read tasks).
    assert run["result"]["timing"]["actors"] == 1, run["result"]["timing"]
    assert len(run["result"]["timing"]["nodes"]) == 1, "one actor, one node"
    assert run["result"]["timing"]["nodes"][0] in {w.node_id for w in workers}
    assert {u["node_id"] for u in run["cost"]["usage"]} == set(run["result"]["timing"]["nodes"])  # priced where it ran
    assert run["cost"]["cpu_seconds"] > 0
    output = S3Location.parse(run["params"]["output_uri"])
    manifest = read_manifest(stack.s3_client(), output)
    assert (manifest.status, manifest.rows, manifest.errors) == ("succeeded", IMAGES, len(BROKEN))
    assert stack.s3_client().head_object(Bucket=output.bucket, Key=f"{output.prefix}_SUCCESS")["ContentLength"] == 0


def test_cancel_frees_the_actors_and_leaves_a_manifest_saying_cancelled(
    cluster: tuple[LocalStack, list[WorkerNode]], two_nodes: dict[str, Any]
) -> None:
    _, workers = cluster
    assert two_nodes["actors_before"] == len(workers) == 2, "one model actor per worker node while it scored"
    assert two_nodes["cancelled"]["status"] == "cancelled"
    assert two_nodes["held_after"] == {}, "the actors' CPUs came back"
    assert two_nodes["actors_after"] == []
    manifest = two_nodes["manifest"]
    assert manifest.status == "cancelled" and manifest.message == "cancelled through the API" and manifest.shards
    assert not any(key.endswith("_SUCCESS") for key in two_nodes["objects"])


def test_a_retry_keeps_the_shards_written_and_finishes_the_rest(
    cluster: tuple[LocalStack, list[WorkerNode]], setup: dict[str, Any], two_nodes: dict[str, Any]
) -> None:
    stack, _ = cluster
    s3 = stack.s3_client()
    run = two_nodes["run"]
    assert run["status"] == "succeeded" and run["attempt"] == 2, run["error"]
    kept = two_nodes["kept"]
    assert run["result"]["kept_shards"] == len(kept) and run["result"]["rows"] == IMAGES
    output = S3Location.parse(run["params"]["output_uri"])
    for name, before in kept.items():
        after = s3.head_object(Bucket=output.bucket, Key=f"{output.prefix}{name}")
        assert after["LastModified"] == before["LastModified"] and after["ETag"] == before["ETag"], name
    assert sorted(r.path for r in rows_of(s3, run)) == setup["images"]
    listed = [e["data"]["kept_shards"] for e in two_nodes["events"] if e["kind"] == "listed"]
    assert listed == [0, len(kept)]
    assert read_manifest(s3, output).status == "succeeded"


def test_on_two_nodes_blocks_run_on_both_and_the_rows_equal_the_one_node_rows(
    cluster: tuple[LocalStack, list[WorkerNode]], one_node: dict[str, Any], two_nodes: dict[str, Any]
) -> None:
    stack, workers = cluster
    scored = [t for t in two_nodes["tasks"] if "Predictor" in t["name"] and t["type"] == "ACTOR_TASK"]
    assert {t["node_id"] for t in scored} == {w.node_id for w in workers}, [(t["name"], t["node_id"]) for t in scored]
    run = two_nodes["run"]
    assert sorted(run["result"]["timing"]["nodes"]) == sorted(w.node_id for w in workers)
    s3 = stack.s3_client()
    one, two = rows_of(s3, one_node), rows_of(s3, run)
    assert [r.model_dump(exclude={"probabilities"}) for r in two] == [
        r.model_dump(exclude={"probabilities"}) for r in one
    ]
    for a, b in zip(one, two, strict=True):
        assert b.probabilities == pytest.approx(a.probabilities, abs=1e-6)
    assert run["scores"] == one_node["scores"]

"""Time to a deployed model: the feature cache, the head-only decision, no second evaluation pass.

Three small jobs on the real stack, on generated shapes at 128 px that the head alone, trained on the cached
features, gets right at a validation loss near 0.006: unfreezing cannot lower it by the 0.01 that counts as
paying. At 64 px the head stays at loss 0.05 with one image wrong, and unfreezing with the body's batch-norm
statistics frozen does pay there (0.007, 36/36); at 128 px: 0.0056 head-only, 0.0 unfrozen. Measured with
`benchmarks.unfrozen_noise --image-size 128 --batch-size 8 --train-per-class 24 --valid-per-class 12
--data-seed 7 --freeze-epochs 20 --epochs 1`. The opposite case, generated shapes where the unfrozen epochs do
pay and the job unfreezes, is the last test here.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack
from jobs.unfrozen import MIN_DELTA

# Three jobs, two of them through Ray Train: a few minutes on an idle 2-core machine, far more on a busy one.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

EASY = {"image_size": 128, "freeze_epochs": 20, "epochs": 3, "batch_size": 8, "num_workers": 2}
# The default recipe (LR range test, one head-only epoch, patience 1) on 72 training images at a global batch
# of 24: 3 steps an epoch, so the unfrozen trial is the whole first epoch.
PAYS = {"image_size": 64, "batch_size": 24, "epochs": 2, "num_workers": 2}


@pytest.fixture(scope="module")
def api(ray_stack: LocalStack) -> Any:
    ray_stack.start_api()
    with ray_stack.api_client(timeout=30) as client:
        yield client
    ray_stack.stop_api()


def _run(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    submitted = api.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    return {"id": submitted.json()["id"], "started": started}


def _finish(
    api: httpx.Client, run: dict[str, Any], timeout: float = 900, cancel_after: str | None = None
) -> dict[str, Any]:
    """Wait for the job to end; with `cancel_after`, cancel it as soon as an event of that kind appears."""
    deadline = time.monotonic() + timeout
    while (job := api.get(f"/v1/jobs/{run['id']}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {run['id']} still {job['status']} after {timeout}s"
        if cancel_after:
            kinds = {e["kind"] for e in api.get(f"/v1/jobs/{run['id']}/events").json()["events"]}
            if cancel_after in kinds:
                api.post(f"/v1/jobs/{run['id']}/cancel")
        time.sleep(0.5)
    events = api.get(f"/v1/jobs/{run['id']}/events").json()["events"]
    return {"job": job, "events": events, "wall": time.monotonic() - run["started"]}


def _events(result: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in result["events"] if e["kind"] == kind]


@pytest.fixture(scope="module")
def jobs(stack: LocalStack, api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    s3 = stack.s3_client()
    root = tmp_path_factory.mktemp("ttm")
    easy = make_shapes(root / "easy", train_per_class=24, valid_per_class=12, size=160, seed=7)
    upload_folder(s3, easy, "ttm", "easy")
    # The same images but one: a new ETag anywhere in the dataset must miss the cache.
    changed_dir = root / "changed"
    shutil.copytree(easy, changed_dir)
    victim = next((changed_dir / "train" / "circle").iterdir())
    Image.new("RGB", (160, 160), (200, 10, 10)).save(victim)
    upload_folder(s3, changed_dir, "ttm", "changed")

    first = _finish(api, _run(api, {"dataset_uri": "s3://ttm/easy", **EASY}))
    runs = {
        # Only its fetch and its features are asserted: deploying it too would only cost the suite time.
        "second": _run(api, {"dataset_uri": "s3://ttm/easy", **EASY, "deploy": False}),
        "changed": _run(api, {"dataset_uri": "s3://ttm/changed", **EASY, "deploy": False}),
    }
    # The changed set only has to show its cache miss: cancelled once its features are in, it costs no training.
    changed = _finish(api, runs.pop("changed"), cancel_after="features")
    return {"first": first, "changed": changed} | {name: _finish(api, run) for name, run in runs.items()}


def test_head_only_model_is_deployed_after_one_short_trial_when_unfreezing_cannot_pay(
    jobs: dict[str, Any],
) -> None:
    first = jobs["first"]
    job = first["job"]
    assert job["status"] == "succeeded", job.get("error")
    losses = [(e["stage"], e["epoch"], e["valid_loss"]) for e in job["metrics"]][-4:]
    assert job["best"]["stage"] == "frozen" and job["best"]["epoch"] == EASY["freeze_epochs"], losses
    unfrozen = [e for e in job["metrics"] if e["stage"] == "unfrozen"]
    assert len(unfrozen) <= 1, unfrozen  # at most the trial epoch, never the other two
    stops = _events(first, "unfreeze_trial") + _events(first, "early_stop") + _events(first, "unfreeze_skipped")
    assert stops and "head-only" in stops[-1]["message"], [e["message"] for e in first["events"]]
    assert job["model"] and job["model"]["id"]
    # The head-only model was checkpointed from the features and scored from its saved logits: no image pass.
    assert [e["message"] for e in _events(first, "checkpoint")] == ["head-only model checkpointed"]
    assert _events(first, "evaluated") and job["evaluation"]["accuracy"] == job["best"]["value"]
    assert {u["work"] for u in job["cost"]["usage"]} <= {"features", "training"}


def test_second_job_on_the_same_data_downloads_and_extracts_nothing(jobs: dict[str, Any]) -> None:
    first, second = jobs["first"], jobs["second"]
    assert second["job"]["status"] == "succeeded", second["job"].get("error")
    assert [e["data"]["cache"] for e in _events(first, "features")] == ["miss"]
    # On one machine the driver's node holds the extraction: no task, no second import of torch and the backbone.
    assert [e["data"]["ran_in"] for e in _events(first, "features")] == ["driver"]
    assert [e["data"]["cache"] for e in _events(second, "features")] == ["hit"]
    assert _events(second, "fetched")[0]["data"]["downloaded"] == 0
    assert "features" not in {u["work"] for u in second["job"]["cost"]["usage"]}  # no extraction task at all
    assert second["job"]["lr_sweep"]["chosen_lr"] == first["job"]["lr_sweep"]["chosen_lr"]
    print(f"\nPOST -> succeeded: first job {first['wall']:.1f}s, second {second['wall']:.1f}s")


def test_a_changed_object_misses_the_feature_cache(jobs: dict[str, Any]) -> None:
    changed = jobs["changed"]
    assert [e["data"]["cache"] for e in _events(changed, "features")] == ["miss"]
    assert _events(changed, "features")[0]["data"]["key"] != _events(jobs["first"], "features")[0]["data"]["key"]


@pytest.fixture(scope="module")
def pays(stack: LocalStack, api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = make_shapes(tmp_path_factory.mktemp("pays"), train_per_class=24, valid_per_class=10, size=80, seed=4)
    upload_folder(stack.s3_client(), root, "ttm", "pays")
    return _finish(api, _run(api, {"dataset_uri": "s3://ttm/pays", **PAYS}))


def test_where_unfrozen_training_pays_the_job_unfreezes_and_deploys_the_unfrozen_model(pays: dict[str, Any]) -> None:
    """Measured on this set: head-only 24/30 at validation loss 0.612, then the unfrozen epochs 0.581 and 0.408
    (0.547 and 0.540 while the body's batch-norm statistics still trained). With those statistics training, what
    paid was mostly the head training on, on augmented images: with the body's LR at zero the unfrozen epochs
    ended at the same loss (0.523 against 0.520). No generated set was found whose frozen features cannot
    separate the classes while one unfrozen epoch can (benchmarks/README.md, "Time to a deployed model")."""
    job = pays["job"]
    assert job["status"] == "succeeded", job.get("error")
    (head_only,) = [e for e in job["metrics"] if e["stage"] == "frozen"]
    unfrozen = [e for e in job["metrics"] if e["stage"] == "unfrozen"]
    # The trial (here the whole first epoch) beat the head-only model's validation loss: training went on.
    assert unfrozen[0]["valid_loss"] < head_only["valid_loss"] - MIN_DELTA
    assert len(unfrozen) == PAYS["epochs"] and not _events(pays, "early_stop")
    # The deployed model is an unfrozen checkpoint, better than the head-only one, scored from its own logits.
    print(f"\nhead-only {head_only['valid_loss']:.4f}; unfrozen {[e['valid_loss'] for e in unfrozen]}")
    assert job["best"]["stage"] == "unfrozen" and job["best"]["value"] > head_only["accuracy"]
    assert _events(pays, "evaluated") and job["evaluation"]["accuracy"] == job["best"]["value"]
    assert job["model"] and job["model"]["id"]

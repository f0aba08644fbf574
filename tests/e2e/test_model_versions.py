"""Versions, aliases, DELETE and the per-replica LRU on real Ray Serve, through the real API over HTTP.

The models are untrained EfficientNet-Lite0s (32 px) whose head is zeroed and given a bias, so each answers
one known label with probability ~1 whatever the image: two versions that disagree make a rollback visible
in the very next answer, and 20 models with their own labels show that every answer came from the right one.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from core.store import JobStore, ModelRecord
from infra.local.stack import LOOPBACK, LocalStack
from serving.app import MAX_MODELS_PER_REPLICA
from tests.utils import models
from trainyard.config import ClientConfig

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("serve_probe.py")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (40, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = _png()


def probe(stack: LocalStack, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(PROBE), *args],
        env=stack.env() | {"RAY_ADDRESS": f"{LOOPBACK}:{stack.config.gcs_port}", "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def served(ray_stack: LocalStack) -> Iterator[LocalStack]:
    probe(ray_stack, "ensure")
    ray_stack.start_api()
    yield ray_stack
    ray_stack.stop_api()


@pytest.fixture(scope="module")
def api(served: LocalStack) -> Iterator[httpx.Client]:
    key = ClientConfig.resolve().api_key  # after wt-auth the API needs it; the SDK reads it the same way
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    with httpx.Client(base_url=served.config.api_url, headers=headers, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def store(served: LocalStack) -> Iterator[JobStore]:
    store = JobStore.from_url(served.database_url)
    yield store
    store.engine.dispose()


def publish_version(stack: LocalStack, store: JobStore, name: str, classes: list[str], answer: str) -> ModelRecord:
    return models.publish_version(stack.s3_client(), store, name, classes, answer)


def top_label(api: httpx.Client, ref: str) -> str:
    """The top label, retrying a 503 as the API asks (a model load on a machine this busy can outlast the
    API's wait for the model server; the load goes on, and the retry finds the model loaded)."""
    for _ in range(3):
        response = api.post(f"/v1/models/{ref}/predict", content=IMAGE, headers={"content-type": "image/png"})
        if response.status_code != 503:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))
    assert response.status_code == 200, response.text
    return str(response.json()["predictions"][0]["label"])


def test_rollback_changes_the_next_answer_and_delete_frees_the_replica(
    served: LocalStack, api: httpx.Client, store: JobStore
) -> None:
    v1 = publish_version(served, store, "flip", ["cat", "dog"], answer="cat")
    v2 = publish_version(served, store, "flip", ["cat", "dog"], answer="dog")
    assert (v1.version, v2.version) == (1, 2)
    assert top_label(api, "flip") == "dog"  # no production alias yet: the bare name serves latest

    for version, expected in ((1, "cat"), (2, "dog"), (1, "cat")):  # promote v1, roll forward, roll back
        moved = api.post("/v1/models/flip/aliases/production", json={"version": version})
        assert moved.status_code == 200, moved.text
        assert top_label(api, "flip@production") == expected
        assert top_label(api, "flip") == expected

    assert set(probe(served, "stats")["loaded"]) >= {v1.id, v2.id}
    assert api.delete(f"/v1/models/{v2.id}").status_code == 204
    listed = [m["id"] for m in api.get("/v1/models").json()["models"]]
    assert v2.id not in listed and v1.id in listed
    gone = api.post(f"/v1/models/{v2.id}/predict", content=IMAGE, headers={"content-type": "image/png"})
    assert gone.status_code == 404
    assert top_label(api, "flip@latest") == "cat"  # latest fell back to version 1
    stats = probe(served, "wait-unloaded", v2.id)
    assert v2.id not in stats["loaded"] and v1.id in stats["loaded"]
    assert stats["evictions"]["deleted"] >= 1


@pytest.mark.slow
def test_twenty_models_through_an_lru_of_four_all_answer_correctly(
    served: LocalStack, api: httpx.Client, store: JobStore
) -> None:
    models = [
        publish_version(served, store, f"lru-{i}", [f"m{i}-a", f"m{i}-b"], answer=f"m{i}-{'ab'[i % 2]}")
        for i in range(20)
    ]
    before = probe(served, "stats")

    for i, model in enumerate(models):
        assert top_label(api, model.id) == f"m{i}-{'ab'[i % 2]}"
    after_pass = probe(served, "stats")
    assert after_pass["loaded"] == [m.id for m in models[-MAX_MODELS_PER_REPLICA:]]
    assert after_pass["loads"] - before["loads"] == 20
    # Every load past the cache's size pushed one model out (the replica may have held others before).
    evicted = after_pass["evictions"]["lru"] - before["evictions"]["lru"]
    assert 20 - MAX_MODELS_PER_REPLICA <= evicted <= 20

    for i, model in list(enumerate(models))[-MAX_MODELS_PER_REPLICA:]:  # cached: answered without a load
        assert top_label(api, model.name or "") == f"m{i}-{'ab'[i % 2]}"
    assert top_label(api, "lru-0@latest") == "m0-a"  # evicted earlier: loaded again, and right
    final = probe(served, "stats")
    assert final["loads"] - before["loads"] == 21
    assert final["evictions"]["lru"] - after_pass["evictions"]["lru"] == 1
    rss_mib = final["rss_bytes"] / 2**20
    print(f"\nreplica RSS after 20 models through an LRU of {MAX_MODELS_PER_REPLICA}: {rss_mib:.0f} MiB")

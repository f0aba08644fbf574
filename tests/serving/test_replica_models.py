"""ReplicaModels against the stack's real S3 server, with Serve's multiplexing cache played by its shape.

The same code on a real Serve replica is exercised by tests/e2e/test_model_versions.py; here the cache is a
stand-in so each rule (LRU drops counted, a deleted pointer dropped, the router told) shows on its own.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from core.settings import Settings
from serving.registry import ModelPointer, delete_pointer, write_pointer
from serving.replica_models import _SERVE_MULTIPLEX_ATTR, ReplicaModels


class FakeMultiplexCache:
    """What `@serve.multiplexed` keeps on the deployment instance: the models, and a flag for the router."""

    def __init__(self) -> None:
        self.models: OrderedDict[str, object] = OrderedDict()
        self._push_multiplexed_replica_info = False


class Replica:
    pass


def replica_with(models: list[str], s3: Any, settings: Settings) -> tuple[ReplicaModels, FakeMultiplexCache]:
    owner, cache = Replica(), FakeMultiplexCache()
    setattr(owner, _SERVE_MULTIPLEX_ATTR, cache)
    tracked = ReplicaModels(owner, s3, settings, check_interval_s=0.05)
    for model_id in models:
        write_pointer(s3, settings, ModelPointer(model_id=model_id, artifact_uri="s3://trainyard-artifacts/x.pt"))
        cache.models[model_id] = object()
        tracked.after_load(model_id)
    return tracked, cache


def test_models_the_lru_dropped_are_counted_at_the_next_load(s3: Any, settings: Settings) -> None:
    async def scenario() -> None:
        tracked, cache = replica_with(["m1", "m2", "m3"], s3, settings)
        cache.models.popitem(last=False)  # what Serve does before loading a model into a full cache
        tracked.before_load()
        stats = tracked.stats()
        assert (stats.loaded, stats.loads, stats.evictions) == (["m2", "m3"], 3, {"lru": 1, "deleted": 0})
        assert stats.rss_bytes > 0

    asyncio.run(scenario())


def test_a_model_whose_pointer_is_deleted_is_dropped_and_the_router_told(s3: Any, settings: Settings) -> None:
    async def scenario() -> None:
        tracked, cache = replica_with(["keep", "gone"], s3, settings)
        tracked.stats()  # the first request starts the watcher
        delete_pointer(s3, settings, "gone")
        for _ in range(200):
            if "gone" not in cache.models:
                break
            await asyncio.sleep(0.05)
        assert list(cache.models) == ["keep"]
        assert cache._push_multiplexed_replica_info is True
        assert tracked.stats().evictions == {"lru": 0, "deleted": 1}
        assert tracked.evict("never-loaded") is False

    asyncio.run(scenario())

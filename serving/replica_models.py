"""What one Serve replica holds: the models in Serve's multiplexing LRU, what left it and why, its memory.

Serve's `@serve.multiplexed` loads a model on a replica's first request for it and, once the replica holds
`max_num_models_per_replica`, drops the least recently used one before loading the next. It has no way to
drop one named model (Ray 2.60), which DELETE /v1/models/{id} needs in every replica. So each replica runs
a watcher: every few seconds it checks the S3 pointers of the models it holds, and drops any whose pointer
is gone (DELETE removes the pointer first; see service/routes/models.py). Checking the pointers of at most
`max_num_models_per_replica` models costs a few HEAD requests per interval and needs no channel from the
API to each replica, which Serve does not offer either.

Counters are Ray metrics (Prometheus, on each Ray node's metrics port, prefixed `ray_`):
`trainyard_serve_model_loads`, `trainyard_serve_model_evictions{reason="lru"|"deleted"}`,
`trainyard_serve_models_loaded` and `trainyard_serve_replica_rss_bytes`; `stats()` returns the same numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
from collections import OrderedDict
from typing import Any

import psutil
from pydantic import BaseModel
from ray.util import metrics

from core.settings import Settings
from serving.registry import object_exists, pointer_uri

logger = logging.getLogger(__name__)

# Where `@serve.multiplexed` keeps its per-replica cache on the deployment instance (ray/serve/api.py,
# `multiplex_attr`). Private to Serve: tests/e2e/test_model_versions.py fails if a Ray upgrade moves it.
_SERVE_MULTIPLEX_ATTR = "__serve_multiplex_wrapper"


class ReplicaStats(BaseModel):
    loaded: list[str]
    loads: int
    evictions: dict[str, int]
    rss_bytes: int


def _release_memory() -> None:
    """Hand freed model weights back to the OS: glibc keeps freed heap unless asked to trim it."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL(libc_name).malloc_trim(0)


class ReplicaModels:
    def __init__(self, owner: object, s3: Any, settings: Settings, check_interval_s: float) -> None:
        self._owner = owner
        self._s3 = s3
        self._settings = settings
        self._check_interval_s = check_interval_s
        self._seen: set[str] = set()  # loaded here and not yet seen leaving
        self._loads = 0
        self._evictions = {"lru": 0, "deleted": 0}
        self._watcher: asyncio.Task[None] | None = None
        self._loads_metric = metrics.Counter("trainyard_serve_model_loads", "Models loaded by a Serve replica")
        self._evictions_metric = metrics.Counter(
            "trainyard_serve_model_evictions",
            "Models a Serve replica dropped: lru (its cache was full) or deleted (DELETE /v1/models/{id})",
            tag_keys=("reason",),
        )
        self._loaded_metric = metrics.Gauge("trainyard_serve_models_loaded", "Models a Serve replica holds")
        self._rss_metric = metrics.Gauge("trainyard_serve_replica_rss_bytes", "Resident memory of a Serve replica")

    def _cache(self) -> OrderedDict[str, Any]:
        wrapper = getattr(self._owner, _SERVE_MULTIPLEX_ATTR, None)
        return wrapper.models if wrapper is not None else OrderedDict()

    def loaded(self) -> list[str]:
        return list(self._cache())

    def before_load(self) -> None:
        """Called as Serve asks for a model it does not hold: count what its LRU just dropped, free it."""
        self._start_watching()
        dropped = self._seen - set(self._cache())
        if dropped:
            self._seen -= dropped
            self._count_eviction("lru", len(dropped))
            _release_memory()

    def after_load(self, model_id: str) -> None:
        self._seen.add(model_id)
        self._loads += 1
        self._loads_metric.inc()
        self._update_gauges()

    def evict(self, model_id: str) -> bool:
        """Drop one model from this replica (its pointer is gone); False when the replica does not hold it."""
        wrapper = getattr(self._owner, _SERVE_MULTIPLEX_ATTR, None)
        if wrapper is None or wrapper.models.pop(model_id, None) is None:
            return False
        # Tell Serve's router this replica no longer holds the model (as its own LRU unload does).
        wrapper._push_multiplexed_replica_info = True
        self._seen.discard(model_id)
        self._count_eviction("deleted", 1)
        _release_memory()
        self._update_gauges()
        logger.info("dropped model %s: its pointer is gone (undeployed)", model_id)
        return True

    def stats(self) -> ReplicaStats:
        self._start_watching()
        return ReplicaStats(
            loaded=self.loaded(),
            loads=self._loads,
            evictions=dict(self._evictions),
            rss_bytes=psutil.Process().memory_info().rss,
        )

    def _count_eviction(self, reason: str, count: int) -> None:
        self._evictions[reason] += count
        self._evictions_metric.inc(count, tags={"reason": reason})

    def _update_gauges(self) -> None:
        self._loaded_metric.set(len(self._cache()))
        self._rss_metric.set(psutil.Process().memory_info().rss)

    def _start_watching(self) -> None:
        # Started from the first request rather than __init__, where Serve may not run an event loop yet.
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval_s)
            try:
                for model_id in self.loaded():
                    pointer = pointer_uri(self._settings, model_id)
                    if not await asyncio.to_thread(object_exists, self._s3, pointer):
                        self.evict(model_id)
                self._update_gauges()
            except Exception:  # the artifact store may be briefly unreachable: check again next time
                logger.exception("checking the pointers of loaded models failed")

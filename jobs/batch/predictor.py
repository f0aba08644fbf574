"""One model actor of a batch run's pool: fetch each image from S3, decode it as training does, score the batch.

Ray Data calls it with blocks of image URIs (`jobs.batch.pipeline`). Each actor reserves one CPU (or one GPU)
and does the whole path for its images: a few threads fetch and decode (S3 waits and PIL decoding release the
GIL), then one forward runs over the batch. On CPU nodes the forward dominates (decoding is ~3 ms of the ~25 ms
an image costs at 224 px), so one actor per core keeps every core on the model, and no separate decode tasks
compete with the actors for the same logical CPUs. Preprocessing and the forward are the Serve replica's own
(`serving.inference`, through `jobs.batch.scoring`): a batch row equals what the endpoint answers for the same
image.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from botocore.exceptions import ClientError

from core.s3 import s3_client
from core.settings import get_settings
from core.spec import S3Location
from jobs.usage import this_node

if TYPE_CHECKING:
    import torch

# Concurrent S3 reads and decodes per actor: enough to hide S3's latency behind one forward.
FETCH_THREADS = 8
_MISSING = ("NoSuchKey", "404", "NoSuchBucket", "NotFound")

# The columns an actor adds for the driver's cost record, dropped before rows are written.
USAGE_COLUMNS = ("_actor", "_node", "_node_type", "_born", "_at")


def _read(s3: Any, uri: str) -> bytes:
    location = S3Location.parse(uri)
    return bytes(s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read())


class Predictor:
    """A Ray Data callable class: `fn_constructor_kwargs` are this constructor's arguments."""

    def __init__(self, artifact_uri: str, top_k: int, use_gpu: bool) -> None:
        import ray

        from jobs.batch.scoring import Scorer  # torch: in the actors only

        self.born = time.time()
        settings = get_settings()
        self.s3 = s3_client(settings)
        # Fault-injection tests only (TRAINYARD_FAULT_DELAYS): seconds each batch is held, so a test can cancel
        # a run over tiny images while it is still scoring. 0 everywhere else.
        self.delay_s = settings.fault_delays.get("batch_predict", 0.0)
        self.scorer = Scorer(_read(self.s3, artifact_uri), top_k, use_gpu)
        self.pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="fetch")
        self.node_id, self.node_type = this_node()
        self.actor_id = ray.get_runtime_context().get_actor_id() or ""

    def _load(self, uri: str) -> torch.Tensor | str:
        """The image as normalized rows [1, C, H, W], or why it cannot be scored."""
        try:
            data = _read(self.s3, uri)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _MISSING:
                return "not found"
            return f"could not be read (S3 error {code or 'unknown'})"
        return self.scorer.preprocess(data)

    def __call__(self, batch: pa.Table) -> pa.Table:
        uris = batch.column("uri").to_pylist()
        loaded = list(self.pool.map(self._load, uris))
        good = [(i, x) for i, x in enumerate(loaded) if not isinstance(x, str)]
        labels: list[list[str]] = [[] for _ in uris]
        probabilities: list[list[float]] = [[] for _ in uris]
        if good:
            top_labels, top_probabilities = self.scorer.score([x for _, x in good])
            for (row, _), names, values in zip(good, top_labels, top_probabilities, strict=True):
                labels[row], probabilities[row] = names, values
        if self.delay_s:
            time.sleep(self.delay_s)
        n = len(uris)
        return pa.table(
            {
                "uri": batch.column("uri"),
                "label": batch.column("label"),
                "shard": batch.column("shard"),
                "labels": pa.array(labels, pa.list_(pa.string())),
                "probabilities": pa.array(probabilities, pa.list_(pa.float64())),
                "error": pa.array([x if isinstance(x, str) else None for x in loaded], pa.string()),
                "_actor": pa.array([self.actor_id] * n, pa.string()),
                "_node": pa.array([self.node_id] * n, pa.string()),
                "_node_type": pa.array([self.node_type] * n, pa.string()),
                "_born": pa.array([self.born] * n, pa.float64()),
                "_at": pa.array([time.time()] * n, pa.float64()),
            }
        )

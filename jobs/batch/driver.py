"""The driver of a batch prediction run: one Ray job per attempt, `python -m jobs.batch.driver <run id>`.

    listing     the input's images (and labels), split into shards; a retry keeps the first attempt's split and
                skips the shards already under the output
    predicting  Ray Data streams the images through the model actors (`jobs.batch.pipeline`); each shard is
                written once all its rows are back, and progress (images done / total) goes to the store
    finishing   accuracy and the confusion matrix for labelled input, the manifest and `_SUCCESS`

Everything the run records goes to the store through conditional updates: once the run is cancelled, the
driver's next write fails and it stops (`RunEnded`); the cancel's own manifest stays the last word.
"""

from __future__ import annotations

import importlib
import logging
import math
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from core.batch_output import (
    MANIFEST,
    ShardInfo,
    clear_outcome,
    manifest_of,
    write_ending,
    write_manifest,
    written_shards,
)
from core.batch_spec import BatchPhase, BatchPlan
from core.cost import JobCost, WorkUsage, job_cost
from core.s3 import S3_UNREACHABLE, s3_client
from core.settings import Settings, get_settings
from core.spec import S3Location
from core.store import JobStore, ModelRecord
from core.store.batch import BatchStore
from jobs.batch.inputs import BatchInput, InputImage, list_input
from jobs.batch.shards import ShardWriter, Tally, read_back, shard_size_for
from jobs.errors import StageError
from jobs.failures import actor_pool_failure, storage_unavailable

log = logging.getLogger("trainyard.batch")
# How often progress (images done) and cost reach the store while the run scores.
PROGRESS_INTERVAL_S = 1.0


class RunEnded(Exception):
    """The run ended (a cancel) while the driver was working on it."""


class BatchDriver:
    def __init__(self, run_id: str, store: JobStore, batches: BatchStore, settings: Settings) -> None:
        self.store, self.batches, self.settings = store, batches, settings
        self.s3 = s3_client(settings)
        run = batches.get(run_id)
        if run is None:
            raise SystemExit(f"no batch run {run_id} in the store")
        self.run = run
        self.output = S3Location.parse(run.output_uri)
        self.phase: BatchPhase | None = None
        # A retried run keeps what its earlier attempts' actors held.
        self.usage: list[WorkUsage] = JobCost.model_validate(run.cost).usage if run.cost else []
        self.started = time.monotonic()
        self.started_at = time.time()  # wall clock, comparable with the actors' start times

    @contextmanager
    def stage(self, phase: BatchPhase) -> Iterator[None]:
        if not self.batches.set_phase(self.run.id, phase):
            raise RunEnded
        self.phase = phase
        began = time.monotonic()
        yield
        log.info("%s finished in %.1fs", phase.value, time.monotonic() - began)

    def run_all(self) -> None:
        params = self.run.params
        # Ray and Ray Data (~2 s of imports on 2 cores) load on a thread while the input is listed.
        loader = ThreadPoolExecutor(1, thread_name_prefix="import")
        loader.submit(importlib.import_module, "ray.data")
        loader.shutdown(wait=False)
        with self.stage(BatchPhase.listing):
            model = self._model()
            listing = list_input(self.s3, params.input_uri, model.classes, self.settings.max_dataset_objects)
            plan, kept = self._plan(listing)
        shards = [listing.images[i : i + plan.shard_size] for i in range(0, plan.images, plan.shard_size)]
        tally = Tally(model.classes)
        pending = {i: len(images) for i, images in enumerate(shards) if i not in kept}
        writer = ShardWriter(self.s3, self.output, params.format, params.top_k, plan.labelled, pending)
        with self.stage(BatchPhase.predicting):
            items = [(image, i) for i in pending for image in shards[i]]
            done = plan.images - len(items)
            timing = self._predict(model, items, writer, tally, done) if items else {}
        with self.stage(BatchPhase.finishing):
            self._finish(plan, kept, writer, tally, timing)

    def _model(self) -> ModelRecord:
        model = self.store.get_model(self.run.model_id)
        if model is None:
            raise StageError(
                "model_deleted",
                f"model {self.run.model_id} was deleted after the run was submitted; submit it again with another",
            )
        return model

    def _plan(self, listing: BatchInput) -> tuple[BatchPlan, dict[int, str]]:
        """The run's shards (the first attempt's, when the input is unchanged) and those already written."""
        images = len(listing.images)
        size = shard_size_for(images)
        fresh = BatchPlan(
            images=images,
            shard_size=size,
            shards=math.ceil(images / size),
            listing_sha256=listing.listing_sha256,
            labelled=listing.labelled,
            skipped=listing.skipped,
        )
        written = written_shards(self.s3, self.output, self.run.params.format)
        previous = self.run.plan
        if previous is not None and previous.listing_sha256 == fresh.listing_sha256:
            plan, kept = previous, {i: name for i, name in written.items() if i < previous.shards}
        else:
            if previous is not None:
                self._event("input_changed", "the input changed since the first attempt: every shard is scored again")
            plan, kept = fresh, {}
        clear_outcome(self.s3, self.output)
        done = sum(min(plan.shard_size, plan.images - i * plan.shard_size) for i in kept)
        if not self.batches.set_plan(self.run.id, plan, done):
            raise RunEnded
        labels = "labelled" if plan.labelled else "unlabelled"
        skipped = f", {plan.skipped} non-image file(s) skipped" if plan.skipped else ""
        message = (
            f"{plan.images} {labels} images in {plan.shards} shard(s) of {plan.shard_size}{skipped}; "
            f"{len(kept)} shard(s) already written are kept"
        )
        self._event("listed", message, plan.model_dump(mode="json") | {"kept_shards": len(kept)})
        return plan, kept

    def _predict(
        self, model: ModelRecord, items: list[tuple[InputImage, int]], writer: ShardWriter, tally: Tally, done: int
    ) -> dict[str, Any]:
        import ray

        from jobs.batch.pipeline import ActorUsage, scored_batches, size_pool

        ray.init(logging_level=logging.WARNING, log_to_driver=True)
        connected = time.monotonic()
        params = self.run.params
        pool = size_pool(params.use_gpu, params.num_workers, ray.cluster_resources(), self.settings.fixed_cluster)
        kind = "GPU" if pool.gpus else "CPU"
        size = f"{pool.min_size}" if pool.min_size == pool.max_size else f"{pool.min_size}-{pool.max_size}"
        self._event("workers", f"{size} model actor(s), one {kind} each", pool.model_dump())
        usage = ActorUsage(pool)
        first: float | None = None
        first_at: datetime | None = None
        reported = time.monotonic()
        try:
            for batch in scored_batches(items, model.artifact_uri, params.top_k, pool):
                if first is None:
                    first, first_at = time.monotonic(), datetime.now(UTC)
                done += writer.add(usage.add(batch), tally)
                if time.monotonic() - reported >= PROGRESS_INTERVAL_S:
                    self._report(done, usage.usage())
                    reported = time.monotonic()
        except (RunEnded, StageError, *S3_UNREACHABLE):
            raise
        except Exception as exc:
            log.exception("the actor pool failed")
            raise actor_pool_failure(exc) from exc
        self._report(done, usage.usage())
        if not writer.complete:
            raise RuntimeError(f"the pipeline returned {writer.rows} rows; shards incomplete: {list(writer.gathering)}")
        ended = time.monotonic()
        first = first or ended
        scored_after_first = max(0, len(items) - pool.batch)
        return {
            # Start-up, step by step from the driver's start: Ray connected, the first actor constructing, the
            # first scored batch back (the actors' imports, model load and trace, and one batch).
            "ray_connected_s": round(connected - self.started, 3),
            "first_actor_s": round(usage.first_born - self.started_at, 3) if usage.first_born else None,
            "startup_s": round(first - self.started, 3),
            "scoring_s": round(ended - first, 3),
            # The first batch's images are start-up's: what follows is the pool's steady rate.
            "images_per_s": round(scored_after_first / (ended - first), 2) if ended > first else None,
            "first_batch_at": first_at.isoformat() if first_at else None,
            "actors": pool.max_size,
            "nodes": usage.nodes,
        }

    def _report(self, done: int, usage: list[WorkUsage]) -> None:
        cost = job_cost(self.usage + usage, self.settings.node_types, self.settings.rates_as_of)
        self.batches.set_cost(self.run.id, cost.model_dump(mode="json"))
        if not self.batches.set_progress(self.run.id, done):
            raise RunEnded

    def _finish(
        self, plan: BatchPlan, kept: dict[int, str], writer: ShardWriter, tally: Tally, timing: dict[str, Any]
    ) -> None:
        shards, rows, errors = list(writer.written), writer.rows, writer.errors
        for name in kept.values():
            earlier = read_back(self.s3, self.output, name, self.run.params.format)
            for row in earlier:
                tally.add(row)
            shards.append(ShardInfo(name=name, rows=len(earlier)))
            rows += len(earlier)
            errors += sum(1 for row in earlier if row.error)
        scores = tally.scores() if plan.labelled else None
        result = {
            "rows": rows,
            "errors": errors,
            "shards": len(shards),
            "kept_shards": len(kept),
            "manifest_uri": f"{self.output.uri}{MANIFEST}",
            "timing": timing,
        }
        if not self.batches.succeed(self.run.id, scores, result):
            raise RunEnded
        run = self.batches.get(self.run.id) or self.run
        manifest = manifest_of(run, "succeeded", shards, rows=rows, errors=errors, scores=scores)
        write_manifest(self.s3, self.output, manifest)

    def _event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        if not self.batches.add_event(self.run.id, kind, message, data):
            raise RunEnded

    def fail(self, code: str, message: str) -> None:
        if self.batches.fail(self.run.id, code, message, self.phase):
            try:
                write_ending(self.s3, self.batches.get(self.run.id) or self.run, "failed", message)
            except Exception:  # S3 may be what failed: the store has the outcome either way
                log.warning("could not write the failed run's manifest", exc_info=True)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(signum)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m jobs.batch.driver <batch run id>", file=sys.stderr)
        return 2
    settings = get_settings()
    store = JobStore.from_url(settings.resolved_database_url)
    # `ray job stop` (a cancel) sends SIGTERM: exit through SystemExit, so Ray Data's actors are released at once.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    driver = BatchDriver(args[0], store, BatchStore(store), settings)
    try:
        driver.run_all()
    except RunEnded:
        log.info("batch run %s ended (cancelled); stopping", driver.run.id)
    except StageError as exc:
        log.warning("batch run %s failed in %s: %s", driver.run.id, driver.phase, exc.message)
        driver.fail(exc.code, exc.message)
    except S3_UNREACHABLE as exc:
        log.exception("batch run %s: S3 did not answer in %s", driver.run.id, driver.phase)
        error = storage_unavailable(f"the batch run was in {driver.phase or 'start-up'}", exc)
        driver.fail(error.code, error.message)
    except Exception:
        log.exception("batch run %s hit an internal error in %s", driver.run.id, driver.phase)
        phase = driver.phase.value if driver.phase else "start-up"
        driver.fail(
            "internal_error",
            f"an internal error stopped the batch run during {phase}; the operator can read the details with "
            f"`ray job logs {driver.run.id}`. Retrying may help if the cause was transient.",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The job driver: one Ray job per training job, submitted by the API as `python -m jobs.driver <job id>`.

It reads the job from the store, runs the stages in order and records every phase, result and failure
there. Failures a user can fix (StageError) are stored in their words; anything else is stored as an
internal error naming the phase, with the traceback only in this driver's log (`ray job logs <job id>`).

This module imports only what fetching and validating need (S3, the store, PIL), so a job is fetching within
about a second of its driver starting; the later stages (`jobs.pipeline`) are imported on a thread meanwhile,
and Ray is connected once they are, at the end of validation.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from types import FrameType, ModuleType
from typing import TYPE_CHECKING

from core.cost import JobCost, WorkUsage
from core.dataset_listing import DATASET_LISTING, ListedImage, listing_csv
from core.s3 import S3_UNREACHABLE, s3_client
from core.settings import Settings, get_settings
from core.spec import JobParams, Phase, phase_progress
from core.store import JobStore
from jobs.backbone_choice import choose_backbone, describe
from jobs.dataset import ValidatedDataset
from jobs.dataset_cache import DatasetLimits, fetch_dataset
from jobs.errors import JobCancelled, StageError
from jobs.failures import storage_unavailable
from jobs.paths import artifact_location
from jobs.run_context import RunContext
from jobs.stages.validate import validate_dataset

if TYPE_CHECKING:
    from jobs.pipeline import Pipeline
    from jobs.waiting import WaitWatcher

log = logging.getLogger("trainyard.driver")


class Driver:
    def __init__(self, job_id: str, store: JobStore, settings: Settings) -> None:
        self.job_id = job_id
        self.store = store
        self.settings = settings
        self.s3 = s3_client(settings)
        job = store.get_job(job_id)
        if job is None:
            raise SystemExit(f"no job {job_id} in the store")
        self.params: JobParams = job.params
        self.attempt = job.attempt
        self.recorded_lr = (job.lr_sweep or {}).get("chosen_lr")
        self.phase: Phase | None = None
        # A retried job keeps what its earlier attempts made and spent: their files and their Ray work's cost.
        self.artifacts: dict[str, str] = dict(job.artifacts or {})
        self.usage: list[WorkUsage] = JobCost.model_validate(job.cost).usage if job.cost else []
        self.watcher: WaitWatcher | None = None

    # --- bookkeeping -------------------------------------------------------------------------------

    @contextmanager
    def stage(self, phase: Phase) -> Iterator[None]:
        if not self.store.set_phase(self.job_id, phase, phase_progress(phase)):
            raise JobCancelled  # the job became terminal (cancelled) while we were working
        self.phase = phase
        started = time.monotonic()
        time.sleep(self.settings.fault_delays.get(phase.value, 0.0))  # fault-injection tests only; 0 otherwise
        _wait_while_held(self.settings, phase)
        yield
        log.info("%s finished in %.1fs", phase.value, time.monotonic() - started)

    def context(self) -> RunContext:
        """The job as the later stages see it; its artifacts and usage stay shared with this driver's record."""
        return RunContext(
            job_id=self.job_id,
            store=self.store,
            settings=self.settings,
            s3=self.s3,
            params=self.params,
            attempt=self.attempt,
            recorded_lr=self.recorded_lr,
            stage=self.stage,
            artifacts=self.artifacts,
            usage=self.usage,
        )

    def _connect_ray(self) -> None:
        """Join the Ray cluster (the modules are imported by now) and watch for waits on nodes from here on."""
        import ray

        from jobs.waiting import WaitWatcher

        ray.init(logging_level=logging.WARNING, log_to_driver=True)
        ray_job_id = ray.get_runtime_context().get_job_id()
        self.watcher = WaitWatcher(self.store, self.job_id, ray_job_id, autoscaling=not self.settings.fixed_cluster)
        self.watcher.start()

    def run(self) -> None:
        # The later stages' modules (torch, torchvision, Ray: ~4.5 s of imports on 2 cores) load on a thread while
        # this one fetches and validates the dataset, which needs only S3 and PIL; what only training and the plots
        # use (Ray Train, matplotlib) follows on the same thread while the job connects to Ray.
        loader = ThreadPoolExecutor(1, thread_name_prefix="import")
        try:
            stages = loader.submit(importlib.import_module, "jobs.pipeline")
            loader.submit(_import_later_modules)  # after jobs.pipeline, on the same thread; errors surface in the stage
            pipeline = self._fetch_and_validate(stages)
        finally:
            loader.shutdown(wait=False)  # a job that failed validation is recorded now, not after the imports
        pipeline.run()

    def _fetch_and_validate(self, stages: Future[ModuleType]) -> Pipeline:
        p = self.params
        with self.stage(Phase.fetching):
            limits = DatasetLimits(
                max_objects=self.settings.max_dataset_objects, max_bytes=self.settings.max_dataset_bytes
            )
            fetched = fetch_dataset(self.s3, p.dataset_uri, self.settings.resolved_cache_dir, limits)
            self.store.add_event(
                self.job_id,
                "fetched",
                f"{fetched.objects} objects, {fetched.downloaded} downloaded",
                fetched.model_dump(mode="json"),
            )

        with self.stage(Phase.validating):
            dataset = validate_dataset(
                fetched.root,
                p.dataset_uri,
                self.settings.max_bad_image_fraction,
                p.valid_pct,
                p.seed,
                max_image_pixels=self.settings.max_image_pixels,
            )
            self.store.set_result(self.job_id, "dataset", dataset.summary.model_dump(mode="json"))
            splits = "; ".join(f"{name}: {s.images} from {s.source}" for name, s in dataset.summary.splits.items())
            self.store.add_event(
                self.job_id,
                "validated",
                f"{dataset.summary.layout} layout; {splits}",
                {"layout": dataset.summary.layout},
            )
            self._record_listing(dataset)
            if p.arch == "auto":
                self.params, choice = choose_backbone(p, len(dataset.train))
                self.store.add_event(self.job_id, "backbone_chosen", describe(choice), choice)
            if len(dataset.train) < p.num_workers:
                raise StageError(
                    "too_few_images",
                    f"{p.dataset_uri} has {len(dataset.train)} training images for {p.num_workers} workers; "
                    "each worker needs at least one: add images or lower num_workers",
                )
            pipeline: Pipeline = stages.result().Pipeline(self.context(), fetched, dataset)
            self._connect_ray()
            pipeline.check_before_work()
        return pipeline

    def _record_listing(self, dataset: ValidatedDataset) -> None:
        """The images this job trains and validates on, as an artifact: what a dataset revision starts from."""
        classes = dataset.summary.classes
        splits = {"train": dataset.train, "valid": dataset.valid, "test": dataset.test}
        images = [
            ListedImage(path=item.path, label=classes[item.label], split=split)
            for split, items in splits.items()
            for item in items
        ]
        location = artifact_location(self.settings, self.job_id)
        key = f"{location.prefix}{DATASET_LISTING}"
        self.s3.put_object(Bucket=location.bucket, Key=key, Body=listing_csv(images), ContentType="text/csv")
        self.artifacts[DATASET_LISTING] = f"s3://{location.bucket}/{key}"
        self.store.set_result(self.job_id, "artifacts", self.artifacts)


def _import_later_modules() -> None:
    for name in importlib.import_module("jobs.pipeline").LATER_MODULES:
        importlib.import_module(name)


def _wait_while_held(settings: Settings, phase: Phase) -> None:
    """Fault-injection tests only (`fault_holds_dir` is unset otherwise): wait while the phase's hold file exists."""
    if settings.fault_holds_dir is None:
        return
    hold = settings.fault_holds_dir / phase.value
    deadline = time.monotonic() + 600
    while hold.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(signum)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m jobs.driver <job id>", file=sys.stderr)
        return 2
    settings = get_settings()
    store = JobStore.from_url(settings.resolved_database_url)
    # What ray.init would install, from the first moment: `ray job stop` sends SIGTERM, and exiting through
    # SystemExit runs the `finally` blocks below (stopping the watcher) instead of dying mid-write.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    driver = Driver(args[0], store, settings)
    try:
        driver.run()
    except JobCancelled:
        log.info("job %s was cancelled; stopping", driver.job_id)
    except StageError as exc:
        log.warning("job %s failed in %s: %s", driver.job_id, driver.phase, exc.message)
        store.fail(driver.job_id, exc.code, exc.message, driver.phase)
    except S3_UNREACHABLE as exc:  # an S3 call outside fetch (artifacts, publish, a Ray task's reads) ran out of tries
        log.exception("job %s: S3 did not answer in %s", driver.job_id, driver.phase)
        phase = driver.phase.value if driver.phase else "start-up"
        error = storage_unavailable(f"the job was in {phase}", exc)
        store.fail(driver.job_id, error.code, error.message, driver.phase)
    except Exception:
        log.exception("job %s hit an internal error in %s", driver.job_id, driver.phase)
        phase = driver.phase.value if driver.phase else "start-up"
        store.fail(
            driver.job_id,
            "internal_error",
            f"an internal error stopped the job during {phase}; the operator can read the details with "
            f"`ray job logs {driver.job_id}`. Retrying may help if the cause was transient.",
            driver.phase,
        )
    finally:
        if driver.watcher is not None:
            driver.watcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

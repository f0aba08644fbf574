"""The stages after validation: LR sweep, fine-tuning, evaluation, publishing and deployment.

They need torch, Ray Train and the rest of the heavy stack; `jobs.driver` imports this module on a thread while it
fetches and validates the dataset, so a job starts working before these imports are done. What only the later
stages use (`LATER_MODULES`) is imported inside them, and by the same thread after this module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from core.artifact import ARTIFACT_NAME, artifact_meta
from core.cost import Work, WorkUsage, job_cost
from core.s3 import s3_client
from core.settings import get_settings
from core.spec import JobParams, Phase, TrialsSweep
from core.store import COST_CAP_REACHED, JobError, ModelRecord
from jobs.dataset import ValidatedDataset
from jobs.dataset_cache import FetchResult, fetch_dataset
from jobs.errors import JobCancelled
from jobs.export import announce_exports, export_after_success
from jobs.feature_cache import cache_location, feature_key, load_features, save_features
from jobs.features import Features, compute_features
from jobs.paths import artifact_location
from jobs.placement import run_work
from jobs.resources import check_cluster_fits, worker_bundle
from jobs.resume import find_resume_point
from jobs.run_context import RunContext
from jobs.stages.evaluate import (
    Evaluation,
    evaluate_model,
    evaluation_from_logits,
    load_checkpoint_model,
    load_predictions,
)
from jobs.stages.lr_sweep import lr_range_test
from jobs.stages.publish import publish_model
from jobs.thumbnails import attach_thumbnails
from jobs.weights import resolve_weights

if TYPE_CHECKING:
    from jobs.cost_cap import CostCapHit
    from jobs.stages.fine_tune import BestCheckpoint

log = logging.getLogger("trainyard.driver")
T = TypeVar("T")
# Imported by the driver's loader thread once this module is, while the job connects to Ray and extracts features:
# seconds of imports on a few cores (matplotlib, Ray Train) that would keep a small job waiting at the end of
# validation.
# The stages import them again where they use them, which costs nothing once they are loaded.
LATER_MODULES = ("jobs.plots", "jobs.stages.fine_tune")


class Pipeline:
    """One job's stages after validation, on the driver's record of the job (phase, artifacts, cost)."""

    def __init__(self, run: RunContext, fetched: FetchResult, dataset: ValidatedDataset) -> None:
        self.run_context = run
        self.job_id, self.store, self.settings, self.s3 = run.job_id, run.store, run.settings, run.s3
        self.params, self.attempt = run.params, run.attempt
        self.stage = run.stage
        self.artifacts, self.usage = run.artifacts, run.usage  # shared: the driver's record of the job
        self.fetched, self.dataset = fetched, dataset

    def check_before_work(self) -> None:
        """Fail at validation, not minutes later on a worker: the cluster can hold the workers and the backbone's
        weights can be found."""
        check_cluster_fits(self.params, self.settings)
        resolve_weights(self.params.arch, self.params.weights_uri, self.s3, self.settings.resolved_cache_dir)

    def _artifact(self, name: str, body: bytes, content_type: str) -> str:
        """Write one of the job's files next to its checkpoints and list it on the job."""
        location = artifact_location(self.settings, self.job_id)
        key = f"{location.prefix}{name}"
        self.s3.put_object(Bucket=location.bucket, Key=key, Body=body, ContentType=content_type)
        self.artifacts[name] = f"s3://{location.bucket}/{key}"
        self.store.set_result(self.job_id, "artifacts", self.artifacts)
        return self.artifacts[name]

    def _record_usage(self, *usage: WorkUsage) -> None:
        self.usage.extend(usage)
        cost = job_cost(self.usage, self.settings.node_types, self.settings.rates_as_of)
        self.store.set_result(self.job_id, "cost", cost.model_dump(mode="json"))

    def _run_work(self, work: Work, fn: Callable[..., T], *args: Any) -> tuple[T, str]:
        """`fn(*args)` placed by `jobs.placement`, its cost recorded on the job: the result and where it ran."""
        result, usage, ran_in = run_work(work, self.params, fn, *args)
        self._record_usage(usage)
        return result, ran_in

    def _features(self, etags_digest: str, dataset: ValidatedDataset) -> Features:
        """The backbone features from the S3 cache, or computed (`_run_work`) and cached for the next job."""
        p = self.params
        weights = resolve_weights(p.arch, p.weights_uri, self.s3, self.settings.resolved_cache_dir)
        key = feature_key(etags_digest, p.arch, weights, p.size, dataset.train, dataset.valid)
        location = cache_location(self.settings.artifact_uri, key)
        started = time.monotonic()
        cached = load_features(self.s3, location)
        if cached is not None:
            self.store.add_event(
                self.job_id,
                "features",
                f"backbone features read from the cache in {time.monotonic() - started:.1f}s: no extraction",
                {"cache": "hit", "key": key, "seconds": round(time.monotonic() - started, 3)},
            )
            return cached
        features, ran_in = self._run_work("features", _features_task, p, dataset, "cuda" if p.use_gpu else "cpu")
        save_features(self.s3, location, features)
        self.store.add_event(
            self.job_id,
            "features",
            f"backbone features extracted at {features.images_per_second} img/s (in the job's {ran_in}) and cached",
            {"cache": "miss", "key": key, "seconds": round(time.monotonic() - started, 3), "ran_in": ran_in},
        )
        return features

    def _evaluate(self, dataset: ValidatedDataset, best: BestCheckpoint) -> Evaluation:
        """From the validation logits saved with the best checkpoint; a pass over images only for a test split or
        test-time augmentation (both need images the checkpoint's own validation pass did not see that way)."""
        if best.predictions_uri is None or dataset.test or self.params.tta:
            evaluation: Evaluation = self._run_work("evaluation", _evaluate_task, self.params, dataset, best)[0]
            return evaluation
        logits = load_predictions(self.s3, best.predictions_uri)
        self.store.add_event(
            self.job_id,
            "evaluated",
            "scored from the validation predictions saved with the best checkpoint: no second pass",
            {"predictions_uri": best.predictions_uri},
        )
        return evaluation_from_logits(logits, dataset.valid, dataset.summary.classes)

    # --- the pipeline ------------------------------------------------------------------------------

    def run(self) -> None:
        p = self.params
        fetched, dataset = self.fetched, self.dataset
        resume = find_resume_point(self.run_context)
        if resume is None and self.attempt > 1:
            # No checkpoint to resume from: this attempt trains from the start, so its epochs replace any that
            # an earlier attempt recorded before it died (the head-only epochs are recorded before the first
            # checkpoint), and none is listed twice.
            self.store.delete_epochs(self.job_id)
            self.store.add_event(
                self.job_id, "restarted", f"attempt {self.attempt} trains from the start: no checkpoint was saved"
            )
        with self.stage(Phase.lr_sweep):
            features: Features | None = None
            if resume is not None:  # the previous attempt chose it, and its checkpoints were trained with it
                lr = resume.lr
            else:
                features, lr = self._lr_sweep(fetched.etags_digest, dataset)

        with self.stage(Phase.training):
            if resume is not None:
                self.store.add_event(
                    self.job_id,
                    "resumed",
                    f"attempt {self.attempt} resumes training after epoch {resume.epoch} from its last checkpoint",
                    resume.model_dump(),
                )
            from jobs.stages.fine_tune import fine_tune

            spent = job_cost(self.usage, self.settings.node_types, self.settings.rates_as_of).estimated_usd
            trained = fine_tune(
                self.job_id, p, dataset, features, lr, self.store, self.settings, resume=resume is not None,
                spent_usd=spent,
            )  # fmt: skip
            best = trained.best
            finished_at = time.time()
            self.store.set_result(self.job_id, "best", best.model_dump())
            self._record_training(best, finished_at)

        with self.stage(Phase.evaluating):
            evaluation = self._evaluate(dataset, best)
            location = artifact_location(self.settings, self.job_id)
            evaluation.most_wrong = attach_thumbnails(self.s3, location, fetched.root, evaluation.most_wrong)
            evaluation.least_certain = attach_thumbnails(self.s3, location, fetched.root, evaluation.least_certain)
            self.store.set_result(self.job_id, "evaluation", evaluation.model_dump())
            from jobs.plots import confusion_matrix_png, training_curves_png

            png = training_curves_png(self.store.epochs(self.job_id))
            self._artifact("training_curves.png", png, "image/png")
            png = confusion_matrix_png(evaluation.confusion_matrix, evaluation.classes)
            self._artifact("confusion_matrix.png", png, "image/png")

        with self.stage(Phase.publishing):
            model = load_checkpoint_model(self.s3, best.checkpoint_uri, p.arch, len(dataset.summary.classes))
            metrics = {"accuracy": evaluation.accuracy, "loss": evaluation.loss, "best_epoch": best.epoch}
            if evaluation.tta is not None:
                metrics |= {"tta_accuracy": evaluation.tta.accuracy}
            if evaluation.test is not None:
                metrics |= {"test_accuracy": evaluation.test.accuracy, "test_loss": evaluation.test.loss}
            artifact_uri = publish_model(
                self.s3, self.settings, self.job_id, model, p.arch, dataset.summary.classes, p.size, metrics
            )
            self.artifacts[ARTIFACT_NAME] = artifact_uri
            self.store.set_result(self.job_id, "artifacts", self.artifacts)
            self.store.add_event(self.job_id, "published", "model artifact written", {"uri": artifact_uri})
            meta = artifact_meta(self.job_id, p.arch, dataset.summary.classes, p.size, metrics)
            announce_exports(self.s3, artifact_uri, meta)  # built once the job has succeeded: see below

        capped = _capped_error(trained.cost_cap, best) if trained.cost_cap else None
        if not p.deploy:
            if capped is not None:
                self.store.fail(
                    self.job_id, capped.code, f"{capped.message}; published as {artifact_uri}", capped.phase
                )
            else:
                self.store.succeed(self.job_id, None)
            export_after_success(self.store, self.s3, artifact_uri, model, meta)
            return
        with self.stage(Phase.deploying):
            model_id = self.job_id.replace("job-", "mdl-", 1)
            from serving.deploy import deploy_model
            from serving.registry import delete_pointer

            deploy_model(self.s3, self.settings, model_id, artifact_uri)
            record = ModelRecord(
                id=model_id,
                job_id=self.job_id,
                artifact_uri=artifact_uri,
                arch=p.arch,
                classes=dataset.summary.classes,
                metrics=metrics,
                created_at=datetime.now(UTC),
                name=p.name,  # a named job adds the next version of that name and moves its `latest` alias
            )
            if capped is not None:
                capped.message += f"; deployed as model {model_id}"
            if not self.store.end_with_model(self.job_id, record, capped):
                delete_pointer(self.s3, self.settings, model_id)  # cancelled while deploying: serve nothing
                raise JobCancelled
        export_after_success(self.store, self.s3, artifact_uri, model, meta)

    def _lr_sweep(self, etags_digest: str, dataset: ValidatedDataset) -> tuple[Features | None, float]:
        """The features for the head-only epochs (when any) and the learning rate: the user's, the range test's
        (the default) or the best of a set of short trials on Ray Tune (`lr_sweep: {"method": "trials"}`)."""
        p = self.params
        features: Features | None = None
        if p.lr is None or p.freeze_epochs > 0:  # only the sweep and the head-only epochs need features
            features = self._features(etags_digest, dataset)
        if p.lr is not None:
            lr = p.lr
            sweep_record: dict[str, Any] = {"suggested_lr": None, "chosen_lr": lr, "method": "user"}
        elif isinstance(p.lr_sweep, TrialsSweep):
            assert features is not None
            from jobs.stages.lr_trials import lr_trials  # Ray Tune: only for this method

            trials = lr_trials(
                self.job_id, features, len(dataset.summary.classes), p.lr_sweep, p.batch_size, p.seed, self.settings
            )
            lr = trials.suggested_lr
            sweep_record = trials.model_dump() | {"features_images_per_second": features.images_per_second}
            self.store.add_event(
                self.job_id,
                "lr_trials",
                f"{len(trials.trials)} trials ({trials.trial_epochs} epochs) in {trials.seconds:.1f}s; "
                f"best LR {lr:.3g}",
                {"seconds": trials.seconds, "trial_epochs": trials.trial_epochs, "lr": lr},
            )
        else:
            assert features is not None
            sweep = lr_range_test(
                features.train_x,
                features.train_y,
                len(dataset.summary.classes),
                p.batch_size,
                seed=p.seed,
                suggestion=p.lr_sweep.suggestion,
            )
            lr = sweep.suggested_lr
            sweep_record = sweep.model_dump() | {"features_images_per_second": features.images_per_second}
            from jobs.plots import lr_sweep_png

            png = lr_sweep_png(sweep.lrs, sweep.losses, sweep.suggestions, lr)
            self._artifact("lr_sweep.png", png, "image/png")
        self.store.set_result(self.job_id, "lr_sweep", sweep_record | {"chosen_lr": lr})
        return features, lr

    def _record_training(self, best: BestCheckpoint, finished_at: float) -> None:
        """The DDP record (each rank's samples and node) and what the ranks held, from the first epoch's report."""
        shards = [e for e in self.store.events(self.job_id) if e.kind == "ddp_shards"]
        ranks = shards[-1].data["ranks"] if shards and shards[-1].data else []
        bundle = worker_bundle(self.params)
        self.store.set_result(
            self.job_id,
            "training",
            {
                "world_size": self.params.num_workers,
                "backend": "nccl" if self.params.use_gpu else "gloo",
                "ranks": [
                    {"rank": r["rank"], "samples_per_epoch": r["samples"], "node_id": r.get("node_id")} for r in ranks
                ],
                "best_epoch": best.epoch,
            },
        )
        self._record_usage(
            *(
                WorkUsage(
                    work="training",
                    rank=r["rank"],
                    node_id=r["node_id"],
                    node_type=r.get("node_type"),
                    cpus=bundle["CPU"],
                    gpus=bundle.get("GPU", 0.0),
                    seconds=round(max(0.0, finished_at - r["started_at"]), 3),
                    started_at=r["started_at"],
                )
                for r in ranks
                if "node_id" in r
            )
        )


def _capped_error(hit: CostCapHit, best: BestCheckpoint) -> JobError:
    """The job's end when its cost cap stopped training: failed, naming the figures and the model it keeps."""
    return JobError(
        code=COST_CAP_REACHED,
        message=f"stopped at its cost cap after epoch {hit.epoch}: {hit.message()}. The best checkpoint so far "
        f"(epoch {best.epoch}, {best.metric} {best.value:.4f}) is kept",
        phase=Phase.training,
    )


def _features_task(params: JobParams, dataset: ValidatedDataset, device: str) -> Features:
    import torch

    settings = get_settings()
    s3 = s3_client(settings)
    if device == "cpu":
        torch.set_num_threads(max(1, params.num_workers))
    # The task may run on another node: dataset and weights come from this node's cache.
    root = fetch_dataset(s3, params.dataset_uri, settings.resolved_cache_dir).root
    weights = resolve_weights(params.arch, params.weights_uri, s3, settings.resolved_cache_dir)
    return compute_features(root, dataset.train, dataset.valid, params.arch, weights, params.size, device)


def _evaluate_task(params: JobParams, dataset: ValidatedDataset, best: BestCheckpoint) -> Evaluation:
    import torch

    settings = get_settings()
    s3 = s3_client(settings)
    torch.set_num_threads(max(1, params.num_workers))
    root = fetch_dataset(s3, params.dataset_uri, settings.resolved_cache_dir).root
    model = load_checkpoint_model(s3, best.checkpoint_uri, params.arch, len(dataset.summary.classes))
    return evaluate_model(
        model,
        root,
        dataset.valid,
        dataset.summary.classes,
        params.arch,
        params.size,
        test=dataset.test,
        tta=params.tta,
    )

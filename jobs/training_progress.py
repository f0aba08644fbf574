"""What the Ray Train controller runs for a job: its report callback, and the checkpoint files it names.

Kept apart from `jobs.stages.fine_tune` and `jobs.train_loop` on purpose: the controller unpickles this callback,
and importing either of those would load torch and torchvision there (about 3 s of a job's Ray Train start-up on
2 cores) for a class that only writes rows to the job store.
"""

from __future__ import annotations

from typing import Any

from ray.train import UserCallback

from core.settings import get_settings
from core.spec import Phase, phase_progress
from core.store import JobStore
from jobs.failures import worker_failure_summary

# The files of one checkpoint folder, written by rank 0 of `jobs.train_loop` (and the head-only checkpoint).
CHECKPOINT_FILE = "model.pt"
PREDICTIONS_FILE = "predictions.pt"  # {"valid_logits": float tensor [n_valid, classes]}, in validation order


class TrainingProgress(UserCallback):
    """Runs on the Ray Train controller: each report becomes an epoch row, progress and events in the store."""

    def __init__(self, job_id: str, total_epochs: int) -> None:
        self.job_id = job_id
        self.total_epochs = total_epochs
        self._store: JobStore | None = None
        self._checkpointed_epoch: int | None = None  # the last epoch a checkpoint was persisted for

    @property
    def store(self) -> JobStore:
        if self._store is None:  # built on the controller: engines do not travel between processes
            self._store = JobStore.from_url(get_settings().resolved_database_url)
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "total_epochs": self.total_epochs, "_store": None, "_checkpointed_epoch": None}

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        """A worker failed: say who and why in the event log, and where training resumes (if it is retried)."""
        resumes = (
            f"epoch {self._checkpointed_epoch + 1}, from the checkpoint of epoch {self._checkpointed_epoch}"
            if self._checkpointed_epoch is not None
            else "the start of unfrozen training (no checkpoint yet)"
        )
        self.store.add_event(
            self.job_id,
            "worker_failed",
            f"{worker_failure_summary(worker_exceptions)}; if a retry is left, training resumes at {resumes}",
            {"ranks": sorted(worker_exceptions), "checkpointed_epoch": self._checkpointed_epoch},
        )

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        lead = metrics[0]
        uri = f"s3://{checkpoint.path}/{CHECKPOINT_FILE}" if checkpoint is not None else None
        if checkpoint is not None:
            self._checkpointed_epoch = int(lead["epoch"])
        if lead.get("trial"):
            self._trial_event(lead)
            return
        row = {
            "epoch": lead["epoch"],
            "stage": lead["stage"],
            "train_loss": round(lead["train_loss"], 5),
            "valid_loss": round(lead["valid_loss"], 5),
            "accuracy": round(lead["accuracy"], 5),
            "seconds": lead["seconds"],  # the whole epoch, validation included
            "train_seconds": lead["train_seconds"],
            "image_size": lead["image_size"],  # trained at (progressive resizing); validated at the job's
            "images_per_second": lead["images_per_second"],  # over train_seconds
            "checkpoint_uri": uri,
        }
        self.store.add_epoch(self.job_id, row)
        if "node_id" in lead:  # the first unfrozen epoch: record what each rank trained on, and where
            ranks = [
                {
                    "rank": m["rank"],
                    "samples": m["rank_samples"],
                    "shard": m.get("shard"),
                    "node_id": m["node_id"],
                    "node_type": m["node_type"],
                    "started_at": m["started_at"],
                }
                for m in metrics
            ]
            self.store.add_event(
                self.job_id, "ddp_shards", f"{len(metrics)} workers trained on disjoint shards", {"ranks": ranks}
            )
        self.store.set_progress(self.job_id, phase_progress(Phase.training, lead["epoch"] / self.total_epochs))
        self.store.add_event(self.job_id, "epoch", f"epoch {lead['epoch']} accuracy {lead['accuracy']:.4f}", row)
        if verdict := lead.get("trial_verdict"):  # a trial as long as the first epoch: judged at its end
            self._trial_event(lead | verdict)
        if extend := lead.get("extend"):
            self.store.add_event(
                self.job_id,
                "unfrozen_extended",
                f"epoch {lead['epoch']} lowered the validation loss {extend['previous_valid_loss']} -> "
                f"{extend['valid_loss']} (by more than {extend['min_delta']}): unfrozen epoch "
                f"{extend['unfrozen_epoch']} of at most {extend['max_epochs']} (max_epochs) follows, at "
                f"{extend['lr_scale']:g}x the peak LR",
                extend,
            )
        if lead.get("stop_reason"):
            self.store.add_event(
                self.job_id, "early_stop", f"unfrozen training stopped: {lead['stop_reason']}", {"epoch": lead["epoch"]}
            )

    def _trial_event(self, trial: dict[str, Any]) -> None:
        verdict = "pays: training goes on" if trial["pays"] else "does not pay: the job keeps the head-only model"
        self.store.add_event(
            self.job_id,
            "unfreeze_trial",
            f"unfrozen trial ({trial['steps']} steps) validation loss {trial['valid_loss']:.4f}: {verdict}",
            {k: trial[k] for k in ("pays", "steps", "valid_loss", "accuracy")},
        )

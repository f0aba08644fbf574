"""Where a retried job's training continues: the last epoch an earlier attempt checkpointed, if any.

Ray Train restores the job's checkpoint folder by itself (same run name and storage path), so the previous
attempts' epochs are not run or recorded again; this module only finds out whether there is something to resume.
"""

from __future__ import annotations

from botocore.exceptions import ClientError
from pydantic import BaseModel

from jobs.paths import artifact_location
from jobs.run_context import RunContext

# Ray Train's record of a run's checkpoints, under the job's folder (fine_tune's RunConfig: checkpoints/train).
TRAIN_SNAPSHOT = "checkpoints/train/checkpoint_manager_snapshot.json"


class ResumePoint(BaseModel):
    """Where a retried job's training continues: the last epoch checkpointed by an earlier attempt."""

    attempt: int
    epoch: int
    checkpoint_uri: str | None
    lr: float


def find_resume_point(run: RunContext) -> ResumePoint | None:
    """On a retry, where training resumes.

    None on a first attempt, or when no attempt got as far as a checkpoint: then the job runs from the start.
    """
    if run.attempt == 1 or run.recorded_lr is None:
        return None
    location = artifact_location(run.settings, run.job_id)
    try:
        run.s3.head_object(Bucket=location.bucket, Key=f"{location.prefix}{TRAIN_SNAPSHOT}")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    checkpointed = [e for e in run.store.epochs(run.job_id) if e.get("checkpoint_uri")]
    head_only = [e.data for e in run.store.events(run.job_id) if e.kind == "checkpoint" and e.data]
    last = checkpointed[-1] if checkpointed else head_only[-1] if head_only else {}
    return ResumePoint(
        attempt=run.attempt,
        epoch=int(last.get("epoch", 0)),
        checkpoint_uri=last.get("checkpoint_uri") or last.get("uri"),
        lr=float(run.recorded_lr),
    )

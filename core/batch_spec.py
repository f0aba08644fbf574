"""The batch prediction contract shared by the API (validation), the store and the Ray job that runs it.

A batch run scores every image under an S3 prefix (or listed in a CSV manifest) with one model version and
writes one row per image to `output_uri`, in shards, with a manifest at the end (`core.batch_output`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from core.spec import S3Uri

BatchFormat = Literal["jsonl", "csv", "parquet"]
# Batch run ids read `bp-<time>-<random>`: the launcher tells them from training job ids by it.
BATCH_ID_PREFIX = "bp"


class BatchPhase(StrEnum):
    """Where a running batch run is: listing its input, scoring it, or writing the manifest and scores."""

    listing = "listing"
    predicting = "predicting"
    finishing = "finishing"


class BatchParams(BaseModel):
    """What a user may ask of a batch run (the body of POST /v1/models/{ref}/batch-predictions)."""

    model_config = ConfigDict(extra="forbid")

    input_uri: S3Uri = Field(
        description="s3://bucket/prefix of images (scored recursively; images in folders named after the model's "
        "classes count as labelled), or an s3:// URI of a CSV manifest with a `path` column (relative to the "
        "manifest's folder, or s3:// URIs) and an optional `label` column",
        examples=["s3://my-bucket/incoming/2026-11-27"],
    )
    output_uri: S3Uri | None = Field(
        default=None,
        description="an empty s3://bucket/prefix for the results; default: under the tenant's artifacts "
        "(<artifact_uri>/tenants/<tenant>/batch-predictions/<id>/)",
    )
    top_k: int = Field(default=5, ge=1, le=100, description="labels per image, most probable first")
    format: BatchFormat = Field(default="jsonl", description="the shards' format: jsonl, csv or parquet")
    use_gpu: bool = Field(default=False, description="run the model on GPU actors (one GPU each)")
    num_workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="model actors; null: one per CPU of the cluster (one per GPU with use_gpu)",
    )
    notify_url: AnyHttpUrl | None = Field(
        default=None, description="called with a signed JSON body when the run ends (succeeded, failed, cancelled)"
    )


class BatchPlan(BaseModel):
    """How a run's input splits into shards, fixed by its first attempt so a retry skips what is written."""

    images: int = Field(description="images to score (undecodable ones included)")
    shard_size: int
    shards: int
    listing_sha256: str = Field(description="of the sorted image list: a retry over changed input rewrites all")
    labelled: bool = Field(description="the input says each image's class (class folders or a label column)")
    skipped: int = Field(default=0, description="files under the prefix that are not images (by suffix)")


class BatchScores(BaseModel):
    """Accuracy and the confusion matrix over the labelled images whose label is one of the model's classes."""

    accuracy: float
    correct: int
    images: int
    classes: list[str]
    confusion_matrix: list[list[int]] = Field(description="rows: actual class, columns: predicted class")
    unknown_labels: int = Field(description="labelled images whose label is not one of the model's classes")

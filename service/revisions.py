"""Dataset revisions: a finished job's images with a person's marks applied, written as a new dataset.

fastai's `ImageClassifierCleaner` step, as a service: from a job's most-wrong and least-certain images a
person marks each as fine, relabel (to another of the job's classes) or exclude. The revision is the job's
own list of images (`dataset.csv`, the split it actually used) with those marks applied, written as a
`labels.csv` (path,label,split: a layout every job reads, see jobs.layouts) plus server-side copies of the
images it lists, under ``s3://<upload bucket>/revisions/<tenant>/<revision id>/``. Copies, not references:
a revision is a dataset of its own, so deleting or re-uploading the original never changes what a retrain on
it trained on, and the original objects are only ever read. The copies are made by S3 (CopyObject): no
image passes through the API.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.dataset_listing import DATASET_LISTING, ListedImage, listing_csv, parse_listing
from core.revisions import Mark, RevisionRecord
from core.settings import Settings
from core.spec import S3Location
from core.store import JobRecord, new_id
from service.errors import ApiError

logger = logging.getLogger(__name__)

# Parallel CopyObject requests: each is one round trip to S3, which does the copying.
COPY_THREADS = 16


def revisions_area(settings: Settings) -> str:
    """Where every tenant's revisions live: beside the uploads."""
    return f"s3://{settings.upload_bucket}/revisions/"


def revisions_root(settings: Settings, tenant: str) -> str:
    """Where `tenant`'s revisions live: one prefix per tenant."""
    return f"{revisions_area(settings)}{tenant}/"


def apply_marks(images: list[ListedImage], marks: list[Mark], classes: list[str]) -> list[ListedImage]:
    """The job's images with the marks applied; a 422 naming the mark for anything that cannot apply."""
    by_path = {image.path: image for image in images}
    seen: set[str] = set()
    for i, mark in enumerate(marks):
        field = f"marks[{i}]"
        if mark.path in seen:
            raise ApiError(422, "duplicate_mark", f"{field}.path: {mark.path!r} is marked twice; mark each image once")
        seen.add(mark.path)
        image = by_path.get(mark.path)
        if image is None:
            raise ApiError(
                422,
                "unknown_image",
                f"{field}.path: {mark.path!r} is not one of the job's images; use a `path` from the job's "
                "evaluation (most_wrong, least_certain) or its dataset.csv artifact",
                f"{field}.path",
            )
        if mark.action == "relabel":
            if mark.label not in classes:
                raise ApiError(
                    422,
                    "unknown_label",
                    f"{field}.label: relabel needs one of the job's classes ({', '.join(classes)}), got {mark.label!r}",
                    f"{field}.label",
                )
            if mark.label == image.label:
                raise ApiError(
                    422,
                    "same_label",
                    f"{field}.label: {mark.path!r} is already labelled {image.label!r}; mark it fine instead",
                    f"{field}.label",
                )
        elif mark.label is not None:
            raise ApiError(
                422, "unexpected_label", f"{field}.label: only a relabel mark takes a label", f"{field}.label"
            )
    actions = {m.path: m for m in marks}
    revised = []
    for image in images:
        decided = actions.get(image.path)
        if decided is not None and decided.action == "exclude":
            continue
        if decided is not None and decided.action == "relabel":
            image = image.model_copy(update={"label": decided.label})
        revised.append(image)
    return revised


def _storage_error(what: str) -> ApiError:
    return ApiError(503, "storage_unavailable", f"S3 did not answer while {what}; retry shortly")


def read_listing(s3: Any, job: JobRecord) -> list[ListedImage]:
    uri = (job.artifacts or {}).get(DATASET_LISTING)
    if uri is None:
        raise ApiError(
            409,
            "no_dataset_listing",
            f"job {job.id!r} has no list of its images (it is {job.status.value}; the list is written once its "
            "dataset is validated, by jobs submitted since revisions exist); retrain it first, then mark its images",
            "job_id",
        )
    location = S3Location.parse(uri)
    try:
        body = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    except (ClientError, BotoCoreError):
        logger.exception("reading %s of job %s failed", DATASET_LISTING, job.id)
        raise _storage_error(f"reading job {job.id}'s {DATASET_LISTING}") from None
    return parse_listing(body)


def _ensure_bucket(s3: Any, settings: Settings) -> None:
    bucket = settings.upload_bucket
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
    if settings.s3_endpoint_url is None:  # on AWS a bucket is a decision (region, policy, cost), not a side effect
        raise ApiError(
            503,
            "bucket_not_found",
            f"the upload bucket {bucket!r} (TRAINYARD_UPLOAD_BUCKET) does not exist; the operator must create it "
            "before revisions can be written",
        )
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def write_revision(
    s3: Any, settings: Settings, job: JobRecord, tenant: str, marks: list[Mark], images: list[ListedImage]
) -> RevisionRecord:
    """Copy the listed images under a new prefix and write its labels.csv; the original is only read."""
    revision_id = new_id("rev")
    target = S3Location.parse(revisions_root(settings, tenant)).child(revision_id)
    source = S3Location.parse(job.params.dataset_uri)

    def copy(image: ListedImage) -> None:
        s3.copy_object(
            Bucket=target.bucket,
            Key=target.prefix + image.path,
            CopySource={"Bucket": source.bucket, "Key": source.prefix + image.path},
        )

    try:
        _ensure_bucket(s3, settings)
        with ThreadPoolExecutor(COPY_THREADS) as pool:
            list(pool.map(copy, images))
        # labels.csv last: a revision whose copies were interrupted is not a dataset any job can be given.
        s3.put_object(
            Bucket=target.bucket, Key=f"{target.prefix}labels.csv", Body=listing_csv(images), ContentType="text/csv"
        )
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise ApiError(
                409,
                "dataset_changed",
                f"an image of job {job.id!r} is gone from {job.params.dataset_uri}; a revision copies the images "
                "the job used, so they must still be there",
                "job_id",
            ) from None
        logger.exception("writing revision %s of job %s failed", revision_id, job.id)
        raise _storage_error(f"writing revision {revision_id}") from None
    except BotoCoreError:
        logger.exception("writing revision %s of job %s failed", revision_id, job.id)
        raise _storage_error(f"writing revision {revision_id}") from None
    return RevisionRecord(
        id=revision_id,
        tenant=job.tenant,
        job_id=job.id,
        base_dataset_uri=job.params.dataset_uri,
        dataset_uri=target.uri,
        marks=marks,
        images=len(images),
        created_at=datetime.now(UTC),
    )

"""What a batch run scores: the images under an S3 prefix, or those a CSV manifest lists, with labels if known.

- A prefix: every object with an image suffix, at any depth; hidden files and folders are skipped, other
  files too (counted). An image inside a folder named after one of the model's classes (`cat/x.jpg`,
  `valid/cat/x.jpg`) is labelled with the nearest such folder; the input counts as labelled when every image is.
- A manifest: `input_uri` naming a `.csv` object, or a prefix holding `labels.csv` (the training layout):
  a header with `path` and optionally `label`; paths are relative to the manifest's folder or s3:// URIs.
  Every listed path is scored, so one that does not exist gets a row with its error, as an undecodable file does.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import PurePosixPath
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from core.spec import S3Location
from jobs.dataset_cache import _list_objects
from jobs.errors import StageError
from jobs.layouts import IMAGE_SUFFIXES, LABELS_CSV

# Errors quoted from a manifest in one message.
QUOTED = 5


class InputImage(BaseModel):
    uri: str
    label: str | None = None


class BatchInput(BaseModel):
    images: list[InputImage]  # sorted by uri: shard i is always the same images
    labelled: bool
    skipped: int = 0  # files under the prefix that are not images

    @property
    def listing_sha256(self) -> str:
        digest = hashlib.sha256()
        for image in self.images:
            digest.update(f"{image.uri}\t{image.label or ''}\n".encode())
        return digest.hexdigest()


def list_input(s3: Any, input_uri: str, classes: list[str], max_objects: int) -> BatchInput:
    location = S3Location.parse(input_uri)
    if location.key.lower().endswith(".csv"):
        return _read_manifest(s3, input_uri, location.bucket, location.key, max_objects)
    objects = _list_objects(s3, location, max_objects)
    keys = [o["Key"] for o in objects]
    manifest = f"{location.prefix}{LABELS_CSV}"
    if manifest in keys:
        return _read_manifest(s3, f"s3://{location.bucket}/{manifest}", location.bucket, manifest, max_objects)
    images, skipped = [], 0
    known = set(classes)
    for key in keys:
        relative = PurePosixPath(key[len(location.prefix) :])
        if any(part.startswith(".") for part in relative.parts) or relative.suffix.lower() not in IMAGE_SUFFIXES:
            skipped += 1
            continue
        label = next((folder for folder in reversed(relative.parts[:-1]) if folder in known), None)
        images.append(InputImage(uri=f"s3://{location.bucket}/{key}", label=label))
    if not images:
        raise StageError(
            "no_images",
            f"{input_uri} holds no images ({skipped} other file(s)); image files end in "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}: point input_uri at the prefix that holds them, or at a CSV manifest",
        )
    labelled = all(image.label is not None for image in images)
    if not labelled:
        images = [InputImage(uri=image.uri) for image in images]
    return BatchInput(images=sorted(images, key=lambda i: i.uri), labelled=labelled, skipped=skipped)


def _read_manifest(s3: Any, uri: str, bucket: str, key: str, max_objects: int) -> BatchInput:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "NoSuchBucket", "404"):
            raise StageError("input_not_found", f"the manifest {uri} does not exist") from None
        raise
    try:
        text = body.decode("utf-8-sig")  # -sig: spreadsheets often write a BOM
    except UnicodeDecodeError:
        raise StageError("invalid_manifest", f"{uri} is not UTF-8 text; save it as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if "path" not in header:
        raise StageError(
            "invalid_manifest",
            f"{uri} line 1 must be a header naming a `path` column (and optionally `label`); "
            f"found: {', '.join(header) or 'an empty file'}",
        )
    folder = f"s3://{bucket}/{key.rpartition('/')[0]}/" if "/" in key else f"s3://{bucket}/"
    at_path, at_label = header.index("path"), header.index("label") if "label" in header else None
    images: dict[str, InputImage] = {}
    problems: list[str] = []
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        path = row[at_path].strip() if at_path < len(row) else ""
        label = row[at_label].strip() if at_label is not None and at_label < len(row) else ""
        image_uri = path if path.startswith("s3://") else folder + path.removeprefix("./")
        try:
            S3Location.parse(image_uri)
        except ValueError as exc:
            problems.append(f"line {line}: {path!r} {exc}")
            continue
        if not path or image_uri in images:
            problems.append(f"line {line}: " + ("no path" if not path else f"{path} is listed twice"))
            continue
        images[image_uri] = InputImage(uri=image_uri, label=label or None)
        if len(images) > max_objects:
            raise StageError(
                "input_too_large",
                f"{uri} lists more than {max_objects} images, the limit per run (TRAINYARD_MAX_DATASET_OBJECTS); "
                "split it into smaller manifests",
            )
    if problems:
        shown = "; ".join(problems[:QUOTED]) + ("; …" if len(problems) > QUOTED else "")
        raise StageError("invalid_manifest", f"{uri} has {len(problems)} bad row(s): {shown}")
    if not images:
        raise StageError("no_images", f"{uri} lists no images; add rows of path[,label] below the header")
    labelled = at_label is not None and all(image.label for image in images.values())
    ordered = sorted(images.values(), key=lambda i: i.uri)
    if not labelled:
        ordered = [InputImage(uri=image.uri) for image in ordered]
    return BatchInput(images=ordered, labelled=labelled)

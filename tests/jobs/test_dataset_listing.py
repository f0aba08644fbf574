"""The driver records the images a job used (dataset.csv) once its dataset is validated: what revisions start from.

Run against the real S3 server and a real store, without Ray: the listing is written before Ray is joined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.dataset_listing import DATASET_LISTING, parse_listing
from core.settings import get_settings
from core.spec import JobParams, S3Location
from core.store import JobStore
from infra.local.sample_data import ensure_bucket, make_shapes
from jobs.driver import Driver
from jobs.stages.validate import validate_dataset
from tests.utils.schema import migrated


def test_the_listing_holds_every_split_with_class_names_and_is_an_artifact(
    s3: Any, tmp_path: Path, cache_dir: Path
) -> None:
    settings = get_settings().model_copy(update={"database_url": f"sqlite:///{tmp_path / 'store.db'}"})
    ensure_bucket(s3, S3Location.parse(settings.artifact_uri).bucket)
    migrated(settings.database_url)
    store = JobStore.from_url(settings.database_url)
    root = make_shapes(tmp_path / "shapes", train_per_class=3, valid_per_class=2, size=32)
    (root / "train" / "circle" / "notes.txt").write_text("not an image")
    job, _ = store.create_job(JobParams(dataset_uri="s3://bucket/shapes"))
    dataset = validate_dataset(root, "s3://bucket/shapes", 0.5, 0.2, 0)

    Driver(job.id, store, settings)._record_listing(dataset)

    uri = store.get_job(job.id).artifacts[DATASET_LISTING]  # type: ignore[union-attr]
    location = S3Location.parse(uri)
    listed = parse_listing(s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read())
    expected = {str(p.relative_to(root)) for p in root.rglob("*.png")}
    assert {i.path for i in listed} == expected  # the undecodable notes.txt is not in it
    assert all(i.label == Path(i.path).parent.name and i.split == Path(i.path).parts[0] for i in listed)
    store.engine.dispose()

"""Small JPEG thumbnails of the images the report shows (most wrong, least certain), stored beside the job.

Stored in S3 rather than made by the API on demand: the API has no copy of the dataset, and a report must
keep working after the dataset changes or is deleted.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from PIL import Image

from core.images import to_rgb
from core.spec import S3Location

THUMBNAIL_PX = 96  # long side; a grid of 9 stays well under 50 KB
JPEG_QUALITY = 85


def thumbnail_jpeg(path: Path, size: int = THUMBNAIL_PX) -> bytes:
    with Image.open(path) as image:
        image.draft("RGB", (size * 2, size * 2))
        rgb = to_rgb(image)
    rgb.thumbnail((size, size))
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def attach_thumbnails(s3: Any, location: S3Location, root: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Upload a thumbnail of each entry's image under `location`/thumbnails/; the entries gain `thumbnail_uri`."""
    attached = []
    for entry in entries:
        # Named by the image's path: an image both most-wrong and least-certain is stored once.
        key = f"{location.prefix}thumbnails/{hashlib.sha256(entry['path'].encode()).hexdigest()[:16]}.jpg"
        s3.put_object(
            Bucket=location.bucket, Key=key, Body=thumbnail_jpeg(root / entry["path"]), ContentType="image/jpeg"
        )
        attached.append(entry | {"thumbnail_uri": f"s3://{location.bucket}/{key}"})
    return attached

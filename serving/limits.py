"""What a prediction request may carry, checked the same way by the API and by the replica (direct clients)."""

from __future__ import annotations

ACCEPTED_TYPES = "an image/* type, application/octet-stream or multipart/form-data"
# Multipart framing (boundaries, part headers) around each file; a form is refused only when it is clearly
# larger than its images may be.
MULTIPART_OVERHEAD = 64 * 1024


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_multipart(content_type: str) -> bool:
    return media_type(content_type) == "multipart/form-data"


def is_unsupported(content_type: str) -> bool:
    """True for a declared type that cannot hold an image (text/plain, application/json …); no type is fine."""
    kind = media_type(content_type)
    return bool(kind) and not (kind.startswith("image/") or kind in ("application/octet-stream", "multipart/form-data"))


def unsupported_message(content_type: str, batch: bool) -> str:
    if batch:
        return f"content type {media_type(content_type)!r} cannot carry several images; send multipart/form-data"
    return f"content type {media_type(content_type)!r} is not an image; send {ACCEPTED_TYPES}"

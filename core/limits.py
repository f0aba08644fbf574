"""What a request may carry, checked the same way by the API (before and while reading a body) and by a Serve
replica (for clients that call it directly), and the decoding limit every reader of user images shares.

Kept free of torch, so that the job driver's validation and the API import it fast.
"""

from __future__ import annotations

from PIL import Image

# Refuse decompression bombs outright rather than warn (PIL's default only warns up to 2x this).
MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

ACCEPTED_TYPES = "an image/* type, application/octet-stream or multipart/form-data"
_UPLOAD_TYPES = ("image/", "application/octet-stream", "multipart/form-data")
# Multipart framing (boundaries, part headers) around each file; a form is refused only when it is clearly
# larger than its images may be.
MULTIPART_OVERHEAD = 64 * 1024


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_multipart(content_type: str) -> bool:
    return media_type(content_type) == "multipart/form-data"


def is_json(content_type: str) -> bool:
    kind = media_type(content_type)
    return kind == "application/json" or kind.endswith("+json")


def is_upload(content_type: str) -> bool:
    """A body that may carry images (and so may be as large as they are), as opposed to JSON."""
    return media_type(content_type).startswith(_UPLOAD_TYPES)


def upload_limit(max_image_bytes: int, images: int = 1) -> int:
    """The most bytes a body carrying `images` images of at most `max_image_bytes` each may hold, framing included."""
    return images * (max_image_bytes + MULTIPART_OVERHEAD)


def is_unsupported(content_type: str) -> bool:
    """True for a declared type that cannot hold an image (text/plain, application/json …); no type is fine."""
    kind = media_type(content_type)
    return bool(kind) and not (kind.startswith("image/") or kind in ("application/octet-stream", "multipart/form-data"))


def type_refusal(content_type: str, batch: bool) -> str | None:
    """Why a prediction request of this content type is refused (a 415's message), or None when it is accepted."""
    if is_unsupported(content_type) or (batch and not is_multipart(content_type)):
        return unsupported_message(content_type, batch)
    return None


def unsupported_message(content_type: str, batch: bool) -> str:
    if batch:
        return f"content type {media_type(content_type)!r} cannot carry several images; send multipart/form-data"
    return f"content type {media_type(content_type)!r} is not an image; send {ACCEPTED_TYPES}"

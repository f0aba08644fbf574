"""Which image format a body is, from its first bytes: the formats Trainyard trains on and serves.

Six fixed signatures, checked without decoding anything (Pillow would open and parse the header, in the API
process, for every prediction): a body's type is known before a byte of it is forwarded to a replica.
"""

from __future__ import annotations

# (media type, signature at offset 0, optional second signature at offset 8)
_SIGNATURES: tuple[tuple[str, bytes, bytes | None], ...] = (
    ("image/jpeg", b"\xff\xd8\xff", None),
    ("image/png", b"\x89PNG\r\n\x1a\n", None),
    ("image/gif", b"GIF87a", None),
    ("image/gif", b"GIF89a", None),
    ("image/bmp", b"BM", None),
    ("image/webp", b"RIFF", b"WEBP"),
    ("image/tiff", b"II*\x00", None),
    ("image/tiff", b"MM\x00*", None),
)
FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP or TIFF"


def sniff_image_type(data: bytes) -> str | None:
    """The media type of `data` if it starts like a JPEG, PNG, GIF, BMP, WebP or TIFF file, else None."""
    for media_type, head, at_8 in _SIGNATURES:
        if data.startswith(head) and (at_8 is None or data[8:12] == at_8):
            return media_type
    return None

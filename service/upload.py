"""Reading an uploaded image: the raw request body or the `file` field of a multipart form, size-capped."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.errors import ApiError

# Multipart framing (boundaries, part headers) around the file; a form is refused only when it is clearly
# larger than the image limit allows.
MULTIPART_OVERHEAD = 64 * 1024
EMPTY_HINT = "send the image bytes as the request body or as multipart field 'file'"


def _too_large(size: int | None, limit: int) -> ApiError:
    got = f"the image is {size} bytes" if size is not None else "the image is too large"
    return ApiError(413, "payload_too_large", f"{got}; the limit is {limit} bytes", "body")


def _is_multipart(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


async def read_image(request: Request, limit: int) -> tuple[bytes, str]:
    """Returns (image bytes, content type). Never buffers more than `limit` (plus multipart framing)."""
    content_type = request.headers.get("content-type", "")
    multipart = _is_multipart(content_type)
    cap = limit + (MULTIPART_OVERHEAD if multipart else 0)
    declared = request.headers.get("content-length", "")
    # Refuse before receiving anything when the client says up front that it is too big.
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(None if multipart else int(declared), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise _too_large(None, limit)
    if multipart:
        data, part_type = await _file_field(request.headers, bytes(body))
        content_type = part_type
    else:
        data = bytes(body)
    if not data:
        raise ApiError(422, "empty_body", f"the image is empty; {EMPTY_HINT}", "body")
    if len(data) > limit:
        raise _too_large(len(data), limit)
    return data, content_type or "application/octet-stream"


async def _file_field(headers: Headers, body: bytes) -> tuple[bytes, str]:
    async def chunks() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(headers, chunks(), max_files=1, max_fields=16).parse()
    except MultiPartException as e:
        raise ApiError(
            422, "invalid_multipart", f"the multipart body could not be parsed ({e}); {EMPTY_HINT}", "body"
        ) from e
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "empty_body", f"the multipart form has no file field 'file'; {EMPTY_HINT}", "body")
        return await upload.read(), upload.content_type or ""
    finally:
        await form.close()

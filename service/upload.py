"""Reading uploaded images, size-capped: the raw body or multipart field `file`, or a `predict:batch` form."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from core.limits import is_multipart, type_refusal, upload_limit
from service.errors import ApiError

EMPTY_HINT = "send the image bytes as the request body or as multipart field 'file'"


def _too_large(size: int | None, limit: int) -> ApiError:
    got = f"the image is {size} bytes" if size is not None else "the image is too large"
    return ApiError(413, "payload_too_large", f"{got}; the limit is {limit} bytes", "body")


def _check_type(content_type: str, batch: bool) -> None:
    refusal = type_refusal(content_type, batch)
    if refusal is not None:
        raise ApiError(415, "unsupported_media_type", refusal, "content-type")


async def _read_capped(request: Request, cap: int, limit: int, multipart: bool) -> bytes:
    declared = request.headers.get("content-length", "")
    # Refuse before receiving anything when the client says up front that it is too big.
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(None if multipart else int(declared), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise _too_large(None, limit)
    return bytes(body)


async def read_images_form(request: Request, limit: int, max_images: int) -> tuple[bytes, str]:
    """A `predict:batch` body, unparsed: (multipart bytes, content type). The model server splits the parts."""
    content_type = request.headers.get("content-type", "")
    _check_type(content_type, batch=True)
    body = await _read_capped(request, upload_limit(limit, max_images), limit, multipart=True)
    return body, content_type


async def read_image(request: Request, limit: int) -> tuple[bytes, str]:
    """Returns (image bytes, content type). Never buffers more than `limit` (plus multipart framing)."""
    content_type = request.headers.get("content-type", "")
    _check_type(content_type, batch=False)
    multipart = is_multipart(content_type)
    body = await _read_capped(request, upload_limit(limit) if multipart else limit, limit, multipart)
    if multipart:
        data, content_type = await _file_field(request.headers, body)
    else:
        data = body
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

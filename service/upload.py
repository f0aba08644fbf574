"""Reading uploaded images, size-capped: the raw body or multipart field `file`, or a `predict:batch` form.

A raw body is an image whatever its Content-Type says, as long as its bytes say so: `curl --data-binary
@photo.jpg` sends `application/x-www-form-urlencoded` unless told otherwise, and most HTTP clients send
something generic. Only JSON and multipart keep their meaning: JSON is never an image, multipart is a form.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from core.image_types import FORMAT_NAMES, sniff_image_type
from core.limits import is_json, is_multipart, media_type, type_refusal, upload_limit
from service.errors import ApiError

EMPTY_HINT = "send the image bytes as the request body or as multipart field 'file'"
HOW_TO_SEND = (
    "send the image file's bytes as the body (`curl --data-binary @photo.jpg`) or as multipart field 'file' "
    "(`curl -F file=@photo.jpg`)"
)


def _not_an_image(data: bytes, content_type: str) -> ApiError:
    sent = f"Content-Type {media_type(content_type)}" if content_type else "no Content-Type"
    return ApiError(
        415,
        "unsupported_media_type",
        f"received {len(data)} bytes with {sent}, beginning {data[:12]!r}: not a {FORMAT_NAMES} image; {HOW_TO_SEND}",
        "body",
    )


def _too_large(size: int | None, limit: int) -> ApiError:
    got = f"the image is {size} bytes" if size is not None else "the image is too large"
    return ApiError(413, "payload_too_large", f"{got}; the limit is {limit} bytes", "body")


def _check_form_type(content_type: str) -> None:
    refusal = type_refusal(content_type, batch=True)
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
    _check_form_type(content_type)
    body = await _read_capped(request, upload_limit(limit, max_images), limit, multipart=True)
    return body, content_type


async def read_image(request: Request, limit: int) -> tuple[bytes, str]:
    """Returns (image bytes, image content type). Never buffers more than `limit` (plus multipart framing).

    A body (or form part) not declared as `image/*` is recognised by its first bytes, and refused with a 415
    saying what came and what to send when they are not an image's. One declared `image/*` goes to the model
    server as it is: bytes that do not decode are the content's fault there (422 `invalid_image`).
    """
    content_type = request.headers.get("content-type", "")
    if is_json(content_type):
        raise ApiError(415, "unsupported_media_type", f"a JSON body is not an image; {HOW_TO_SEND}", "content-type")
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
    if not media_type(content_type).startswith("image/"):
        sniffed = sniff_image_type(data)
        if sniffed is None:
            raise _not_an_image(data, content_type)
        content_type = sniffed
    return data, content_type


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

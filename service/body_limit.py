"""A cap on every request body, enforced before a route (or FastAPI's JSON parsing) buffers it.

Uploads (images: raw `image/*`, `application/octet-stream`, multipart forms, and any body but JSON sent to a
predict route, which reads images whatever their declared type) may be as large as `max_image_bytes` plus
multipart framing (times `max_batch_images` for `predict:batch`); `service.upload` then applies the exact
limit. Every other body (JSON) is capped at `max_request_bytes`: a job's parameters are a few hundred bytes,
and without a cap FastAPI would read a body of any size into memory before validating it.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.limits import is_json, is_upload, upload_limit
from service.errors import error_response

# The routes that take an image body: /v1/models/{ref}/predict and …/predict:batch.
_IMAGE_ROUTE = re.compile(r"^/v1/models/[^/]+/predict(:batch)?$")


def _carries_images(content_type: str, path: str) -> bool:
    return not is_json(content_type) if _IMAGE_ROUTE.match(path) else is_upload(content_type)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_request_bytes: int, max_image_bytes: int, max_batch_images: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_upload_bytes = upload_limit(max_image_bytes)
        # `predict:batch` takes up to max_batch_images images in one form; service.upload counts them exactly.
        self.max_batch_upload_bytes = upload_limit(max_image_bytes, max_batch_images)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        upload = _carries_images(headers.get("content-type", ""), str(scope.get("path", "")))
        batch = upload and str(scope.get("path", "")).endswith(":batch")
        limit = self.max_batch_upload_bytes if batch else self.max_upload_bytes if upload else self.max_request_bytes
        what = "an upload" if upload else "a JSON request body"
        too_large = error_response(
            413,
            "payload_too_large",
            f"the request body is larger than the {limit} bytes allowed for {what}; send a smaller body",
            "body",
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return

        # A body without Content-Length (chunked) is counted as it arrives. Once over the limit, the 413 is
        # sent at once; the route then sees a disconnected client, and whatever it answers is dropped.
        received = 0
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request" and not answered:
                received += len(message.get("body", b""))
                if received > limit:
                    answered = True
                    await too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not answered:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

"""Typed exceptions built from the API's JSON error body ``{"error": {"code", "message", "field"}}``.

Every exception carries what a caller needs to act: the HTTP `status`, the API's stable `code` (branch on
it), its `message` (show it) and the `field` it names, if any. `str(error)` reads as one sentence.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx


class TrainyardError(Exception):
    """Anything the API refused or could not do, or a job that did not succeed."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str = "error", field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" (field: {self.field})" if self.field else ""
        return f"{self.message}{where}"


class InvalidRequest(TrainyardError):
    """400/409/413/415/422: the request itself is wrong; `field` names what to fix."""


class RateLimited(InvalidRequest):
    """429: this key sent more requests than its rate limit; the client waited and retried as far as it may."""


class Unauthorized(TrainyardError):
    """401/403: no API key, or one that may not do this."""


class NotFound(TrainyardError):
    """404: no such job, model, artifact or route; 410: a model listed, but whose objects are gone."""


class NotSupported(TrainyardError):
    """The API at this URL does not offer this operation yet (an older server)."""


class Unavailable(TrainyardError):
    """The API is unreachable, or answered 5xx: retry later, or check that the stack is up."""


class JobFailed(TrainyardError):
    """A job ended `failed` (or `cancelled`, see `JobCancelled`); `phase` says where it stopped."""

    def __init__(self, message: str, *, code: str, job_id: str, phase: str | None = None) -> None:
        super().__init__(message, code=code)
        self.job_id = job_id
        self.phase = phase

    def __str__(self) -> str:
        where = f" in {self.phase}" if self.phase else ""
        return f"job {self.job_id} failed{where}: {self.message}"


class JobCancelled(JobFailed):
    def __str__(self) -> str:
        return f"job {self.job_id} was cancelled"


def _error_class(status: int) -> type[TrainyardError]:
    if status == 429:
        return RateLimited
    if status in (401, 403):
        return Unauthorized
    if status in (404, 410):
        return NotFound
    if status >= 500:
        return Unavailable
    return InvalidRequest


def from_response(response: httpx.Response) -> TrainyardError:
    """The exception for a non-2xx answer; tolerates bodies that are not the API's error shape (a proxy's)."""
    status = response.status_code
    body: Any = None
    with contextlib.suppress(ValueError):
        body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "message" in error:
        code, message, field = str(error.get("code", "error")), str(error["message"]), error.get("field")
    else:
        text = response.text.strip()[:200] or response.reason_phrase
        code, message, field = f"http_{status}", f"{response.request.url} answered {status}: {text}", None
    if status >= 500:
        message = f"{message} (the API answered {status}; retry shortly, or check the server's logs)"
    return _error_class(status)(message, status=status, code=code, field=field)


def unreachable(url: str, error: httpx.TransportError) -> Unavailable:
    return Unavailable(
        f"the Trainyard API at {url} is not reachable ({type(error).__name__}); start the local stack with "
        "`trainyard up`, or point TRAINYARD_URL (or --url) at a running API",
        code="unreachable",
    )

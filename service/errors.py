"""One error shape for every failure: ``{"error": {"code", "message", "field"}}`` (422s add ``details``).

Messages say what was wrong and how to fix it, with the valid values where there is a short list; a client
can branch on `code` and point at `field`. Unexpected exceptions never reach the client as tracebacks: see
`service.middleware`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

# Pydantic error types whose constraint reads best as a comparison ("must be ≤ 100").
_COMPARISONS = {
    "less_than_equal": ("le", "≤"),
    "greater_than_equal": ("ge", "≥"),
    "less_than": ("lt", "<"),
    "greater_than": ("gt", ">"),
}
# FastAPI's HTTPException detail when reading or decoding the body fails before validation.
_UNREADABLE_BODY = "There was an error parsing the body"
# Short, stable codes for the statuses Starlette raises itself (unknown route, wrong method …).
_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """Raised by routes for any expected failure; rendered as the standard error body."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers
        self.extra = extra or {}  # more members of the body's `error` object (a 429's `limit`, a 402's `budget`)


class ErrorDetail(BaseModel):
    field: str
    code: str
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="stable and short: branch on it")
    message: str = Field(description="what was wrong and how to fix it")
    field: str | None = Field(description="the request field at fault (a body field, query parameter or header)")
    details: list[ErrorDetail] | None = Field(default=None, description="422 only: every problem found")
    limit: dict[str, Any] | None = Field(
        default=None, description="429 only: the rate limit the key went over (per_second, burst, scope)"
    )
    budget: dict[str, Any] | None = Field(
        default=None,
        description="402 only: tenant, spent_usd, budget_usd, period_start and period_end of the refused tenant",
    )


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorInfo


# What each error status means, for the OpenAPI schema: clients (and the schema fuzzer) learn every status a
# route can answer, and that each answers the same `ErrorBody`.
_ERROR_MEANINGS = {
    400: "the request cannot be accepted as sent (an unreadable body, a quota it can never fit); see the message",
    401: "no API key, or an unknown or revoked one: send `Authorization: Bearer <key>`",
    402: "the tenant has spent its monthly budget; `budget` holds the figures",
    403: "the key may not use this dataset or weights location (outside the allow-list)",
    404: "no such job, model or artifact",
    409: "a conflict with an earlier request (an Idempotency-Key reused with another body)",
    410: "the model is listed but its objects are gone",
    413: "the request body is larger than the limit named in the message",
    415: "the request body's content type is not accepted here",
    422: "a parameter, header or body field is invalid; `field` names it and `details` lists every problem",
    429: "this API key sent more requests than its rate limit allows; retry after the seconds in Retry-After",
    502: "the model server failed",
    503: "a dependency (the artifact store, the model server) is unavailable; retry shortly",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can answer `statuses` (422 is added to every route: any input can fail)."""
    return {status: {"model": ErrorBody, "description": _ERROR_MEANINGS[status]} for status in sorted({*statuses, 422})}


def job_not_found(job_id: str) -> ApiError:
    return ApiError(404, "job_not_found", f"no job with id {job_id!r}; list jobs with GET /v1/jobs", "job_id")


def artifact_not_found(job_id: str, name: str, available: list[str]) -> ApiError:
    listed = ", ".join(sorted(available)) or "none yet"
    return ApiError(404, "artifact_not_found", f"job {job_id!r} has no artifact {name!r}; it has: {listed}", "name")


def model_not_found(model_id: str) -> ApiError:
    return ApiError(
        404, "model_not_found", f"no model with id {model_id!r}; list models with GET /v1/models", "model_id"
    )


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def error_response(
    status_code: int,
    code: str,
    message: str,
    field: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, field, **extra), status_code=status_code, headers=headers)


# --- validation errors ---------------------------------------------------------------------------------


def _field_name(loc: Sequence[int | str]) -> str:
    if not loc:
        return "body"
    source, *rest = loc
    if source == "body":
        # ("body", 12) is a JSON syntax error at character 12, not a field.
        rest = [] if len(rest) == 1 and isinstance(rest[0], int) else rest
        if not rest:
            return "body"
    name = ""
    for part in rest:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or str(source)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


def _body_model(request: Request) -> type[BaseModel] | None:
    route = request.scope.get("route")
    if isinstance(route, APIRoute) and route.body_field is not None:
        annotation = route.body_field.field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
    return None


def _example_body(model: type[BaseModel] | None) -> str:
    if model is None:
        return "a JSON object"
    example = {
        name: field.examples[0] for name, field in model.model_fields.items() if field.is_required() and field.examples
    }
    return json.dumps(example)


def _describe(error: dict[str, Any], field: str, model: type[BaseModel] | None) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    msg = str(error.get("msg", "invalid value"))
    if kind == "json_invalid":
        where = error["loc"][-1] if error.get("loc") else "?"
        return (
            f"the request body is not valid JSON ({ctx.get('error', 'syntax error')} at character {where}); "
            f"send a JSON object such as {_example_body(model)}"
        )
    if field == "body":
        if kind == "missing":
            return f"the request body is missing; send a JSON object such as {_example_body(model)}"
        return (
            "the request body must be a JSON object sent with Content-Type: application/json, "
            f"e.g. {_example_body(model)}"
        )
    if kind == "extra_forbidden":
        allowed = ", ".join(model.model_fields) if model else ""
        name = field.rsplit(".", 1)[-1]
        return f"unknown field {name!r}" + (f"; allowed fields: {allowed}" if allowed else "")
    if kind == "missing":
        examples = model.model_fields[field].examples if model and field in model.model_fields else None
        hint = f", e.g. {json.dumps(examples[0])}" if examples else ""
        return f"{field}: required{hint}"
    if kind in _COMPARISONS:
        key, sign = _COMPARISONS[kind]
        return f"{field}: must be {sign} {ctx.get(key)}, got {_show(value)}"
    if kind in ("literal_error", "enum"):
        return f"{field}: must be one of {ctx.get('expected', '?')}, got {_show(value)}"
    if kind == "string_too_long":
        return f"{field}: must be at most {ctx.get('max_length')} characters, got {len(str(value))}"
    if kind == "string_too_short":
        return f"{field}: must be at least {ctx.get('min_length')} character(s) long"
    if kind == "value_error":
        return f"{field}: {msg.removeprefix('Value error, ')}"
    return f"{field}: {msg[:1].lower()}{msg[1:]}, got {_show(value)}"


def validation_response(request: Request, errors: Sequence[Any]) -> JSONResponse:
    model = _body_model(request)
    details: list[dict[str, str]] = []
    for error in errors:
        field = _field_name(error.get("loc", ()))
        kind = str(error.get("type", "invalid"))
        details.append({"field": field, "code": kind, "message": _describe(error, field, model)})
    if not details:
        return error_response(422, "validation_error", "invalid request")
    first = details[0]
    code = "invalid_json" if first["code"] == "json_invalid" else "validation_error"
    message = first["message"]
    if len(details) > 1:
        message += f" (and {len(details) - 1} more problem(s); see details)"
    return error_response(422, code, message, first["field"], details=details)


# --- handlers ------------------------------------------------------------------------------------------


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.field, headers=exc.headers, **exc.extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(request, exc.errors())


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; the API lives under /v1 (see /docs)"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
        # FastAPI's answer to a body it cannot decode at all (not UTF-8, a dropped upload): say what to send.
        return error_response(
            400,
            "unreadable_body",
            "the request body could not be read; send a UTF-8 JSON object with Content-Type: application/json",
            "body",
        )
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

"""Deployed models and predictions (forwarded to the Ray Serve application)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Annotated, Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Query, Request, Response

from core.settings import Settings
from core.store import ModelRecord
from service.deps import HttpClientDep, MetricsDep, S3Dep, SettingsDep, StoreDep
from service.errors import error_response, error_responses, model_not_found
from service.schemas import ModelList, ModelPublic, PredictionList
from service.upload import read_image
from serving.registry import unavailable_reason

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/models", tags=["models"])

PREDICT_TIMEOUT_S = 30.0


def _public(model: ModelRecord, s3: Any, settings: Settings) -> ModelPublic:
    """The model as clients see it, checked against the artifact store: a listed model must be able to answer."""
    try:
        why = unavailable_reason(s3, settings, model.id, model.artifact_uri)
        reason = why.message if why else None
    except (ClientError, BotoCoreError):
        logger.exception("checking the objects of model %s failed", model.id)
        reason = "the artifact store did not answer; its availability is unknown"
    return ModelPublic.build(model, settings.public_url, reason)


async def _gone(model: ModelRecord, s3: Any, settings: Settings) -> Response | None:
    """A 410 naming the missing object when the model's objects are gone, else None.

    Checked only when the model server could not answer, so the hot path pays nothing for it.
    """
    try:
        why = await asyncio.to_thread(unavailable_reason, s3, settings, model.id, model.artifact_uri)
    except (ClientError, BotoCoreError):
        return None
    if why is None:
        return None
    return error_response(410, why.code, f"model {model.id!r} is listed but cannot answer: {why.message}", "model_id")


@router.get(
    "", summary="Deployed models, newest first, each checked against the artifact store", responses=error_responses()
)
def list_models(store: StoreDep, settings: SettingsDep, s3: S3Dep) -> ModelList:
    return ModelList(models=[_public(m, s3, settings) for m in store.list_models()])


@router.get("/{model_id}", summary="One deployed model", responses=error_responses(404))
def get_model(model_id: str, store: StoreDep, settings: SettingsDep, s3: S3Dep) -> ModelPublic:
    model = store.get_model(model_id)
    if model is None:
        raise model_not_found(model_id)
    return _public(model, s3, settings)


_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


@router.post(
    "/{model_id}/predict",
    summary="Classify one image",
    response_model=PredictionList,
    responses=error_responses(400, 404, 410, 413, 415, 502, 503),
    openapi_extra=_IMAGE_BODY,
)
async def predict(
    model_id: str,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    http: HttpClientDep,
    metrics: MetricsDep,
    s3: S3Dep,
    top_k: Annotated[int, Query(ge=1, le=100, description="how many labels to return, most probable first")] = 5,
) -> Response:
    model: ModelRecord | None = await asyncio.to_thread(store.get_model, model_id)
    if model is None:
        raise model_not_found(model_id)
    image, content_type = await read_image(request, settings.max_image_bytes)
    began = time.perf_counter()
    try:
        answer = await http.post(
            f"{settings.serve_url.rstrip('/')}/classify",
            params={"top_k": top_k},
            content=image,
            # Ray Serve routes the request to a replica that has this model loaded (model multiplexing).
            headers={"serve_multiplexed_model_id": model_id, "content-type": content_type},
            timeout=PREDICT_TIMEOUT_S,
        )
    except httpx.TransportError as e:
        metrics.predict_seconds.labels("unavailable").observe(time.perf_counter() - began)
        logger.warning("predict %s: the model server is not reachable (%s)", model_id, type(e).__name__)
        return await _gone(model, s3, settings) or _unavailable("the model server is not reachable; retry shortly")
    outcome, response = _relay(model_id, answer)
    if answer.status_code in (404, 503):
        # Serve knows no such model, or has no route: first rule out that the model's objects are gone.
        gone = await _gone(model, s3, settings)
        if gone is not None:
            outcome, response = "client_error", gone
    metrics.predict_seconds.labels(outcome).observe(time.perf_counter() - began)
    return response


def _unavailable(message: str) -> Response:
    return error_response(503, "serving_unavailable", message, headers={"Retry-After": "1"})


def _has_error_shape(content: bytes) -> bool:
    try:
        body = json.loads(content)
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and "code" in body["error"]


def _relay(model_id: str, answer: httpx.Response) -> tuple[str, Response]:
    """Pass on the classifier's own answers (200, and its 4xx such as `invalid_image`); translate the rest."""
    status = answer.status_code
    if status == 200:
        return "ok", Response(answer.content, status_code=200, media_type="application/json")
    if 400 <= status < 500 and _has_error_shape(answer.content):
        return "client_error", Response(answer.content, status_code=status, media_type="application/json")
    # Anything else is the server's problem, not the client's: log it, and answer without its details.
    logger.warning("predict %s: the model server answered %s: %.300r", model_id, status, answer.content)
    if status in (404, 503):
        # 404: Serve's proxy has no route yet (application still deploying); 503: its queues are full.
        return "unavailable", _unavailable("the model server is not ready to serve this model; retry shortly")
    return "server_error", error_response(
        502, "serving_error", "the model server failed to classify the image; retry, or contact the operator"
    )

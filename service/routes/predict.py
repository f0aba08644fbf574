"""Predictions: one image or a batch, checked here and forwarded to the Ray Serve application
(`service.serve_forwarding`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from core.store import JobStore, ModelRecord
from service.auth import Principal, PrincipalDep
from service.deps import HttpClientDep, MetricsDep, S3Dep, SettingsDep, StoreDep
from service.errors import error_responses
from service.model_refs import resolve_model
from service.schemas import BatchPredictionList, PredictionList
from service.serve_forwarding import ServeCall
from service.upload import read_image, read_images_form

router = APIRouter(prefix="/v1/models", tags=["models"])


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


_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": ["files"],
                }
            },
        },
    }
}
TopK = Annotated[int, Query(ge=1, le=100, description="how many labels to return, most probable first")]
Tta = Annotated[bool, Query(description="test-time augmentation: average over the image and its mirror image")]


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
    principal: PrincipalDep,
    top_k: TopK = 5,
    tta: Tta = False,
) -> Response:
    model = await _known_model(store, model_id, principal)
    image, content_type = await read_image(request, settings.max_image_bytes)
    call = ServeCall(model, "predict", "/classify", {"top_k": top_k, "tta": str(tta).lower()}, image, content_type)
    return await call.send(settings, http, metrics, s3)


@router.post(
    "/{model_id}/predict:batch",
    summary="Classify several images in one request",
    response_model=BatchPredictionList,
    responses=error_responses(400, 404, 410, 413, 415, 502, 503),
    openapi_extra=_BATCH_BODY,
)
async def predict_batch(
    model_id: str,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    http: HttpClientDep,
    metrics: MetricsDep,
    s3: S3Dep,
    principal: PrincipalDep,
    top_k: TopK = 5,
    tta: Tta = False,
) -> Response:
    model = await _known_model(store, model_id, principal)
    form, content_type = await read_images_form(request, settings.max_image_bytes, settings.max_batch_images)
    params = {"top_k": top_k, "tta": str(tta).lower()}
    call = ServeCall(model, "predict:batch", "/classify/batch", params, form, content_type)
    return await call.send(settings, http, metrics, s3)


async def _known_model(store: JobStore, model_id: str, principal: Principal) -> ModelRecord:
    return await asyncio.to_thread(resolve_model, store, model_id, principal)

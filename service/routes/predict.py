"""Predictions: one image or a batch, checked here and forwarded to the Ray Serve application
(`service.serve_forwarding`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query, Request, Response

from core.settings import Settings
from core.store import JobStore, ModelRecord
from service.auth import Principal, PrincipalDep
from service.deps import HttpClientDep, MetricsDep, S3Dep, SettingsDep, StoreDep
from service.errors import error_responses
from service.metrics import Metrics
from service.model_refs import resolve_model
from service.rate_limit import end_turn
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


@dataclass
class Forwarder:
    """What both predict routes need: the model a reference names (in the caller's tenant), and Serve."""

    store: JobStore
    settings: Settings
    http: httpx.AsyncClient
    metrics: Metrics
    s3: Any
    principal: Principal

    async def model(self, model_id: str) -> ModelRecord:
        return await asyncio.to_thread(resolve_model, self.store, model_id, self.principal)

    async def send(
        self, model: ModelRecord, route: str, path: str, options: Options, body: bytes, content_type: str
    ) -> Response:
        params = {"top_k": options.top_k, "tta": str(options.tta).lower()}
        call = ServeCall(model, route, path, params, body, content_type)
        return await call.send(self.settings, self.http, self.metrics, self.s3)


@dataclass
class Options:
    """The query options both predict routes take."""

    top_k: int
    tta: bool


def _forwarder(
    store: StoreDep, settings: SettingsDep, http: HttpClientDep, metrics: MetricsDep, s3: S3Dep, principal: PrincipalDep
) -> Forwarder:
    return Forwarder(store, settings, http, metrics, s3, principal)


def _options(top_k: TopK = 5, tta: Tta = False) -> Options:
    return Options(top_k=top_k, tta=tta)


ForwarderDep = Annotated[Forwarder, Depends(_forwarder)]
OptionsDep = Annotated[Options, Depends(_options)]


@router.post(
    "/{model_id}/predict",
    summary="Classify one image",
    response_model=PredictionList,
    responses=error_responses(400, 404, 410, 413, 415, 502, 503),
    openapi_extra=_IMAGE_BODY,
)
async def predict(model_id: str, request: Request, serve: ForwarderDep, options: OptionsDep) -> Response:
    model = await serve.model(model_id)
    image, content_type = await read_image(request, serve.settings.max_image_bytes)
    end_turn(request.scope)  # waiting on the model server is no work of this process
    return await serve.send(model, "predict", "/classify", options, image, content_type)


@router.post(
    "/{model_id}/predict:batch",
    summary="Classify several images in one request",
    response_model=BatchPredictionList,
    responses=error_responses(400, 404, 410, 413, 415, 502, 503),
    openapi_extra=_BATCH_BODY,
)
async def predict_batch(model_id: str, request: Request, serve: ForwarderDep, options: OptionsDep) -> Response:
    model = await serve.model(model_id)
    settings = serve.settings
    form, content_type = await read_images_form(request, settings.max_image_bytes, settings.max_batch_images)
    end_turn(request.scope)  # waiting on the model server is no work of this process
    return await serve.send(model, "predict:batch", "/classify/batch", options, form, content_type)

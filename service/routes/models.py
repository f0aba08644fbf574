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
from core.store import LATEST_ALIAS, ModelRecord
from service.deps import HttpClientDep, MetricsDep, S3Dep, SettingsDep, StoreDep
from service.errors import ApiError, error_response, model_not_found
from service.metrics import Metrics
from service.model_refs import ALIAS_PATTERN, resolve_model
from service.schemas import AliasMove, AliasPublic, ModelList, ModelPublic, ModelTraffic, PredictionList
from service.upload import read_image
from serving.registry import delete_pointer, unavailable_reason

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/models", tags=["models"])

PREDICT_TIMEOUT_S = 30.0


def _public(
    model: ModelRecord, s3: Any, settings: Settings, aliases: list[str] | None = None, metrics: Metrics | None = None
) -> ModelPublic:
    """The model as clients see it, checked against the artifact store: a listed model must be able to answer."""
    try:
        why = unavailable_reason(s3, settings, model.id, model.artifact_uri)
        reason = why.message if why else None
    except (ClientError, BotoCoreError):
        logger.exception("checking the objects of model %s failed", model.id)
        reason = "the artifact store did not answer; its availability is unknown"
    traffic = ModelTraffic.model_validate(metrics.traffic(model.id)) if metrics else None
    return ModelPublic.build(model, settings.public_url, reason, aliases, traffic)


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


@router.get("", summary="Deployed model versions, newest first, with aliases, accuracy and traffic")
def list_models(store: StoreDep, settings: SettingsDep, s3: S3Dep, metrics: MetricsDep) -> ModelList:
    aliases = store.model_aliases()
    return ModelList(models=[_public(m, s3, settings, aliases.get(m.id), metrics) for m in store.list_models()])


@router.get("/{model_id}", summary="One deployed model version: by id, `name@alias`, `name@version` or `name`")
def get_model(model_id: str, store: StoreDep, settings: SettingsDep, s3: S3Dep, metrics: MetricsDep) -> ModelPublic:
    model = resolve_model(store, model_id)
    return _public(model, s3, settings, store.model_aliases().get(model.id), metrics)


@router.post("/{name}/aliases/{alias}", summary="Point an alias of a model name at one of its versions")
def move_alias(name: str, alias: str, body: AliasMove, store: StoreDep) -> AliasPublic:
    if not ALIAS_PATTERN.match(alias):
        raise ApiError(
            422,
            "invalid_alias",
            f"alias {alias!r} must be a lowercase word (a letter, then letters, digits, - or _; at most 64), "
            "e.g. production",
            "alias",
        )
    if alias == LATEST_ALIAS:
        raise ApiError(
            409,
            "alias_managed",
            "`latest` moves by itself to each new version; point another alias (e.g. production) instead",
            "alias",
        )
    if not store.model_name_exists(name):
        raise ApiError(404, "model_not_found", f"no model named {name!r}; list models with GET /v1/models", "name")
    if body.model_id is not None:
        target = store.get_model(body.model_id)
        if target is None or target.name != name:
            raise ApiError(
                404, "model_not_found", f"model {name!r} has no version with id {body.model_id!r}", "model_id"
            )
    else:
        assert body.version is not None  # AliasMove holds exactly one of the two
        target = store.get_model_version(name, body.version)
        if target is None:
            raise ApiError(
                404, "model_not_found", f"model {name!r} has no version {body.version}; see GET /v1/models", "version"
            )
    store.set_alias(name, alias, target.id)
    return AliasPublic(name=name, alias=alias, model_id=target.id, version=target.version)


@router.delete("/{model_id}", status_code=204, summary="Undeploy one model version; replicas free its memory")
async def delete_model(model_id: str, store: StoreDep, settings: SettingsDep, s3: S3Dep) -> Response:
    model = await asyncio.to_thread(store.get_model, model_id)
    if model is None:
        raise model_not_found(model_id)
    held = [a for a in store.model_aliases().get(model_id, []) if a != LATEST_ALIAS]
    if held:
        raise ApiError(
            409,
            "model_has_aliases",
            f"alias {', '.join(held)} of {model.name!r} points at this version; move it to another version with "
            f"POST /v1/models/{model.name}/aliases/{held[0]} first",
            "model_id",
        )
    # The pointer goes first: replicas check the pointers of what they hold and drop a model whose
    # pointer is gone (serving/replica_models.py), and a replica that has not loaded it can no longer load it.
    await asyncio.to_thread(delete_pointer, s3, settings, model_id)
    await asyncio.to_thread(store.delete_model, model_id)
    return Response(status_code=204)


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
    model = await asyncio.to_thread(resolve_model, store, model_id)
    image, content_type = await read_image(request, settings.max_image_bytes)
    began = time.perf_counter()
    try:
        answer = await http.post(
            f"{settings.serve_url.rstrip('/')}/classify",
            params={"top_k": top_k},
            content=image,
            # Ray Serve routes the request to a replica that has this model loaded (model multiplexing).
            headers={"serve_multiplexed_model_id": model.id, "content-type": content_type},
            timeout=PREDICT_TIMEOUT_S,
        )
    except httpx.TransportError as e:
        metrics.predict_seconds.labels("unavailable").observe(time.perf_counter() - began)
        metrics.count_prediction(model.id, "unavailable")
        logger.warning("predict %s: the model server is not reachable (%s)", model.id, type(e).__name__)
        return await _gone(model, s3, settings) or _unavailable("the model server is not reachable; retry shortly")
    outcome, response = _relay(model.id, answer)
    if answer.status_code in (404, 503):
        # Serve knows no such model, or has no route: first rule out that the model's objects are gone.
        gone = await _gone(model, s3, settings)
        if gone is not None:
            outcome, response = "client_error", gone
    metrics.predict_seconds.labels(outcome).observe(time.perf_counter() - began)
    metrics.count_prediction(model.id, outcome)
    # Which version answered: a request by alias or name learns what it resolved to.
    response.headers["Trainyard-Model-Id"] = model.id
    if model.version is not None:
        response.headers["Trainyard-Model-Version"] = str(model.version)
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

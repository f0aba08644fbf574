"""Deployed models and predictions (forwarded to the Ray Serve application)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Query, Request, Response

from core.settings import Settings
from core.store import LATEST_ALIAS, JobStore, ModelRecord
from service.auth import Principal, PrincipalDep
from service.deps import HttpClientDep, MetricsDep, S3Dep, SettingsDep, StoreDep
from service.errors import ApiError, error_response, error_responses, model_not_found
from service.metrics import Metrics
from service.model_refs import ALIAS_PATTERN, resolve_model
from service.schemas import (
    AliasMove,
    AliasPublic,
    BatchPredictionList,
    ModelList,
    ModelPublic,
    ModelTraffic,
    PredictionList,
)
from service.upload import read_image, read_images_form
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


@router.get(
    "",
    summary="Deployed model versions, newest first, with aliases, accuracy and traffic",
    responses=error_responses(),
)
def list_models(
    store: StoreDep, settings: SettingsDep, s3: S3Dep, metrics: MetricsDep, principal: PrincipalDep
) -> ModelList:
    aliases = store.model_aliases()
    listed = store.list_models(tenant=principal.scope)
    return ModelList(models=[_public(m, s3, settings, aliases.get(m.id), metrics) for m in listed])


@router.get(
    "/{model_id}",
    summary="One deployed model version: by id, `name@alias`, `name@version` or `name`",
    responses=error_responses(404),
)
def get_model(
    model_id: str, store: StoreDep, settings: SettingsDep, s3: S3Dep, metrics: MetricsDep, principal: PrincipalDep
) -> ModelPublic:
    model = resolve_model(store, model_id, principal)
    return _public(model, s3, settings, store.model_aliases().get(model.id), metrics)


@router.post(
    "/{name}/aliases/{alias}",
    summary="Point an alias of a model name at one of its versions",
    responses=error_responses(400, 404, 409),
)
def move_alias(
    name: str, alias: str, body: AliasMove, request: Request, store: StoreDep, principal: PrincipalDep
) -> AliasPublic:
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
    if not store.model_name_exists(name, principal.tenant):
        raise ApiError(404, "model_not_found", f"no model named {name!r}; list models with GET /v1/models", "name")
    if body.model_id is not None:
        target = store.get_model(body.model_id)
        if target is None or target.name != name or target.tenant != principal.tenant:
            raise ApiError(
                404, "model_not_found", f"model {name!r} has no version with id {body.model_id!r}", "model_id"
            )
    else:
        assert body.version is not None  # AliasMove holds exactly one of the two
        target = store.get_model_version(name, body.version, principal.tenant)
        if target is None:
            raise ApiError(
                404, "model_not_found", f"model {name!r} has no version {body.version}; see GET /v1/models", "version"
            )
    store.set_alias(name, alias, target.id, principal.tenant)
    if (tracking := request.app.state.tracking) is not None:
        tracking.alias_moved(principal.tenant, name)  # MLflow's alias follows on the mirror's next pass
    return AliasPublic(name=name, alias=alias, model_id=target.id, version=target.version)


@router.delete(
    "/{model_id}",
    status_code=204,
    summary="Undeploy one model version; replicas free its memory",
    responses=error_responses(404, 409, 503),
)
async def delete_model(
    model_id: str, store: StoreDep, settings: SettingsDep, s3: S3Dep, principal: PrincipalDep
) -> Response:
    model = await asyncio.to_thread(store.get_model, model_id)
    if model is None or not principal.owns(model.tenant):  # another tenant's model: as if it did not exist
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
    call = _ServeCall(model, "predict", "/classify", {"top_k": top_k, "tta": str(tta).lower()}, image, content_type)
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
    call = _ServeCall(model, "predict:batch", "/classify/batch", params, form, content_type)
    return await call.send(settings, http, metrics, s3)


async def _known_model(store: JobStore, model_id: str, principal: Principal) -> ModelRecord:
    return await asyncio.to_thread(resolve_model, store, model_id, principal)


@dataclass
class _ServeCall:
    """One prediction request forwarded to Serve's route over the app's persistent connection pool."""

    model: ModelRecord
    route: str
    path: str
    params: dict[str, Any]
    content: bytes
    content_type: str

    async def send(self, settings: Settings, http: httpx.AsyncClient, metrics: Metrics, s3: Any) -> Response:
        began = time.perf_counter()
        model_id = self.model.id
        try:
            answer = await _retry_once_if_serve_failed(
                lambda: http.post(
                    f"{settings.serve_url.rstrip('/')}{self.path}",
                    params=self.params,
                    content=self.content,
                    # Ray Serve routes the request to a replica that has this model loaded (model multiplexing).
                    headers={"serve_multiplexed_model_id": model_id, "content-type": self.content_type},
                    timeout=PREDICT_TIMEOUT_S,
                )
            )
        except httpx.TransportError as e:
            logger.warning("predict %s: the model server is not reachable (%s)", model_id, type(e).__name__)
            response = await _gone(self.model, s3, settings) or _unavailable(
                "the model server is not reachable; retry shortly"
            )
            self._count(metrics, "unavailable", response, began)
            return response
        if answer.status_code == 200:
            response = _with_total(answer.content, began, metrics, model_id)
            self._count(metrics, "ok", response, began)
            return response
        outcome, response = _relay(model_id, answer)
        if answer.status_code == 404 or (answer.status_code == 503 and outcome == "unavailable"):
            # Serve knows no such model, or has no route: first rule out that the model's objects are gone.
            gone = await _gone(self.model, s3, settings)
            if gone is not None:
                outcome, response = "client_error", gone
        self._count(metrics, outcome, response, began)
        return response

    def _count(self, metrics: Metrics, outcome: str, response: Response, began: float) -> None:
        metrics.predict_seconds.labels(outcome).observe(time.perf_counter() - began)
        metrics.predict_requests.labels(self.model.id, self.route, str(response.status_code)).inc()
        metrics.count_prediction(self.model.id, outcome)
        # Which version answered: a request by alias or name learns what it resolved to.
        response.headers["Trainyard-Model-Id"] = self.model.id
        if self.model.version is not None:
            response.headers["Trainyard-Model-Version"] = str(self.model.version)


def _with_total(content: bytes, began: float, metrics: Metrics, model_id: str) -> Response:
    """The replica's answer with the API's own total added to its timing split, recorded in the metrics."""
    body = json.loads(content)
    timing = body.setdefault("timing_ms", {})
    timing["total"] = round((time.perf_counter() - began) * 1000, 2)
    metrics.observe_prediction(model_id, timing, body.get("batch_size"))
    return Response(json.dumps(body), status_code=200, media_type="application/json")


# --- when the model server itself fails -----------------------------------------------------------------------
# A replica that dies (killed, out of memory) fails the requests it held with Serve's own 500 (plain text, not
# the classifier's JSON error) or a dropped connection, and Serve starts a replacement. A prediction changes
# nothing, so it is safe to send again: the API retries once after a short pause (Serve holds the retry until a
# live replica takes it). What still fails is relayed as before (`_relay`): 503 with Retry-After when Serve is
# unreachable or not ready, 502 when it keeps failing (a bug, not a restart).
SERVE_RETRY_DELAY_S = 0.5


def _serve_failed(answer: httpx.Response) -> bool:
    return answer.status_code >= 500 and not _has_error_shape(answer.content)


async def _retry_once_if_serve_failed(classify: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    try:
        answer = await classify()
    except httpx.TransportError as e:
        logger.warning("predict: the model server dropped the request (%s); retrying once", type(e).__name__)
    else:
        if not _serve_failed(answer):
            return answer
        logger.warning("predict: the model server failed (%s); retrying once", answer.status_code)
    await asyncio.sleep(SERVE_RETRY_DELAY_S)
    return await classify()


def _unavailable(message: str) -> Response:
    return error_response(503, "serving_unavailable", message, headers={"Retry-After": "1"})


def _has_error_shape(content: bytes) -> bool:
    try:
        body = json.loads(content)
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and "code" in body["error"]


def _relay(model_id: str, answer: httpx.Response) -> tuple[str, Response]:
    """Pass on the classifier's own 4xx (such as `invalid_image`) and Serve's overload; translate the rest."""
    status = answer.status_code
    if status == 503 and "retry-after" in answer.headers:
        # Serve's queue for the replicas is full (max_queued_requests): the client should back off and retry.
        return "overloaded", error_response(
            503,
            "overloaded",
            "the model server's queue is full; retry after the number of seconds in Retry-After",
            headers={"Retry-After": answer.headers["retry-after"]},
        )
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

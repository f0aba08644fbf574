"""Deployed models: list, look up, move aliases, undeploy. Predictions are `service.routes.predict`'s."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Response

from core.settings import Settings
from core.store import LATEST_ALIAS, ModelRecord
from service.auth import PrincipalDep
from service.deps import MetricsDep, S3Dep, SettingsDep, StoreDep
from service.errors import ApiError, error_responses, model_not_found
from service.metrics import Metrics
from service.model_refs import ALIAS_PATTERN, resolve_model
from service.schemas import (
    AliasMove,
    AliasPublic,
    ModelList,
    ModelPublic,
    ModelTraffic,
)
from serving.registry import delete_pointer, unavailable_reason

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/models", tags=["models"])


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
def move_alias(name: str, alias: str, body: AliasMove, store: StoreDep, principal: PrincipalDep) -> AliasPublic:
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

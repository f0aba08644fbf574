"""Liveness, readiness and Prometheus metrics.

Readiness answers 200 while the job store answers, with `degraded` naming what else is down (Ray, Serve): reads
(jobs, events, reports, models) need only the store, so an API whose cluster is restarting stays in its Service's
rotation and keeps answering them. `/readyz/strict` answers 503 whenever anything is degraded, for monitors that
want to know rather than for load balancers.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.deps import LauncherDep, MetricsDep, ServeRestorerDep, StoreDep
from service.errors import error_body
from service.schemas import Health, NotReady, Readiness

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

# Check values that are not a degradation: "idle" is Serve with no model listed, so nothing to serve.
_FINE = ("ok", "idle")


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


async def _checks(store: StoreDep, launcher: LauncherDep, serve: ServeRestorerDep) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        await asyncio.to_thread(store.ping)
        checks["store"] = "ok"
    except Exception as e:
        # The exception's type only: a database error message can echo the connection URL.
        logger.warning("readiness: the job store does not answer (%s)", type(e).__name__)
        checks["store"] = "unreachable"
    checks["ray"] = "ok" if await asyncio.to_thread(launcher.ping) else "unreachable"
    if checks["store"] != "ok" or checks["ray"] != "ok":
        checks["serve"] = "unknown"  # which models it must serve, or whether it runs, cannot be read now
    else:
        checks["serve"] = (await asyncio.to_thread(serve.health)).value
    return checks


def _not_ready(checks: dict[str, str], failing: list[str]) -> JSONResponse:
    body = error_body("not_ready", f"not ready: {', '.join(failing)} not available")
    return JSONResponse({**body, "checks": checks}, status_code=503)


@router.get(
    "/readyz",
    summary="Readiness: 200 while the job store answers; `degraded` names what else is down (Ray, Serve)",
    response_model=Readiness,
    responses={503: {"model": NotReady, "description": "the job store is down; `checks` names every dependency"}},
)
async def readyz(store: StoreDep, launcher: LauncherDep, serve: ServeRestorerDep) -> JSONResponse:
    checks = await _checks(store, launcher, serve)
    if checks["store"] != "ok":
        return _not_ready(checks, ["store"])
    degraded = [name for name, state in checks.items() if state not in _FINE]
    ready = Readiness(status="degraded" if degraded else "ready", checks=checks, degraded=degraded)
    return JSONResponse(ready.model_dump())


@router.get(
    "/readyz/strict",
    summary="Every dependency answers: the job store, Ray and (when models are listed) Serve",
    response_model=Readiness,
    responses={503: {"model": NotReady, "description": "something is down or degraded; `checks` names it"}},
)
async def readyz_strict(store: StoreDep, launcher: LauncherDep, serve: ServeRestorerDep) -> JSONResponse:
    checks = await _checks(store, launcher, serve)
    failing = [name for name, state in checks.items() if state not in _FINE]
    if failing:
        return _not_ready(checks, failing)
    return JSONResponse(Readiness(status="ready", checks=checks, degraded=[]).model_dump())


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(metrics: MetricsDep) -> Response:
    payload, content_type = metrics.render()
    return Response(payload, media_type=content_type)

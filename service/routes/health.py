"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.deps import LauncherDep, MetricsDep, StoreDep
from service.errors import error_body
from service.schemas import Health, NotReady, Readiness

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: the job store and Ray both answer",
    response_model=Readiness,
    responses={503: {"model": NotReady, "description": "a dependency is down; `checks` names it"}},
)
async def readyz(store: StoreDep, launcher: LauncherDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await asyncio.to_thread(store.ping)
        checks["store"] = "ok"
    except Exception as e:
        # The exception's type only: a database error message can echo the connection URL.
        logger.warning("readiness: the job store does not answer (%s)", type(e).__name__)
        checks["store"] = "unreachable"
    checks["ray"] = "ok" if await asyncio.to_thread(launcher.ping) else "unreachable"
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        body = error_body("not_ready", f"not ready: {', '.join(failing)} not reachable")
        return JSONResponse({**body, "checks": checks}, status_code=503)
    return JSONResponse(Readiness(status="ready", checks=checks).model_dump())


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(metrics: MetricsDep) -> Response:
    payload, content_type = metrics.render()
    return Response(payload, media_type=content_type)

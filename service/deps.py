"""Typed dependencies: what a route may ask for. Everything lives on `app.state`, built by `service.main`."""

from __future__ import annotations

from typing import Annotated, Any, cast

import httpx
from fastapi import Depends, Request

from core.s3 import s3_client
from core.settings import Settings
from core.store import JobStore
from core.store.batch import BatchStore
from service.dispatch import Dispatcher
from service.launcher import Launcher
from service.metrics import Metrics
from service.serve_restore import ServeRestorer
from service.tracking.mirror import Mirror

# The getters that only read app.state are async: FastAPI runs a sync dependency in its thread pool, and
# under load (50 clients) each of those thread hops waited its turn for the GIL; a status read made three.


async def get_app_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


async def get_store(request: Request) -> JobStore:
    return cast(JobStore, request.app.state.store)


async def get_batch_store(request: Request) -> BatchStore:
    return cast(BatchStore, request.app.state.batches)


async def get_launcher(request: Request) -> Launcher:
    return cast(Launcher, request.app.state.launcher)


async def get_http_client(request: Request) -> httpx.AsyncClient:
    return cast(httpx.AsyncClient, request.app.state.http)


def get_s3(request: Request) -> Any:
    # boto3 clients are thread-safe and slow to build: one per app, made on first use (so in the thread pool).
    if getattr(request.app.state, "s3", None) is None:
        request.app.state.s3 = s3_client(request.app.state.settings)
    return request.app.state.s3


async def get_metrics(request: Request) -> Metrics:
    return cast(Metrics, request.app.state.metrics)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
BatchStoreDep = Annotated[BatchStore, Depends(get_batch_store)]
LauncherDep = Annotated[Launcher, Depends(get_launcher)]
HttpClientDep = Annotated[httpx.AsyncClient, Depends(get_http_client)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
S3Dep = Annotated[Any, Depends(get_s3)]


async def get_dispatcher(request: Request) -> Dispatcher:
    return cast(Dispatcher, request.app.state.dispatcher)


DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


async def get_tracking(request: Request) -> Mirror | None:
    """The MLflow mirror, or None when tracking is off (TRAINYARD_MLFLOW_TRACKING_URI unset)."""
    return cast("Mirror | None", getattr(request.app.state, "tracking", None))


TrackingDep = Annotated[Mirror | None, Depends(get_tracking)]


async def get_serve_restorer(request: Request) -> ServeRestorer:
    return cast(ServeRestorer, request.app.state.serve_restorer)


ServeRestorerDep = Annotated[ServeRestorer, Depends(get_serve_restorer)]

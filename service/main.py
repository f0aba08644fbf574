"""Assembles the API: ``uvicorn --factory service.main:create_app``.

The lifespan opens the job store (refusing to start unless `python -m core.migrate` brought it to this
release's schema), the launcher and one HTTP client for the model server, and runs the
reconciler in the background: once at start-up, then every `reconcile_interval_s` (it also brings Serve back for
the listed models and settles ended jobs' scale-up overhead). Start-up never waits for
Ray, so the API takes jobs (they stay queued) while the cluster is still coming up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from core.migrate import require_head
from core.settings import Settings, get_settings
from core.store import JobStore
from core.store.batch import BatchStore
from core.tenancy import Tenancy
from service.api_docs import mount_redoc
from service.auth import get_principal, register_bootstrap_key
from service.body_limit import BodyLimitMiddleware
from service.cost_settlement import CostSettler
from service.dispatch import Dispatcher
from service.errors import error_responses, install_error_handlers
from service.launcher import Launcher, RayLauncher
from service.metrics import Metrics
from service.middleware import RequestMiddleware
from service.notify import Notifier
from service.rate_limit import RateLimiter, RateLimitMiddleware
from service.ray_cluster import ClusterView, RayDashboard
from service.reconciler import Reconciler
from service.routes import account, batch, console, events, exports, health, jobs, models, predict, revisions
from service.serve_restore import ServeRestorer
from service.spending_metrics import SpendingCollector
from service.tracking.mirror import Mirror

logger = logging.getLogger(__name__)


async def _every(work: Callable[[], None], interval_s: float, what: str) -> None:
    """Run blocking `work` on a thread every `interval_s`; a pass that fails is logged, and the next one runs."""
    while True:
        try:
            await asyncio.to_thread(work)
        except Exception:  # each pass logs its own failures; this is the last line of defence for the loop
            logger.exception("%s pass failed", what)
        await asyncio.sleep(interval_s)


def create_app(
    settings: Settings | None = None, launcher: Launcher | None = None, cluster: ClusterView | None = None
) -> FastAPI:
    """The API over `settings` (default: the environment); `launcher` and `cluster` default to Ray's dashboard at
    `settings.ray_address`."""
    settings = settings or get_settings()
    if not logging.getLogger().handlers:
        # Under plain `uvicorn` only uvicorn's own loggers have handlers; ours would print nothing below WARNING.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = JobStore.from_url(settings.resolved_database_url)
        # Migrating is a deploy step (core.migrate, run once under a lock), never something N replicas race on.
        await asyncio.to_thread(require_head, store.engine)
        app.state.store = store
        app.state.batches = BatchStore(store)
        app.state.launcher = launcher or RayLauncher(settings.ray_address)
        # One persistent pool to Serve's proxy, kept alive across predictions (no handshake per call). No cap on
        # connections: Serve's max_queued_requests is the one bound (a 503 with Retry-After); a cap here would
        # queue unseen and fail late as "unreachable". httpx's default keeps only 20 idle: too few at c=32+.
        app.state.http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )
        app.state.tenancy = Tenancy(store.engine)
        await asyncio.to_thread(register_bootstrap_key, app.state.tenancy, settings)
        if not settings.auth:
            logger.warning(
                "TRAINYARD_AUTH=off: every caller is an admin of every tenant; "
                "turn auth on anywhere but a single-user machine"
            )
        app.state.dispatcher = Dispatcher(store, app.state.tenancy, app.state.launcher, settings)
        view = cluster or RayDashboard(settings.ray_address)
        app.state.serve_restorer = ServeRestorer(store, view, app.state.launcher)
        passes = (app.state.serve_restorer, CostSettler(store, view, settings))
        reconciler = Reconciler(store, app.state.launcher, app.state.dispatcher, passes)
        reconciling = _every(reconciler.run_once, settings.reconcile_interval_s, "reconcile")
        task = asyncio.create_task(reconciling, name="reconciler")
        app.state.notifier = Notifier(store, settings)
        background = [asyncio.create_task(app.state.notifier.run_forever(), name="webhooks")]
        app.state.tracking = Mirror(store, settings) if settings.mlflow_tracking_uri else None
        if app.state.tracking is not None:
            mirroring = _every(app.state.tracking.run_once, settings.mlflow_sync_interval_s, "MLflow mirror")
            background.append(asyncio.create_task(mirroring, name="mlflow"))
        # Everything made so far (modules, the app, its routes) lives as long as the process: out of the
        # collector's sight, a full collection scans only what requests make, and its pause stays out of the p99
        # of a status read under load (benchmarks/README.md, "API under load").
        # Collect first, so that no garbage is frozen with them.
        gc.collect()
        gc.freeze()
        logger.info("trainyard API ready (store: %s)", store.engine.url.render_as_string(hide_password=True))
        try:
            yield
        finally:
            for running in (task, *background):
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
            await app.state.notifier.close()
            await app.state.http.aclose()
            await asyncio.to_thread(app.state.dispatcher.close)
            store.engine.dispose()

    # /docs and /redoc with Swagger UI's and ReDoc's files served by this app (pinned in the fastapi-offline
    # package), not from a CDN: the pages work on an air-gapped cluster. No validator badge: it calls out.
    app = FastAPIOffline(
        redoc_url=None,  # service.api_docs serves it
        title="Trainyard",
        version="1",
        summary="Turn a folder of labelled images in S3 into a deployed classifier.",
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    app.state.metrics = Metrics(lambda: getattr(app.state, "store", None))
    app.state.metrics.registry.register(
        SpendingCollector(lambda: getattr(app.state, "store", None), lambda: getattr(app.state, "serve_restorer", None))
    )
    install_error_handlers(app)
    # Added first, so it runs inside RequestMiddleware: its 413s get a request id and are counted.
    app.add_middleware(
        BodyLimitMiddleware,
        max_request_bytes=settings.max_request_bytes,
        max_image_bytes=settings.max_image_bytes,
        max_batch_images=settings.max_batch_images,
    )
    # Inside RequestMiddleware too (its 429s are counted), but before the body is read or anything authenticated.
    app.state.limiter = RateLimiter()
    app.add_middleware(RateLimitMiddleware, limiter=app.state.limiter, in_flight=settings.rate_limit_in_flight)
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics)
    app.include_router(health.router)
    mount_redoc(app)
    console.mount(app)
    # Every /v1 route needs a key; which records a key may see is each route's check (service.auth).
    for router in (
        account.router,
        jobs.router,
        revisions.router,
        events.router,
        models.router,
        predict.router,
        exports.router,
        batch.router,
    ):
        app.include_router(router, dependencies=[Depends(get_principal)], responses=error_responses(401, 429))
    return app

"""Assembles the API: ``uvicorn --factory service.main:create_app``.

The lifespan opens the job store, the launcher and one HTTP client for the model server, and runs the
reconciler in the background: once at start-up, then every `reconcile_interval_s`. Start-up never waits for
Ray, so the API takes jobs (they stay queued) while the cluster is still coming up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from core.settings import Settings, get_settings
from core.store import JobStore
from service.body_limit import BodyLimitMiddleware
from service.errors import install_error_handlers
from service.launcher import Launcher, RayLauncher
from service.metrics import Metrics
from service.middleware import RequestMiddleware
from service.reconciler import Reconciler
from service.routes import health, jobs, models

logger = logging.getLogger(__name__)


async def _reconcile_forever(reconciler: Reconciler, interval_s: float) -> None:
    while True:
        try:
            await asyncio.to_thread(reconciler.run_once)
        except Exception:  # run_once logs its own failures; this is the last line of defence for the loop
            logger.exception("reconcile pass failed")
        await asyncio.sleep(interval_s)


def create_app(settings: Settings | None = None, launcher: Launcher | None = None) -> FastAPI:
    """The API over `settings` (default: the environment); `launcher` defaults to Ray at `settings.ray_address`."""
    settings = settings or get_settings()
    if not logging.getLogger().handlers:
        # Under plain `uvicorn` only uvicorn's own loggers have handlers; ours would print nothing below WARNING.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await asyncio.to_thread(JobStore.from_url, settings.resolved_database_url)
        app.state.store = store
        app.state.launcher = launcher or RayLauncher(settings.ray_address)
        app.state.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        reconciler = Reconciler(store, app.state.launcher)
        task = asyncio.create_task(_reconcile_forever(reconciler, settings.reconcile_interval_s), name="reconciler")
        logger.info("trainyard API ready (store: %s)", store.engine.url.render_as_string(hide_password=True))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await app.state.http.aclose()
            store.engine.dispose()

    app = FastAPI(
        title="Trainyard",
        version="1",
        summary="Turn a folder of labelled images in S3 into a deployed classifier.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics(lambda: getattr(app.state, "store", None))
    install_error_handlers(app)
    # Added first, so it runs inside RequestMiddleware: its 413s get a request id and are counted.
    app.add_middleware(
        BodyLimitMiddleware, max_request_bytes=settings.max_request_bytes, max_image_bytes=settings.max_image_bytes
    )
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(models.router)
    return app

"""The FastAPI application: thin routers over the wired services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from starlette.concurrency import run_in_threadpool

from viewer.deps import Services
from viewer.errors import LimitMiddleware, install_error_handlers
from viewer.fastpath import ObjectReadFastPath
from viewer.routes import networks, objects, scene, state, system

__all__ = ["create_app", "prune_history"]

PRUNE_EVERY_S = 3600.0


def prune_history(services: Services, now: float | None = None) -> int:
    """Apply the history retention setting once; return how many points were deleted."""
    days = services.settings.history_retention_days
    if not days or days <= 0:
        return 0
    cutoff = (now if now is not None else time.time()) - days * 86400.0
    return services.store.prune_history(cutoff)


def create_app(services: Services, *, fast_path: bool = True) -> FastAPI:
    """Build the app on wired services (see :func:`viewer.bootstrap.bootstrap`).

    Args:
        services: store, scene cache, tokens and settings.
        fast_path: answer found objects of ``GET /api/objects/{id}`` before routing
            (:mod:`viewer.fastpath`); off only to compare against the route in tests.

    Returns:
        The application.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def retention() -> None:
            while True:
                await run_in_threadpool(prune_history, services)
                await asyncio.sleep(PRUNE_EVERY_S)

        task = (
            asyncio.create_task(retention()) if services.settings.history_retention_days else None
        )
        try:
            yield
        finally:
            if task is not None:
                task.cancel()

    app = FastAPI(
        lifespan=lifespan,
        title="CityTwin API",
        version="0.1.0",
        summary="3D city digital twin: objects, live state, history and the scene",
        openapi_url="/api/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(objects.router)
    app.include_router(state.router)
    app.include_router(scene.router)
    app.include_router(networks.router)
    # GZip skips responses that already have Content-Encoding (the GLB) and 206s.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(
        LimitMiddleware,
        max_body=services.settings.max_body_bytes,
        max_query=services.settings.max_query_bytes,
    )
    if fast_path:
        # Outermost: the hot read skips routing and the middleware stack entirely.
        app.add_middleware(
            ObjectReadFastPath, services=services, max_query=services.settings.max_query_bytes
        )
    return app

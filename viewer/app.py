"""The FastAPI application: thin routers over the wired services."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware

from viewer.deps import Services
from viewer.errors import LimitMiddleware, install_error_handlers
from viewer.routes import objects, scene, state, system

__all__ = ["create_app"]


def create_app(services: Services) -> FastAPI:
    """Build the app on wired services (see :func:`viewer.bootstrap.bootstrap`).

    Args:
        services: store, scene cache, tokens and settings.

    Returns:
        The application.
    """
    app = FastAPI(
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
    # GZip skips responses that already have Content-Encoding (the GLB) and 206s.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(
        LimitMiddleware,
        max_body=services.settings.max_body_bytes,
        max_query=services.settings.max_query_bytes,
    )
    return app

"""The FastAPI application: thin routers over the wired services."""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from starlette.concurrency import run_in_threadpool

from twin.alerts import RuleEngine
from viewer.deps import Services
from viewer.errors import LimitMiddleware, install_error_handlers
from viewer.fastpath import ObjectReadFastPath
from viewer.routes import (
    feeds,
    networks,
    objects,
    scenarios,
    scene,
    sessions,
    state,
    stream,
    system,
    tiles,
    web,
)

__all__ = ["create_app", "prune_history", "start_live", "stop_live"]

PRUNE_EVERY_S = 3600.0


def prune_history(services: Services, now: float | None = None) -> int:
    """Apply the history retention setting once; return how many points were deleted."""
    days = services.settings.history_retention_days
    if not days or days <= 0:
        return 0
    cutoff = (now if now is not None else time.time()) - days * 86400.0
    return services.store.prune_history(cutoff)


def start_live(services: Services, loop: asyncio.AbstractEventLoop) -> None:
    """Start the sync engine and the configured feeds (events reach the bus via ``loop``)."""
    from sync.engine import SyncEngine
    from sync.feeds import open_feed

    def publish(event: dict[str, Any]) -> None:
        # Called from the engine's thread; the bus lives on the server's event loop.
        asyncio.run_coroutine_threadsafe(services.bus.publish(event), loop)

    live = services.live
    engine = SyncEngine(
        services.store,
        mapping=live.mapping,
        rules=RuleEngine(list(live.rules)),
        publish=publish,
        formats=live.formats,
        topic_template=live.topic_template,
    )
    engine.start()
    services.engine = engine
    urls = [u for u in re.split(r"[\s,]+", services.settings.feeds) if u]
    services.feeds = [open_feed(u, name=n) for u, n in zip(urls, feed_names(urls), strict=True)]
    for feed in services.feeds:
        feed.start(engine.submit)


def feed_names(urls: list[str]) -> list[str]:
    """Short names for feed URLs (``mqtt``, ``replay-delft_water_net3``): the ``{feed}`` of
    ``/api/feeds/{feed}/rejected``; a ``name=`` query option wins."""
    names: list[str] = []
    for url in urls:
        m = re.search(r"[?&]name=([A-Za-z0-9_.:-]+)", url)
        if m:
            base = m.group(1)
        elif url.startswith("replay:"):
            stem = url[len("replay:") :].split("?")[0].rsplit("/", 1)[-1].split(".")[0]
            base = "replay-" + re.sub(r"[^A-Za-z0-9_.-]", "_", stem)
        else:
            base = url.split(":", 1)[0]
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def stop_live(services: Services) -> None:
    """Stop feeds first (no new messages), then let the engine commit and ack the rest."""
    for feed in services.feeds:
        feed.stop()
    if services.engine is not None:
        services.engine.stop()
        services.engine = None


def create_app(services: Services, *, fast_path: bool = True, live: bool = True) -> FastAPI:
    """Build the app on wired services (see :func:`viewer.bootstrap.bootstrap`).

    Args:
        services: store, scene cache, tokens and settings.
        live: run the sync engine and the configured feeds while the app runs.
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
        if live:
            start_live(services, asyncio.get_running_loop())
        # Everything allocated at start-up (modules, routes, caches) lives as long as the
        # server: keep it out of the collector's scans, so a request never pays for a
        # full collection over it (the long tail of read latency).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            if live:
                await run_in_threadpool(stop_live, services)
            tiles_cache = getattr(app.state, "tiles", None)
            if tiles_cache is not None:
                # Built tilesets live in temporary folders: remove them with the server.
                await run_in_threadpool(tiles_cache.close)

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
    app.include_router(feeds.router)
    app.include_router(sessions.router)
    app.include_router(scenarios.router)
    app.include_router(stream.router)
    app.include_router(tiles.router)
    app.include_router(web.router)
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

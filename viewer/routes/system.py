"""Health, statistics, the audit log and the API index page."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from viewer.auth import Caller
from viewer.deps import ServicesDep, require
from viewer.routes.common import ERRORS, WRITE_ERRORS, JSONBody

router = APIRouter(tags=["system"])


class Health(BaseModel):
    """Liveness and what the server runs on."""

    status: str
    store: str
    uptime_s: float
    version: str
    bus: str
    engine: dict[str, Any] | None = Field(
        description="sync engine: running, queued, updates/s, rejected, last commit"
    )
    feeds: list[dict[str, Any]] = Field(
        description="each feed: connected, received, acked, rate_per_s, lag_s, reconnects"
    )


class StatsOut(BaseModel):
    """What the twin holds."""

    scenario: str
    objects: int
    counts_by_type: dict[str, int]
    rows: dict[str, int]
    sources: list[str]
    tiles: bool = False  # the viewer should stream 3D Tiles (a big or prebuilt city)


class AuditOut(BaseModel):
    """One write."""

    time: float
    actor: str
    role: str
    action: str
    object_ids: list[str]
    detail: str


def _public_url(url: str) -> str:
    """The store URL without credentials."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


@router.get("/api/healthz", response_model=Health, summary="Liveness")
async def healthz(services: ServicesDep) -> JSONBody:
    return JSONBody(
        {
            "status": "ok",
            "store": _public_url(services.store.url),
            "uptime_s": round(time.time() - services.started, 3),
            "version": "0.1.0",
            "bus": _public_url(services.bus.url),
            **services.feed_status(),
        }
    )


@router.get("/api/stats", response_model=StatsOut, responses=ERRORS, summary="Counts")
async def stats(
    services: ServicesDep, scenario: Annotated[str, Query(max_length=100)] = "base"
) -> JSONBody:
    store = services.store
    objects = store.count(scenario)
    settings = services.settings
    return JSONBody(
        {
            "scenario": scenario,
            "objects": objects,
            "tiles": objects >= settings.tiles_threshold
            or (scenario == "base" and settings.tileset is not None),
            "counts_by_type": store.counts_by_type(scenario),
            "rows": store.stats(),
            "sources": [s.name for s in store.sources(scenario)],
        }
    )


@router.get(
    "/api/audit",
    response_model=list[AuditOut],
    responses=WRITE_ERRORS,
    summary="The audit log of writes, newest first (roles: planner, moderator)",
)
async def read_audit(
    services: ServicesDep,
    _caller: Annotated[Caller, Depends(require("planner", "moderator"))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[float | None, Query(ge=-1e11, le=1e11)] = None,
) -> JSONBody:
    rows = services.store.list_audit(limit=limit, before=before)
    return JSONBody(
        [
            {
                "time": a.time,
                "actor": a.actor,
                "role": a.role,
                "action": a.action,
                "object_ids": list(a.object_ids),
                "detail": a.detail,
            }
            for a in rows
        ]
    )


@router.get("/api", response_class=HTMLResponse, summary="Index: links to the API")
async def index() -> str:
    # The viewer itself is served at / (viewer.routes.web); this page stays its help link.
    links = [
        ("/", "the 3D viewer"),
        ("/api/scene.glb", "scene (GLB)"),
        ("/api/objects", "objects"),
        ("/api/networks", "networks"),
        ("/api/styles", "style rules"),
        ("/api/alerts", "alerts"),
        ("/api/stats", "statistics"),
        ("/api/healthz", "health"),
        ("/docs", "API documentation"),
        ("/api/openapi.json", "OpenAPI document"),
    ]
    rows = "".join(
        f'<li><a href="{href}">{label}</a> <code>{href}</code></li>' for href, label in links
    )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>CityTwin API</title>"
        "<link rel=icon href='data:,'>"
        f"<h1>CityTwin API</h1><ul>{rows}</ul>"
        "<p>Live state: <code>WS /api/stream</code> and <code>GET /api/stream/sse</code>.</p>"
    )

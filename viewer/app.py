"""The FastAPI app: serves the scene GLB and the twin objects of a loaded model.

A first slice of the engineers' API (issue 3 grows it onto the persistent store):
``/api/scene.glb``, ``/api/objects/{id}``, ``/api/objects``, ``/api/stats``,
``/api/healthz``; ``/`` lists the API until the browser viewer lands.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from twin.errors import NotFound, TwinError
from twin.geometry import CityModel
from twin.objects import TwinObject

__all__ = ["create_app"]


class ErrorBody(BaseModel):
    """Every error answer: a machine code and a human message."""

    error: str
    message: str


class ObjectOut(BaseModel):
    """One twin object."""

    id: str
    type: str
    parent: str | None
    parents: list[str]
    children: list[str]
    attributes: dict[str, Any]
    geometry: dict[str, Any] | None


class ObjectPage(BaseModel):
    """A page of objects."""

    items: list[ObjectOut]
    total: int


class Stats(BaseModel):
    """Counts of what the twin holds."""

    objects: int
    objects_with_geometry: int
    counts_by_type: dict[str, int]
    scene_bytes: int


def _out(o: TwinObject) -> ObjectOut:
    return ObjectOut(
        id=o.id,
        type=o.type,
        parent=o.parent,
        parents=o.parents,
        children=o.children,
        attributes=o.attributes,
        geometry=o.geometry.as_dict() if o.geometry else None,
    )


def create_app(model: CityModel, glb: bytes) -> FastAPI:
    """Build the app for one loaded model and its GLB bytes.

    Args:
        model: the city model whose objects are served.
        glb: the scene GLB.

    Returns:
        The FastAPI application.
    """
    app = FastAPI(
        title="CityTwin API",
        version="0.1.0",
        openapi_url="/api/openapi.json",
        docs_url="/docs",
    )
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    etag = '"' + hashlib.sha256(glb).hexdigest()[:32] + '"'
    errors: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}

    @app.exception_handler(TwinError)
    async def twin_error(_: Request, exc: TwinError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFound) else 400
        return JSONResponse(
            {"error": type(exc).__name__, "message": exc.message}, status_code=status
        )

    @app.get("/", response_class=HTMLResponse, summary="List the API")
    async def index() -> str:
        rows = "".join(
            f'<li><a href="{p}">{p}</a></li>'
            for p in ("/api/scene.glb", "/api/objects", "/api/stats", "/api/healthz", "/docs")
        )
        return f"<!doctype html><title>CityTwin</title><h1>CityTwin API</h1><ul>{rows}</ul>"

    @app.get("/api/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/stats", response_model=Stats, summary="Counts of what the twin holds")
    async def stats() -> Stats:
        return Stats(
            objects=len(model.twin),
            objects_with_geometry=len(model.feature_ids),
            counts_by_type=model.twin.counts_by_type(),
            scene_bytes=len(glb),
        )

    @app.get(
        "/api/scene.glb",
        summary="The scene as one GLB (ETag; If-None-Match gives 304)",
        response_class=Response,
        responses={200: {"content": {"model/gltf-binary": {}}}, 304: {"description": "unchanged"}},
    )
    async def scene(
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        headers = {"ETag": etag, "Cache-Control": "no-cache", "Accept-Ranges": "bytes"}
        if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
            return Response(status_code=304, headers=headers)
        return Response(glb, media_type="model/gltf-binary", headers=headers)

    @app.get(
        "/api/objects/{object_id}",
        response_model=ObjectOut,
        responses=errors,
        summary="One object: attributes, geometry summary, parent/children",
    )
    async def read_object(object_id: str) -> ObjectOut:
        obj = model.twin.get(object_id)
        if obj is None:
            raise NotFound(f"no object with id {object_id!r}")
        return _out(obj)

    @app.get("/api/objects", response_model=ObjectPage, summary="List objects")
    async def list_objects(
        type: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> ObjectPage:
        objs = [o for o in model.twin if type is None or o.type == type]
        return ObjectPage(items=[_out(o) for o in objs[offset : offset + limit]], total=len(objs))

    return app

"""A scenario's city as an OGC 3D Tiles 1.1 tileset: tileset.json and GLB tiles (ETag, gzip)."""

from __future__ import annotations

import gzip
import hashlib
import re
import threading
from collections import OrderedDict
from pathlib import Path as PathLib
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from scene.tiles import BuiltTileset, TileCache
from twin.errors import NotFound
from viewer.deps import ServicesDep
from viewer.routes.common import ERRORS

router = APIRouter(prefix="/api/tiles", tags=["tiles"])
_TILE_PATH = re.compile(r"^[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*\.glb$")
Scenario = Annotated[str, Path(max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]


async def get_tile_cache(request: Request, services: ServicesDep) -> TileCache:
    """The app's tile cache (one per app, created on first use)."""
    cache: TileCache | None = getattr(request.app.state, "tiles", None)
    if cache is None:
        prebuilt = services.settings.tileset
        cache = TileCache(services.store, prebuilt=PathLib(prebuilt) if prebuilt else None)
        request.app.state.tiles = cache
    return cache


TilesDep = Annotated[TileCache, Depends(get_tile_cache)]


def _unchanged(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return if_none_match.strip() == "*" or etag in tags


def _answer(
    data: bytes,
    gzipped: bytes | None,
    etag: str,
    media_type: str,
    if_none_match: str | None,
    accept_encoding: str | None,
) -> Response:
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if _unchanged(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    if accept_encoding and "gzip" in accept_encoding.lower():
        body = gzipped if gzipped is not None else gzip.compress(data, 6)
        return Response(
            body, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"}
        )
    return Response(data, media_type=media_type, headers=headers)


@router.get(
    "/{scenario}/tileset.json",
    summary="The scenario's city as a 3D Tiles 1.1 tileset (ETag; If-None-Match -> 304; gzip)",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "the tileset JSON"},
        304: {"description": "unchanged since the given ETag"},
        **ERRORS,
    },
)
async def read_tileset(
    scenario: Scenario,
    tiles: TilesDep,
    if_none_match: Annotated[str | None, Header(max_length=1000)] = None,
    accept_encoding: Annotated[str | None, Header(max_length=500)] = None,
) -> Response:
    built: BuiltTileset = await run_in_threadpool(tiles.get, scenario)
    return _answer(
        built.tileset,
        built.gzipped,
        built.etag,
        "application/json",
        if_none_match,
        accept_encoding,
    )


@router.get(
    "/{scenario}/{path:path}",
    summary="One tile (GLB) of the scenario's tileset (ETag; If-None-Match -> 304; gzip)",
    response_class=Response,
    responses={
        200: {"content": {"model/gltf-binary": {}}, "description": "the tile GLB"},
        304: {"description": "unchanged since the given ETag"},
        **ERRORS,
    },
)
async def read_tile(
    scenario: Scenario,
    path: Annotated[str, Path(max_length=300)],
    tiles: TilesDep,
    if_none_match: Annotated[str | None, Header(max_length=1000)] = None,
    accept_encoding: Annotated[str | None, Header(max_length=500)] = None,
) -> Response:
    # Only names the tileset itself lists are served (no "..", no absolute paths), so a
    # crafted path never reaches the file system.
    if not _TILE_PATH.match(path):
        raise NotFound(f"no tile {path!r} in the tileset of {scenario!r}")
    built: BuiltTileset = await run_in_threadpool(tiles.get, scenario)
    if path not in built.files:
        raise NotFound(f"no tile {path!r} in the tileset of {scenario!r}")
    etag = '"' + hashlib.sha256(f"{built.etag}/{path}".encode()).hexdigest()[:32] + '"'
    if _unchanged(if_none_match, etag):
        return _answer(b"", None, etag, "model/gltf-binary", if_none_match, accept_encoding)
    wants_gzip = bool(accept_encoding and "gzip" in accept_encoding.lower())
    data, gzipped = await run_in_threadpool(_tile_bytes, built, path, etag, wants_gzip)
    return _answer(data, gzipped, etag, "model/gltf-binary", if_none_match, accept_encoding)


class _GzipCache:
    """Compressed tiles by ETag, least recently used out past a byte budget.

    Compressing a tile on every request costs more than sending it on a fast link, and a
    viewer asks for the same upper tiles again and again; level 1 (fast) is enough for
    quantized vertex data.
    """

    def __init__(self, budget: int = 256 * 1024 * 1024) -> None:
        self.budget = budget
        self.size = 0
        self.items: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, etag: str, data: bytes) -> bytes:
        with self.lock:
            hit = self.items.get(etag)
            if hit is not None:
                self.items.move_to_end(etag)
                return hit
        packed = gzip.compress(data, 1)
        with self.lock:
            if etag not in self.items:
                self.items[etag] = packed
                self.size += len(packed)
            while self.size > self.budget and self.items:
                _, old = self.items.popitem(last=False)
                self.size -= len(old)
        return packed


_GZIP = _GzipCache()


def _tile_bytes(
    built: BuiltTileset, path: str, etag: str, wants_gzip: bool
) -> tuple[bytes, bytes | None]:
    data = (built.directory / path).read_bytes()
    return data, (_GZIP.get(etag, data) if wants_gzip else None)

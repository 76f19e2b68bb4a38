"""The browser viewer: its page at ``/``, its ES modules, and three.js + 3d-tiles-renderer."""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import os
from functools import lru_cache
from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

__all__ = ["WEB_DIR", "find_node_modules", "router"]

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PROJECT_ROOT = WEB_DIR.parent.parent
# Only these parts of the npm package are served (the page's import map points here).
THREE_PARTS = ("build", "examples/jsm")
# 3d-tiles-renderer ships pre-built ES modules (bare imports of three only, via the import map).
TILES_PACKAGE = "3d-tiles-renderer"
TILES_PARTS = ("build",)
TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
}
OCTETS = "application/octet-stream"
# The page and its modules change with the code: revalidate every time (cheap 304s).
CACHE = "no-cache"


def find_node_modules() -> Path | None:
    """The ``node_modules`` folder holding three.js (``make setup`` runs ``npm ci``).

    Looked up in ``$TWIN_NODE_MODULES``, the project root, then the working directory.

    Returns:
        The folder, or None when three.js is not installed.
    """
    env = os.environ.get("TWIN_NODE_MODULES")
    candidates = [Path(env)] if env else []
    candidates += [PROJECT_ROOT / "node_modules", Path.cwd() / "node_modules"]
    for c in candidates:
        if (c / "three" / "build" / "three.module.js").is_file():
            return c
    return None


def _missing_page() -> str:
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>CityTwin: viewer not installed"
        "</title><link rel=icon href='data:,'>"
        "<body style='font:16px system-ui;max-width:40em;margin:3em auto'>"
        "<h1>The viewer's browser libraries are missing</h1>"
        "<p>three.js is installed from npm by the set-up command. In the project folder run "
        "<code>make setup</code> (or <code>npm ci</code>), then reload this page. "
        "Set <code>TWIN_NODE_MODULES</code> if node_modules lives elsewhere.</p>"
        f"<p>Looked in <code>{escape(str(PROJECT_ROOT / 'node_modules'))}</code>.</p>"
        "<p>The API works without it: <a href='/api'>API index</a>, "
        "<a href='/docs'>documentation</a>.</p></body></html>"
    )


@lru_cache(maxsize=256)
def _load(path: str, mtime_ns: int, size: int) -> tuple[bytes, bytes, str]:
    """A file's bytes, gzipped bytes and ETag, kept until the file changes.

    three.core.js alone is 1.5 MB: compressing it once, not per request (as the GZip
    middleware would), takes a third of a second off every cold page load.
    """
    data = Path(path).read_bytes()
    etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
    del mtime_ns, size  # cache keys only
    return data, gzip.compress(data, compresslevel=6, mtime=0), etag


def _serve(base: Path, rel: str, request: Request) -> Response:
    root = base.resolve()
    file = (root / rel).resolve()
    # Nothing outside the served folder, whatever the path says (.., symlinks).
    if not file.is_relative_to(root) or not file.is_file():
        raise HTTPException(404, f"not found: {request.url.path}")
    st = file.stat()
    data, zipped, etag = _load(str(file), st.st_mtime_ns, st.st_size)
    headers = {"ETag": etag, "Cache-Control": CACHE, "Vary": "Accept-Encoding"}
    inm = request.headers.get("if-none-match")
    if inm and etag in [t.strip().removeprefix("W/") for t in inm.split(",")]:
        return Response(status_code=304, headers=headers)
    media = TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or OCTETS
    if media.startswith("text/"):
        media += "; charset=utf-8"
    if "gzip" in request.headers.get("accept-encoding", "").lower() and len(data) > 1024:
        headers["Content-Encoding"] = "gzip"
        data = zipped
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(data))
        return Response(status_code=200, headers=headers, media_type=media)
    return Response(data, headers=headers, media_type=media)


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def read_viewer(request: Request) -> Response:
    """The viewer page (or a page saying how to install its libraries)."""
    if find_node_modules() is None:
        return HTMLResponse(_missing_page(), status_code=503, headers={"Cache-Control": CACHE})
    return _serve(WEB_DIR, "index.html", request)


@router.api_route("/web/{path:path}", methods=["GET", "HEAD"])
async def read_web_file(path: str, request: Request) -> Response:
    """The viewer's own modules and styles (``viewer/web/``)."""
    return _serve(WEB_DIR, path, request)


@router.api_route("/vendor/three/{path:path}", methods=["GET", "HEAD"])
async def read_three_file(path: str, request: Request) -> Response:
    """three.js modules from the npm package (``build/`` and ``examples/jsm/`` only)."""
    modules = find_node_modules()
    if modules is None:
        raise HTTPException(503, "three.js is not installed: run `make setup` (npm ci)")
    for part in THREE_PARTS:
        if path.startswith(part + "/"):
            return _serve(modules / "three" / part, path[len(part) + 1 :], request)
    raise HTTPException(404, f"not served: /vendor/three/{path}")


@router.api_route("/vendor/3d-tiles-renderer/{path:path}", methods=["GET", "HEAD"])
async def read_tiles_renderer_file(path: str, request: Request) -> Response:
    """3d-tiles-renderer modules from the npm package (``build/`` only), for the tiles mode."""
    modules = find_node_modules()
    if modules is None or not (modules / TILES_PACKAGE / "package.json").is_file():
        raise HTTPException(503, "3d-tiles-renderer is not installed: run `make setup` (npm ci)")
    for part in TILES_PARTS:
        if path.startswith(part + "/"):
            return _serve(modules / TILES_PACKAGE / part, path[len(part) + 1 :], request)
    raise HTTPException(404, f"not served: /vendor/{TILES_PACKAGE}/{path}")

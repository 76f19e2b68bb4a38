"""The scene as one GLB: ETag/If-None-Match, gzip, and byte ranges."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from viewer.deps import ServicesDep
from viewer.routes.common import ERRORS, ErrorBody

router = APIRouter(prefix="/api", tags=["scene"])
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@router.get(
    "/scene.glb",
    summary="The current scene of a scenario as GLB (ETag; If-None-Match -> 304; Range)",
    response_class=Response,
    responses={
        200: {"content": {"model/gltf-binary": {}}, "description": "the GLB"},
        206: {"content": {"model/gltf-binary": {}}, "description": "a byte range"},
        304: {"description": "unchanged since the given ETag"},
        416: {"model": ErrorBody, "description": "unsatisfiable range"},
        **ERRORS,
    },
)
async def read_scene(
    services: ServicesDep,
    scenario: Annotated[str, Query(max_length=100)] = "base",
    if_none_match: Annotated[str | None, Header(max_length=1000)] = None,
    range: Annotated[str | None, Header(max_length=200)] = None,
    accept_encoding: Annotated[str | None, Header(max_length=500)] = None,
) -> Response:
    scene = await run_in_threadpool(services.scenes.get, scenario)
    headers = {
        "ETag": scene.etag,
        "Cache-Control": "no-cache",
        "Accept-Ranges": "bytes",
        "Vary": "Accept-Encoding",
    }
    if if_none_match and (
        if_none_match.strip() == "*"
        or scene.etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    ):
        return Response(status_code=304, headers=headers)
    size = len(scene.data)
    if range:
        m = _RANGE.match(range.strip())
        start: int | None = None
        end = size - 1
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                if m.group(2):
                    end = min(int(m.group(2)), size - 1)
            else:  # suffix range: the last N bytes
                start = max(0, size - int(m.group(2)))
        if start is None or start >= size or start > end:
            return Response(
                content=b'{"error":"range_not_satisfiable","message":"unsatisfiable range"}',
                status_code=416,
                media_type="application/json",
                headers={**headers, "Content-Range": f"bytes */{size}"},
            )
        return Response(
            scene.data[start : end + 1],
            status_code=206,
            media_type="model/gltf-binary",
            headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"},
        )
    if accept_encoding and "gzip" in accept_encoding.lower():
        return Response(
            scene.gzipped,
            media_type="model/gltf-binary",
            headers={**headers, "Content-Encoding": "gzip"},
        )
    return Response(scene.data, media_type="model/gltf-binary", headers=headers)

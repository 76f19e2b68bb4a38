"""A plain-ASGI answer for the hottest read, ``GET /api/objects/{id}``.

Engineers' dashboards and the viewer's side panel poll single objects far more than
anything else. Routing, dependency resolution and the middleware stack cost more than
the two indexed reads behind this route, so the found-object case is answered here,
before the framework, with exactly the body the FastAPI route returns (a test compares
them byte for byte). Everything else (404s, other parameters, errors, HEAD) falls
through to the FastAPI app, which stays the one documented implementation.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from twin.errors import TwinError
from viewer.deps import Services
from viewer.routes.objects import full_object

__all__ = ["ObjectReadFastPath"]

PREFIX = "/api/objects/"
_HEADERS = [(b"content-type", b"application/json")]


class ObjectReadFastPath:
    """ASGI middleware: serves found objects of ``GET /api/objects/{id}`` directly."""

    def __init__(self, app: ASGIApp, services: Services, max_query: int) -> None:
        self.app = app
        self.services = services
        self.max_query = max_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(PREFIX) and "/" not in path[len(PREFIX) :]:
                body = self._answer(path[len(PREFIX) :], scope.get("query_string", b""))
                if body is not None:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                *_HEADERS,
                                (b"content-length", str(len(body)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def _answer(self, object_id: str, query: bytes) -> bytes | None:
        """The route's body for a found object, or None to let the app answer."""
        if not object_id or len(query) > self.max_query:
            return None
        scenario = "base"
        if query:
            try:
                params = parse_qsl(query.decode("ascii"), strict_parsing=True)
            except ValueError:
                return None
            if len(params) != 1 or params[0][0] != "scenario" or len(params[0][1]) > 100:
                return None
            scenario = params[0][1]
        store = self.services.store
        try:
            obj = store.get_object(object_id, scenario)
            if obj is None:
                return None
            content = full_object(
                obj,
                store.latest(object_id),
                self.services.networks.relations(object_id, scenario),
            )
            return orjson.dumps(
                content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
            )
        except (TwinError, TypeError):
            return None

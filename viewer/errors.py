"""One mapping from errors to HTTP answers (always JSON, never a 500 for bad input)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twin.errors import Forbidden, IngestError, NotFound, SceneError, TwinError
from twin.query import QueryError
from viewer.auth import Unauthorized
from viewer.routes.common import JSONBody

__all__ = ["LimitMiddleware", "install_error_handlers"]

_STATUS: list[tuple[type[TwinError], int, str]] = [
    (NotFound, 404, "not_found"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (QueryError, 422, "invalid_query"),
    (IngestError, 422, "invalid_input"),
    (SceneError, 422, "scene_error"),
]


def _body(error: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": error, "message": message, "detail": detail}


def install_error_handlers(app: FastAPI) -> None:
    """Map TwinError subclasses, validation errors and HTTP errors to JSON bodies."""

    @app.exception_handler(TwinError)
    async def twin_error(_: Request, exc: TwinError) -> JSONBody:
        for cls, status, code in _STATUS:
            if isinstance(exc, cls):
                detail = {"token": exc.token} if isinstance(exc, QueryError) else None
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                return JSONBody(
                    _body(code, exc.message, detail), status_code=status, headers=headers
                )
        return JSONBody(_body("bad_request", exc.message), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONBody:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONBody(
            _body("invalid_request", f"{where}: {first['msg']}", errors), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONBody:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONBody(
            _body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONBody:
        return JSONBody(
            _body("internal_error", f"{type(exc).__name__}: the server failed"), status_code=500
        )


class LimitMiddleware:
    """Bounds query strings (414) and request bodies (413), before any route runs."""

    def __init__(self, app: ASGIApp, max_body: int, max_query: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_query = max_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.max_query:
            await _send_json(send, 414, "uri_too_long", "query string too long")
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_body
                except ValueError:
                    too_big = True
                if too_big:
                    await _send_json(
                        send, 413, "too_large", f"request body over {self.max_body} bytes"
                    )
                    return
        received = 0
        max_body = self.max_body

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _send_json(send, 413, "too_large", f"request body over {max_body} bytes")


class _TooLarge(Exception):
    pass


async def _send_json(send: Send, status: int, code: str, message: str) -> None:
    import orjson

    body = orjson.dumps(_body(code, message))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

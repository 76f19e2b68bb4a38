"""The error body every route documents, and the shared ``responses`` map."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response
from pydantic import BaseModel

__all__ = ["ERRORS", "WRITE_ERRORS", "ErrorBody", "JSONBody"]


class ErrorBody(BaseModel):
    """Every 4xx answer: a machine code, a human message, and details where useful."""

    error: str
    message: str
    detail: Any = None


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "not found"},
    413: {"model": ErrorBody, "description": "request too large"},
    414: {"model": ErrorBody, "description": "query string too long"},
    422: {"model": ErrorBody, "description": "invalid parameter (names the bad token)"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    400: {"model": ErrorBody, "description": "bad request"},
    401: {"model": ErrorBody, "description": "missing or unknown token"},
    403: {"model": ErrorBody, "description": "the token's role may not do this"},
}


class JSONBody(Response):
    """JSON via orjson (fast; NaN/inf become null, numpy values serialize)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)

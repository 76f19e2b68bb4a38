"""A bare FastAPI app with one constant-JSON route: the framework floor for bench/api.py."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/bare")
async def bare() -> dict[str, str]:
    """The same answer every time: what FastAPI + uvicorn cost with nothing behind them."""
    return {"status": "ok"}

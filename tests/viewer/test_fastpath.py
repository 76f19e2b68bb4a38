"""The plain-ASGI answer of GET /api/objects/{id} equals the FastAPI route, byte for byte."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from ingest.cityjson import load_cityjson
from twin.objects import TwinObject
from twin.query import ObjectQuery
from twin.state import StateUpdate
from viewer.app import create_app
from viewer.bootstrap import bootstrap
from viewer.deps import Services
from viewer.fastpath import ObjectReadFastPath
from viewer.settings import Settings


@pytest.fixture
def services(tmp_path: Path, cityjson_dir: Path) -> Iterator[Services]:
    path = cityjson_dir / "real/zurich_subset_lod2.city.json"
    model = load_cityjson(path)
    services = bootstrap(Settings(db=f"sqlite:///{tmp_path / 'twin.db'}"))
    services.store.put_objects(model.twin, source="z.city.json", source_data=path.read_bytes())
    odd = TwinObject("odd id ü é+&=", "Building", attributes={"name": "Zürich ✓", "n": 1.5})
    services.store.put_objects([odd])
    services.store.put_objects([TwinObject("p1", "Building")], scenario="proposal ü")
    ids = [o.id for o in model.twin][:20]
    services.store.apply_updates(
        [StateUpdate(i, "pressure", 2.0 + k / 10, 1000.0 + k) for k, i in enumerate(ids)]
        + [StateUpdate(ids[0], "status", "alarm", 5.0)]
    )
    yield services
    services.store.close()


def _paths(services: Services) -> list[str]:
    page = services.store.query_objects(ObjectQuery(limit=40))
    ids = [o.id for o in page.items] + ["odd id ü é+&="]
    paths = [f"/api/objects/{quote(i, safe='')}" for i in ids]
    return [
        *paths,
        "/api/objects/p1?scenario=" + quote("proposal ü"),
        "/api/objects/p1",  # not in base: 404 from the route
        "/api/objects/nope",
        paths[0] + "?scenario=base",
        paths[0] + "?scenario=" + "x" * 101,  # 422 from the route
        paths[0] + "?scenario=base&scenario=other",
        paths[0] + "?other=1",
        paths[0] + "?scenario",
        "/api/objects/",
    ]


def test_fast_path_answers_exactly_like_the_route(services: Services) -> None:
    fast = TestClient(create_app(services), raise_server_exceptions=False)
    slow = TestClient(create_app(services, fast_path=False), raise_server_exceptions=False)
    for path in _paths(services):
        a, b = fast.get(path), slow.get(path)
        assert (a.status_code, a.content) == (b.status_code, b.content), path
        assert a.headers["content-type"] == b.headers["content-type"], path
    odd = fast.get("/api/objects/" + quote("odd id ü é+&=", safe=""))
    assert odd.status_code == 200 and odd.json()["attributes"]["name"] == "Zürich ✓"


def test_fast_path_serves_found_objects_and_passes_the_rest_on(services: Services) -> None:
    """Under an inner app that always answers 599, only found objects come back 200."""
    seen: list[str] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = ObjectReadFastPath(inner, services, max_query=4096)

    def get(path: str, query: bytes = b"", method: str = "GET") -> int:
        out: list[dict[str, Any]] = []

        async def send(msg: dict[str, Any]) -> None:
            out.append(msg)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "method": method, "path": path, "query_string": query}
        asyncio.run(mw(scope, receive, send))
        return int(out[0]["status"])

    first = services.store.query_objects(ObjectQuery(limit=1))
    oid = first.items[0].id
    assert get(f"/api/objects/{oid}") == 200
    assert get("/api/objects/p1", b"scenario=proposal%20%C3%BC") == 200
    assert get(f"/api/objects/{oid}", method="HEAD") == 599
    assert get("/api/objects/nope") == 599
    assert get(f"/api/objects/{oid}/history") == 599
    assert get(f"/api/objects/{oid}", b"limit=3") == 599
    assert get(f"/api/objects/{oid}", b"scenario=" + b"x" * 5000) == 599
    assert len(seen) == 5

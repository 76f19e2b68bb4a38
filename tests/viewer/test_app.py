"""The FastAPI app on an in-memory store holding the Zurich subset (FastAPI TestClient)."""

from __future__ import annotations

import gzip
import itertools
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from ingest.cityjson import load_cityjson
from scene.service import SceneCache
from twin.geometry import CityModel
from twin.network_index import NetworkIndex
from twin.store import MemoryStore
from viewer.app import create_app
from viewer.deps import Services
from viewer.settings import Settings

ZURICH = "real/zurich_subset_lod2.city.json"


@pytest.fixture(scope="module")
def zurich(cityjson_dir: Path) -> tuple[CityModel, bytes]:
    path = cityjson_dir / ZURICH
    return load_cityjson(path), path.read_bytes()


def _services(store: MemoryStore) -> Services:
    return Services(
        settings=Settings(db="memory://"),
        store=store,
        scenes=SceneCache(store),
        tokens={},
        networks=NetworkIndex(store),
    )


@pytest.fixture
def client(zurich: tuple[CityModel, bytes]) -> Iterator[TestClient]:
    model, data = zurich
    store = MemoryStore()
    store.put_objects(model.twin, source=Path(ZURICH).name, source_data=data)
    with TestClient(create_app(_services(store))) as c:
        yield c


def _glb_ids(data: bytes) -> list[str]:
    """Ids in the GLB's EXT_structural_metadata property table (decoded by hand)."""
    magic, _, length = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and length == len(data)
    jlen = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20 : 20 + jlen])
    blob = data[28 + jlen :]
    prop = doc["extensions"]["EXT_structural_metadata"]["propertyTables"][0]["properties"]["id"]

    def view(i: int) -> bytes:
        v = doc["bufferViews"][i]
        return blob[v.get("byteOffset", 0) : v.get("byteOffset", 0) + v["byteLength"]]

    offs = struct.unpack(f"<{len(view(prop['stringOffsets'])) // 4}I", view(prop["stringOffsets"]))
    values = view(prop["values"])
    return [values[a:b].decode() for a, b in itertools.pairwise(offs)]


def _raw(client: TestClient, url: str, params: dict[str, Any]) -> tuple[str | None, bytes]:
    """(Content-Encoding, body bytes as sent) for a request accepting gzip."""
    with client.stream("GET", url, params=params, headers={"Accept-Encoding": "gzip"}) as r:
        assert r.status_code == 200
        return r.headers.get("content-encoding"), b"".join(r.iter_raw())


# -- the scene -----------------------------------------------------------------------------


def test_scene_glb_with_etag_and_304(client: TestClient, zurich: tuple[CityModel, bytes]) -> None:
    r = client.get("/api/scene.glb", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "model/gltf-binary"
    assert r.content[:4] == b"glTF"
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    assert _glb_ids(r.content) == zurich[0].feature_ids

    again = client.get("/api/scene.glb", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert client.get("/api/scene.glb", headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    other = client.get("/api/scene.glb", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.content == r.content


def test_scene_gzip_and_range(client: TestClient) -> None:
    plain = client.get("/api/scene.glb", headers={"Accept-Encoding": "identity"}).content
    encoding, body = _raw(client, "/api/scene.glb", {})
    assert encoding == "gzip"
    assert gzip.decompress(body) == plain
    part = client.get(
        "/api/scene.glb", headers={"Range": "bytes=0-3", "Accept-Encoding": "identity"}
    )
    assert part.status_code == 206
    assert part.content == b"glTF"
    assert part.headers["content-range"] == f"bytes 0-3/{len(plain)}"
    bad = client.get("/api/scene.glb", headers={"Range": f"bytes={len(plain) + 10}-"})
    assert bad.status_code == 416


def test_scene_etag_changes_with_the_sources(
    client: TestClient, cityjson_dir: Path, zurich: tuple[CityModel, bytes]
) -> None:
    etag = client.get("/api/scene.glb").headers["etag"]
    store: MemoryStore = client.app.state.services.store  # type: ignore[attr-defined]
    cube = cityjson_dir / "small/cube.city.json"
    store.put_objects(load_cityjson(cube).twin, source=cube.name, source_data=cube.read_bytes())
    r = client.get("/api/scene.glb", headers={"If-None-Match": etag, "Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["etag"] != etag
    assert _glb_ids(r.content) == [*zurich[0].feature_ids, "id-1"]


def test_empty_store_has_no_scene() -> None:
    with TestClient(create_app(_services(MemoryStore()))) as c:
        r = c.get("/api/scene.glb")
    assert r.status_code == 404
    body = r.json()
    assert body["error"] == "not_found" and body["message"]


# -- objects -------------------------------------------------------------------------------


def test_read_object_fields(client: TestClient, zurich: tuple[CityModel, bytes]) -> None:
    model = zurich[0]
    part = next(o for o in model.twin if o.type == "BuildingPart")
    r = client.get(f"/api/objects/{quote(part.id, safe='')}")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == part.id and body["type"] == "BuildingPart"
    assert body["parent"] == part.parent and body["parents"] == part.parents
    assert body["children"] == []
    assert body["attributes"] == part.attributes
    assert body["scenario"] == "base"
    assert body["state"] == {}
    geo = body["geometry"]
    assert part.geometry is not None
    assert geo["lod"] == "2"
    assert geo["bbox"] == pytest.approx(list(part.geometry.bbox))
    assert geo["height"] == pytest.approx(part.geometry.height)
    assert geo["centroid_wgs84"] is not None  # EPSG:2056 is known to pyproj
    lon, lat, _ = geo["centroid_wgs84"]
    assert 8.4 < lon < 8.7 and 47.3 < lat < 47.5  # Zurich

    parent = client.get(f"/api/objects/{quote(part.parents[0], safe='')}").json()
    assert part.id in parent["children"] and parent["geometry"] is None


def test_unknown_object_is_a_json_404(client: TestClient) -> None:
    r = client.get("/api/objects/no-such-building")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == "not_found"
    assert "no-such-building" in body["message"]


def _all_pages(client: TestClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        r = client.get("/api/objects", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200
        page = r.json()
        assert len(page["items"]) <= params.get("limit", 100)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination does not end")


def test_list_objects_by_type_totals(client: TestClient, zurich: tuple[CityModel, bytes]) -> None:
    counts = zurich[0].twin.counts_by_type()
    for otype in ("Building", "BuildingPart"):
        items = _all_pages(client, {"type": otype, "limit": 20})
        assert len(items) == counts[otype]
        assert len({i["id"] for i in items}) == len(items)
        assert {i["type"] for i in items} == {otype}
    assert len(_all_pages(client, {"limit": 1000})) == len(zurich[0].twin)


def test_stats_counts(client: TestClient, zurich: tuple[CityModel, bytes]) -> None:
    body = client.get("/api/stats").json()
    assert body["objects"] == 210
    assert body["counts_by_type"] == zurich[0].twin.counts_by_type()
    assert body["sources"] == [Path(ZURICH).name]
    health = client.get("/api/healthz").json()
    assert health["status"] == "ok" and health["store"] == "memory://"


def test_bad_parameters_are_json_422(client: TestClient) -> None:
    r = client.get("/api/objects", params={"limit": 0})
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request"
    r = client.get("/api/objects", params={"sort": "colour"})
    assert r.status_code == 422 and "colour" in r.json()["message"]


def test_gzip_on_object_lists(client: TestClient) -> None:
    encoding, raw = _raw(client, "/api/objects", {"limit": 100})
    assert encoding == "gzip"
    body = json.loads(gzip.decompress(raw))
    assert len(body["items"]) == 100
    plain = client.get(
        "/api/objects", params={"limit": 100}, headers={"Accept-Encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers
    assert plain.json() == body


def test_openapi_lists_the_routes(client: TestClient) -> None:
    doc = client.get("/api/openapi.json").json()
    paths = doc["paths"]
    for route in (
        "/api/scene.glb",
        "/api/objects/{object_id}",
        "/api/objects",
        "/api/stats",
        "/api/healthz",
    ):
        assert route in paths
        for op in paths[route].values():
            assert op.get("summary"), f"{route} has no summary"
    not_found = paths["/api/objects/{object_id}"]["get"]["responses"]["404"]
    ref = not_found["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"error", "message"} <= set(schema["required"])

"""The engineers' API on a real SQLite store: reads, filters, history, auth, limits, scene."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ingest.cityjson import load_cityjson
from twin.geometry import CityModel
from viewer.app import create_app
from viewer.bootstrap import bootstrap
from viewer.settings import Settings

ZURICH = "real/zurich_subset_lod2.city.json"
ENGINEER = {"Authorization": "Bearer eng-secret"}
PLANNER = {"Authorization": "Bearer plan-secret"}
FEED = {"Authorization": "Bearer feed-secret"}
MODERATOR = {"Authorization": "Bearer mod-secret"}


@pytest.fixture(scope="module")
def zurich(cityjson_dir: Path) -> tuple[CityModel, bytes]:
    path = cityjson_dir / ZURICH
    return load_cityjson(path), path.read_bytes()


@pytest.fixture
def client(
    tmp_path: Path, zurich: tuple[CityModel, bytes]
) -> Iterator[tuple[TestClient, CityModel]]:
    model, data = zurich
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'twin.db'}",
        tokens="eng-secret:engineer,plan-secret:planner,feed-secret:feed,mod-secret:moderator",
        max_body_bytes=200_000,
    )
    services = bootstrap(settings)
    services.store.put_objects(model.twin, source="zurich.city.json", source_data=data)
    with TestClient(create_app(services), raise_server_exceptions=False) as c:
        yield c, model
    services.store.close()


def _building(model: CityModel) -> str:
    """An object with geometry (Zurich Buildings have none; their parts do)."""
    return next(o.id for o in model.twin if o.geometry is not None)


def _post_state(c: TestClient, updates: list[dict[str, Any]], headers: dict[str, str]) -> Any:
    return c.post("/api/state", json={"updates": updates, "source": "test"}, headers=headers)


# -- reads -------------------------------------------------------------------------------


def test_object_has_attributes_geometry_family_and_state(
    client: tuple[TestClient, CityModel],
) -> None:
    c, model = client
    part = next(o for o in model.twin if o.type == "BuildingPart")
    r = _post_state(c, [{"id": part.id, "property": "pressure", "value": 3.5, "time": 10}], FEED)
    assert r.status_code == 200, r.text
    body = c.get(f"/api/objects/{part.id}").json()
    assert body["id"] == part.id and body["type"] == "BuildingPart"
    assert body["parent"] == part.parent and body["parent"] in model.twin
    assert body["attributes"] == part.attributes
    assert body["geometry"]["bbox"] == pytest.approx(list(part.geometry.bbox))  # type: ignore[union-attr]
    lon, lat, _ = body["geometry"]["centroid_wgs84"]
    assert 8.4 < lon < 8.7 and 47.3 < lat < 47.5  # Zurich
    assert body["state"]["pressure"]["value"] == 3.5
    assert body["state"]["pressure"]["source"] == "test"
    parent = c.get(f"/api/objects/{part.parent}").json()
    assert part.id in parent["children"]


def test_unknown_object_is_404_json(client: tuple[TestClient, CityModel]) -> None:
    c, _ = client
    r = c.get("/api/objects/does-not-exist")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found" and "does-not-exist" in r.json()["message"]
    r = c.get("/api/objects/does-not-exist/history", params={"property": "x"})
    assert r.status_code == 404


def test_filters_sort_and_cursor_pages(client: tuple[TestClient, CityModel]) -> None:
    c, model = client
    want = sorted(
        (
            o
            for o in model.twin
            if o.type == "BuildingPart" and o.geometry and o.geometry.height > 8
        ),
        key=lambda o: (-o.geometry.height, o.id),  # type: ignore[union-attr]
    )
    got: list[str] = []
    cursor = None
    for _ in range(50):
        params: dict[str, Any] = {
            "type": "BuildingPart",
            "where": "geom.height>8",
            "sort": "height",
            "desc": True,
            "limit": 7,
        }
        if cursor:
            params["cursor"] = cursor
        page = c.get("/api/objects", params=params).json()
        got += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert got == [o.id for o in want]


def test_state_filter_and_text_and_bbox(client: tuple[TestClient, CityModel]) -> None:
    c, model = client
    ids = [o.id for o in model.twin][:6]
    ups = [
        {"id": i, "property": "status", "value": "alarm" if n % 2 else "ok", "time": 5}
        for n, i in enumerate(ids)
    ]
    assert _post_state(c, ups, ENGINEER).status_code == 200
    alarm = c.get("/api/objects", params={"where": "state.status=alarm"}).json()["items"]
    assert sorted(i["id"] for i in alarm) == sorted(ids[1::2])
    target = ids[3]
    found = c.get("/api/objects", params={"q": target[5:17]}).json()["items"]
    assert target in [i["id"] for i in found]
    b = model.twin[_building(model)].geometry
    assert b is not None and b.bbox_wgs84 is not None
    box = f"{b.bbox_wgs84[0]},{b.bbox_wgs84[1]},{b.bbox_wgs84[3]},{b.bbox_wgs84[4]}"
    near = c.get("/api/objects", params={"bbox": box, "limit": 1000}).json()["items"]
    assert _building(model) in [i["id"] for i in near]
    far = c.get("/api/objects", params={"bbox": "0,0,1,1"}).json()["items"]
    assert far == []


@pytest.mark.parametrize(
    ("params", "token"),
    [
        ({"where": "height>>3"}, "height>>3"),
        ({"where": "name<abc"}, "name<abc"),
        ({"where": "geom.volume>3"}, "geom.volume>3"),
        ({"bbox": "1,2,3"}, "1,2,3"),
        ({"cursor": "not-a-cursor"}, "not-a-cursor"),
        ({"sort": "colour"}, "colour"),
    ],
)
def test_bad_query_is_422_naming_the_token(
    client: tuple[TestClient, CityModel], params: dict[str, str], token: str
) -> None:
    c, _ = client
    r = c.get("/api/objects", params=params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_query"
    assert body["detail"]["token"] == token


def test_history_raw_and_buckets(client: tuple[TestClient, CityModel]) -> None:
    c, model = client
    oid = _building(model)
    base = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    ups = [
        {"id": oid, "property": "flow", "value": float(i), "time": base + 60 * i} for i in range(20)
    ]
    assert _post_state(c, ups, FEED).json()["stored"] == 20
    raw = c.get(f"/api/objects/{oid}/history", params={"property": "flow"}).json()
    assert [p["value"] for p in raw["points"]] == [float(i) for i in range(20)]
    b = c.get(f"/api/objects/{oid}/history", params={"property": "flow", "every": "5m"}).json()[
        "buckets"
    ]
    assert [x["count"] for x in b] == [5, 5, 5, 5]
    assert b[1] == {"start": base + 300, "count": 5, "min": 5.0, "mean": 7.0, "max": 9.0}
    window = c.get(
        f"/api/objects/{oid}/history",
        params={"property": "flow", "since": "2027-01-15T08:03:00Z", "until": str(base + 360)},
    ).json()["points"]
    assert [p["value"] for p in window] == [3.0, 4.0, 5.0]
    bad = c.get(f"/api/objects/{oid}/history", params={"property": "flow", "every": "5 parsecs"})
    assert bad.status_code == 422 and bad.json()["detail"]["token"] == "5 parsecs"


def test_late_and_duplicate_updates(client: tuple[TestClient, CityModel]) -> None:
    c, model = client
    oid = _building(model)
    u = lambda v, t: {"id": oid, "property": "p", "value": v, "time": t}  # noqa: E731
    r = _post_state(c, [u(2.0, 200), u(1.0, 100), u(2.0, 200)], FEED).json()
    assert r == {"stored": 2, "duplicates": 1, "late": 1, "latest": 1}
    assert c.get(f"/api/objects/{oid}").json()["state"]["p"]["value"] == 2.0


# -- auth and audit ------------------------------------------------------------------------


def test_writes_need_a_token_with_the_right_role(client: tuple[TestClient, CityModel]) -> None:
    c, model = client
    oid = _building(model)
    upd = [{"id": oid, "property": "p", "value": 1}]
    assert _post_state(c, upd, {}).status_code == 401
    assert _post_state(c, upd, {"Authorization": "Bearer wrong"}).status_code == 401
    forbidden = _post_state(c, upd, PLANNER)
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"
    assert _post_state(c, upd, MODERATOR).status_code == 403
    assert _post_state(c, upd, FEED).status_code == 200
    patch = {"attributes": {"function": "residential"}}
    assert c.patch(f"/api/objects/{oid}", json=patch).status_code == 401
    assert c.patch(f"/api/objects/{oid}", json=patch, headers=FEED).status_code == 403
    r = c.patch(f"/api/objects/{oid}", json=patch, headers=PLANNER)
    assert r.status_code == 200 and r.json()["attributes"]["function"] == "residential"
    listed = c.get("/api/objects", params={"where": "function=residential"}).json()["items"]
    assert [i["id"] for i in listed] == [oid]


def test_audit_log_records_writes_and_is_role_restricted(
    client: tuple[TestClient, CityModel],
) -> None:
    c, model = client
    oid = _building(model)
    t0 = time.time()
    _post_state(c, [{"id": oid, "property": "p", "value": 1}], ENGINEER)
    c.patch(f"/api/objects/{oid}", json={"attributes": {"note": "x"}}, headers=PLANNER)
    assert c.get("/api/audit").status_code == 401
    assert c.get("/api/audit", headers=ENGINEER).status_code == 403
    log = c.get("/api/audit", headers=MODERATOR).json()
    assert [e["action"] for e in log[:2]] == ["patch_object", "post_state"]
    assert log[0]["role"] == "planner" and log[1]["role"] == "engineer"
    assert all(e["object_ids"] == [oid] and e["time"] >= t0 - 1 for e in log[:2])
    text = str(log)
    assert "secret" not in text  # token names, never the tokens


def test_unknown_ids_reject_the_whole_batch(client: tuple[TestClient, CityModel]) -> None:
    c, model = client
    oid = _building(model)
    r = _post_state(
        c,
        [
            {"id": oid, "property": "q", "value": 1, "time": 1},
            {"id": "ghost", "property": "q", "value": 2, "time": 1},
        ],
        FEED,
    )
    assert r.status_code == 400 and "ghost" in r.json()["message"]
    assert "q" not in c.get(f"/api/objects/{oid}").json()["state"]


# -- limits --------------------------------------------------------------------------------


def test_size_limits(client: tuple[TestClient, CityModel]) -> None:
    c, _model = client
    assert c.get("/api/objects?where=" + "a" * 5000).status_code == 414
    big = {"updates": [{"id": "x" * 500, "property": "p", "value": "v" * 500}] * 400}
    r = c.post("/api/state", json=big, headers=FEED)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    too_many = {"updates": [{"id": "a", "property": "p", "value": 1}] * 10_001}
    c2 = c.post("/api/state", json=too_many, headers=FEED)
    assert c2.status_code in (413, 422)
    weird = c.get("/api/objects", params={"limit": 0})
    assert weird.status_code == 422 and weird.json()["error"] == "invalid_request"
    assert c.get("/api/objects", params={"q": "\u00e9\u6771\U0001f600"}).status_code == 200


# -- scene ---------------------------------------------------------------------------------


def test_scene_glb_etag_gzip_and_range(client: tuple[TestClient, CityModel]) -> None:
    c, _model = client
    r = c.get("/api/scene.glb", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200 and r.content[:4] == b"glTF"
    assert r.headers["content-type"] == "model/gltf-binary"
    etag = r.headers["etag"]
    assert c.get("/api/scene.glb", headers={"If-None-Match": etag}).status_code == 304
    z = c.get("/api/scene.glb", headers={"Accept-Encoding": "gzip"})
    assert z.headers.get("content-encoding") == "gzip"
    assert z.content == r.content  # httpx decoded it
    part = c.get("/api/scene.glb", headers={"Range": "bytes=4-11"})
    assert part.status_code == 206 and part.content == r.content[4:12]
    assert part.headers["content-range"] == f"bytes 4-11/{len(r.content)}"
    tail = c.get("/api/scene.glb", headers={"Range": "bytes=-4"})
    assert tail.content == r.content[-4:]
    assert c.get("/api/scene.glb", headers={"Range": "bytes=99999999-"}).status_code == 416
    assert gzip.decompress(gzip.compress(r.content)) == r.content
    assert c.get("/api/scene.glb", params={"scenario": "nope"}).status_code == 404


def test_scene_changes_etag_when_a_source_is_added(
    client: tuple[TestClient, CityModel], cityjson_dir: Path
) -> None:
    c, _ = client
    before = c.get("/api/scene.glb").headers["etag"]
    services = c.app.state.services  # type: ignore[attr-defined]
    extra = cityjson_dir / "small" / "cube.city.json"
    m = load_cityjson(extra)
    services.store.put_objects(m.twin, source="cube.city.json", source_data=extra.read_bytes())
    after = c.get("/api/scene.glb")
    assert after.headers["etag"] != before
    assert c.get("/api/stats").json()["sources"] == ["zurich.city.json", "cube.city.json"]


# -- documents -----------------------------------------------------------------------------


def test_openapi_documents_every_route(client: tuple[TestClient, CityModel]) -> None:
    c, _ = client
    doc = c.get("/api/openapi.json").json()
    paths = doc["paths"]
    for p in (
        "/api/objects/{object_id}",
        "/api/objects",
        "/api/objects/{object_id}/history",
        "/api/scene.glb",
        "/api/stats",
        "/api/healthz",
        "/api/state",
        "/api/audit",
    ):
        assert p in paths, p
        for op in paths[p].values():
            assert op.get("summary"), (p, op)
    assert "422" in paths["/api/objects"]["get"]["responses"]
    assert c.get("/docs").status_code == 200
    health = c.get("/api/healthz").json()
    assert health["status"] == "ok" and health["store"].startswith("sqlite://")


def test_bbox_in_scene_coordinates(client: tuple[TestClient, CityModel]) -> None:
    c, model = client
    scene = c.app.state.services.scenes.get()  # type: ignore[attr-defined]
    ox, oy, _ = scene.origin
    target = model.twin[_building(model)].geometry
    assert target is not None
    x0, y0, _, x1, y1, _ = target.bbox
    # The object's footprint box in the glTF frame: x = east - ox, z = -(north - oy).
    box = f"{x0 - ox},{-(y1 - oy)},{x1 - ox},{-(y0 - oy)}"
    items = c.get("/api/objects", params={"bbox": box, "bbox_crs": "scene", "limit": 1000})
    assert _building(model) in [i["id"] for i in items.json()["items"]]
    far = c.get("/api/objects", params={"bbox": "1e6,1e6,1e6,1e6", "bbox_crs": "scene"})
    assert far.json()["items"] == []


def test_history_retention_prunes_old_points(client: tuple[TestClient, CityModel]) -> None:
    from viewer.app import prune_history

    c, model = client
    services = c.app.state.services  # type: ignore[attr-defined]
    oid = _building(model)
    now = time.time()
    ups = [
        {"id": oid, "property": "r", "value": 1.0, "time": now - 10 * 86400},
        {"id": oid, "property": "r", "value": 2.0, "time": now - 3600},
    ]
    assert _post_state(c, ups, FEED).status_code == 200
    services.settings.history_retention_days = 7
    assert prune_history(services, now) == 1
    points = c.get(f"/api/objects/{oid}/history", params={"property": "r"}).json()["points"]
    assert [p["value"] for p in points] == [2.0]
    assert c.get(f"/api/objects/{oid}").json()["state"]["r"]["value"] == 2.0

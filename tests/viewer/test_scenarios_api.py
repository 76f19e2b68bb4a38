"""Proposals as scenarios over the API, on a real city: upload, diff, scene, snapshot, report."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from glbdecode import Glb
from PIL import Image

from ingest.cityjson import load_cityjson, parse_cityjson
from scene.proposal import drop_objects, solid_volumes
from scene.snapshot import HIGHLIGHT_COLOR, read_frame
from twin.geometry import CityModel
from viewer.app import create_app
from viewer.bootstrap import bootstrap
from viewer.settings import Settings

DELFT = "real/delft.city.json"
PLANNER = {"Authorization": "Bearer plan-secret"}
ENGINEER = {"Authorization": "Bearer eng-secret"}
MODERATOR = {"Authorization": "Bearer mod-secret"}
XSS = "<script>alert(1)</script>"


# -- an independent reading of the raw CityJSON (no ingest code) --------------------------


def _real(doc: dict[str, Any], raw: list[int]) -> tuple[float, float, float]:
    s, t = doc["transform"]["scale"], doc["transform"]["translate"]
    return (raw[0] * s[0] + t[0], raw[1] * s[1] + t[1], raw[2] * s[2] + t[2])


def _surfaces(obj: dict[str, Any]) -> list[list[list[int]]]:
    out: list[list[list[int]]] = []
    for g in obj["geometry"]:
        shells = g["boundaries"] if g["type"] == "Solid" else [g["boundaries"]]
        for shell in shells:
            out.extend(shell)
    return out


def _measure(doc: dict[str, Any], oid: str) -> tuple[float, float, float]:
    """(height, footprint, volume) of an LoD1 block: flat roof at the top z, walls, no floor.

    Footprint = shoelace area of the roof surfaces; volume = footprint × height (exact
    for a flat-roofed block).
    """
    obj = doc["CityObjects"][oid]
    zs = [_real(doc, doc["vertices"][i])[2] for s in _surfaces(obj) for r in s for i in r]
    zmin, zmax = min(zs), max(zs)
    area = 0.0
    for surface in _surfaces(obj):
        pts = [_real(doc, doc["vertices"][i]) for i in surface[0]]
        if all(abs(p[2] - zmax) < 1e-9 for p in pts):
            x0, y0 = pts[0][0], pts[0][1]
            a = 0.0
            for (x1, y1, _), (x2, y2, _) in zip(pts, pts[1:] + pts[:1], strict=True):
                a += (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
            area += abs(a) / 2
    height = zmax - zmin
    return height, area, area * height


def _copy_object(
    doc: dict[str, Any], out: dict[str, Any], oid: str, new_id: str, move: Any
) -> None:
    """Copy an object into ``out`` with its own vertex list, each raw vertex through ``move``."""
    obj = copy.deepcopy(doc["CityObjects"][oid])
    index: dict[int, int] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, list):
            return [walk(y) for y in x]
        if x not in index:
            index[x] = len(out["vertices"])
            out["vertices"].append(move(doc["vertices"][x]))
        return index[x]

    for g in obj["geometry"]:
        g["boundaries"] = walk(g["boundaries"])
    out["CityObjects"][new_id] = obj


@pytest.fixture(scope="module")
def delft(cityjson_dir: Path) -> tuple[bytes, dict[str, Any], CityModel]:
    data = (cityjson_dir / DELFT).read_bytes()
    return data, orjson.loads(data), load_cityjson(cityjson_dir / DELFT)


@pytest.fixture(scope="module")
def proposal(delft: tuple[bytes, dict[str, Any], CityModel]) -> dict[str, Any]:
    """Raise one building ×2, remove one by tombstone, add a shifted copy east of the city."""
    _, doc, model = delft
    buildings = sorted(
        (o for o in model.twin if o.type == "Building"),
        key=lambda o: -o.geometry.footprint_area,  # type: ignore[union-attr]
    )
    raised, tomb, removed_q, copied = (b.id for b in buildings[:4])
    out: dict[str, Any] = {
        "type": "CityJSON",
        "version": doc["version"],
        "transform": doc["transform"],
        "metadata": doc["metadata"],
        "CityObjects": {},
        "vertices": [],
    }
    obj = doc["CityObjects"][raised]
    zmin = min(doc["vertices"][i][2] for s in _surfaces(obj) for r in s for i in r)
    _copy_object(doc, out, raised, raised, lambda v: [v[0], v[1], zmin + (v[2] - zmin) * 2])
    # East of everything in the city by 30 m: an empty spot.
    xmax = max(v[0] for v in doc["vertices"])
    cobj = doc["CityObjects"][copied]
    cx = [doc["vertices"][i][0] for s in _surfaces(cobj) for r in s for i in r]
    dx = xmax - min(cx) + int(30 / doc["transform"]["scale"][0])
    _copy_object(doc, out, copied, "proposal-new-1", lambda v: [v[0] + dx, v[1], v[2]])
    out["CityObjects"][tomb] = {"type": "Building", "attributes": {"proposal_action": "remove"}}
    return {
        "bytes": orjson.dumps(out),
        "doc": out,
        "raised": raised,
        "tomb": tomb,
        "removed_q": removed_q,
        "copied": copied,
        "new": "proposal-new-1",
    }


@pytest.fixture
def app(
    tmp_path: Path, delft: tuple[bytes, dict[str, Any], CityModel]
) -> Iterator[tuple[TestClient, Any]]:
    data, _, model = delft
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'twin.db'}",
        tokens="eng-secret:engineer,plan-secret:planner,mod-secret:moderator",
        max_body_bytes=5_000_000,
    )
    services = bootstrap(settings)
    services.store.put_objects(model.twin, source="delft.city.json", source_data=data)
    app = create_app(services, live=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, services
    services.store.close()


def _upload(c: TestClient, p: dict[str, Any], name: str = "proposal") -> Any:
    return c.post(
        f"/api/scenarios/{name}?remove={p['removed_q']}",
        content=p["bytes"],
        headers={**PLANNER, "Content-Type": "application/json"},
    )


def test_upload_returns_the_diff_measured_independently(
    app: tuple[TestClient, Any],
    delft: tuple[bytes, dict[str, Any], CityModel],
    proposal: dict[str, Any],
) -> None:
    c, _ = app
    _, doc, _ = delft
    r = _upload(c, proposal)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["scenario"] == "proposal" and body["base"] == "base"
    diff = body["diff"]
    assert diff["added"] == [proposal["new"]]
    assert diff["removed"] == sorted([proposal["tomb"], proposal["removed_q"]])
    assert diff["changed"] == [proposal["raised"]]
    by = {o["id"]: o for o in diff["objects"]}

    h0, f0, v0 = _measure(doc, proposal["raised"])
    h1, f1, v1 = _measure(proposal["doc"], proposal["raised"])
    assert h1 == pytest.approx(2 * h0, rel=1e-12) and f1 == pytest.approx(f0, rel=1e-12)
    raised = by[proposal["raised"]]
    assert "height" in raised["fields"] and "footprint" not in raised["fields"]
    assert raised["height"]["before"] == pytest.approx(h0, rel=1e-9)
    assert raised["height"]["after"] == pytest.approx(h1, rel=1e-9)
    assert raised["footprint"]["change"] == pytest.approx(0.0, abs=1e-6)
    assert raised["volume"]["method"] == "solid"
    assert raised["volume"]["before"] == pytest.approx(v0, rel=1e-9)
    assert raised["volume"]["change"] == pytest.approx(v1 - v0, rel=1e-9)

    hn, fn, vn = _measure(proposal["doc"], proposal["new"])
    hc, fc, _ = _measure(doc, proposal["copied"])
    assert (hn, fn) == pytest.approx((hc, fc), rel=1e-9)  # a moved copy: same size
    added = by[proposal["new"]]
    assert added["height"] == {
        "before": None,
        "after": pytest.approx(hn),
        "change": pytest.approx(hn),
    }
    assert added["footprint"]["after"] == pytest.approx(fn, rel=1e-9)
    assert added["volume"]["after"] == pytest.approx(vn, rel=1e-9)

    removed = {oid: _measure(doc, oid) for oid in (proposal["tomb"], proposal["removed_q"])}
    for oid, (h, f, v) in removed.items():
        assert by[oid]["height"]["before"] == pytest.approx(h, rel=1e-9)
        assert by[oid]["footprint"]["change"] == pytest.approx(-f, rel=1e-9)
        assert by[oid]["volume"]["change"] == pytest.approx(-v, rel=1e-9)

    t = diff["totals"]
    assert (t["added"], t["removed"], t["changed"]) == (1, 2, 1)
    removed_f = sum(f for _, f, _ in removed.values())
    removed_v = sum(v for _, _, v in removed.values())
    assert t["footprint_change"] == pytest.approx(fn - removed_f, rel=1e-9)
    assert t["volume_change"] == pytest.approx((v1 - v0) + vn - removed_v, rel=1e-9)
    # The same diff is served again, and listed.
    again = c.get("/api/scenarios/proposal/diff?against=base").json()
    assert again["totals"] == pytest.approx(t)
    listed = {s["name"]: s for s in c.get("/api/scenarios").json()}
    assert listed["base"]["objects"] == 570
    assert listed["proposal"]["objects"] == 570 - 2 + 1
    assert (listed["proposal"]["added"], listed["proposal"]["removed"]) == (1, 2)
    # Objects of the scenario are served by the objects API too.
    assert c.get(f"/api/objects/{proposal['new']}?scenario=proposal").status_code == 200


def test_the_proposal_scene_is_valid_and_has_the_right_features(
    app: tuple[TestClient, Any],
    proposal: dict[str, Any],
    gltf_validator: Any,
    tmp_path: Path,
) -> None:
    c, _ = app
    assert _upload(c, proposal).status_code == 201
    base = c.get("/api/scene.glb").content
    glb = c.get("/api/scene.glb?scenario=proposal").content
    path = tmp_path / "proposal.glb"
    path.write_bytes(glb)
    report = gltf_validator.validate(path)[0]
    assert report["errors"] == 0, report["messages"][:5]
    doc = Glb.parse(glb).doc
    info = doc["asset"]["extras"]["citytwin"]
    base_info = Glb.parse(base).doc["asset"]["extras"]["citytwin"]
    assert info["featureCount"] == base_info["featureCount"] - 2 + 1
    # Drawn in the base's frame, so the two scenes line up.
    assert info["origin"] == base_info["origin"]
    table = doc["extensions"]["EXT_structural_metadata"]["propertyTables"][0]
    assert table["count"] == info["featureCount"]
    ids = _property_ids(Glb.parse(glb))
    assert proposal["new"] in ids and proposal["raised"] in ids
    assert proposal["tomb"] not in ids and proposal["removed_q"] not in ids
    assert len(ids) == len(set(ids))  # the replaced building is drawn once


def _property_ids(g: Glb) -> list[str]:
    prop = g.doc["extensions"]["EXT_structural_metadata"]["propertyTables"][0]["properties"]["id"]
    values = g.view(prop["values"])
    offs = np.frombuffer(g.view(prop["stringOffsets"]), dtype=np.uint32)
    return [values[offs[i] : offs[i + 1]].decode() for i in range(len(offs) - 1)]


def test_snapshot_route(app: tuple[TestClient, Any], proposal: dict[str, Any]) -> None:
    c, _ = app
    assert _upload(c, proposal).status_code == 201
    r = c.get(
        "/api/scenarios/proposal/snapshot.png",
        params={"width": 240, "height": 160, "highlight": proposal["new"]},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert img.shape == (160, 240, 3)
    assert (img == np.array(HIGHLIGHT_COLOR)).all(axis=2).any()
    bad = c.get("/api/scenarios/proposal/snapshot.png?camera=1,2,3")
    assert bad.status_code == 422 and bad.json()["error"] == "scene_error"
    assert c.get("/api/scenarios/proposal/snapshot.png?width=5000").status_code == 422
    assert c.get("/api/scenarios/nope/snapshot.png").status_code == 404


def test_roles_bad_input_and_conflicts(
    app: tuple[TestClient, Any], proposal: dict[str, Any]
) -> None:
    c, _ = app
    url = "/api/scenarios/p2"
    assert c.post(url, content=proposal["bytes"]).status_code == 401
    for who in (ENGINEER, MODERATOR):
        r = c.post(url, content=proposal["bytes"], headers=who)
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
    for body in (b"{not json", b'{"type": "CityJSON", "CityObjects": 3}', b"[1, 2]"):
        r = c.post(url, content=body, headers=PLANNER)
        assert 400 <= r.status_code < 500 and r.json()["error"], r.text
    r = c.post(url, content=b"", headers=PLANNER)
    assert r.status_code == 400
    r = c.post(url + "?remove=no-such-building", content=proposal["bytes"], headers=PLANNER)
    assert r.status_code == 422 and "no-such-building" in r.json()["message"]
    r = c.post(url + "?base=nothing", content=proposal["bytes"], headers=PLANNER)
    assert r.status_code == 404
    assert (
        c.post("/api/scenarios/base", content=proposal["bytes"], headers=PLANNER).status_code == 400
    )
    assert (
        c.post("/api/scenarios/_x", content=proposal["bytes"], headers=PLANNER).status_code == 422
    )
    assert _upload(c, proposal, "p2").status_code == 201
    r = _upload(c, proposal, "p2")
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    # Nothing of the refused uploads was stored.
    assert [s["name"] for s in c.get("/api/scenarios").json()] == ["base", "p2"]
    assert c.get("/api/scenarios/nope/diff").status_code == 404


# -- report and exports ----------------------------------------------------------------


class FakeComments:
    """A CommentSource over a fixed list (the participation store is built elsewhere)."""

    def __init__(self, comments: list[dict[str, Any]]) -> None:
        self.comments = comments
        self.asked: list[str] = []

    def list_comments(self, session_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
        self.asked.append(session_id)
        return self.comments[:limit]


def _comments(glb: bytes, model: CityModel, proposal: dict[str, Any]) -> list[dict[str, Any]]:
    frame = read_frame(glb)
    ox, oy, oz = frame.origin
    g = model.twin[proposal["raised"]].geometry
    assert g is not None
    cx, cy, _ = g.centroid
    point = [cx - ox, g.bbox[5] - oz, -(cy - oy)]  # on the roof, glTF frame
    eye = [point[0] + 80, point[1] + 110, point[2] + 80]
    cam = {"position": eye, "target": point, "fov": 45}
    return [
        {
            "id": "c1", "text": XSS, "category": "height", "object_id": proposal["raised"],
            "point": point, "camera": cam, "scenario": "proposal", "state": "visible",
            "created": 1_700_000_000.0,
        },
        {
            "id": "c2", "text": "Te hoog, 日本語 ✓\n=1+1", "category": "height",
            "anchor": {"object_id": proposal["raised"], "point": None},
            "camera": cam, "scenario": "proposal", "state": "visible", "created": 1_700_000_100.0,
        },
        {
            "id": "c3", "text": "rude words", "category": "traffic",
            "object_id": proposal["new"], "point": None, "camera": None,
            "scenario": "proposal", "state": "hidden", "created": 1_700_000_200.0,
        },
        {
            "id": "c4", "text": "more green", "category": None, "object_id": None,
            "point": None, "camera": {"position": [0, 400, 400], "target": [0, 0, 0]},
            "scenario": "base", "state": "visible", "created": 1_700_000_300.0,
        },
    ]  # fmt: skip


def test_exports_and_report(
    app: tuple[TestClient, Any],
    delft: tuple[bytes, dict[str, Any], CityModel],
    proposal: dict[str, Any],
) -> None:
    c, services = app
    _, _, model = delft
    services.participation = None
    for path in ("comments.csv", "comments.geojson", "report"):
        r = c.get(f"/api/sessions/s1/{path}", headers=PLANNER)
        assert r.status_code == 404 and "participation" in r.json()["message"]
    assert _upload(c, proposal).status_code == 201
    glb = c.get("/api/scene.glb?scenario=proposal").content
    comments = _comments(glb, model, proposal)
    services.participation = FakeComments(comments)

    assert c.get("/api/sessions/s1/report").status_code == 401
    r = c.get("/api/sessions/s1/comments.csv", headers=ENGINEER)
    assert r.status_code == 403

    # CSV
    r = c.get("/api/sessions/s1/comments.csv", headers=MODERATOR)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["id"] for row in rows] == ["c1", "c2", "c3", "c4"]
    c1 = rows[0]
    assert c1["text"] == XSS and c1["object_id"] == proposal["raised"]
    g = model.twin[proposal["raised"]].geometry
    assert g is not None and g.centroid_wgs84 is not None
    assert float(c1["source_x"]) == pytest.approx(g.centroid[0], abs=1e-3)
    assert float(c1["source_y"]) == pytest.approx(g.centroid[1], abs=1e-3)
    assert float(c1["lon"]) == pytest.approx(g.centroid_wgs84[0], abs=1e-6)
    assert float(c1["lat"]) == pytest.approx(g.centroid_wgs84[1], abs=1e-6)
    assert c1["crs"].endswith("7415") and c1["created"] == "2023-11-14T22:13:20Z"
    assert rows[1]["text"] == "Te hoog, 日本語 ✓\n=1+1"  # unicode and newlines survive
    assert rows[1]["lon"] == "" and rows[2]["state"] == "hidden"

    # GeoJSON
    r = c.get("/api/sessions/s1/comments.geojson", headers=PLANNER)
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    fc = r.json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 4
    for f in fc["features"]:
        assert f["type"] == "Feature" and set(f) >= {"geometry", "properties"}
        if f["geometry"] is not None:
            lon, lat = f["geometry"]["coordinates"][:2]
            assert 4.3 < lon < 4.4 and 51.9 < lat < 52.1  # Delft
    f1, f2, f3, f4 = fc["features"]
    assert f1["properties"]["anchor"] == "point" and f1["properties"]["text"] == XSS
    assert f2["properties"]["anchor"] == "object"  # the object's centroid
    assert f2["geometry"]["coordinates"][:2] == pytest.approx(list(g.centroid_wgs84[:2]))
    assert f3["properties"]["anchor"] == "object" and f4["geometry"] is None

    # HTML report
    r = c.get("/api/sessions/s1/report", headers=PLANNER)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "rude words" not in page and "[hidden by moderation]" in page
    assert page.count('src="data:image/png;base64,') == 2  # two distinct viewpoints
    assert "<td>height</td><td>2</td>" in page
    assert f"<td>{proposal['raised']}</td><td>2</td>" in page
    assert services.participation.asked == ["s1", "s1", "s1"]


def test_drop_objects_keeps_the_rest_of_the_model_intact(
    delft: tuple[bytes, dict[str, Any], CityModel],
) -> None:
    data, _, _ = delft
    model = parse_cityjson(data)
    assert drop_objects(model, []) is model
    gone = [o.id for o in model.twin if o.type == "Building"][:3]
    kept = drop_objects(model, gone)
    assert len(kept.feature_ids) == len(model.feature_ids) - 3
    assert not set(gone) & set(kept.feature_ids) and not set(gone) & set(kept.twin.ids())
    # Every remaining object keeps exactly its own surfaces and volume.
    before = solid_volumes(model)
    after = solid_volumes(kept)
    assert after == pytest.approx({k: v for k, v in before.items() if k not in gone})
    for oid in kept.feature_ids[:50]:
        f0, f1 = model.feature_ids.index(oid), kept.feature_ids.index(oid)
        assert (model.surf_feature == f0).sum() == (kept.surf_feature == f1).sum()
    assert math.isclose(sum(1 for _ in kept.twin), sum(1 for _ in model.twin) - 3) and json.dumps(
        kept.group_type[:1]
    ) == json.dumps(model.group_type[:1])

"""Networks end to end: `twin ingest` places a real network on a real city, the API answers
graph queries over it, and the scene draws pipes and buildings in one valid GLB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from glbdecode import Glb
from typer.testing import CliRunner

from ingest.networks.epanet import read_epanet
from twin.query import ObjectQuery
from viewer.app import create_app
from viewer.bootstrap import bootstrap
from viewer.cli import DEMO_DIR, app
from viewer.settings import Settings

DELFT = DEMO_DIR / "delft.city.json"
NET3 = DEMO_DIR / "net3.inp"
POWER = DEMO_DIR / "mv_oberrhein.json"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('net') / 'twin.db'}"
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(DELFT), str(NET3), str(POWER), "--fit", "--db", url])
    assert res.exit_code == 0, res.output
    assert "network 'water' (water) 97 nodes, 119 edges" in res.output
    return url


@pytest.fixture
def client(db: str) -> Iterator[TestClient]:
    services = bootstrap(Settings(db=db))
    with TestClient(create_app(services), raise_server_exceptions=False) as c:
        yield c
    services.store.close()


def test_networks_listed_with_counts_and_placed_on_the_city(client: TestClient) -> None:
    nets = {n["id"]: n for n in client.get("/api/networks").json()}
    assert set(nets) == {"water", "power"}
    ref = read_epanet(NET3)
    water = nets["water"]
    assert (water["nodes"], water["edges"]) == (ref.n_nodes, ref.n_edges)
    assert water["kind"] == "water" and water["attributes"]["stand_in"] is True
    assert sorted(water["sources"]) == sorted(ref.sources)
    # Placed inside Delft's extent (WGS84), in the city's CRS.
    city = client.get("/api/objects", params={"type": "Building", "limit": 1000}).json()
    lons = [o["geometry"]["centroid_wgs84"][0] for o in city["items"]]
    lats = [o["geometry"]["centroid_wgs84"][1] for o in city["items"]]
    w = water["bbox_wgs84"]
    assert min(lons) - 0.01 < w[0] < w[3] < max(lons) + 0.01
    assert min(lats) - 0.01 < w[1] < w[4] < max(lats) + 0.01
    assert water["crs"] == "EPSG:7415"
    assert water["buildings_served"] == len(city["items"]) > 0


def test_network_as_geojson(client: TestClient) -> None:
    r = client.get("/api/networks/water")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    ref = read_epanet(NET3)
    kinds = [f["geometry"]["type"] for f in fc["features"]]
    assert kinds.count("Point") == ref.n_nodes and kinds.count("LineString") == ref.n_edges
    pipe = next(f for f in fc["features"] if f["id"] == "net:water:P-101")
    assert pipe["properties"]["type"] == "WaterPipe"
    assert pipe["properties"]["diameter"] == pytest.approx(
        ref.edge("net:water:P-101")[2]["attributes"]["diameter"]
    )
    for lon, lat, *_ in pipe["geometry"]["coordinates"]:
        assert 4.3 < lon < 4.4 and 51.9 < lat < 52.1


def test_shortest_path_equals_networkx(client: TestClient) -> None:
    ref = read_epanet(NET3)
    und = nx.Graph()
    for u, v, d in ref.graph.edges(data=True):
        w = d["attributes"]["length"]
        if not und.has_edge(u, v) or und[u][v]["w"] > w:
            und.add_edge(u, v, w=w)
    a, b = "net:water:R-River", "net:water:J-50"
    want = nx.shortest_path_length(und, a, b, weight="w")
    r = client.get("/api/networks/water/path", params={"from": a, "to": b})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["nodes"][0] == a and body["nodes"][-1] == b
    assert len(body["edges"]) == len(body["nodes"]) - 1
    assert body["length"] == pytest.approx(want)


def test_impact_of_the_most_critical_pipe(client: TestClient) -> None:
    ranked = client.get("/api/networks/water/criticality", params={"top": 5}).json()
    top = ranked[0]
    assert top["buildings"] >= 1
    r = client.post("/api/networks/water/impact", json={"failed": [top["id"]]})
    assert r.status_code == 200, r.text
    impact = r.json()
    assert impact["counts"]["buildings"] == top["buildings"] == len(impact["buildings"])
    cut = set(impact["nodes"]) | set(impact["failed"])
    for bid in impact["buildings"][:10]:
        obj = client.get(f"/api/objects/{bid}").json()
        served = [s for s in obj["relations"]["served_by"] if s["network"] == "water"]
        assert served and served[0]["node"] in cut


def test_network_asset_object_has_neighbours_and_served_buildings(client: TestClient) -> None:
    pipe = client.get("/api/objects/net:water:P-101").json()
    assert pipe["type"] == "WaterPipe"
    rel = pipe["relations"]
    assert rel["network"] == "water" and len(rel["neighbours"]["nodes"]) == 2
    served_node = next(
        n
        for n in client.get("/api/networks/water").json()["features"]
        if n["id"].startswith("net:water:J-")
        and client.get(f"/api/objects/{n['id']}").json()["relations"]["serves"]
    )
    node = client.get(f"/api/objects/{served_node['id']}").json()
    assert node["relations"]["serves"] and node["relations"]["source"] is False


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/api/networks/nope", None, 404),
        ("get", "/api/networks/water/path?from=net:water:J-10&to=nope", None, 404),
        ("get", "/api/networks/water/path?from=net:water:J-10", None, 422),
        ("post", "/api/networks/water/impact", {"failed": ["net:water:nope"]}, 404),
        ("post", "/api/networks/water/impact", {"failed": []}, 422),
        ("post", "/api/networks/water/impact", {"fail": 1}, 422),
        ("get", "/api/networks/water/criticality?method=magic", None, 422),
    ],
)
def test_bad_network_requests_are_json_4xx(
    client: TestClient, method: str, path: str, body: Any, status: int
) -> None:
    r = client.request(method.upper(), path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_scene_draws_networks_with_their_ids(
    client: TestClient, tmp_path: Path, gltf_validator: Any
) -> None:
    r = client.get("/api/scene.glb")
    assert r.status_code == 200
    out = tmp_path / "scene.glb"
    out.write_bytes(r.content)
    (report,) = gltf_validator.validate(out)
    assert report["errors"] == 0, [m for m in report["messages"] if m["severity"] == 0][:5]
    glb = Glb.parse(r.content)
    ids = glb.strings("id")
    assert ids is not None
    assert "net:water:P-101" in ids and any(i.startswith("net:power:") for i in ids)
    # Every network vertex's feature id names a network asset of the property table.
    n_rows, _ = glb.table()
    assert n_rows == len(ids)
    stats = client.get("/api/stats").json()
    assert stats["objects"] >= len(ids)
    assert np.unique(ids).size == len(ids)


def test_network_without_crs_needs_a_georeference(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(NET3), "--db", url])
    assert res.exit_code != 0
    assert "no CRS" in str(res.exception) or "no CRS" in res.output
    res = runner.invoke(
        app,
        [
            "ingest",
            str(NET3),
            "--georef",
            "origin=85000,447000;scale=0.3;crs=EPSG:28992",
            "--db",
            url,
        ],
    )
    assert res.exit_code == 0, res.output
    services = bootstrap(Settings(db=url))
    try:
        (net,) = services.networks.all()
        assert net.crs == "EPSG:28992" and net.attributes["placed"] is True
        x0, y0, *_ = net.bbox() or ()
        assert 80_000 < x0 < 90_000 and 440_000 < y0 < 450_000
    finally:
        services.store.close()


def test_malformed_network_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    bad = tmp_path / "bad.inp"
    bad.write_text("[JUNCTIONS]\n1 10\n[PIPES]\nP1 1 2 100 12 100\n")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(DELFT), "--db", url]).exit_code == 0
    services = bootstrap(Settings(db=url))
    before = services.store.stats(), [s.name for s in services.store.sources()]
    services.store.close()
    res = runner.invoke(app, ["ingest", str(bad), "--fit", "--db", url])
    assert res.exit_code != 0
    assert "line 4" in str(res.exception)
    services = bootstrap(Settings(db=url))
    try:
        assert (services.store.stats(), [s.name for s in services.store.sources()]) == before
    finally:
        services.store.close()


def test_helsinki_demo_has_real_colocated_buildings_streets_and_pipes(tmp_path: Path) -> None:
    pytest.importorskip("osmium", reason="the osm extra (pyosmium) is not installed")
    db = tmp_path / "h.db"
    res = CliRunner().invoke(app, ["demo", "--city", "helsinki", "--no-serve", "--db", str(db)])
    assert res.exit_code == 0, res.output
    services = bootstrap(Settings(db=f"sqlite:///{db}"))
    try:
        kinds = {n.id: n for n in services.networks.all()}
        assert {"road", "water"} <= set(kinds)
        assert not kinds["water"].attributes.get("stand_in")
        counts = services.store.counts_by_type()
        assert counts.get("Building", 0) > 400
        # Streets and buildings overlap: the road network's extent lies in the city's.
        frame_lo = np.array([np.inf, np.inf])
        frame_hi = -frame_lo
        for o in services.store.query_objects(ObjectQuery(types=("Building",), limit=1000)).items:
            assert o.geometry is not None
            frame_lo = np.minimum(frame_lo, o.geometry.bbox[:2])
            frame_hi = np.maximum(frame_hi, o.geometry.bbox[3:5])
        road = kinds["road"].bbox()
        assert road is not None
        overlap_x = min(road[3], frame_hi[0]) - max(road[0], frame_lo[0])
        overlap_y = min(road[4], frame_hi[1]) - max(road[1], frame_lo[1])
        assert overlap_x > 500 and overlap_y > 500
    finally:
        services.store.close()


def test_osm_buildings_export_to_valid_cityjson(tmp_path: Path) -> None:
    pytest.importorskip("osmium", reason="the osm extra (pyosmium) is not installed")
    from ingest.cityjson import load_cityjson
    from ingest.validate import validate_path

    out = tmp_path / "helsinki.city.json"
    res = CliRunner().invoke(
        app, ["osm-buildings", str(DEMO_DIR / "helsinki_center.osm.pbf"), "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    model = load_cityjson(out)
    n = sum(1 for o in model.twin if o.type == "Building")
    assert f"{n:,} LoD1 buildings" in res.output and n > 400
    report = validate_path(out)
    assert report.errors == []

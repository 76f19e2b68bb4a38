"""GeoJSON and GeoPackage network readers against a real grid (pandapower's MV Oberrhein).

The inputs are converted from the shared pandapower JSON with plain ``json``/``pandas``
(its ``line.geo`` holds WGS84 GeoJSON LineStrings), then written as GeoJSON, as a
GeoPackage by a minimal writer here (sqlite3 + GeoPackage header + WKB, big- and
little-endian) and, when available, by GDAL through pyogrio as an independent writer.
Expected counts and lengths come from the pandapower tables, not from the reader.
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.networks import read_network
from ingest.networks.geojson import decode_gpkg_geometry, read_geojson, read_gpkg
from twin.errors import IngestError
from twin.network import Network

# -- the real grid --------------------------------------------------------------------


def _frame(obj: dict[str, Any], table: str) -> pd.DataFrame:
    return pd.read_json(io.StringIO(obj[table]["_object"]), orient="split")


@pytest.fixture(scope="module")
def oberrhein(shared_data: Path) -> dict[str, pd.DataFrame]:
    doc = json.loads((shared_data / "networks/pandapower/mv_oberrhein.json").read_text())
    obj = doc["_object"]
    return {"line": _frame(obj, "line"), "bus": _frame(obj, "bus")}


def _lines(grid: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """Each line with geometry: name, pandapower index, length_km, lon/lat coordinates."""
    out = []
    for idx, row in grid["line"].iterrows():
        geo = row["geo"]
        if not isinstance(geo, str):
            continue
        g = json.loads(geo)
        assert g["type"] == "LineString"
        out.append(
            {
                "name": row["name"],
                "index": int(idx),
                "length_km": float(row["length_km"]),
                "std_type": row["std_type"],
                "coords": g["coordinates"],
            }
        )
    return out


def _write_geojson(path: Path, lines: list[dict[str, Any]], **members: Any) -> Path:
    feats = [
        {
            "type": "Feature",
            "id": ln["name"],
            "geometry": {"type": "LineString", "coordinates": ln["coords"]},
            "properties": {"length_km": ln["length_km"], "std_type": ln["std_type"]},
        }
        for ln in lines
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", **members, "features": feats}))
    return path


@pytest.fixture(scope="module")
def grid_geojson(oberrhein: dict[str, pd.DataFrame], tmp_path_factory: Any) -> Path:
    path = tmp_path_factory.mktemp("geojson") / "oberrhein.geojson"
    return _write_geojson(path, _lines(oberrhein))


def test_real_grid_from_geojson(oberrhein: dict[str, pd.DataFrame], grid_geojson: Path) -> None:
    lines = _lines(oberrhein)
    buses_with_geo = int(oberrhein["bus"]["geo"].notna().sum())
    assert len(lines) == 181 and buses_with_geo == 179  # SOURCES.md: 179 buses/181 lines
    net = read_geojson(grid_geojson, kind="power")
    assert net.id == "power" and net.kind == "power"
    # Oberrhein is at ~7.8 E, 48.4 N: UTM zone 32 north.
    assert net.crs == "EPSG:32632"
    assert net.n_edges == len(lines)
    # Line endpoints sit on buses; buses only joined by transformers/switches are not
    # line ends, so a few buses have no node.
    line_buses = set(oberrhein["line"]["from_bus"]) | set(oberrhein["line"]["to_bus"])
    assert 0.9 * len(line_buses) <= net.n_nodes <= buses_with_geo
    comps = sorted(nx.connected_components(nx.Graph(net.undirected())), key=len)
    assert len(comps[-1]) >= 0.9 * net.n_nodes
    ratios = []
    for ln in lines:
        _u, _v, d = net.edge(f"net:power:{ln['name']}")
        assert d["type"] == "Line"
        assert d["attributes"]["std_type"] == ln["std_type"]
        ratios.append(d["attributes"]["length"] / (ln["length_km"] * 1000))
    assert 0.5 <= float(np.median(ratios)) <= 2.0
    # Metric coordinates: UTM eastings/northings, not degrees.
    bbox = net.bbox()
    assert bbox is not None and 3e5 < bbox[0] < 5e5 and 5.3e6 < bbox[1] < 5.4e6
    assert net.attributes["source_crs"] == "EPSG:4326"
    assert {d["type"] for _, d in net.graph.nodes(data=True)} == {"Junction"}


def test_read_network_detects_geojson(grid_geojson: Path) -> None:
    (net,) = read_network(grid_geojson, kind="power")
    assert net.n_edges == 181


def test_node_positions_match_buses(oberrhein: dict[str, pd.DataFrame], grid_geojson: Path) -> None:
    """Line ends land on their pandapower buses (projected independently).

    One line of the real file (a 72 m offset) does not end at its bus: allow 1%.
    """
    from pyproj import Transformer

    net = read_geojson(grid_geojson, kind="power")
    tr = Transformer.from_crs(4326, 32632, always_xy=True)
    bus_xy = {}
    for idx, row in oberrhein["bus"].iterrows():
        if isinstance(row["geo"], str):
            lon, lat = json.loads(row["geo"])["coordinates"]
            bus_xy[int(idx)] = np.array(tr.transform(lon, lat))
    line = oberrhein["line"]
    checked = near = 0
    for ln in _lines(oberrhein):
        u, v, _ = net.edge(f"net:power:{ln['name']}")
        fb, tb = (int(line.loc[ln["index"], c]) for c in ("from_bus", "to_bus"))
        ends = {tuple(np.round(net.node(n)["xyz"][:2], 3)) for n in (u, v)}
        for bus in (fb, tb):
            d = min(np.hypot(*(np.array(e) - bus_xy[bus])) for e in ends)
            near += bool(d < 1.0)
            checked += 1
    assert checked == 2 * 181
    assert near >= 0.99 * checked


# -- GeoPackage: a minimal writer (GeoPackage 1.3 §2.1, WKB OGC 06-103r4 §8) -------------


def _wkb_line(coords: Sequence[Sequence[float]], *, big: bool = False, z: bool = False) -> bytes:
    bo = ">" if big else "<"
    dims = 3 if z else 2
    head = struct.pack(f"{bo}BI", 0 if big else 1, 1002 if z else 2)
    body = struct.pack(f"{bo}I", len(coords))
    for c in coords:
        vals = [*c[:2], c[2] if len(c) > 2 else 0.0][:dims]
        body += struct.pack(f"{bo}{dims}d", *vals)
    return head + body


def _gp(wkb: bytes, srs: int, coords: Sequence[Sequence[float]], *, envelope: bool) -> bytes:
    arr = np.asarray(coords, dtype=np.float64)
    flags = 0b1 | ((0b001 << 1) if envelope else 0)  # little-endian header, xy envelope
    head = b"GP" + bytes([0, flags]) + struct.pack("<i", srs)
    if envelope:
        head += struct.pack(
            "<4d", arr[:, 0].min(), arr[:, 0].max(), arr[:, 1].min(), arr[:, 1].max()
        )
    return head + wkb


def _write_gpkg(path: Path, lines: list[dict[str, Any]], *, srs: int = 4326) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        PRAGMA application_id = 1196444487;
        PRAGMA user_version = 10300;
        CREATE TABLE gpkg_spatial_ref_sys (
            srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT NOT NULL,
            organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL,
            description TEXT);
        CREATE TABLE gpkg_contents (
            table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT,
            description TEXT DEFAULT '', last_change DATETIME, min_x DOUBLE, min_y DOUBLE,
            max_x DOUBLE, max_y DOUBLE, srs_id INTEGER);
        CREATE TABLE gpkg_geometry_columns (
            table_name TEXT NOT NULL, column_name TEXT NOT NULL,
            geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL,
            m TINYINT NOT NULL, PRIMARY KEY (table_name, column_name));
        CREATE TABLE lines (
            fid INTEGER PRIMARY KEY AUTOINCREMENT, geom LINESTRING, id TEXT,
            length_km REAL, std_type TEXT);
        """
    )
    conn.execute(
        "INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, 'EPSG', ?, 'undefined', NULL)",
        (f"EPSG:{srs}", srs, srs),
    )
    conn.execute(
        "INSERT INTO gpkg_contents (table_name, data_type, identifier, srs_id) "
        "VALUES ('lines', 'features', 'lines', ?)",
        (srs,),
    )
    conn.execute(
        "INSERT INTO gpkg_geometry_columns VALUES ('lines', 'geom', 'LINESTRING', ?, 0, 0)", (srs,)
    )
    for k, ln in enumerate(lines):
        # Alternate byte orders and envelopes so both decoder paths see real data.
        wkb = _wkb_line(ln["coords"], big=k % 2 == 1)
        blob = _gp(wkb, srs, ln["coords"], envelope=k % 3 != 0)
        conn.execute(
            "INSERT INTO lines (geom, id, length_km, std_type) VALUES (?, ?, ?, ?)",
            (blob, ln["name"], ln["length_km"], ln["std_type"]),
        )
    conn.commit()
    conn.close()
    return path


def _shape(net: Network) -> set[tuple[str, tuple[float, ...], tuple[float, ...]]]:
    """Edge id with its end node positions (rounded to 1 cm), direction-free."""
    out = set()
    for u, v, k in net.graph.edges(keys=True):
        a = tuple(np.round(net.node(u)["xyz"], 2).tolist())
        b = tuple(np.round(net.node(v)["xyz"], 2).tolist())
        out.add((k, *sorted([a, b])))
    return out


def test_gpkg_matches_geojson(
    oberrhein: dict[str, pd.DataFrame], grid_geojson: Path, tmp_path: Path
) -> None:
    lines = _lines(oberrhein)
    gpkg = _write_gpkg(tmp_path / "oberrhein.gpkg", lines)
    a = read_geojson(grid_geojson, kind="power")
    b = read_gpkg(gpkg, kind="power")
    assert b.crs == a.crs == "EPSG:32632"
    assert (b.n_nodes, b.n_edges) == (a.n_nodes, a.n_edges)
    assert _shape(a) == _shape(b)
    _u, _v, d = b.edge("net:power:Line 0")
    assert d["attributes"]["length_km"] == pytest.approx(lines[0]["length_km"])
    assert (read_network(gpkg, kind="power")[0]).n_edges == len(lines)


def test_gpkg_written_by_gdal(
    oberrhein: dict[str, pd.DataFrame], grid_geojson: Path, tmp_path: Path
) -> None:
    """pyogrio/GDAL as an independent GeoPackage writer (its own header and WKB)."""
    pyogrio_raw = pytest.importorskip("pyogrio.raw")
    from pyproj import CRS

    lines = _lines(oberrhein)
    geoms = np.array([_wkb_line(ln["coords"]) for ln in lines], dtype=object)
    path = tmp_path / "gdal.gpkg"
    pyogrio_raw.write(
        path,
        geoms,
        [
            np.array([ln["name"] for ln in lines], dtype=object),
            np.array([ln["length_km"] for ln in lines]),
        ],
        ["id", "length_km"],
        layer="mv_lines",
        driver="GPKG",
        geometry_type="LineString",
        crs=CRS.from_epsg(4326).to_wkt(),
    )
    a = read_geojson(grid_geojson, kind="power")
    b = read_gpkg(path, kind="power")
    assert b.crs == "EPSG:32632"
    assert _shape(a) == _shape(b)
    _u, _v, d = b.edge(f"net:power:{lines[5]['name']}")
    assert d["attributes"]["length_km"] == pytest.approx(lines[5]["length_km"])


def test_gpkg_3d_projected_by_gdal(tmp_path: Path) -> None:
    """A projected 3D layer (ISO WKB LineString Z) plus a point layer, written by GDAL."""
    pyogrio_raw = pytest.importorskip("pyogrio.raw")
    from pyproj import CRS

    line = [(85000.0, 446000.0, -1.5), (85010.0, 446000.0, -1.5), (85010.0, 446020.0, -2.0)]
    path = tmp_path / "pipes3d.gpkg"
    pyogrio_raw.write(
        path,
        np.array([_wkb_line(line, z=True)], dtype=object),
        [np.array(["P1"], dtype=object), np.array([200.0])],
        ["id", "diameter"],
        layer="pipes",
        driver="GPKG",
        geometry_type="LineString Z",
        crs=CRS.from_epsg(28992).to_wkt(),
    )
    valve = struct.pack("<BI3d", 1, 1001, 85000.2, 446000.1, -1.5)
    pyogrio_raw.write(
        path,
        np.array([valve], dtype=object),
        [np.array(["V1"], dtype=object), np.array(["Valve"], dtype=object)],
        ["id", "type"],
        layer="valves",
        driver="GPKG",
        geometry_type="Point Z",
        crs=CRS.from_epsg(28992).to_wkt(),
        append=True,
    )
    net = read_gpkg(path, kind="water")
    assert net.crs == "EPSG:28992"
    assert net.n_nodes == 2 and net.n_edges == 1
    u, v, d = net.edge("net:water:P1")
    assert u == "net:water:V1" and net.node(u)["type"] == "Valve"
    assert net.node(v)["type"] == "Junction"
    assert d["attributes"]["diameter"] == pytest.approx(0.2)
    assert d["attributes"]["diameter_mm"] == 200.0
    assert [p[2] for p in d["coords"]] == [-1.5, -1.5, -2.0]
    # The pipe's first end snapped onto the valve 0.22 m away.
    assert d["coords"][0][:2] == (85000.2, 446000.1)
    length = math.hypot(9.8, 0.1) + math.hypot(20, 0.5)
    assert d["attributes"]["length"] == pytest.approx(length)
    only = read_gpkg(path, layer="valves", kind="water")
    assert only.n_nodes == 1 and only.n_edges == 0


# -- decode_gpkg_geometry -------------------------------------------------------------


def test_decode_variants() -> None:
    pts = [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)]
    iso_z = _gp(_wkb_line(pts, z=True), 0, pts, envelope=False)
    assert decode_gpkg_geometry(iso_z) == ("LineString", [list(p) for p in pts])
    # EWKB: Z flag in the high bit, and an SRID.
    ewkb = struct.pack("<BIi", 1, 0xA000_0001, 4326) + struct.pack("<3d", 7, 8, 9)
    assert decode_gpkg_geometry(_gp(ewkb, 4326, [(7, 8)], envelope=True)) == (
        "Point",
        [7.0, 8.0, 9.0],
    )
    # ISO ZM (3000 + 5): M dropped; big-endian parts inside a little-endian collection.
    part = struct.pack(">BII", 0, 3002, 1) + struct.pack(">4d", 1, 2, 3, 99)
    multi = struct.pack("<BII", 1, 3005, 1) + part
    assert decode_gpkg_geometry(_gp(multi, 0, [(1, 2)], envelope=False)) == (
        "MultiLineString",
        [[[1.0, 2.0, 3.0]]],
    )
    mp = struct.pack("<BII", 1, 4, 2) + b"".join(
        struct.pack("<BI2d", 1, 1, x, x + 1) for x in (10.0, 20.0)
    )
    assert decode_gpkg_geometry(_gp(mp, 0, [(0, 0)], envelope=False)) == (
        "MultiPoint",
        [[10.0, 11.0], [20.0, 21.0]],
    )
    empty = b"GP\x00" + bytes([0b10001]) + struct.pack("<i", 0)
    empty += struct.pack("<BI2d", 1, 1, math.nan, math.nan)
    assert decode_gpkg_geometry(empty) == ("Point", [])


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"XX\x00\x01\x00\x00\x00\x00", "magic"),
        (b"GP\x00\x01\x00\x00\x00\x00", "truncated"),
        (b"GP\x00\x0f\x00\x00\x00\x00", "envelope"),
        (b"GP\x00\x01\x00\x00\x00\x00\x01\x09\x00\x00\x00", "unsupported WKB"),
        (b"GP\x00\x01\x00\x00\x00\x00\x01\x02\x00\x00\x00\xff\xff\xff\x7f", "exceeds"),
    ],
)
def test_decode_rejects(blob: bytes, message: str) -> None:
    with pytest.raises(IngestError, match=message):
        decode_gpkg_geometry(blob)


@given(st.binary(max_size=80))
@settings(max_examples=300, deadline=None)
def test_decode_random_bytes(tail: bytes) -> None:
    for head in (b"GP\x00\x01\x00\x00\x00\x00", b"GP\x00\x03\x00\x00\x00\x00" + bytes(32), b""):
        try:
            gtype, _ = decode_gpkg_geometry(head + tail)
        except IngestError:
            continue
        assert gtype in {
            "Point",
            "LineString",
            "Polygon",
            "MultiPoint",
            "MultiLineString",
            "MultiPolygon",
            "GeometryCollection",
        }


def test_gpkg_not_a_geopackage(tmp_path: Path) -> None:
    bad = tmp_path / "plain.gpkg"
    conn = sqlite3.connect(bad)
    conn.execute("CREATE TABLE t (a)")
    conn.commit()
    conn.close()
    with pytest.raises(IngestError, match="not a GeoPackage"):
        read_gpkg(bad)
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"this is not sqlite at all" * 10)
    with pytest.raises(IngestError):
        read_gpkg(junk)
    with pytest.raises(IngestError, match="no such file"):
        read_gpkg(tmp_path / "missing.gpkg")


def test_gpkg_bad_geometry_named(tmp_path: Path) -> None:
    path = _write_gpkg(
        tmp_path / "g.gpkg",
        [{"name": "L1", "length_km": 1.0, "std_type": "x", "coords": [(0, 0), (1, 1)]}],
    )
    conn = sqlite3.connect(path)
    conn.execute("UPDATE lines SET geom = ? WHERE id = 'L1'", (b"GP\x00\x01\x00\x00",))
    conn.commit()
    conn.close()
    with pytest.raises(IngestError) as err:
        read_gpkg(path)
    assert err.value.where == "layer 'lines' feature 1 (id 'L1')"
    with pytest.raises(IngestError, match="no feature layer 'nope'"):
        read_gpkg(path, layer="nope")


# -- snapping, ids, attributes, CRS -----------------------------------------------------


def _fc(features: list[dict[str, Any]], **members: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", **members, "features": features}


def _line(coords: list[list[float]], fid: Any = None, **props: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": coords},
        "properties": props,
    }
    if fid is not None:
        f["id"] = fid
    return f


def _point(xy: list[float], fid: Any = None, **props: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": xy},
        "properties": props,
    }
    if fid is not None:
        f["id"] = fid
    return f


RD = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::28992"}}


def _write(tmp_path: Path, doc: Any, name: str = "n.geojson") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def test_snapping_tolerance(tmp_path: Path) -> None:
    x0, y0 = 85000.0, 446000.0
    doc = _fc(
        [
            _line([[x0, y0], [x0 + 10, y0]], "a"),
            _line([[x0 + 10.3, y0], [x0 + 20, y0]], "b"),
        ],
        crs=RD,
    )
    path = _write(tmp_path, doc)
    joined = read_geojson(path, tolerance=0.5)
    assert joined.crs == "EPSG:28992"
    assert joined.n_nodes == 3
    _, va, _ = joined.edge("net:pipeline:a")
    ub, _, db = joined.edge("net:pipeline:b")
    assert va == ub
    # The snapped end takes the node's position (the first end seen).
    assert db["coords"][0][:2] == (x0 + 10, y0)
    apart = read_geojson(path, tolerance=0.1)
    assert apart.n_nodes == 4
    assert apart.edge("net:pipeline:a")[1] != apart.edge("net:pipeline:b")[0]


def test_points_and_attributes(tmp_path: Path) -> None:
    doc = _fc(
        [
            _point([100.0, 100.0, 2.0], "R1", type="Reservoir", name="Hill"),
            _point([200.0, 100.0], None, id="H7", kind="Hydrant"),
            _point([300.0, 300.0], None),
            _line([[100.2, 100.1, 2.0], [200.0, 100.3, 1.0]], "P1", diameter=150, depth=1.2),
            _line([[200.0, 100.0], [250.0, 150.0]], None, id=42, diameter_mm="300"),
            {
                "type": "Feature",
                "id": "M",
                "geometry": {
                    "type": "MultiLineString",
                    "coordinates": [[[250.0, 150.0], [260.0, 160.0]], [[260.0, 160.0], [270, 170]]],
                },
                "properties": {"diameter": 0.4, "asset_type": "Main", "depth": "0.8"},
            },
            {"type": "Feature", "geometry": None, "properties": {}},
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 1], [0, 0]]]},
                "properties": {},
            },
        ],
        crs=RD,
        kind="water",
    )
    net = read_geojson(_write(tmp_path, doc), network_id="city-water")
    assert net.id == "city-water" and net.kind == "water"
    assert net.attributes["skipped_features"] == 2
    r1 = net.node("net:city-water:R1")
    assert r1["type"] == "Reservoir" and r1["xyz"] == (100.0, 100.0, 2.0)
    assert r1["attributes"]["name"] == "Hill"
    assert net.sources == {"net:city-water:R1"}
    assert net.node("net:city-water:H7")["type"] == "Hydrant"
    assert net.node("net:city-water:f2")["type"] == "Node"
    u, v, p1 = net.edge("net:city-water:P1")
    assert (u, v) == ("net:city-water:R1", "net:city-water:H7")
    assert p1["type"] == "Pipe"
    assert p1["attributes"]["diameter"] == pytest.approx(0.15)
    assert p1["attributes"]["diameter_mm"] == 150
    assert p1["attributes"]["depth"] == 1.2
    assert [c[2] for c in p1["coords"]] == [2.0, 1.0]
    _, v42, e42 = net.edge("net:city-water:42")
    assert e42["attributes"]["diameter"] == pytest.approx(0.3)
    assert net.node(v42)["type"] == "Junction"
    m0 = net.edge("net:city-water:M-0")
    m1 = net.edge("net:city-water:M-1")
    assert m0[2]["type"] == "Main" and m0[1] == m1[0]
    assert m0[2]["attributes"]["depth"] == 0.8 and m0[2]["attributes"]["diameter"] == 0.4
    assert m0[0] == v42  # the MultiLineString starts where edge 42 ends
    assert net.n_edges == 4
    # 3 point nodes + junctions at (250,150), (260,160), (270,170).
    assert net.n_nodes == 6


def test_id_property_and_power_defaults(tmp_path: Path) -> None:
    doc = _fc(
        [
            _line([[0.0, 0.0], [1.0, 0.0]], "x", ref="L-1"),
            _line([[1.0, 0.0], [2.0, 0.0]], "y"),
        ],
        crs={"type": "name", "properties": {"name": "EPSG:25832"}},
    )
    net = read_geojson(_write(tmp_path, doc), kind="power", id_property="ref")
    assert net.crs == "EPSG:25832"
    assert set(net._edges) == {"net:power:L-1", "net:power:y"}
    assert net.edge("net:power:L-1")[2]["type"] == "Line"
    assert {net.node(n)["type"] for n in net.graph} == {"Junction"}


def test_southern_hemisphere_utm(tmp_path: Path) -> None:
    # Sydney (151.2 E, 33.9 S): UTM zone 56 south.
    doc = _fc([_line([[151.20, -33.87], [151.21, -33.87]], "s")])
    net = read_geojson(_write(tmp_path, doc), kind="road")
    assert net.crs == "EPSG:32756"
    _, _, d = net.edge("net:road:s")
    assert d["type"] == "Road"
    # 0.01 degree of longitude at 33.87 S is ~924 m.
    assert d["attributes"]["length"] == pytest.approx(924, rel=0.01)


# -- malformed input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "where", "message"),
    [
        ({"type": "Feature"}, "", "not a GeoJSON FeatureCollection"),
        ([1, 2], "", "not a GeoJSON FeatureCollection"),
        ({"type": "FeatureCollection", "features": {}}, "", "must be a list"),
        (_fc([_line([[0, 0], [1, 1]]), 5]), "feature 1", "must be an object"),
        (
            _fc([_line([[0, 0], [1, 1]]), _line([[0, 0]], "L2")]),
            "feature 1 (id 'L2')",
            "at least 2",
        ),
        (_fc([_line([[0, 0], [1, "a"]], "L1")]), "feature 0 (id 'L1')", "non-numeric"),
        (_fc([_line([[0, 0], [1]])]), "feature 0", "expected [x, y]"),
        (_fc([_line([[0, 0], [1, True]])]), "feature 0", "non-numeric"),
        (_fc([_point("x", "P")]), "feature 0 (id 'P')", "expected [x, y]"),
        (
            _fc([{"type": "Feature", "geometry": {"type": "Curve", "coordinates": []}}]),
            "feature 0",
            "unknown geometry type",
        ),
        (
            _fc([_line([[0, 0], [1, 1]], "d"), _line([[1, 1], [2, 2]], "d")]),
            "feature 1 (id 'd')",
            "duplicate",
        ),
        (_fc([_line([[500000, 0], [1, 1]])]), "feature 0", "not lon/lat"),
        (_fc([], crs={"type": "link"}), "crs", "unsupported 'crs'"),
        (
            _fc([], crs={"type": "name", "properties": {"name": "EPSG:999999"}}),
            "crs",
            "unknown CRS",
        ),
    ],
)
def test_malformed(tmp_path: Path, doc: Any, where: str, message: str) -> None:
    with pytest.raises(IngestError) as err:
        read_geojson(_write(tmp_path, doc))
    assert err.value.where == where
    assert message in err.value.problem
    assert str(tmp_path) in str(err.value)


def test_unreadable(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="cannot read"):
        read_geojson(tmp_path / "missing.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(IngestError, match="not valid JSON"):
        read_geojson(bad)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=20,
)
_coord = st.one_of(
    st.lists(st.floats(-200, 200), min_size=0, max_size=4),
    _json,
)
_geometry = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["Point", "LineString", "MultiLineString", "MultiPoint", "GeometryCollection", "X"]
        ),
        "coordinates": st.one_of(
            _coord, st.lists(_coord, max_size=4), st.lists(st.lists(_coord, max_size=3), max_size=3)
        ),
    }
)
_feature = st.one_of(
    _json,
    st.fixed_dictionaries(
        {
            "type": st.just("Feature"),
            "id": _json,
            "geometry": st.one_of(st.none(), _geometry, _json),
            "properties": st.one_of(
                st.none(),
                _json,
                st.dictionaries(
                    st.sampled_from(["id", "type", "diameter", "depth", "width"]), _json
                ),
            ),
        }
    ),
)
_document = st.one_of(
    _json,
    st.fixed_dictionaries(
        {
            "type": st.just("FeatureCollection"),
            "features": st.one_of(st.lists(_feature, max_size=5), _json),
        },
        optional={"crs": _json, "kind": _json},
    ),
)


@given(doc=_document)
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_documents_only_ingest_error(tmp_path: Path, doc: Any) -> None:
    path = _write(tmp_path, doc, "fuzz.geojson")
    try:
        net = read_geojson(path, tolerance=0.5)
    except IngestError as exc:
        assert exc.problem
        return
    assert net.n_edges + net.n_nodes >= 0
    for _u, _v, d in net.graph.edges(data=True):
        assert np.isfinite(np.asarray(d["coords"])).all()

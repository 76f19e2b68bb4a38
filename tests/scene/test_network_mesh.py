"""Network tubes, ribbons and node markers, alone and in a GLB next to real buildings.

Meshes are checked by trimesh (closed, outward, volume of an n-gon prism), the GLB by
the Khronos glTF-Validator and by our independent chunk decoder (tests/glbdecode.py):
every network vertex must map, through its feature id and the property table, to the
asset whose polyline it surrounds.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import trimesh
from glbdecode import Glb

from ingest.cityjson import parse_cityjson
from ingest.networks.geojson import read_geojson
from scene.gltf import GlbBuilder
from scene.network import LOOKS, MeshPart, NetworkMesh, network_mesh
from twin.errors import SceneError
from twin.network import Network

OCTAGON = 8 / 2 * math.sin(2 * math.pi / 8) / math.pi  # n-gon area / circle area = 0.9003


def _water() -> Network:
    """Three pipes, one bent and one buried, plus a reservoir."""
    net = Network(id="w", kind="water", crs="EPSG:28992")
    a = net.add_node("R", "Reservoir", (0.0, 0.0, 5.0), source=True)
    b = net.add_node("J1", "Junction", (30.0, 0.0, 5.0))
    c = net.add_node("J2", "Junction", (30.0, 40.0, 5.0))
    d = net.add_node("J3", "Junction", (0.0, 40.0, 5.0), {"depth": 2.0})
    net.add_edge("P1", a, b, "Pipe", {"diameter": 0.4})
    net.add_edge(
        "P2", b, c, "Pipe", {"diameter": 0.3}, coords=[(30, 0, 5), (35, 20, 5), (30, 40, 5)]
    )
    net.add_edge("P3", c, d, "Pipe", {"diameter": 0.2, "depth": 2.0})
    net.add_edge("P4", d, a, "Pipe", {})  # no diameter: min_radius
    return net


def _part(mesh: NetworkMesh, look: str) -> MeshPart:
    (part,) = [p for p in mesh.parts if p.look == look]
    return part


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point in p (n, 3) to segment ab (3,)."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def _polyline_distance(p: np.ndarray, coords: np.ndarray) -> np.ndarray:
    return np.min(_segment_distances(p, coords), axis=0)


def _segment_distances(p: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """(segments, n) distances of the points to each segment of a polyline."""
    return np.array(
        [_point_segment_distance(p, coords[i], coords[i + 1]) for i in range(len(coords) - 1)]
    )


def _on_tube(p: np.ndarray, coords: np.ndarray, r: float, atol: float) -> bool:
    """Each point is r from some segment and nowhere closer than r to the polyline
    (at a bend, the inner vertices of one segment's prism lie inside its neighbour's)."""
    d = _segment_distances(p, coords)
    on_own = (np.abs(d - r) <= atol).any(axis=0)
    return bool(on_own.all() and (d.min(axis=0) <= r + atol).all())


def test_tube_segments_are_closed_prisms() -> None:
    net = _water()
    mesh = network_mesh(net, np.zeros(3), sides=8)
    part = _part(mesh, "water")
    assert part.color == LOOKS["water"].color
    per = 4 * 8  # two rings plus two cap rings of 8 vertices
    n_seg = 1 + 2 + 1 + 1
    assert part.positions.shape == (n_seg * per, 3)
    assert part.indices.dtype == np.uint32 and part.indices.shape == (n_seg * 28, 3)
    ids = [mesh.feature_ids[f] for f in part.feature[::per]]
    assert ids == ["net:w:P1", "net:w:P2", "net:w:P2", "net:w:P3", "net:w:P4"]
    tri_per = 28
    for k, eid in enumerate(ids):
        verts = part.positions[k * per : (k + 1) * per]
        faces = part.indices[k * tri_per : (k + 1) * tri_per].astype(np.int64) - k * per
        tm = trimesh.Trimesh(verts, faces, process=True)
        assert tm.is_watertight and tm.is_winding_consistent
        d = net.edge(eid)[2]["attributes"].get("diameter")
        r = d / 2 if d else 0.05
        seg_len = np.linalg.norm(verts[8:16].mean(axis=0) - verts[:8].mean(axis=0))
        ideal = math.pi * r * r * seg_len
        # Positive volume: faces wind outward. An octagon holds 0.9003 of the circle.
        assert tm.volume == pytest.approx(OCTAGON * ideal, rel=1e-6)
        assert abs(tm.volume - ideal) <= 0.1 * ideal
    assert np.allclose(np.linalg.norm(part.normals, axis=1), 1.0)


def test_feature_ids_map_to_their_edge() -> None:
    net = _water()
    origin = np.array([100.0, 200.0, 1.0])
    mesh = network_mesh(net, origin)
    part = _part(mesh, "water")
    for f in np.unique(part.feature):
        eid = mesh.feature_ids[f]
        _u, _v, d = net.edge(eid)
        coords = np.asarray(d["coords"]) - origin
        coords[:, 2] -= d["attributes"].get("depth", 0.0)
        r = max(d["attributes"].get("diameter", 0.0) / 2, 0.05)
        pts = part.positions[part.feature == f]
        assert _on_tube(pts, coords, r, 1e-9), eid
    # The buried pipe sits 2 m below the ground (z = 5).
    p3 = part.positions[part.feature == mesh.feature_ids.index("net:w:P3")]
    assert p3[:, 2].mean() + origin[2] == pytest.approx(3.0)


def test_node_octahedra() -> None:
    net = _water()
    mesh = network_mesh(net, np.zeros(3))
    nodes = _part(mesh, "water-node")
    assert nodes.color == LOOKS["water"].node_color
    assert mesh.feature_ids[:4] == ["net:w:R", "net:w:J1", "net:w:J2", "net:w:J3"]
    # size = max(1.5 x largest adjacent diameter, 0.3); half of it from centre to tip.
    expect = {"net:w:R": 0.6, "net:w:J1": 0.6, "net:w:J2": 0.45, "net:w:J3": 0.3}
    # Own depth wins; else the mean offset of the node's pipes (P2 at 0, P3 at -2).
    offset = {"net:w:R": 0.0, "net:w:J1": 0.0, "net:w:J2": -1.0, "net:w:J3": -2.0}
    for f, nid in enumerate(mesh.feature_ids[:4]):
        sel = nodes.feature == f
        verts = nodes.positions[sel]
        idx = np.flatnonzero(sel)
        faces = nodes.indices[np.isin(nodes.indices[:, 0], idx)].astype(np.int64) - idx[0]
        tm = trimesh.Trimesh(verts, faces, process=True)
        assert tm.is_watertight and len(tm.faces) == 8
        a = expect[nid] / 2
        assert tm.volume == pytest.approx(4 / 3 * a**3)
        centre = (verts.max(axis=0) + verts.min(axis=0)) / 2
        x, y, z = net.node(nid)["xyz"]
        assert np.allclose(centre, [x, y, z + offset[nid]])
    assert not any(
        p.look.endswith("-node") for p in network_mesh(net, np.zeros(3), nodes=False).parts
    )


def test_power_lines_overhead_and_underground() -> None:
    net = Network(id="grid", kind="power", crs="EPSG:25832")
    a = net.add_node("B0", "Bus", (0.0, 0.0, 0.0))
    b = net.add_node("B1", "Bus", (100.0, 0.0, 0.0))
    net.add_edge("L0", a, b, "Line", {"height": 12.0})
    net.add_edge("L1", a, b, "Line", {"height": 12.0, "underground": True, "depth": 1.0})
    mesh = network_mesh(net, np.zeros(3), nodes=False)
    part = _part(mesh, "power")
    for eid, z in (("net:grid:L0", 12.0), ("net:grid:L1", -1.0)):
        pts = part.positions[part.feature == mesh.feature_ids.index(eid)]
        assert pts[:, 2].mean() == pytest.approx(z)
        assert np.hypot(pts[:, 1], pts[:, 2] - z).max() == pytest.approx(0.15)  # default radius


def test_road_ribbons() -> None:
    net = Network(id="roads", kind="road", crs="EPSG:28992")
    a = net.add_node("A", "Junction", (0.0, 0.0, 1.0))
    b = net.add_node("B", "Junction", (100.0, 0.0, 1.0))
    c = net.add_node("C", "Junction", (100.0, 100.0, 1.0))
    net.add_edge("R1", a, b, "Road", {"width": 8.0})
    # A right-angle bend with a repeated vertex (common in OSM-derived data).
    net.add_edge(
        "R2",
        b,
        c,
        "Road",
        {},
        coords=[(100, 0, 1), (100, 50, 1), (100, 50, 1), (50, 50, 1), (100, 100, 1)],
    )
    mesh = network_mesh(net, np.zeros(3))
    assert [p.look for p in mesh.parts] == ["road"]  # no node markers on roads
    assert mesh.feature_ids == ["net:roads:R1", "net:roads:R2"]
    part = mesh.parts[0]
    assert np.allclose(part.normals, [0, 0, 1])
    assert np.allclose(part.positions[:, 2], 1.05)  # lifted 5 cm above the road's z
    r1 = part.positions[part.feature == 0]
    assert sorted(set(np.round(r1[:, 1], 9))) == [-4.0, 4.0]  # width 8
    # Left/right vertex pairs are 2i, 2i+1: width (6 m default) kept through the mitre.
    r2 = part.positions[part.feature == 1]
    gap = np.linalg.norm(r2[0::2] - r2[1::2], axis=1)
    assert gap.min() == pytest.approx(6.0)
    assert gap.max() <= 6.0 * 3.0 + 1e-9
    tri = part.positions[part.indices.astype(np.int64)]
    up = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]
    assert (up > 0).all()  # counter-clockwise from above
    # Triangles: R1 one quad; R2 three segments after dropping the repeated vertex.
    assert part.indices.shape[0] == 2 * (1 + 3)
    area = trimesh.Trimesh(part.positions, part.indices, process=False).area
    assert area > 8 * 100 + 6 * (50 + 50 + math.hypot(50, 50)) * 0.9


def test_road_graph_speed() -> None:
    """A city-sized road graph (50 000 segments) meshes in well under a second."""
    n = 121
    net = Network(id="city", kind="road")
    ids = [
        [net.add_node(f"{i},{j}", "Junction", (i * 80.0, j * 80.0, 0.0)) for j in range(n)]
        for i in range(n)
    ]
    k = 0
    for i in range(n):
        for j in range(n - 1):
            bend = [(i * 80.0 + 3, j * 80.0 + 30, 0.0), (i * 80.0 - 2, j * 80.0 + 50, 0.0)]
            net.add_edge(
                f"v{k}",
                ids[i][j],
                ids[i][j + 1],
                "Road",
                {},
                coords=[(i * 80.0, j * 80.0, 0), *bend, (i * 80.0, (j + 1) * 80.0, 0)],
            )
            net.add_edge(f"h{k}", ids[j][i], ids[j + 1][i], "Road", {})
            k += 1
    segments = sum(len(d["coords"]) - 1 for _, _, d in net.graph.edges(data=True))
    assert segments >= 50_000
    # Speed is measured in bench/networks.py; here: every segment became one quad.
    mesh = network_mesh(net, np.zeros(3))
    assert mesh.triangles == 2 * segments


def test_bad_arguments() -> None:
    with pytest.raises(SceneError, match="3 sides"):
        network_mesh(_water(), np.zeros(3), sides=2)
    with pytest.raises(SceneError, match="origin"):
        network_mesh(_water(), np.zeros(2))
    empty = Network(id="e", kind="gas")
    assert network_mesh(empty, np.zeros(3)).parts == []


# -- real data -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def oberrhein(shared_data: Path, tmp_path_factory: Any) -> Network:
    """The MV Oberrhein grid's lines, through GeoJSON and read_geojson."""
    doc = json.loads((shared_data / "networks/pandapower/mv_oberrhein.json").read_text())
    line = pd.read_json(io.StringIO(doc["_object"]["line"]["_object"]), orient="split")
    feats = [
        {
            "type": "Feature",
            "id": row["name"],
            "geometry": json.loads(row["geo"]),
            "properties": {"length_km": row["length_km"], "type": row["type"]},
        }
        for _, row in line.iterrows()
        if isinstance(row["geo"], str)
    ]
    path = tmp_path_factory.mktemp("net") / "oberrhein.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return read_geojson(path, kind="power")


def test_real_grid_mesh(oberrhein: Network) -> None:
    net = oberrhein
    bbox = net.bbox()
    assert bbox is not None
    origin = np.array([(bbox[0] + bbox[3]) / 2, (bbox[1] + bbox[4]) / 2, 0.0])
    mesh = network_mesh(net, origin)
    part = _part(mesh, "power")
    segments = sum(len(d["coords"]) - 1 for _, _, d in net.graph.edges(data=True))
    drawn = part.positions.shape[0] // 32
    assert segments - 5 <= drawn <= segments  # only zero-length segments are skipped
    assert len(mesh.feature_ids) == net.n_nodes + net.n_edges
    # Each vertex is 0.15 m (cable default) from its own line: the feature id is right.
    for f in np.unique(part.feature)[::7]:
        coords = np.asarray(net.edge(mesh.feature_ids[f])[2]["coords"]) - origin
        assert _on_tube(part.positions[part.feature == f], coords, 0.15, 1e-6)
    assert _part(mesh, "power-node").positions.shape[0] == 24 * net.n_nodes


# -- GLB: buildings and networks in one scene ----------------------------------------


def _city(cityjson_dir: Path) -> Any:
    path = cityjson_dir / "small" / "3dbag_b2.city.json"
    return parse_cityjson(path.read_bytes(), source=str(path), wgs84=False)


def _network_near(model: Any) -> Network:
    """A water network in the city's CRS, laid along the buildings' bbox (RD + NAP)."""
    x0, y0, _z0, x1, y1, _z1 = model.bbox()
    net = Network(id="water", kind="water", crs="EPSG:7415")
    a = net.add_node("R1", "Reservoir", (x0 - 10, y0 - 10, 0.0), source=True)
    b = net.add_node("J1", "Junction", (x1 + 10, y0 - 10, 0.0))
    c = net.add_node("J2", "Junction", (x1 + 10, y1 + 10, 0.0))
    net.add_edge("P1", a, b, "Pipe", {"diameter": 0.3, "depth": 1.2, "name": "main"})
    mid = ((x1 + 10) + 4, (y0 + y1) / 2, 0.0)
    net.add_edge(
        "P2",
        b,
        c,
        "Pipe",
        {"diameter": 0.15},
        coords=[(x1 + 10, y0 - 10, 0), mid, (x1 + 10, y1 + 10, 0)],
    )
    return net


def _roads_near(model: Any) -> Network:
    """A bent road west of the buildings, in the city's CRS."""
    x0, y0, _z0, _x1, y1, _z1 = model.bbox()
    net = Network(id="roads", kind="road", crs="EPSG:7415")
    a = net.add_node("A", "Junction", (x0 - 20, y0, 0.0))
    b = net.add_node("B", "Junction", (x0 - 20, y1, 0.0))
    bend = (x0 - 25, (y0 + y1) / 2, 0.0)
    net.add_edge(
        "W1", a, b, "Road", {"width": 7.0}, coords=[(x0 - 20, y0, 0), bend, (x0 - 20, y1, 0)]
    )
    return net


def _check_network_vertices(glb: Glb, nets: list[Network], table: dict[str, Any]) -> int:
    """Every network vertex's feature id names an asset whose geometry it surrounds."""
    ids = table["id"]
    checked = 0
    for prim in glb.primitives:
        name = glb.material_of(prim)["name"]
        if not name.startswith("network:"):
            continue
        pos = glb.to_source(glb.accessor(prim["attributes"]["POSITION"]))
        fid = glb.accessor(prim["attributes"]["_FEATURE_ID_0"]).astype(np.int64)
        for f in np.unique(fid):
            asset = ids[f]
            (net,) = [n for n in nets if asset in n]
            assert name == f"network:{net.kind}" + ("" if net.is_edge(asset) else "-node")
            pts = pos[fid == f]
            if net.kind == "road":
                coords = np.asarray(net.edge(asset)[2]["coords"], dtype=np.float64)
                half = net.edge(asset)[2]["attributes"]["width"] / 2
                plan = _polyline_distance(pts * [1, 1, 0], coords * [1, 1, 0])
                # Half the width from the centreline, more at a mitred bend; 5 cm lift.
                assert (plan >= half - 2e-3).all() and (plan <= 3 * half).all()
                assert np.allclose(pts[:, 2], coords[0, 2] + 0.05, atol=2e-3)
            elif net.is_edge(asset):
                d = net.edge(asset)[2]
                coords = np.asarray(d["coords"], dtype=np.float64)
                coords[:, 2] -= d["attributes"].get("depth", 0.0)
                r = d["attributes"]["diameter"] / 2
                # float32 local coordinates: millimetre tolerance.
                assert _on_tube(pts, coords, r, 2e-3), asset
            else:
                centre = (pts.max(axis=0) + pts.min(axis=0)) / 2
                assert np.allclose(centre[:2], net.node(asset)["xyz"][:2], atol=2e-3)
            checked += len(pts)
    return checked


def test_glb_buildings_and_network(cityjson_dir: Path, tmp_path: Path, gltf_validator: Any) -> None:
    model = _city(cityjson_dir)
    net = _network_near(model)
    roads = _roads_near(model)
    builder = GlbBuilder("city+water")
    builder.add(model)
    origin = builder.origin.copy()
    builder.add_network(net)
    builder.add_network(roads)
    assert np.array_equal(builder.origin, origin)  # the buildings' frame is kept
    out = tmp_path / "mixed.glb"
    with out.open("wb") as fh:
        stats = builder.write(fh)
    assert stats.warnings == []
    (report,) = gltf_validator.validate(out)
    assert report["errors"] == 0, [m for m in report["messages"] if m["severity"] == 0][:5]
    assert report["warnings"] == 0, [m for m in report["messages"] if m["severity"] == 1][:5]
    glb = Glb.parse(out.read_bytes())
    count, table = glb.table()
    n_b = len(model.feature_ids)
    # Road networks draw no node markers, so only their edges get rows.
    assert count == n_b + net.n_nodes + net.n_edges + roads.n_edges
    assert table["id"][:n_b] == list(model.feature_ids)
    assert table["id"][n_b:] == [*net.graph.nodes, "net:water:P1", "net:water:P2", "net:roads:W1"]
    types = dict(zip(table["id"], table["type"], strict=True))
    assert types["net:water:P1"] == "WaterPipe" and types["net:water:R1"] == "WaterReservoir"
    heights = dict(zip(table["id"], table["height"], strict=True))
    assert heights["net:water:P1"] == pytest.approx(0.3)
    names = dict(zip(table["id"], table["attr_name"], strict=True))
    assert names["net:water:P1"] == "main"
    assert types["net:roads:W1"] == "Road" and heights["net:roads:W1"] == pytest.approx(7.0)
    assert _check_network_vertices(glb, [net, roads], table) > 0
    # Building vertices keep their own feature ids (rows before the network's).
    for prim in glb.primitives:
        if not glb.material_of(prim)["name"].startswith("network:"):
            fid = glb.accessor(prim["attributes"]["_FEATURE_ID_0"])
            assert fid.max() < n_b
    # An independent loader sees the same triangle count.
    scene = trimesh.load(out, file_type="glb", force="scene")
    assert sum(len(g.faces) for g in scene.geometry.values()) == stats.triangles


def test_glb_network_only(oberrhein: Network, tmp_path: Path, gltf_validator: Any) -> None:
    builder = GlbBuilder("grid")
    builder.add_network(oberrhein)
    bbox = oberrhein.bbox()
    assert bbox is not None
    assert builder.origin is not None
    assert builder.origin[0] == pytest.approx((bbox[0] + bbox[3]) / 2)
    assert builder.crs == "EPSG:32632" and builder.epsg == 32632
    out = tmp_path / "grid.glb"
    with out.open("wb") as fh:
        builder.write(fh)
    (report,) = gltf_validator.validate(out)
    assert report["errors"] == 0, [m for m in report["messages"] if m["severity"] == 0][:5]
    glb = Glb.parse(out.read_bytes())
    count, table = glb.table()
    assert count == oberrhein.n_nodes + oberrhein.n_edges
    assert set(table["id"]) == set(oberrhein.assets())
    assert glb.doc["asset"]["extras"]["citytwin"]["epsg"] == 32632
    materials = {glb.material_of(p)["name"] for p in glb.primitives}
    assert materials == {"network:power", "network:power-node"}
    # Cable tubes: every vertex 0.15 m from its own line (float32 local: 2 mm).
    ids = table["id"]
    for prim in glb.primitives:
        if glb.material_of(prim)["name"] != "network:power":
            continue
        pos = glb.to_source(glb.accessor(prim["attributes"]["POSITION"]))
        fid = glb.accessor(prim["attributes"]["_FEATURE_ID_0"]).astype(np.int64)
        for f in np.unique(fid)[::11]:
            coords = np.asarray(oberrhein.edge(ids[f])[2]["coords"])
            assert _on_tube(pos[fid == f], coords, 0.15, 2e-3)


def test_glb_network_crs_mismatch_warns(cityjson_dir: Path) -> None:
    model = _city(cityjson_dir)
    net = _network_near(model)
    net.crs = "EPSG:28992"  # RD plan coordinates without NAP: same x/y, noted
    builder = GlbBuilder("x")
    builder.add(model)
    builder.add_network(net)
    assert builder.stats.warnings == ["network 'water' is in EPSG:28992, the scene in EPSG:7415"]

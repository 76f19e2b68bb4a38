"""GLB export checked by independent readers: the Khronos glTF-Validator, our own GLB chunk
decoder (for EXT_mesh_features / EXT_structural_metadata, which the validator skips) and
trimesh. Expectations come from the CityJSON read with plain ``json``.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from glbdecode import Glb

from ingest.cityjson import load_cityjson, parse_cityjson
from scene.gltf import SceneStats, model_to_glb, write_glb
from scene.triangulate import triangulate
from twin.errors import SceneError
from twin.geometry import CityModel

ROOT = Path(__file__).resolve().parents[2]
POINTS, LINES, TRIANGLES = 0, 1, 4


def _data_root() -> Path:
    env = os.environ.get("TWIN_SHARED_DATA")
    base = Path(env) if env else ROOT.parent / "shared" / "data"
    return base / "cityjson"


def _listing(folder: str) -> list[str]:
    d = _data_root() / folder
    if not d.is_dir():
        return []
    return sorted(
        f"{folder}/{p.name}"
        for p in d.iterdir()
        if p.is_file()
        and p.suffix in (".json", ".jsonl")
        and not p.name.endswith(".invariants.json")
    )


# Valid files that have nothing drawable: no geometry at all, or only zero-area surfaces.
NOT_DRAWABLE = {
    "small/minimal_empty.city.json": "no CityObjects",
    "small/potatoes_extension.city.json": "transform scale 0: every surface collapses",
    "seq/cityjsonfeature_minimal.city.jsonl": "object without geometry",
    "seq/ops_feature_root_id_not_shared.city.jsonl": "objects without geometry",
    "conformance/cityobject_all_types.city.json": "objects without geometry",
    "conformance/cityobject_building_address.city.json": "object without geometry",
    "conformance/cityobject_extended.city.json": "objects without geometry",
    "conformance/coordinates_precision_ecef.city.json": "no CityObjects",
    "conformance/coordinates_precision_wgs84.city.json": "no CityObjects",
    "conformance/coordinates_precision_worst.city.json": "no CityObjects",
    "conformance/extension.city.json": "no CityObjects",
    "conformance/metadata_complete.city.json": "no CityObjects",
    "conformance/vertices.city.json": "no CityObjects",
    "conformance/geometry_texture_multisurface.city.json": "collinear vertices only",
    "conformance/geometry_texture_solid.city.json": "collinear vertices only",
    "conformance/semantic_all_types.city.json": "collinear vertices only",
    "conformance/semantic_extended.city.json": "collinear vertices only",
}
ALL_VALID = [
    *_listing("real"),
    *_listing("small"),
    *[p for p in _listing("legacy") if not p.endswith("o4_v09.json")],
    *_listing("seq"),
    *_listing("conformance"),
]
DRAWABLE = [p for p in ALL_VALID if p not in NOT_DRAWABLE]


# -- GLB decoding -----------------------------------------------------------------------


# -- independent reading of the raw file ------------------------------------------------


def _ints(value: Any) -> list[int]:
    if isinstance(value, list):
        return [i for v in value for i in _ints(v)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def raw_documents(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def objects_with_geometry(path: Path) -> set[str]:
    """Ids whose CityJSON geometry has at least one vertex index (templates resolved)."""
    docs = raw_documents(path)
    templates = (docs[0].get("geometry-templates") or {}).get("templates", [])
    objects: dict[str, Any] = {}
    for d in docs:
        objects.update(d.get("CityObjects") or {})
    out = set()
    for oid, obj in objects.items():
        for g in obj.get("geometry") or []:
            b = templates[g["template"]]["boundaries"] if g["type"] == "GeometryInstance" else None
            if _ints(b if b is not None else g["boundaries"]):
                out.add(oid)
    return out


# -- the exported corpus (one export per file per session) -------------------------------


@dataclass
class Exported:
    path: Path
    model: CityModel
    stats: SceneStats
    glb: Glb


@pytest.fixture(scope="session")
def exported(cityjson_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    out_dir = tmp_path_factory.mktemp("glb")
    out: dict[str, Exported] = {}
    for rel in DRAWABLE:
        model = load_cityjson(cityjson_dir / rel)
        path = out_dir / (rel.replace("/", "__") + ".glb")
        stats = write_glb(model, path)
        data = path.read_bytes()
        assert stats.bytes == len(data)
        out[rel] = Exported(path, model, stats, Glb.parse(data))
    return out


@pytest.fixture(scope="session")
def validator_reports(exported: dict[str, Exported], gltf_validator: Any) -> dict[str, Any]:
    rels = list(exported)
    reports = gltf_validator.validate(*(exported[r].path for r in rels))
    return dict(zip(rels, reports, strict=True))


def test_drawable_listing(cityjson_dir: Path) -> None:
    assert len(DRAWABLE) >= 40
    assert set(NOT_DRAWABLE) <= set(ALL_VALID), "NOT_DRAWABLE names a file that is gone"


@pytest.mark.parametrize("rel", sorted(NOT_DRAWABLE))
def test_not_drawable_is_a_scene_error(cityjson_dir: Path, tmp_path: Path, rel: str) -> None:
    model = load_cityjson(cityjson_dir / rel)
    out = tmp_path / "out.glb"
    with pytest.raises(SceneError, match="nothing to draw"):
        write_glb(model, out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.node
@pytest.mark.parametrize("rel", DRAWABLE)
def test_khronos_validator_finds_no_errors(validator_reports: dict[str, Any], rel: str) -> None:
    report = validator_reports[rel]
    errors = [m for m in report["messages"] if m["severity"] == 0]
    assert report["errors"] == 0, errors[:5]
    assert report["warnings"] == 0, [m for m in report["messages"] if m["severity"] == 1][:5]


@pytest.mark.parametrize("rel", DRAWABLE)
def test_glb_layout_and_features(
    cityjson_dir: Path, exported: dict[str, Exported], rel: str
) -> None:
    e = exported[rel]
    doc, model = e.glb.doc, e.model
    # One scene, one node, one mesh: objects are features, not nodes.
    assert doc["scenes"] == [{"nodes": [0]}]
    assert len(doc["nodes"]) == 1 and doc["nodes"][0]["mesh"] == 0
    assert len(doc["meshes"]) == 1
    assert set(doc["extensionsUsed"]) == {"EXT_mesh_features", "EXT_structural_metadata"}
    extras = doc["asset"]["extras"]["citytwin"]
    assert extras.get("crs") == model.crs and extras.get("epsg") == model.epsg

    count, table = e.glb.table()
    ids = table["id"]
    assert count == len(ids) == len(set(ids))
    assert ids == model.feature_ids
    assert set(ids) == objects_with_geometry(cityjson_dir / rel)
    assert table["type"] == [model.twin[i].type for i in ids]
    assert table.get("parent", [""] * count) == [model.twin[i].parent or "" for i in ids]
    heights = [model.twin[i].geometry.height for i in ids]  # type: ignore[union-attr]
    assert table["height"].tolist() == pytest.approx(heights)

    bbox = model.bbox()
    assert bbox is not None
    extent = np.array([bbox[3] - bbox[0], bbox[5] - bbox[2], bbox[4] - bbox[1]])
    seen: set[int] = set()
    for prim in e.glb.primitives:
        attrs = prim["attributes"]
        pos = e.glb.accessor(attrs["POSITION"])
        fid = e.glb.accessor(attrs["_FEATURE_ID_0"])
        assert fid.shape == (pos.shape[0],)
        assert np.array_equal(fid, np.round(fid)) and fid.min() >= 0 and fid.max() < count
        (fset,) = prim["extensions"]["EXT_mesh_features"]["featureIds"]
        assert fset["attribute"] == 0 and fset["propertyTable"] == 0
        assert fset["featureCount"] == np.unique(fid).size
        seen |= set(np.unique(fid).astype(int).tolist())
        # Local frame: positions are offsets within the model, not world coordinates.
        assert np.isfinite(pos).all()
        assert (np.abs(pos) <= extent + 1e-3).all()
        if prim.get("mode", TRIANGLES) == TRIANGLES:
            idx = e.glb.accessor(prim["indices"])
            assert idx.size % 3 == 0 and idx.max() < pos.shape[0]
            nrm = e.glb.accessor(attrs["NORMAL"])
            assert np.allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=1e-5)
    assert seen <= set(range(count))
    assert e.stats.primitives == len(e.glb.primitives)
    assert e.stats.features == count


def _triangles(glb: Glb) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(local positions, normals, feature ids, (M, 3) indices) of each triangle primitive."""
    out = []
    for prim in glb.primitives:
        if prim.get("mode", TRIANGLES) != TRIANGLES:
            continue
        a = prim["attributes"]
        out.append(
            (
                glb.accessor(a["POSITION"]),
                glb.accessor(a["NORMAL"]),
                glb.accessor(a["_FEATURE_ID_0"]).astype(int),
                glb.accessor(prim["indices"]).astype(np.int64).reshape(-1, 3),
            )
        )
    return out


def test_delfshaven_vertices_inside_their_object_bbox(exported: dict[str, Exported]) -> None:
    e = exported["real/delfshaven_3-20.city.json"]
    model = e.model
    lo = np.array([model.twin[f].geometry.bbox[:3] for f in model.feature_ids])  # type: ignore[union-attr]
    hi = np.array([model.twin[f].geometry.bbox[3:] for f in model.feature_ids])  # type: ignore[union-attr]
    n = 0
    for pos, _, fid, _ in _triangles(e.glb):
        real = e.glb.to_source(pos)
        assert (real >= lo[fid] - 1e-3).all()
        assert (real <= hi[fid] + 1e-3).all()
        n += pos.shape[0]
    assert n > 10_000


def test_cube_normals_point_outward_and_winding_agrees(exported: dict[str, Exported]) -> None:
    e = exported["small/cube.city.json"]
    ((pos, nrm, _, tri),) = _triangles(e.glb)
    assert tri.shape == (12, 3)
    real = e.glb.to_source(pos)
    assert sorted({tuple(p) for p in np.round(real, 6).tolist()}) == sorted(
        itertools.product((0.0, 1.0), repeat=3)
    )
    centre = pos.mean(axis=0)
    assert np.einsum("ij,ij->i", nrm, pos - centre).min() > 0.4
    a, b, c = (pos[tri[:, k]].astype(np.float64) for k in range(3))
    face = np.cross(b - a, c - a)
    assert np.einsum("ij,ij->i", face, nrm[tri[:, 0]]).min() > 0
    assert np.einsum("ij,ij->i", face, a - centre).min() > 0


# Files with planar polygons: the triangulated area equals the polygon area.
AREA_FILES = [
    "small/cube.city.json",
    "small/simplegeom_torus.city.json",
    "small/mt-1.city.json",
    "small/texture4_lod3.city.json",
    "small/twobuildings.city.json",
    "small/multi_lod.city.json",
    "real/delfshaven_3-20.city.json",
    "real/zurich_subset_lod2.city.json",
    "real/delft.city.json",
    "seq/denhaag_random_5.city.jsonl",
]


def polygon_area(model: CityModel) -> float:
    """Sum of polygon areas (outer minus holes) by Newell's formula, in float64."""
    v = model.vertices - model.vertices[model.ring_vertices].mean(axis=0)
    total = 0.0
    for s in range(model.n_surfaces):
        rings = range(model.surface_rings[s], model.surface_rings[s + 1])
        for k, r in enumerate(rings):
            p = v[model.ring_vertices[model.ring_offsets[r] : model.ring_offsets[r + 1]]]
            area = float(np.linalg.norm(np.cross(p, np.roll(p, -1, axis=0)).sum(axis=0)) / 2)
            total += area if k == 0 else -area
    return total


@pytest.mark.parametrize("rel", AREA_FILES)
def test_trimesh_reads_the_same_area(exported: dict[str, Exported], rel: str) -> None:
    import trimesh

    e = exported[rel]
    scene = trimesh.load(e.path, force="scene")
    assert isinstance(scene, trimesh.Scene)
    assert scene.area == pytest.approx(polygon_area(e.model), rel=1e-4)
    assert sum(len(g.faces) for g in scene.geometry.values()) == e.stats.triangles


def test_points_and_lines_primitives(cityjson_dir: Path, exported: dict[str, Exported]) -> None:
    e = exported["small/sem_point.city.json"]
    (doc,) = raw_documents(cityjson_dir / "small/sem_point.city.json")
    n_points = n_segments = 0
    for obj in doc["CityObjects"].values():
        for g in obj["geometry"]:
            if g["type"] == "MultiPoint":
                n_points += len(g["boundaries"])
            elif g["type"] == "MultiLineString":
                n_segments += sum(len(line) - 1 for line in g["boundaries"])
    modes = {p.get("mode", TRIANGLES): p for p in e.glb.primitives}
    assert set(modes) == {POINTS, LINES}
    assert e.glb.accessor(modes[POINTS]["attributes"]["POSITION"]).shape == (n_points, 3)
    assert e.glb.accessor(modes[LINES]["attributes"]["POSITION"]).shape == (2 * n_segments, 3)
    assert (e.stats.points, e.stats.line_segments) == (n_points, n_segments)


def test_cityjson_material_becomes_gltf_material(
    cityjson_dir: Path, exported: dict[str, Exported]
) -> None:
    (doc,) = raw_documents(cityjson_dir / "small/mt-1.city.json")
    (want,) = doc["appearance"]["materials"]
    e = exported["small/mt-1.city.json"]
    (prim,) = e.glb.primitives
    mat = e.glb.doc["materials"][prim["material"]]
    assert want["name"] in mat["name"]
    rgba = mat["pbrMetallicRoughness"]["baseColorFactor"]
    assert rgba[:3] == pytest.approx(want["diffuseColor"])
    assert rgba[3] == pytest.approx(1.0 - want["transparency"])
    assert mat["alphaMode"] == "BLEND"


def test_semantic_surfaces_get_distinct_materials(exported: dict[str, Exported]) -> None:
    e = exported["real/delfshaven_3-20.city.json"]
    colours: dict[str, tuple[float, ...]] = {}
    for prim in e.glb.primitives:
        mat = e.glb.doc["materials"][prim["material"]]
        for sem in ("RoofSurface", "WallSurface", "GroundSurface"):
            if sem in mat["name"]:
                colours[sem] = tuple(mat["pbrMetallicRoughness"]["baseColorFactor"])
    assert set(colours) == {"RoofSurface", "WallSurface", "GroundSurface"}
    assert len(set(colours.values())) == 3


def test_identical_materials_share_a_primitive(exported: dict[str, Exported]) -> None:
    """Den Haag has 5970 CityJSON materials with only 3 distinct looks (UUID names).

    One primitive per *material* gives thousands of draw calls for one tile; the
    module promises "a handful". Materials that render the same should be merged.
    """
    e = exported["legacy/denhaag_01_v08.json"]
    looks = {(m.diffuse, m.emissive, m.transparency, m.shininess) for m in e.model.materials}
    assert len(looks) == 3
    n = len(e.glb.primitives)
    limit = len(looks) + len(e.model.semantic_types) + 10
    assert n <= limit, f"{n} primitives (draw calls) for {len(looks)} distinct materials"


def test_materials_with_the_same_name_keep_their_colours() -> None:
    doc = {
        "type": "CityJSON",
        "version": "2.0",
        "transform": {"scale": [1, 1, 1], "translate": [0, 0, 0]},
        "appearance": {
            "materials": [
                {"name": "paint", "diffuseColor": [1.0, 0.0, 0.0]},
                {"name": "paint", "diffuseColor": [0.0, 0.0, 1.0]},
            ]
        },
        "CityObjects": {
            "a": {
                "type": "Building",
                "geometry": [
                    {
                        "type": "MultiSurface",
                        "lod": "1",
                        "boundaries": [[[0, 1, 2]], [[0, 2, 3]]],
                        "material": {"m": {"values": [0, 1]}},
                    }
                ],
            }
        },
        "vertices": [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]],
    }
    glb = Glb.parse(model_to_glb(parse_cityjson(orjson.dumps(doc), source="p.city.json"))[0])
    colours = {
        tuple(glb.doc["materials"][p["material"]]["pbrMetallicRoughness"]["baseColorFactor"])
        for p in glb.primitives
    }
    assert colours == {(1.0, 0.0, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0)}


# -- writing ------------------------------------------------------------------------------


def test_empty_model_is_a_scene_error_and_writes_nothing(
    cityjson_dir: Path, tmp_path: Path
) -> None:
    model = load_cityjson(cityjson_dir / "small/minimal_empty.city.json")
    with pytest.raises(SceneError, match="nothing to draw"):
        model_to_glb(model)
    out = tmp_path / "sub" / "empty.glb"
    with pytest.raises(SceneError):
        write_glb(model, out)
    assert not out.exists()
    assert not (tmp_path / "sub").exists() or list((tmp_path / "sub").iterdir()) == []


def test_failed_write_leaves_no_partial_file(
    cityjson_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scene.gltf

    model = load_cityjson(cityjson_dir / "small/cube.city.json")
    out = tmp_path / "city.glb"
    out.write_bytes(b"previous export")

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scene.gltf.os, "replace", full_disk)
    with pytest.raises(SceneError, match="cannot write"):
        write_glb(model, out)
    assert out.read_bytes() == b"previous export"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city.glb"]  # no .part left


def test_written_glb_has_normal_file_permissions(cityjson_dir: Path, tmp_path: Path) -> None:
    """The GLB is served and shared: it gets the mode a plain open() would give (umask),
    not the 0600 of the private temporary file it was written through."""
    umask = os.umask(0)
    os.umask(umask)
    out = tmp_path / "city.glb"
    write_glb(load_cityjson(cityjson_dir / "small/cube.city.json"), out)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_into_a_file_path_is_a_scene_error(cityjson_dir: Path, tmp_path: Path) -> None:
    model = load_cityjson(cityjson_dir / "small/cube.city.json")
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(SceneError):
        write_glb(model, blocker / "city.glb")
    assert blocker.read_text() == "x"


def test_write_glb_bytes_equal_model_to_glb(cityjson_dir: Path, tmp_path: Path) -> None:
    model = load_cityjson(cityjson_dir / "small/mt-1.city.json")
    data, stats = model_to_glb(model)
    out = tmp_path / "a" / "b.glb"
    stats2 = write_glb(model, out)
    assert out.read_bytes() == data
    assert stats2.bytes == stats.bytes == len(data)


# -- pathological models ----------------------------------------------------------------


def _doc(
    vertices: list[list[int]],
    boundaries: list[Any],
    scale: float = 1.0,
    gtype: str = "CompositeSurface",
) -> bytes:
    return orjson.dumps(
        {
            "type": "CityJSON",
            "version": "2.0",
            "transform": {"scale": [scale] * 3, "translate": [85000.0, 446000.0, 0.0]},
            "CityObjects": {
                "o": {
                    "type": "TINRelief",
                    "geometry": [{"type": gtype, "lod": "1", "boundaries": boundaries}],
                }
            },
            "vertices": vertices,
        }
    )


@pytest.mark.timeout(60)
def test_hundred_thousand_triangles_export_in_bounded_time() -> None:
    n = 230  # 230 x 230 quads, two triangles each = 105 800 faces
    ij = np.arange(n + 1)
    xs, ys = np.meshgrid(ij, ij, indexing="ij")
    zs = (xs * 7 + ys * 13) % 5
    verts = np.column_stack([xs.ravel() * 100, ys.ravel() * 100, zs.ravel() * 100]).tolist()
    k = (xs[:-1, :-1] * (n + 1) + ys[:-1, :-1]).ravel()
    faces: list[Any] = []
    for a in k.tolist():
        b, c, d = a + n + 1, a + n + 2, a + 1
        faces += [[[a, b, c]], [[a, c, d]]]
    t0 = time.perf_counter()
    model = parse_cityjson(_doc(verts, faces, scale=0.01), source="grid.city.json")
    data, stats = model_to_glb(model)
    elapsed = time.perf_counter() - t0
    assert stats.triangles == 2 * n * n == 105_800
    assert stats.dropped_surfaces == 0
    assert stats.features == 1 and stats.primitives == 1
    (prim,) = Glb.parse(data).primitives
    assert Glb.parse(data).doc["accessors"][prim["indices"]]["componentType"] == 5125
    assert elapsed < 30, f"{elapsed:.1f} s for 105 800 triangles"


def test_degenerate_rings_are_dropped_and_counted() -> None:
    verts = [[0, 0, 0], [2, 0, 0], [2, 2, 0], [0, 2, 0], [1, 1, 0], [4, 0, 0], [6, 0, 0], [5, 0, 0]]
    surfaces = [
        [[0, 1, 2, 3]],  # good square, area 4
        [[4, 4, 4]],  # one point repeated
        [[5, 7, 6]],  # collinear
        [[0, 1]],  # two-point ring
        [[0, 0, 1, 1, 2, 3, 3]],  # repeated points but a real square: kept, area 4
        [[0, 1, 4, 2, 3, 4]],  # self-touching at (1, 1): two triangles, area 2
        [[5, 6, 7, 5]],  # collinear, closed explicitly
    ]
    model = parse_cityjson(_doc(verts, surfaces), source="degenerate.city.json")
    data, stats = model_to_glb(model)
    assert stats.dropped_surfaces == 4
    assert any("degenerate" in w for w in stats.warnings)
    tri = triangulate(model)
    v = model.vertices
    area = np.zeros(model.n_surfaces)
    a, b, c = (v[tri.triangles[:, k]] for k in range(3))
    np.add.at(area, tri.tri_surface, np.linalg.norm(np.cross(b - a, c - a), axis=1) / 2)
    assert area.tolist() == pytest.approx([4.0, 0, 0, 0, 4.0, 2.0, 0])
    glb = Glb.parse(data)
    (prim,) = glb.primitives
    assert glb.accessor(prim["indices"]).size == 3 * stats.triangles


def test_coordinates_beyond_float32_are_not_written_as_inf() -> None:
    # Finite in float64 (a scale of 1e299 is accepted) but beyond float32 in the local frame.
    verts = [[0, 0, 0], [1000, 0, 0], [1000, 1000, 0], [0, 1000, 0]]
    # Points: no triangulation in between that could drop them as degenerate.
    data = _doc(verts, [0, 1, 2, 3], scale=1e299, gtype="MultiPoint")
    model = parse_cityjson(data, source="huge.city.json")
    assert np.isfinite(model.vertices).all()
    try:
        glb_bytes, _ = model_to_glb(model)
    except SceneError:
        return
    glb = Glb.parse(glb_bytes)
    for prim in glb.primitives:
        assert np.isfinite(glb.accessor(prim["attributes"]["POSITION"])).all()


def test_glb_loads_with_trimesh_from_bytes(cityjson_dir: Path) -> None:
    import trimesh

    model = load_cityjson(cityjson_dir / "small/3dbag_b2.city.json")
    data, stats = model_to_glb(model)
    scene = trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
    assert sum(len(g.faces) for g in scene.geometry.values()) == stats.triangles

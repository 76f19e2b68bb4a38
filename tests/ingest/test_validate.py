"""Tests of ingest.validate: the file validator and the val3dity-style geometry checks."""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import validate as validate_mod
from ingest.cityjson import load_cityjson, parse_cityjson
from ingest.validate import (
    Problem,
    ValidationReport,
    check_geometry,
    format_problem,
    validate_path,
)
from twin.errors import IngestError
from twin.geometry import ModelWarning


def _data_files(sub: str) -> list[str]:
    """File names in shared/data/cityjson/<sub> (same lookup as the conftest fixture)."""
    root = Path(__file__).resolve().parents[2]
    env = os.environ.get("TWIN_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [p / "shared" / "data" for p in (root.parent, *root.parents)]
    for c in candidates:
        folder = c / "cityjson" / sub
        if folder.is_dir():
            return sorted(
                p.name
                for p in folder.iterdir()
                if p.is_file()
                and p.name.endswith((".json", ".jsonl"))
                and not p.name.endswith(".invariants.json")
            )
    return []


INVALID = _data_files("invalid")
VALID = [f"real/{n}" for n in _data_files("real")] + [f"small/{n}" for n in _data_files("small")]


def _codes(warnings: list[ModelWarning] | list[Problem]) -> set[str]:
    return {w.code for w in warnings}


def _one_line(text: str) -> bool:
    return bool(text) and len(text.splitlines()) == 1 and "\n" not in text


# -- every file in invalid/ and every valid file ----------------------------------------


def test_parametrized_lists_match_the_folders(cityjson_dir: Path) -> None:
    invalid = sorted(
        p.name
        for p in (cityjson_dir / "invalid").iterdir()
        if not p.name.endswith(".invariants.json")
    )
    assert invalid == INVALID and len(INVALID) >= 25
    assert len(VALID) >= 30


@pytest.mark.parametrize("name", INVALID)
def test_invalid_file_is_not_ok(cityjson_dir: Path, name: str) -> None:
    report = validate_path(cityjson_dir / "invalid" / name)
    assert isinstance(report, ValidationReport)
    assert not report.ok
    assert report.problems
    for p in report.problems:
        assert p.severity in ("error", "warning")
        assert p.code
        assert _one_line(p.message), p
        assert _one_line(format_problem(p)), p


@pytest.mark.parametrize("name", VALID)
def test_valid_file_has_no_errors(cityjson_dir: Path, name: str) -> None:
    report = validate_path(cityjson_dir / name)
    assert report.errors == [], [format_problem(p) for p in report.errors]
    for p in report.problems:
        assert p.severity == "warning"
        assert _one_line(format_problem(p)), p


# -- the geom_* files from val3dity's test suite -----------------------------------------


@pytest.mark.parametrize(
    ("name", "code", "object_id"),
    [
        ("geom_501.json", "501", "UUID_d37b2d6c-6d85-43d1-9923-f32fcf142726"),
        ("geom_502.json", "502", "UUID_3691e4fe-2f32-4540-9460-259781edc534"),
        ("geom_503.json", "503", "UUID_0bd3e918-38fa-4c45-8e10-a0978bab1b8b"),
        ("geom_601.json", "601", "elvisisstillalive-1"),
        ("geom_nonmanifold.json", "303", "id-1"),
        ("geom_nonmanifold.json", "302", "id-1"),
    ],
)
def test_geom_file_code(cityjson_dir: Path, name: str, code: str, object_id: str) -> None:
    model = load_cityjson(cityjson_dir / "invalid" / name)
    warnings = check_geometry(model)
    assert any(w.code == code and w.object_id == object_id for w in warnings), warnings
    report = validate_path(cityjson_dir / "invalid" / name)
    assert code in _codes(report.problems)


def test_geom_501_reports_only_the_overlapping_pair(cityjson_dir: Path) -> None:
    # Solid 2 ([1, 2]) shares a face with solid 0 and overlaps solid 1 ([1.99, 3]).
    warnings = check_geometry(load_cityjson(cityjson_dir / "invalid" / "geom_501.json"))
    assert [w.code for w in warnings] == ["501"]
    assert "solids 1 and 2" in warnings[0].message


def test_geom_502_duplicate_is_not_also_an_intersection(cityjson_dir: Path) -> None:
    warnings = check_geometry(load_cityjson(cityjson_dir / "invalid" / "geom_502.json"))
    assert "502" in _codes(warnings)
    assert "501" not in _codes(warnings)


def test_geom_503_names_the_lonely_solid(cityjson_dir: Path) -> None:
    warnings = check_geometry(load_cityjson(cityjson_dir / "invalid" / "geom_503.json"))
    assert [w.code for w in warnings] == ["503"]
    assert "solid(s) 1 share no face" in warnings[0].message


def test_several_lods_invalid_needs_every_lod(cityjson_dir: Path) -> None:
    path = cityjson_dir / "invalid" / "geom_several_lods_invalid.json"
    # Two LoD 1.3 solids of one BuildingPart overlap; the default (highest) LoD is fine.
    assert "601" not in _codes(check_geometry(load_cityjson(path)))
    assert "601" in _codes(check_geometry(load_cityjson(path, lod="1.3")))
    report = validate_path(path)
    hits = [p for p in report.problems if p.code == "601"]
    assert hits and "LoD 1.3" in hits[0].where
    assert hits[0].object_id == "NL.IMBAG.Pand.0503100000031293-0"


@pytest.mark.parametrize(
    "name",
    [
        "small/cube.city.json",
        "small/simplegeom_csol.city.json",
        "small/simplegeom_msol.city.json",
        "small/simplegeom_torus.city.json",
        "small/several_lods_valid.city.json",
        "small/simplegeom_twocube.city.json",
        "small/3dbag_b2.city.json",
    ],
)
def test_valid_geometry_has_no_shell_solid_or_part_problems(cityjson_dir: Path, name: str) -> None:
    report = validate_path(cityjson_dir / name)
    bad = [p for p in report.problems if p.code[:1] in ("3", "4", "5", "6")]
    assert bad == [], [format_problem(p) for p in bad]


# -- synthetic geometry, one code at a time --------------------------------------------


def _prism(
    footprint: list[tuple[float, float]], z0: float, z1: float, base: int
) -> tuple[list[list[float]], list[list[int]]]:
    """Vertices and outward faces of a prism over a counter-clockwise footprint."""
    n = len(footprint)
    verts = [[x, y, z0] for x, y in footprint] + [[x, y, z1] for x, y in footprint]
    faces = [[base + i for i in reversed(range(n))], [base + n + i for i in range(n)]]
    for i in range(n):
        j = (i + 1) % n
        faces.append([base + i, base + j, base + n + j, base + n + i])
    return verts, faces


def _box(x0: float, y0: float, z0: float, x1: float, y1: float, z1: float, base: int) -> Any:
    return _prism([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], z0, z1, base)


def _shell(faces: list[list[int]]) -> list[list[list[int]]]:
    return [[f] for f in faces]


def _model(objects: dict[str, Any], vertices: list[list[float]]) -> Any:
    doc = {"type": "CityJSON", "version": "2.0", "CityObjects": objects, "vertices": vertices}
    return parse_cityjson(json.dumps(doc).encode(), source="synthetic.city.json")


def _solid_obj(shells: list[list[list[list[int]]]], otype: str = "Building") -> dict[str, Any]:
    return {"type": otype, "geometry": [{"type": "Solid", "lod": "1", "boundaries": shells}]}


def _check_solid(faces: list[list[int]], verts: list[list[float]]) -> list[ModelWarning]:
    return check_geometry(_model({"b1": _solid_obj([_shell(faces)])}, verts))


def test_box_helper_is_valid() -> None:
    verts, faces = _box(0, 0, 0, 1, 1, 1, 0)
    assert _check_solid(faces, verts) == []


def test_102_consecutive_duplicate_point() -> None:
    verts, faces = _box(0, 0, 0, 1, 1, 1, 0)
    faces[0] = [faces[0][0], faces[0][0], *faces[0][1:]]
    warnings = _check_solid(faces, verts)
    assert _codes(warnings) == {"102"}
    assert warnings[0].object_id == "b1"
    assert "surface 0 ring 0" in warnings[0].message


def test_102_duplicate_point_by_coordinates() -> None:
    # Two vertex indices at the same place (within the 1 mm snap tolerance) are one point.
    verts, faces = _box(0, 0, 0, 1, 1, 1, 0)
    verts.append([0.0, 0.0, 0.0004])
    assert faces[0][-1] == 0
    faces[0] = [*faces[0], 8]  # 8 right after its twin 0
    assert _codes(_check_solid(faces, verts)) == {"102"}


def test_101_too_few_points_and_104_collapsed_ring() -> None:
    verts = [[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0]]
    obj = {
        "type": "Building",
        "geometry": [{"type": "MultiSurface", "lod": "1", "boundaries": [[[0, 1]], [[0, 1, 2]]]}],
    }
    warnings = check_geometry(_model({"b1": obj}, verts))
    by_code = {w.code: w.message for w in warnings}
    assert set(by_code) == {"101", "104"}
    assert "surface 0 ring 0" in by_code["101"]
    assert "collapsed" in by_code["104"] and "surface 1 ring 0" in by_code["104"]


def test_104_vertex_visited_twice() -> None:
    verts = [[0.0, 0, 0], [2, 0, 0], [2, 2, 0], [1, 1, 0], [0, 2, 0]]
    obj = {
        "type": "Building",
        "geometry": [{"type": "MultiSurface", "lod": "1", "boundaries": [[[0, 1, 3, 2, 4, 3]]]}],
    }
    warnings = check_geometry(_model({"b1": obj}, verts))
    assert _codes(warnings) == {"104"}
    assert "vertex 3 is visited twice" in warnings[0].message


@pytest.mark.parametrize(("lift", "expected"), [(0.05, {"203"}), (0.004, set())])
def test_203_non_planar(lift: float, expected: set[str]) -> None:
    verts = [[0.0, 0, 0], [1, 0, 0], [1, 1, lift], [0, 1, 0]]
    obj = {
        "type": "Building",
        "geometry": [{"type": "MultiSurface", "lod": "1", "boundaries": [[[0, 1, 2, 3]]]}],
    }
    assert _codes(check_geometry(_model({"b1": obj}, verts))) == expected


def test_301_too_few_polygons() -> None:
    verts, faces = _box(0, 0, 0, 1, 1, 1, 0)
    assert "301" in _codes(_check_solid(faces[:3], verts))


def test_302_shell_not_closed() -> None:
    verts, faces = _box(0, 0, 0, 1, 1, 1, 0)
    warnings = _check_solid(faces[:-1], verts)
    assert _codes(warnings) == {"302"}
    assert "solid 0 shell 0" in warnings[0].message and "used once" in warnings[0].message


def test_303_edge_used_by_three_polygons() -> None:
    verts, faces = _box(0, 0, 0, 1, 1, 1, 0)
    warnings = _check_solid([*faces, faces[1]], verts)
    assert "303" in _codes(warnings)
    assert "307" not in _codes(warnings)


def test_303_vertex_and_305_components() -> None:
    # Two cubes in one shell touching at one corner: every edge is used twice, but the
    # shared vertex is not one umbrella and the polygons form two parts.
    va, fa = _box(0, 0, 0, 1, 1, 1, 0)
    vb, fb = _box(1, 1, 1, 2, 2, 2, 8)
    warnings = _check_solid(fa + fb, va + vb)
    assert {"303", "305"} <= _codes(warnings)
    assert "302" not in _codes(warnings)
    assert any("non-manifold vertex 6" in w.message for w in warnings)


def test_305_two_separate_cubes_in_one_shell() -> None:
    va, fa = _box(0, 0, 0, 1, 1, 1, 0)
    vb, fb = _box(3, 0, 0, 4, 1, 1, 8)
    assert _codes(_check_solid(fa + fb, va + vb)) == {"305"}


def test_307_one_polygon_reversed() -> None:
    verts, faces = _box(0, 0, 0, 1, 1, 1, 0)
    faces[3] = faces[3][::-1]
    warnings = _check_solid(faces, verts)
    assert "307" in _codes(warnings)
    assert "405" not in _codes(warnings)


def test_405_shell_inside_out() -> None:
    verts, faces = _box(0, 0, 0, 1, 1, 1, 0)
    warnings = _check_solid([f[::-1] for f in faces], verts)
    assert _codes(warnings) == {"405"}
    assert "outer shell points inward" in warnings[0].message


def test_inner_shell_is_fine_when_reversed_and_flagged_when_not() -> None:
    vo, fo = _box(0, 0, 0, 4, 4, 4, 0)
    vi, fi = _box(1, 1, 1, 2, 2, 2, 8)
    cavity = [f[::-1] for f in fi]  # an inner shell points into the cavity
    ok = check_geometry(_model({"b1": _solid_obj([_shell(fo), _shell(cavity)])}, vo + vi))
    assert ok == []
    bad = check_geometry(_model({"b1": _solid_obj([_shell(fo), _shell(fi)])}, vo + vi))
    assert _codes(bad) == {"405"}
    assert "inner shell points outward" in bad[0].message


def _composite(gtype: str, boxes: list[tuple[float, ...]]) -> list[ModelWarning]:
    verts: list[list[float]] = []
    solids = []
    for k, b in enumerate(boxes):
        v, f = _box(*b, base=8 * k)
        verts += v
        solids.append([_shell(f)])
    obj = {
        "type": "GenericCityObject",
        "geometry": [{"type": gtype, "lod": "1", "boundaries": solids}],
    }
    return check_geometry(_model({"c1": obj}, verts))


def test_composite_solid_sharing_a_face_is_valid() -> None:
    assert _composite("CompositeSolid", [(0, 0, 0, 1, 1, 1), (1, 0, 0, 2, 1, 1)]) == []


def test_501_overlapping_solids() -> None:
    warnings = _composite("CompositeSolid", [(0, 0, 0, 1, 1, 1), (0.5, 0, 0, 2, 1, 1)])
    assert _codes(warnings) == {"501"}
    assert warnings[0].object_id == "c1"


def test_501_crossing_bars_without_vertex_inside() -> None:
    # A plus sign: no vertex of either bar lies inside the other.
    warnings = _composite("CompositeSolid", [(-5, -1, 0, 5, 1, 1), (-1, -5, 0.5, 1, 5, 2)])
    assert "501" in _codes(warnings)


def test_502_identical_solids() -> None:
    warnings = _composite("CompositeSolid", [(0, 0, 0, 1, 1, 1), (0, 0, 0, 1, 1, 1)])
    assert _codes(warnings) == {"502"}


def test_503_disconnected_solids() -> None:
    warnings = _composite("CompositeSolid", [(0, 0, 0, 1, 1, 1), (3, 0, 0, 4, 1, 1)])
    assert _codes(warnings) == {"503"}


def test_503_partial_face_contact_counts_as_connected() -> None:
    # A small box on a big one: they share no vertex, only part of a face.
    assert _composite("CompositeSolid", [(0, 0, 0, 4, 4, 1), (1, 1, 1, 2, 2, 2)]) == []


def test_multisolid_may_overlap() -> None:
    # val3dity: the Solids of a MultiSolid have no topological relationship prescribed.
    assert _composite("MultiSolid", [(0, 0, 0, 1, 1, 1), (0.5, 0, 0, 2, 1, 1)]) == []


def _parts(*prisms: tuple[list[tuple[float, float]], float, float]) -> list[ModelWarning]:
    verts: list[list[float]] = []
    objects: dict[str, Any] = {"B": {"type": "Building", "children": []}}
    for k, (fp, z0, z1) in enumerate(prisms):
        v, f = _prism(fp, z0, z1, len(verts))
        verts += v
        part = _solid_obj([_shell(f)], "BuildingPart")
        part["parents"] = ["B"]
        objects["B"]["children"].append(f"p{k}")
        objects[f"p{k}"] = part
    return check_geometry(_model(objects, verts))


SQUARE = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]


def test_601_overlapping_parts() -> None:
    moved = [(x + 0.5, y) for x, y in SQUARE]
    warnings = _parts((SQUARE, 0, 1), (moved, 0, 1))
    assert _codes(warnings) == {"601"}
    assert warnings[0].object_id == "p0" and "'p1'" in warnings[0].message


def test_601_parts_sharing_a_wall_are_fine() -> None:
    moved = [(x + 1, y) for x, y in SQUARE]
    assert _parts((SQUARE, 0, 1), (moved, 0, 1)) == []


def test_601_concave_part_with_a_box_in_its_notch_is_fine() -> None:
    ell = [(0.0, 0.0), (2.0, 0.0), (2.0, 1.0), (1.0, 1.0), (1.0, 2.0), (0.0, 2.0)]
    notch = [(1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (1.0, 2.0)]
    assert _parts((ell, 0, 1), (notch, 0, 1)) == []
    inside_notch = [(0.5, 0.5), (1.5, 0.5), (1.5, 1.5), (0.5, 1.5)]
    assert _codes(_parts((ell, 0, 1), (inside_notch, 0, 1))) == {"601"}


def test_601_stacked_parts_are_fine() -> None:
    assert _parts((SQUARE, 0, 1), (SQUARE, 1, 3)) == []


# -- bounds -----------------------------------------------------------------------------


def test_time_limit_skips_volume_tests_with_a_warning(cityjson_dir: Path) -> None:
    model = load_cityjson(cityjson_dir / "invalid" / "geom_601.json")
    warnings = check_geometry(model, max_seconds=0.0)
    assert "601" not in _codes(warnings)
    assert "skipped" in _codes(warnings)


def test_huge_objects_are_skipped_with_a_warning(
    cityjson_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validate_mod, "MAX_SOLID_TRIANGLES", 5)
    warnings = check_geometry(load_cityjson(cityjson_dir / "invalid" / "geom_601.json"))
    assert "601" not in _codes(warnings)
    skipped = [w for w in warnings if w.code == "skipped"]
    assert skipped and "too large" in skipped[0].message


@pytest.mark.parametrize("name", ["real/delfshaven_3-20.city.json", "real/3db_sub.city.json"])
def test_check_geometry_is_fast_on_real_data(cityjson_dir: Path, name: str) -> None:
    model = load_cityjson(cityjson_dir / name)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        check_geometry(model)
        best = min(best, time.perf_counter() - t0)
    assert best < 1.0, f"check_geometry took {best:.2f} s on {name}"


def test_non_finite_or_huge_coordinates_are_skipped() -> None:
    verts, faces = _box(0, 0, 0, 1, 1, 1, 0)
    verts[0] = [1e12, 0.0, 0.0]
    warnings = _check_solid(faces, verts)
    assert _codes(warnings) == {"skipped"}


# -- validate_path: structure, duplicates, schema ---------------------------------------


def test_format_problem_one_line() -> None:
    p = Problem("warning", "302", "shell not closed (edge 12-13 used once)", "b1")
    assert format_problem(p) == "warning 302 object 'b1': shell not closed (edge 12-13 used once)"
    report = ValidationReport(source="x")
    report.add("error", "901", "bad\nthing", None, where="line 3:7")
    assert format_problem(report.problems[0]) == "error 901 line 3:7: bad thing"
    assert not report.ok and ValidationReport(source="y").ok


def test_read_error_is_one_error_and_stops(cityjson_dir: Path) -> None:
    report = validate_path(cityjson_dir / "invalid" / "json_syntax.json")
    assert len(report.problems) == 1
    (p,) = report.problems
    assert (p.severity, p.code) == ("error", "901")
    assert p.where.startswith("line 3:")
    assert "JSON syntax error" in p.message


def test_missing_file(tmp_path: Path) -> None:
    report = validate_path(tmp_path / "nope.city.json")
    assert [(p.severity, p.code) for p in report.problems] == [("error", "901")]
    assert "no such file" in report.problems[0].message


def test_duplicate_cityobject_id(cityjson_dir: Path) -> None:
    report = validate_path(cityjson_dir / "invalid" / "duplicate_keys.json")
    dups = [p for p in report.problems if p.code == "duplicate-key"]
    assert len(dups) == 1
    assert dups[0].severity == "error"
    assert dups[0].object_id == "LondonTower"
    assert dups[0].where == "CityObjects"
    assert "CityObjects id 'LondonTower' duplicated" in dups[0].message


def test_duplicate_keys_in_a_sequence_name_the_line(tmp_path: Path) -> None:
    header = {
        "type": "CityJSON",
        "version": "2.0",
        "transform": {"scale": [1.0, 1.0, 1.0], "translate": [0.0, 0.0, 0.0]},
        "CityObjects": {},
        "vertices": [],
    }
    geom = '[{"type": "MultiPoint", "lod": "1", "boundaries": [0]}]'
    feature = (
        '{"type": "CityJSONFeature", "id": "a", "vertices": [[0, 0, 0]], "CityObjects": '
        f'{{"a": {{"type": "Building", "type": "Building", "geometry": {geom}}}}}}}'
    )
    path = tmp_path / "dup.city.jsonl"
    path.write_text(json.dumps(header) + "\n" + feature + "\n")
    report = validate_path(path)
    dups = [p for p in report.problems if p.code == "duplicate-key"]
    assert len(dups) == 1
    assert dups[0].where == "line 2: CityObjects.a"
    assert "key 'type' duplicated" in dups[0].message


def test_no_geometry_and_empty_primitive(cityjson_dir: Path) -> None:
    report = validate_path(cityjson_dir / "invalid" / "emptygeom.json")
    assert [(p.code, p.message, p.object_id) for p in report.problems] == [
        ("906", "no geometry", "id-1")
    ]
    report = validate_path(cityjson_dir / "invalid" / "empty_primitive.json")
    assert any("empty" in p.message for p in report.problems)


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "doc.city.json"
    path.write_text(json.dumps(doc))
    return path


def test_numeric_lod_one_way_links_and_dangling_child(tmp_path: Path) -> None:
    verts, faces = _box(0, 0, 0, 1, 1, 1, 0)
    part = _solid_obj([_shell(faces)], "BuildingPart")
    part["geometry"][0]["lod"] = 1
    doc = {
        "type": "CityJSON",
        "version": "1.1",
        "CityObjects": {"B": {"type": "Building", "children": ["p", "ghost"]}, "p": part},
        "vertices": verts,
    }
    report = validate_path(_write(tmp_path, doc))
    codes = _codes(report.problems)
    assert {"lod-not-string", "one-way-link", "dangling-child"} <= codes
    assert "906" not in codes  # a parent whose geometry lives in its parts
    assert report.errors == []
    # In CityJSON 1.0 a numeric lod was the norm.
    doc["version"] = "1.0"
    assert "lod-not-string" not in _codes(validate_path(_write(tmp_path, doc)).problems)


# -- robustness: random mutations of valid files ----------------------------------------

BASES = [
    "small/cube.city.json",
    "small/simplegeom_csol.city.json",
    "small/mt-1.city.json",
    "small/3dbag_b2.city.json",
]
REPLACEMENTS = [99, -1, 0.5, 2**40, 2**70, 1e308, "0", "x", None, True, [], {}, [[]], [0, 1]]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@pytest.fixture(scope="module")
def bases(cityjson_dir: Path) -> list[dict[str, Any]]:
    return [json.loads((cityjson_dir / name).read_text()) for name in BASES]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutations") / "mutated.city.json"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files_never_crash(
    bases: list[dict[str, Any]], scratch: Path, data: st.DataObject
) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(bases), label="base"))
    for _ in range(data.draw(st.integers(1, 3), label="n_mutations")):
        path = data.draw(st.sampled_from(list(_paths(doc))[1:]), label="path")
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans(), label="delete"):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(data.draw(st.sampled_from(REPLACEMENTS)))
        if not doc:
            break
    raw = json.dumps(doc).encode()
    if data.draw(st.integers(0, 4), label="truncate?") == 0:
        raw = raw[: data.draw(st.integers(0, len(raw)), label="cut")]
    scratch.write_bytes(raw)

    reader_error: IngestError | None = None
    try:
        load_cityjson(scratch)
    except IngestError as exc:  # the only exception the reader may raise
        reader_error = exc
    report = validate_path(scratch, max_seconds=2.0)
    for p in report.problems:
        assert _one_line(p.message) and _one_line(format_problem(p)), p
    if reader_error is not None:
        assert not report.ok
        assert any(p.code == "901" and p.message == reader_error.problem for p in report.errors)


def _cube_doc(cityjson_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((cityjson_dir / "small" / "cube.city.json").read_text())
    doc["appearance"] = {
        "textures": [{"type": "PNG", "image": "a.png"}],
        "vertices-texture": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]],
    }
    return doc


def _geometry(doc: dict[str, Any]) -> dict[str, Any]:
    geometry: dict[str, Any] = doc["CityObjects"]["id-1"]["geometry"][0]
    return geometry


def test_geometry_type_not_a_string_is_an_ingest_error(cityjson_dir: Path, tmp_path: Path) -> None:
    doc = _cube_doc(cityjson_dir)
    _geometry(doc)["type"] = ["Solid"]
    with pytest.raises(IngestError):
        load_cityjson(_write(tmp_path, doc))


def test_texture_index_that_is_a_list_is_an_ingest_error(
    cityjson_dir: Path, tmp_path: Path
) -> None:
    doc = _cube_doc(cityjson_dir)
    _geometry(doc)["texture"] = {"t": {"values": [[[[0, 0, 1, [2], 3]]] + [[[None]]] * 5]}}
    with pytest.raises(IngestError):
        load_cityjson(_write(tmp_path, doc))


def test_texture_null_in_place_of_a_surface_is_an_ingest_error(
    cityjson_dir: Path, tmp_path: Path
) -> None:
    doc = _cube_doc(cityjson_dir)
    _geometry(doc)["texture"] = {"t": {"values": [[None] * 6]}}
    with pytest.raises(IngestError, match="not an integer"):
        load_cityjson(_write(tmp_path, doc))

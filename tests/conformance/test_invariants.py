"""The 3DGI cityjson-corpus conformance cases, checked against our reader and GLB output.

Each ``conformance/*.invariants.json`` lists check ids; every id is implemented below
(``CHECKS``) or listed in ``NOT_APPLICABLE`` with a reason, and a test fails when a new id
appears in the data. Expected values come from the case file read with plain ``json``
(numbers as ``Decimal`` where precision is the point). The negative cases in
``invalid/corpus_*.invariants.json`` must be rejected with an IngestError.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from glbdecode import Glb

from ingest.cityjson import load_cityjson, parse_cityjson
from scene.gltf import model_to_glb
from twin.errors import IngestError, SceneError
from twin.geometry import CityModel

ROOT = Path(__file__).resolve().parents[2]


def _data_root() -> Path:
    env = os.environ.get("TWIN_SHARED_DATA")
    base = Path(env) if env else ROOT.parent / "shared" / "data"
    return base / "cityjson"


def _invariants(folder: str, prefix: str = "") -> list[tuple[str, str]]:
    """(invariants file name, check id) pairs found in a folder."""
    d = _data_root() / folder
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob(f"{prefix}*.invariants.json")):
        spec = json.loads(p.read_text(encoding="utf-8"))
        out += [(p.name, c["id"]) for c in spec["checks"]]
    return out


POSITIVE = _invariants("conformance")
NEGATIVE = _invariants("invalid", "corpus_")


# -- GLB decoding (independent of pygltflib) ---------------------------------------------


# -- a case: the file, its raw JSON, our model and GLB ---------------------------------


@dataclass
class Case:
    id: str
    path: Path
    raw: dict[str, Any]
    raw_exact: dict[str, Any]  # numbers as Decimal
    model: CityModel
    glb: Glb | None

    @property
    def objects(self) -> dict[str, Any]:
        return dict(self.raw["CityObjects"])


@functools.cache
def load_case(path: Path) -> Case:
    text = path.read_text(encoding="utf-8")
    model = load_cityjson(path)
    try:
        glb: Glb | None = Glb.parse(model_to_glb(model)[0])
    except SceneError:
        glb = None
    return Case(
        path.name.removesuffix(".city.json"),
        path,
        json.loads(text),
        json.loads(text, parse_float=Decimal, parse_int=Decimal),
        model,
        glb,
    )


def exact_vertices(case: Case) -> list[tuple[Decimal, Decimal, Decimal]]:
    """scale * v + translate in exact decimal arithmetic."""
    raw = case.raw_exact
    t = raw.get("transform")
    out = []
    for v in raw["vertices"]:
        if t:
            out.append(tuple(v[k] * t["scale"][k] + t["translate"][k] for k in range(3)))
        else:
            out.append(tuple(v))
    return out  # type: ignore[return-value]


def max_error(model_xyz: np.ndarray, exact: list[tuple[Decimal, Decimal, Decimal]]) -> Decimal:
    worst = Decimal(0)
    for got, want in zip(model_xyz.tolist(), exact, strict=True):
        for g, w in zip(got, want, strict=True):
            worst = max(worst, abs(Decimal(g) - w))
    return worst


def points_model(case: Case, order: list[int]) -> CityModel:
    """The case's vertices and transform with one MultiPoint object over ``order``."""
    doc = {
        "type": "CityJSON",
        "version": "2.0",
        "CityObjects": {
            "probe": {
                "type": "GenericCityObject",
                "geometry": [{"type": "MultiPoint", "lod": "1", "boundaries": order}],
            }
        },
        "vertices": case.raw["vertices"],
    }
    if "transform" in case.raw:
        doc["transform"] = case.raw["transform"]
    # orjson: the stdlib float encoder is process-global and cjio (imported by other tests)
    # replaces it with a rounding one.
    return parse_cityjson(orjson.dumps(doc), source=f"{case.id}-probe.city.json")


def surface_semantics(model: CityModel, oid: str) -> list[str | None]:
    f = model.feature_ids.index(oid)
    return [
        model.semantic_types[s] if s >= 0 else None
        for s in model.surf_semantic[model.surf_feature == f].tolist()
    ]


def file_semantics(geometry: dict[str, Any]) -> list[str | None]:
    sem = geometry["semantics"]

    def leaves(v: Any) -> list[Any]:
        return [x for item in v for x in leaves(item)] if isinstance(v, list) else [v]

    return [None if i is None else sem["surfaces"][i]["type"] for i in leaves(sem["values"])]


# -- the checks ---------------------------------------------------------------------------

CHECKS: dict[str, Callable[[Case], None]] = {}


def check(*ids: str) -> Callable[[Callable[[Case], None]], Callable[[Case], None]]:
    def register(fn: Callable[[Case], None]) -> Callable[[Case], None]:
        for i in ids:
            CHECKS[i] = fn
        return fn

    return register


@check("cityobject_structure_preserved", "cityobject_extension_type_preserved")
def _structure(case: Case) -> None:
    twin = case.model.twin
    assert twin.ids() == list(case.objects)
    for oid, obj in case.objects.items():
        got = twin[oid]
        assert got.type == obj["type"]
        assert got.is_extension == obj["type"].startswith("+")
        assert got.parents == obj.get("parents", [])
        assert got.children == obj.get("children", [])
        for key in set(obj) - {"type", "attributes", "geometry", "parents", "children"}:
            assert got.extra[key] == obj[key]  # e.g. children_roles
    assert twin.counts_by_type() == _count_types(case)
    if case.glb is not None:  # the property table carries type and parent too
        _table_matches_twin(case)


def _count_types(case: Case) -> dict[str, int]:
    out: dict[str, int] = {}
    for obj in case.objects.values():
        out[obj["type"]] = out.get(obj["type"], 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _table_matches_twin(case: Case) -> None:
    assert case.glb is not None
    meta = case.glb.doc["extensions"]["EXT_structural_metadata"]
    table = meta["propertyTables"][0]
    assert table["count"] == len(case.model.feature_ids)
    twin = case.model.twin
    assert case.glb.strings("id") == case.model.feature_ids
    assert case.glb.strings("type") == [twin[f].type for f in case.model.feature_ids]
    parents = [twin[f].parent or "" for f in case.model.feature_ids]
    assert (case.glb.strings("parent") or [""] * len(parents)) == parents


@check("cityobject_hierarchy_resolved")
def _hierarchy(case: Case) -> None:
    twin = case.model.twin
    for obj in twin:
        for p in obj.parents:
            assert obj.id in twin[p].children
        for c in obj.children:
            assert obj.id in twin[c].parents
    assert not [w for w in case.model.warnings if w.code.startswith("dangling")]
    # Walking down from the roots reaches every object exactly once (a forest).
    seen: list[str] = []
    todo = [o.id for o in twin.roots()]
    while todo:
        oid = todo.pop()
        seen.append(oid)
        todo += [c.id for c in twin.children_of(oid)]
    assert sorted(seen) == sorted(twin.ids())
    roots = {oid for oid, o in case.objects.items() if not o.get("parents")}
    assert {o.id for o in twin.roots()} == roots


@check("building_address_preserved")
def _address(case: Case) -> None:
    for oid, obj in case.objects.items():
        assert case.model.twin[oid].extra["address"] == obj["address"]


@check("address_location_resolved")
def _address_location(case: Case) -> None:
    exact = exact_vertices(case)
    n = 0
    for oid in case.objects:
        for addr in case.model.twin[oid].extra["address"]:
            loc = addr["location"]
            assert loc["type"] == "MultiPoint"
            for i in loc["boundaries"]:
                # Indices in kept members still address model.vertices (file order kept).
                got = case.model.vertices[i]
                assert max_error(got[None, :], [exact[i]]) == 0
                n += 1
    assert n == 2
    pts = case.model.vertices[[0, 1]].tolist()
    assert pts == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


@check("missing_geometry_member")
def _missing_geometry(case: Case) -> None:
    for oid, obj in case.objects.items():
        assert "geometry" not in obj
        assert case.model.twin[oid].geometry is None
    assert case.model.feature_ids == []
    assert case.model.warnings == []
    assert case.glb is None  # nothing to draw is a SceneError, not an empty GLB


@check("cityobject_extension_members_preserved")
def _extension_members(case: Case) -> None:
    for oid, obj in case.objects.items():
        got = case.model.twin[oid]
        assert got.attributes == obj.get("attributes", {})
        assert got.type == obj["type"]
    assert case.model.extensions == case.raw["extensions"]


@check("vertex_indices_preserved")
def _vertex_indices(case: Case) -> None:
    n = len(case.raw["vertices"])
    assert case.model.vertices.shape == (n, 3)
    assert max_error(case.model.vertices, exact_vertices(case)) < Decimal("1e-4")
    # Indices still point at the same vertices after a reordering through the GLB.
    order = list(reversed(range(n)))
    probe = points_model(case, order)
    assert probe.point_vertices.tolist() == order
    glb = Glb.parse(model_to_glb(probe)[0])
    got = glb.real_positions(0)
    want = probe.vertices[order]
    _within_float32(got, want, glb.origin)


def _within_float32(got: np.ndarray, want: np.ndarray, origin: np.ndarray) -> None:
    """GLB float32 + float64 origin: 1 mm, or 1e-6 of the distance from the origin.

    float32 keeps ~7 significant digits; the local origin keeps city-sized data within
    1 mm, and a planet-sized extent within a relative 1e-6.
    """
    assert got.shape == want.shape
    dist = np.linalg.norm(want - origin, axis=1)
    err = np.linalg.norm(got - want, axis=1)
    tol = np.maximum(1e-3, 1e-6 * dist)
    bad = np.flatnonzero(err > tol)
    assert bad.size == 0, f"vertex {bad[:5]}: error {err[bad[:5]]} m > {tol[bad[:5]]}"


@check("coordinates_precision_roundtrip", "coordinates_preserved")
def _precision(case: Case) -> None:
    exact = exact_vertices(case)
    assert max_error(case.model.vertices, exact) < Decimal("1e-4")
    probe = points_model(case, list(range(len(exact))))
    glb = Glb.parse(model_to_glb(probe)[0])
    want = np.array([[float(c) for c in v] for v in exact])
    _within_float32(glb.real_positions(0), want, glb.origin)


@check("transform_preserved")
def _transform(case: Case) -> None:
    t = case.raw["transform"]
    assert case.model.transform == {
        "scale": [float(x) for x in t["scale"]],
        "translate": [float(x) for x in t["translate"]],
    }


@check("extension_member_preserved")
def _extensions(case: Case) -> None:
    assert case.model.extensions == case.raw["extensions"]
    assert case.model.extensions  # the case is about a non-empty member


@check("geometry_instance_preserved", "geometry_instance_resolved")
def _instance(case: Case) -> None:
    model = case.model
    # By hand from the file: template vertex (1, 2, 3); instance 0 scales by 2 at
    # reference vertex 0 = (0, 0, 0) -> (2, 4, 6); instance 1 is the identity at
    # reference vertex 1 = (2, 2, 2) -> (3, 4, 5).
    placed = model.vertices[model.point_vertices].tolist()
    assert placed == [[2.0, 4.0, 6.0], [3.0, 4.0, 5.0]]
    obj = model.twin["fixture"]
    assert obj.geometry is not None
    assert obj.geometry.lod == "1"
    assert obj.geometry.geometry_types == ("GeometryInstance", "GeometryInstance")
    assert case.glb is not None
    got = case.glb.real_positions(0)
    assert sorted(map(tuple, np.round(got, 5).tolist())) == [(2, 4, 6), (3, 4, 5)]


@check("geometry_material_preserved")
def _material(case: Case) -> None:
    model = case.model
    names = [m["name"] for m in case.raw["appearance"]["materials"]]
    assert [m.name for m in model.materials] == names
    g = case.objects["fixture"]["geometry"][0]
    (theme,) = g["material"].values()
    assert model.surf_material.tolist() == [theme["value"]] * 8
    assert model.group_type == [g["type"]]
    assert model.solid_group.size == 2  # two solids kept apart
    assert case.glb is not None
    prims = case.glb.doc["meshes"][0]["primitives"]
    assert len(prims) == 1
    assert names[0] in case.glb.material_of(prims[0])["name"]


@check("geometry_semantics_preserved", "semantic_surface_preserved")
def _semantics(case: Case) -> None:
    g = case.objects["fixture"]["geometry"][0]
    assert surface_semantics(case.model, "fixture") == file_semantics(g)


@check("semantic_extension_type_preserved")
def _semantic_extension(case: Case) -> None:
    _semantics(case)
    assert "+MySemantic" in case.model.semantic_types
    assert "unknown-semantic" not in {w.code for w in case.model.warnings}


@check("metadata_properties_preserved")
def _metadata(case: Case) -> None:
    meta = case.raw["metadata"]
    assert case.model.metadata == meta
    assert case.model.crs == meta["referenceSystem"]
    assert case.model.epsg == 2355


def _appearance_materials(case: Case) -> None:
    model = case.model
    for got, want in zip(model.materials, case.raw["appearance"]["materials"], strict=True):
        assert got.name == want["name"]
        assert got.diffuse == tuple(want.get("diffuseColor", got.diffuse))
        assert got.emissive == tuple(want.get("emissiveColor", got.emissive))
        assert got.shininess == want.get("shininess", got.shininess)
        assert got.transparency == want.get("transparency", got.transparency)
        assert got.smooth == want.get("isSmooth", False)


@check("appearance_preserved")
def _appearance(case: Case) -> None:
    _appearance_materials(case)
    warm = case.model.materials[0]
    assert warm.diffuse == (0.5, 0.6, 0.7) and warm.transparency == 0.9 and warm.smooth
    # The GLB carries both as glTF materials, transparency as alpha.
    assert case.glb is not None
    mats = {
        m["name"]: m
        for m in (case.glb.material_of(p) for p in case.glb.doc["meshes"][0]["primitives"])
    }
    (w,) = [m for n, m in mats.items() if "warm" in n]
    (c,) = [m for n, m in mats.items() if "cool" in n]
    assert w["pbrMetallicRoughness"]["baseColorFactor"] == pytest.approx([0.5, 0.6, 0.7, 0.1])
    assert w["alphaMode"] == "BLEND"
    assert c["pbrMetallicRoughness"]["baseColorFactor"][3] == 1.0


def _with_themes(case: Case, building0: dict[str, Any], default: str) -> CityModel:
    doc = json.loads(json.dumps(case.raw))
    doc["CityObjects"]["building-0"]["geometry"][0]["material"] = building0
    doc["appearance"]["default-theme-material"] = default
    return parse_cityjson(json.dumps(doc).encode(), source="themes.city.json")


def _materials_by_object(model: CityModel) -> dict[str, list[int]]:
    return {
        oid: model.surf_material[model.surf_feature == f].tolist()
        for f, oid in enumerate(model.feature_ids)
    }


@check("default_material_texture_set")
def _default_theme(case: Case) -> None:
    assert case.raw["appearance"]["default-theme-material"] == "warm"
    assert _materials_by_object(case.model)["building-0"] == [0]
    # Make the themes disagree: the default theme decides.
    themes = {"warm": {"value": 0}, "cool": {"value": 1}}
    assert _materials_by_object(_with_themes(case, themes, "warm"))["building-0"] == [0]
    assert _materials_by_object(_with_themes(case, themes, "cool"))["building-0"] == [1]


@check("multiple_material_texture_set")
def _multiple_themes(case: Case) -> None:
    # building-1 has only the 'cool' theme (not the default): that one is used.
    assert _materials_by_object(case.model) == {"building-0": [0], "building-1": [1]}
    assert [m.name for m in case.model.materials] == ["warm", "cool"]
    assert case.glb is not None
    assert len(case.glb.doc["meshes"][0]["primitives"]) == 2


@check("material_assignment")
def _value_form(case: Case) -> None:
    # 'value' assigns one material to every surface of the geometry (CityJSON 2.0 §8.2).
    doc = json.loads(json.dumps(case.raw))
    g = doc["CityObjects"]["building-0"]["geometry"][0]
    g["boundaries"] = [[[0, 1, 2, 3]], [[4, 5, 6, 7]], [[0, 1, 5, 4]]]
    g["material"] = {"warm": {"value": 1}}
    del g["texture"]
    model = parse_cityjson(json.dumps(doc).encode(), source="value.city.json")
    assert _materials_by_object(model)["building-0"] == [1, 1, 1]


NOT_APPLICABLE: dict[str, str] = {
    "geometry_texture_preserved": (
        "CityModel keeps no textures or UVs (the GLB is untextured by design); texture "
        "indices are only range-checked on read"
    ),
    "semantic_extension_members_preserved": (
        "CityModel keeps one semantic type per surface, not the semantic surface's own "
        "members (attributes, parent/children)"
    ),
    "geometry_semantics_multipoint.invariants.json/geometry_semantics_preserved": (
        "CityModel keeps no semantics for MultiPoint vertices"
    ),
    "geometry_semantics_multilinestring.invariants.json/geometry_semantics_preserved": (
        "CityModel keeps no semantics for MultiLineString segments"
    ),
}


def _not_applicable(name: str, check_id: str) -> str | None:
    return NOT_APPLICABLE.get(f"{name}/{check_id}") or NOT_APPLICABLE.get(check_id)


def test_every_check_id_is_handled(cityjson_dir: Path) -> None:
    assert len(POSITIVE) >= 30, "conformance invariants not found at collection time"
    unknown = [
        (name, cid)
        for name, cid in POSITIVE
        if cid not in CHECKS and _not_applicable(name, cid) is None
    ]
    assert unknown == [], "new conformance check ids: implement or list in NOT_APPLICABLE"
    stale = [k for k in NOT_APPLICABLE if k.split("/")[-1] not in {c for _, c in POSITIVE}]
    assert stale == []


def test_every_case_is_positive_with_a_city_file(cityjson_dir: Path) -> None:
    for p in sorted((cityjson_dir / "conformance").glob("*.invariants.json")):
        spec = json.loads(p.read_text(encoding="utf-8"))
        assert spec["kind"] == "positive"
        assert spec["id"] == p.name.removesuffix(".invariants.json")
        assert (cityjson_dir / "conformance" / f"{spec['id']}.city.json").is_file()


@pytest.mark.parametrize(("name", "check_id"), POSITIVE)
def test_positive_invariant(cityjson_dir: Path, name: str, check_id: str) -> None:
    reason = _not_applicable(name, check_id)
    if reason is not None:
        pytest.skip(f"not applicable: {reason}")
    case = load_case(cityjson_dir / "conformance" / name.replace(".invariants.json", ".city.json"))
    CHECKS[check_id](case)


# -- negative cases -------------------------------------------------------------------------

# Invariants id -> fixture in invalid/ (renamed on copy: corpus_ prefix, 'invalid_' dropped).
NEGATIVE_FIXTURES = {
    "invalid_cityjsonfeature_root_id_unresolved": "corpus_feature_root_id_unresolved.city.jsonl",
    "invalid_missing_type": "corpus_missing_type.json",
    "invalid_out_of_range_vertex_index": "corpus_out_of_range_vertex_index.json",
    "invalid_u64_f64_bounds": "corpus_u64_f64_bounds.json",
}
# What the one-line message must name for each negative check.
NEGATIVE_SAYS = {
    "feature_root_id_unresolved": "missing-main-object",
    "rejects_missing_top_level_type": "'type'",
    "rejects_out_of_range_vertex_index": "vertex index 99",
    "rejects_numeric_bounds_overflow": "range",
}


@pytest.mark.parametrize(("name", "check_id"), NEGATIVE)
def test_negative_case_rejected(cityjson_dir: Path, name: str, check_id: str) -> None:
    spec = json.loads((cityjson_dir / "invalid" / name).read_text(encoding="utf-8"))
    assert spec["kind"] == "negative" and spec["expected_result"] == "reject"
    fixture = NEGATIVE_FIXTURES[spec["id"]]
    assert fixture.endswith(Path(spec["fixture"]).suffix)
    with pytest.raises(IngestError) as info:
        load_cityjson(cityjson_dir / "invalid" / fixture)
    msg = str(info.value)
    assert "\n" not in msg
    assert NEGATIVE_SAYS[check_id] in msg


def test_negative_cases_all_mapped(cityjson_dir: Path) -> None:
    ids = {
        json.loads(p.read_text(encoding="utf-8"))["id"]
        for p in (cityjson_dir / "invalid").glob("corpus_*.invariants.json")
    }
    assert ids == set(NEGATIVE_FIXTURES)
    assert {c for _, c in NEGATIVE} == set(NEGATIVE_SAYS)

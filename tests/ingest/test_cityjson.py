"""The CityJSON reader against the real shared data, its invalid files and random damage.

Expected numbers are read independently: object counts from SOURCES.md (written by the data
curator's own script), coordinates and hierarchies straight from the JSON with ``json``.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.cityjson import iter_cityjson, load_cityjson, parse_cityjson
from twin.errors import IngestError
from twin.geometry import CityModel

ROOT = Path(__file__).resolve().parents[2]


def _data_root() -> Path:
    """Where the shared CityJSON data lives (same rule as conftest, for collection time)."""
    env = os.environ.get("TWIN_SHARED_DATA")
    base = Path(env) if env else ROOT.parent / "shared" / "data"
    return base / "cityjson"


def _listing(folder: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    d = _data_root() / folder
    if not d.is_dir():
        return []
    return sorted(
        f"{folder}/{p.name}"
        for p in d.iterdir()
        if p.is_file()
        and p.suffix in (".json", ".jsonl")
        and not p.name.endswith(".invariants.json")
        and p.name not in skip
    )


BROKEN_LEGACY = "o4_v09.json"  # references vertex 44 of 6: not valid despite its folder
VALID_FILES = [
    *_listing("real"),
    *_listing("small"),
    *_listing("legacy", skip=(BROKEN_LEGACY,)),
    *_listing("seq"),
    *_listing("conformance"),
]
INVALID_FILES = _listing("invalid")


# -- independent reading of the raw files -------------------------------------------------


@dataclass
class Raw:
    """A file read with plain ``json``: objects (seq merged, later ids win), vertices."""

    header: dict[str, Any]
    objects: dict[str, Any]
    # Per object: the real-world vertices its boundaries index (document or own feature).
    object_vertices: dict[str, np.ndarray]
    vertices: np.ndarray  # every vertex in file order (seq: header, then each feature)


def _real(vertices: list[Any], transform: dict[str, Any] | None) -> np.ndarray:
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    if transform:
        v = v * np.asarray(transform["scale"], dtype=np.float64) + np.asarray(
            transform["translate"], dtype=np.float64
        )
    return v


@functools.cache
def cached_model(path: Path) -> CityModel:
    """Default-LoD model of a shared file, read once per session (tests only read it)."""
    return load_cityjson(path)


@functools.cache
def read_raw(path: Path) -> Raw:
    text = path.read_text(encoding="utf-8")
    try:
        docs = [json.loads(text)]
    except json.JSONDecodeError:
        docs = [json.loads(line) for line in text.splitlines() if line.strip()]
    head = docs[0]
    if head.get("type") == "CityJSONFeature":  # lone feature: its own vertices, no transform
        docs = [{"type": "CityJSON", "CityObjects": {}, "vertices": []}, head]
        head = docs[0]
    transform = head.get("transform")
    objects: dict[str, Any] = {}
    object_vertices: dict[str, np.ndarray] = {}
    all_vertices = [_real(head.get("vertices") or [], transform)]
    for oid, obj in (head.get("CityObjects") or {}).items():
        objects[oid] = obj
        object_vertices[oid] = all_vertices[0]
    for feat in docs[1:]:
        fv = _real(feat.get("vertices") or [], transform)
        all_vertices.append(fv)
        for oid, obj in feat["CityObjects"].items():
            if oid in objects:  # a repeated id in a sequence: the first one is kept
                continue
            objects[oid] = obj
            object_vertices[oid] = fv
    return Raw(head, objects, object_vertices, np.vstack(all_vertices))


def _ints(value: Any) -> list[int]:
    """Every integer leaf of a nested boundary array, in order."""
    if isinstance(value, list):
        return [i for v in value for i in _ints(v)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def feature_vertex_indices(model: CityModel, oid: str) -> np.ndarray:
    """Indices into model.vertices drawn for one object (rings, points, lines)."""
    f = model.feature_ids.index(oid)
    surfs = np.flatnonzero(model.surf_feature == f)
    out = []
    for s in surfs:
        for r in range(model.surface_rings[s], model.surface_rings[s + 1]):
            out.append(model.ring_vertices[model.ring_offsets[r] : model.ring_offsets[r + 1]])
    out.append(model.point_vertices[model.point_feature == f])
    out.append(model.line_segments[model.line_feature == f].reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def sources_table(cityjson_dir: Path) -> dict[str, tuple[int, dict[str, int]]]:
    """SOURCES.md rows: file -> (n CityObjects, {type: count})."""
    row = re.compile(r"^\| `([^`]+)` \| \d+ \| [^|]* \| (\d+)(?: \(\d+\))? \| ([^|]*) \|")
    out: dict[str, tuple[int, dict[str, int]]] = {}
    for line in (cityjson_dir / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        m = row.match(line)
        if not m:
            continue
        types: dict[str, int] = {}
        for part in m.group(3).split(","):
            part = part.strip()
            if part and part != "-":
                name, _, n = part.rpartition(":")
                types[name] = int(n)
        out[m.group(1)] = (int(m.group(2)), types)
    return out


@pytest.fixture(scope="module")
def sources(cityjson_dir: Path) -> dict[str, tuple[int, dict[str, int]]]:
    table = sources_table(cityjson_dir)
    assert len(table) > 50, "SOURCES.md table not parsed"
    return table


# -- every valid file loads ------------------------------------------------------------


@pytest.mark.parametrize("rel", VALID_FILES)
def test_valid_file_loads(cityjson_dir: Path, rel: str) -> None:
    path = cityjson_dir / rel
    model = cached_model(path)
    raw = read_raw(path)
    assert set(model.twin.ids()) == set(raw.objects)
    for oid, obj in raw.objects.items():
        assert model.twin[oid].type == obj["type"]
    # Drawn objects have a summary, the others none; indices stay inside the vertices.
    drawn = set(model.feature_ids)
    assert len(drawn) == len(model.feature_ids)
    for obj in model.twin:
        assert (obj.geometry is not None) == (obj.id in drawn), obj.id
    assert np.isfinite(model.vertices).all()
    n = model.vertices.shape[0]
    for idx in (model.ring_vertices, model.point_vertices, model.line_segments.reshape(-1)):
        assert idx.size == 0 or (idx.min() >= 0 and idx.max() < n)
    assert model.n_surfaces == model.surf_feature.size == model.surf_semantic.size
    assert model.surf_material.size == model.n_surfaces
    legacy = str(raw.header.get("version", "")).startswith("0.") or (
        raw.header.get("type") == "CityModel"
    )
    assert ("legacy-version" in {w.code for w in model.warnings}) == legacy


def test_valid_listing_is_complete(cityjson_dir: Path) -> None:
    # The parametrization is built at collection time; make sure it saw the folders.
    assert len(VALID_FILES) >= 60
    assert "legacy/o4_v09.json" not in VALID_FILES


def test_o4_v09_is_broken_and_says_where(cityjson_dir: Path) -> None:
    with pytest.raises(IngestError) as info:
        load_cityjson(cityjson_dir / "legacy" / BROKEN_LEGACY)
    msg = str(info.value)
    assert "LondonTower" in msg
    assert "vertex index" in msg
    assert "44" in msg
    assert "\n" not in msg


# -- counts by type, from SOURCES.md -----------------------------------------------------

COUNTED = [
    "real/3db_sub.city.json",
    "real/delfshaven_3-20.city.json",
    "real/delft.city.json",
    "real/geores_testdata.city.json",
    "real/zurich_subset_lod2.city.json",
    "legacy/delfshaven_v08.json",
    "legacy/denhaag_01_v08.json",
    "small/japanese_nonascii.city.json",
    "small/noise_extension.city.json",
    "small/spec_example_v11.city.json",
    "small/DH_01_subs.city.json",
    "seq/delft_subset.city.jsonl",
    "seq/denhaag_random_5.city.jsonl",
    "seq/small.city.jsonl",
    "seq/geom_temp.city.jsonl",
    "conformance/cityobject_all_types.city.json",
]


@pytest.mark.parametrize("rel", COUNTED)
def test_counts_by_type_match_sources(
    cityjson_dir: Path, sources: dict[str, tuple[int, dict[str, int]]], rel: str
) -> None:
    n, types = sources[rel]
    model = cached_model(cityjson_dir / rel)
    assert len(model.twin) == n
    assert model.twin.counts_by_type() == types


@pytest.mark.parametrize(
    ("rel", "n", "types"),
    [
        ("real/delfshaven_3-20.city.json", 853, {"Building": 853}),
        (
            "legacy/denhaag_01_v08.json",
            2498,
            {"Building": 844, "BuildingPart": 1653, "TINRelief": 1},
        ),
        ("real/zurich_subset_lod2.city.json", 210, {"Building": 49, "BuildingPart": 161}),
        ("seq/delft_subset.city.jsonl", 20, {"Building": 10, "BuildingPart": 10}),
    ],
)
def test_counts_anchor(cityjson_dir: Path, rel: str, n: int, types: dict[str, int]) -> None:
    model = cached_model(cityjson_dir / rel)
    assert len(model.twin) == n
    assert model.twin.counts_by_type() == types


def test_seq_repeated_ids_keep_the_first(cityjson_dir: Path) -> None:
    # cube_20_1.jsonl: three features all named 'id-1' (SOURCES.md sums lines: 3); the
    # first is a GenericCityObject, the later two Buildings. A stream keeps the first.
    model = load_cityjson(cityjson_dir / "seq" / "cube_20_1.jsonl")
    assert model.twin.ids() == ["id-1"]
    assert model.twin["id-1"].type == "GenericCityObject"
    chunks = list(iter_cityjson(cityjson_dir / "seq" / "cube_20_1.jsonl", chunk=1))
    assert [o.id for m in chunks for o in m.twin] == ["id-1"]
    assert [w.code for w in model.warnings].count("seq-duplicate-id") == 2


# -- transform, hierarchy, extensions, attributes ------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [
        "real/delfshaven_3-20.city.json",
        "small/cube.city.json",
        "legacy/denhaag_01_v08.json",
        "seq/small.city.jsonl",
        "seq/denhaag_random_5.city.jsonl",
    ],
)
def test_transform_applied(cityjson_dir: Path, rel: str) -> None:
    path = cityjson_dir / rel
    model = cached_model(path)
    raw = read_raw(path)
    n = raw.vertices.shape[0]
    assert model.vertices.shape[0] >= n
    np.testing.assert_allclose(model.vertices[:n], raw.vertices, rtol=0, atol=1e-9)


def test_transform_by_hand_delfshaven(cityjson_dir: Path) -> None:
    doc = json.loads((cityjson_dir / "real/delfshaven_3-20.city.json").read_text())
    model = cached_model(cityjson_dir / "real/delfshaven_3-20.city.json")
    s, t = doc["transform"]["scale"], doc["transform"]["translate"]
    for i in (0, 1234, len(doc["vertices"]) - 1):
        v = doc["vertices"][i]
        expect = [s[k] * v[k] + t[k] for k in range(3)]
        assert model.vertices[i].tolist() == pytest.approx(expect, abs=1e-9)
    assert model.transform == {"scale": s, "translate": t}


def test_zurich_parent_child_links(cityjson_dir: Path) -> None:
    path = cityjson_dir / "real/zurich_subset_lod2.city.json"
    model = cached_model(path)
    raw = read_raw(path)
    parts = [o for o in model.twin if o.type == "BuildingPart"]
    assert len(parts) == 161
    for part in parts:
        assert len(part.parents) == 1
        parent = model.twin[part.parents[0]]
        assert parent.type == "Building"
        assert part.id in parent.children
    for b in (o for o in model.twin if o.type == "Building"):
        assert sorted(b.children) == sorted(raw.objects[b.id].get("children", []))
        assert all(model.twin[c].type == "BuildingPart" for c in b.children)
        assert [c.id for c in model.twin.children_of(b.id)] == b.children
    assert {o.id for o in model.twin.roots()} == {o.id for o in model.twin if o.type == "Building"}
    assert not [w for w in model.warnings if w.code.startswith("dangling")]


@pytest.mark.parametrize(
    "rel", ["small/noise_extension.city.json", "seq/noise_extension.city.jsonl"]
)
def test_extension_types_kept(cityjson_dir: Path, rel: str) -> None:
    model = cached_model(cityjson_dir / rel)
    ext = [o for o in model.twin if o.type == "+NoiseCityFurnitureSegment"]
    assert len(ext) == 2
    assert all(o.is_extension for o in ext)
    assert not model.twin["a_noisy_bench"].is_extension
    for o in ext:
        assert o.parents == ["a_noisy_bench"]
        assert o.id in model.twin["a_noisy_bench"].children
    assert "Noise" in model.extensions
    # Extension attributes ('+noise-...') are kept verbatim.
    attrs = model.twin["1234"].attributes
    assert attrs["+noise-buildingLNightMax"] == {"value": 43.123, "uom": "dB"}


def test_non_ascii_attributes_kept(cityjson_dir: Path) -> None:
    path = cityjson_dir / "small/japanese_nonascii.city.json"
    model = cached_model(path)
    raw = read_raw(path)
    keys = set()
    for oid, obj in raw.objects.items():
        assert model.twin[oid].attributes == obj.get("attributes", {})
        keys |= set(obj.get("attributes", {}))
    assert any(ord(c) > 0x3000 for k in keys for c in k), "fixture lost its non-ASCII keys"
    some = next(o for o in model.twin if "延べ面積換算係数" in o.attributes)
    assert some.attributes["延べ面積換算係数"] == "1.00"


def test_address_and_other_members_kept(cityjson_dir: Path) -> None:
    model = load_cityjson(cityjson_dir / "conformance/cityobject_building_address.city.json")
    addr = model.twin["fixture"].extra["address"]
    assert [a["thoroughfareNumber"] for a in addr] == ["1", "2"]
    assert addr[0]["locality"] == "Chibougamau"


# -- LoD selection ------------------------------------------------------------------------


def _lod_geometry(obj: dict[str, Any], lod: str) -> dict[str, Any]:
    return next(g for g in obj["geometry"] if str(g["lod"]) == lod)


@pytest.mark.parametrize(
    ("want", "picked"),
    [(None, "2.2"), ("2.2", "2.2"), ("1.2", "1.2"), ("1.5", "1.3"), ("2", "1.3"), ("9", "2.2")],
)
def test_lod_choice(cityjson_dir: Path, want: str | None, picked: str) -> None:
    path = cityjson_dir / "small/multi_lod.city.json"
    model = load_cityjson(path, lod=want)
    raw = read_raw(path)
    assert model.lods == ["1.2", "1.3", "2.2"]
    for oid in model.feature_ids:
        obj = model.twin[oid]
        assert obj.geometry is not None
        assert obj.geometry.lod == picked
        # The drawn rings are exactly the chosen geometry's boundaries.
        g = _lod_geometry(raw.objects[oid], picked)
        assert feature_vertex_indices(model, oid).tolist() == _ints(g["boundaries"])


def test_lod_below_every_geometry_takes_the_lowest(cityjson_dir: Path) -> None:
    model = load_cityjson(cityjson_dir / "small/multi_lod.city.json", lod="0.5")
    assert {o.geometry.lod for o in model.twin if o.geometry} == {"1.2"}


def test_lod_not_a_number_is_an_ingest_error(cityjson_dir: Path) -> None:
    with pytest.raises(IngestError, match="lod"):
        load_cityjson(cityjson_dir / "small/multi_lod.city.json", lod="high")


# -- geometry templates -------------------------------------------------------------------


def test_geometry_instance_by_hand(cityjson_dir: Path) -> None:
    # Template vertex (1, 2, 3); instance 1: scale 2 at reference vertex (0, 0, 0) ->
    # (2, 4, 6); instance 2: identity at reference vertex (2, 2, 2) -> (3, 4, 5).
    model = load_cityjson(cityjson_dir / "conformance/geometry_instance.city.json")
    pts = model.vertices[feature_vertex_indices(model, "fixture")]
    assert sorted(map(tuple, pts.tolist())) == [(2.0, 4.0, 6.0), (3.0, 4.0, 5.0)]
    assert model.point_vertices.size == 2


def _placed_template_vertices(raw: Raw, geoms: list[dict[str, Any]], oid: str) -> set[Any]:
    gt = raw.header["geometry-templates"]
    tv = np.asarray(gt["vertices-templates"], dtype=np.float64).reshape(-1, 3)
    out: set[Any] = set()
    for g in geoms:
        tmpl = gt["templates"][g["template"]]
        m = np.asarray(g["transformationMatrix"], dtype=np.float64).reshape(4, 4)
        ref = raw.object_vertices[oid][g["boundaries"][0]]
        for i in sorted(set(_ints(tmpl["boundaries"]))):
            p = m @ np.append(tv[i], 1.0)
            out.add(tuple(np.round(p[:3] + ref, 6)))
    return out


@pytest.mark.parametrize(
    "rel",
    [
        "small/geomtemplate_2.city.json",
        "small/dummy_templates_appearance.city.json",
        "real/geores_testdata.city.json",
        "seq/geom_temp.city.jsonl",
    ],
)
def test_geometry_templates_placed(cityjson_dir: Path, rel: str) -> None:
    path = cityjson_dir / rel
    model = cached_model(path)
    raw = read_raw(path)
    templates = raw.header["geometry-templates"]["templates"]
    checked = 0
    for oid, obj in raw.objects.items():
        geoms = obj.get("geometry") or []
        if not geoms or any(g["type"] != "GeometryInstance" for g in geoms):
            continue
        # Only the highest LoD is drawn by default.
        top = max(float(templates[g["template"]]["lod"]) for g in geoms)
        drawn = [g for g in geoms if float(templates[g["template"]]["lod"]) == top]
        got = {tuple(np.round(p, 6)) for p in model.vertices[feature_vertex_indices(model, oid)]}
        assert got == _placed_template_vertices(raw, drawn, oid), oid
        checked += 1
    assert checked > 0


# -- geometry summaries ---------------------------------------------------------------------


def test_delfshaven_wgs84_in_rotterdam(cityjson_dir: Path) -> None:
    model = cached_model(cityjson_dir / "real/delfshaven_3-20.city.json")
    assert model.epsg == 28992
    for obj in model.twin:
        assert obj.geometry is not None and obj.geometry.centroid_wgs84 is not None
        lon, lat, _ = obj.geometry.centroid_wgs84
        assert 4.40 < lon < 4.50 and 51.88 < lat < 51.93, (obj.id, lon, lat)
        assert obj.geometry.bbox_wgs84 is not None
        b = obj.geometry.bbox_wgs84
        assert b[0] <= lon <= b[3] and b[1] <= lat <= b[4]
    first = next(iter(model.twin))
    assert first.geometry is not None and first.geometry.centroid_wgs84 is not None
    assert first.geometry.centroid_wgs84[0] == pytest.approx(4.45, abs=0.01)
    assert first.geometry.centroid_wgs84[1] == pytest.approx(51.9, abs=0.02)


def test_cube_summary(cityjson_dir: Path) -> None:
    path = cityjson_dir / "small/cube.city.json"
    raw = read_raw(path)
    lo, hi = raw.vertices.min(axis=0), raw.vertices.max(axis=0)
    model = cached_model(path)
    geo = model.twin["id-1"].geometry
    assert geo is not None
    assert geo.footprint_area == pytest.approx((hi[0] - lo[0]) * (hi[1] - lo[1]), rel=1e-9)
    assert geo.height == pytest.approx(hi[2] - lo[2], rel=1e-9)
    assert geo.footprint_area == pytest.approx(1.0)
    assert geo.bbox == pytest.approx((*lo, *hi))
    assert geo.centroid == pytest.approx(tuple((lo + hi) / 2))
    assert geo.lod == "1" and geo.geometry_types == ("Solid",)
    assert geo.centroid_wgs84 is None  # no CRS in the file


def test_progress_reports_every_object(cityjson_dir: Path) -> None:
    calls: list[tuple[int, int]] = []
    load_cityjson(
        cityjson_dir / "real/zurich_subset_lod2.city.json",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (210, 210)
    assert all(t == 210 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# -- the invalid folder: an explicit expected outcome per file ----------------------------


@dataclass(frozen=True)
class Rejects:
    """load_cityjson raises IngestError; ``where`` is its exact location attribute."""

    where: str
    says: tuple[str, ...] = ()


@dataclass(frozen=True)
class Loads:
    """The file loads; ``warnings`` are the exact warning codes (sorted).

    ``geometric`` marks files whose defect is geometric only (val3dity's business, not the
    reader's) or a tolerated edge case.
    """

    warnings: tuple[str, ...] = ()
    geometric: bool = False


INVALID_EXPECTED: dict[str, Rejects | Loads] = {
    "completely_empty.json": Rejects("", ("empty file",)),
    "corpus_feature_root_id_unresolved.city.jsonl": Rejects("line 1", ("missing-main-object",)),
    "corpus_missing_type.json": Rejects("", ("top-level 'type'",)),
    "corpus_out_of_range_vertex_index.json": Rejects(
        "object 'invalid_out_of_range_vertex_index'", ("vertex index 99",)
    ),
    "corpus_u64_f64_bounds.json": Rejects("vertex index 1", ("range",)),
    "duplicate_keys.json": Loads(("dangling-parent", "dangling-parent"), geometric=True),
    "empty_primitive.json": Loads(("empty-primitive",), geometric=True),
    "emptygeom.json": Loads((), geometric=True),
    "geom_501.json": Loads((), geometric=True),
    "geom_502.json": Loads((), geometric=True),
    "geom_503.json": Loads((), geometric=True),
    "geom_601.json": Loads((), geometric=True),
    "geom_nonmanifold.json": Loads((), geometric=True),
    "geom_several_lods_invalid.json": Loads((), geometric=True),
    "geometry_templates_bad_lod.city.json": Rejects("object 'tree-2' geometry 0", ("'foo'",)),
    "json_syntax.json": Rejects("line 3:11", ("JSON syntax",)),
    "json_truncated_with-errors.json": Rejects("line 1934:1", ("JSON syntax",)),
    "materials_overflow_1.city.json": Rejects(
        "object 'id-1' geometry 0 material theme 'main2'", ("material index 2",)
    ),
    "materials_overflow_2.city.json": Rejects("object 'id-1' geometry 0", ("material index 3",)),
    "schema_city_objects_key.city.json": Rejects("", ("'CityObjects'",)),
    "schema_invalid_2.json": Rejects("object 'id-1'", ("vertex index 22",)),
    "seq_named_city_json.city.json": Rejects("line 2", ("'feature1'",)),
    "seq_notransform.city.jsonl": Rejects("line 1", ("transform",)),
    "seq_typo_type.jsonl": Rejects("line 5", ("CityJSONFeatur",)),
    # The header (line 1) lacks its closing brace: the error is at the end of line 1,
    # not on line 2, which is a valid feature.
    "seq_unclosedbracket.city.jsonl": Rejects("line 1:314", ("JSON syntax",)),
    "textures_float_indices.city.json": Rejects(
        "object 'id-1' geometry 0 texture theme '00'", ("0.2",)
    ),
    "textures_overflow_1.city.json": Rejects(
        "object 'building_texture' geometry 0 texture theme '00'", ("texture index 1",)
    ),
    "textures_overflow_2.city.json": Rejects(
        "object 'building_texture' geometry 0 texture theme '00'", ("texture index 1",)
    ),
}

# A location: line[:col], an object id, an index, or the top-level member that is wrong.
LOCATION = re.compile(
    r"line \d+(:\d+)?|object '[^']+'|(vertex|material|texture) index \d+"
    r"|top-level '\w+'|'CityObjects' member|empty file"
)


def test_invalid_table_covers_the_folder(cityjson_dir: Path) -> None:
    assert {p.split("/", 1)[1] for p in INVALID_FILES} == set(INVALID_EXPECTED)


@pytest.mark.parametrize("name", sorted(INVALID_EXPECTED))
def test_invalid_file_outcome(cityjson_dir: Path, name: str) -> None:
    path = cityjson_dir / "invalid" / name
    expected = INVALID_EXPECTED[name]
    if isinstance(expected, Rejects):
        with pytest.raises(IngestError) as info:
            load_cityjson(path)
        err = info.value
        msg = str(err)
        assert "\n" not in msg and "Traceback" not in msg
        assert err.source == str(path) and msg.startswith(str(path))
        assert err.where == expected.where
        assert err.problem and err.problem in msg
        assert LOCATION.search(msg), msg
        for s in expected.says:
            assert s in msg
        return
    model = cached_model(path)
    assert sorted(w.code for w in model.warnings) == list(expected.warnings)
    assert expected.geometric or model.warnings
    for w in model.warnings:
        assert w.message and "\n" not in w.message


# -- malformed documents found by mutation: IngestError, never another exception ---------


def _cube() -> dict[str, Any]:
    return {
        "type": "CityJSON",
        "version": "2.0",
        "transform": {"scale": [0.001, 0.001, 0.001], "translate": [0.0, 0.0, 0.0]},
        "CityObjects": {
            "c": {
                "type": "Building",
                "geometry": [
                    {
                        "type": "MultiSurface",
                        "lod": "1",
                        "boundaries": [[[0, 1, 2, 3]]],
                        "texture": {"t": {"values": [[[0, 0, 1, 2, 3]]]}},
                    }
                ],
            },
            "tree": {
                "type": "SolitaryVegetationObject",
                "geometry": [
                    {
                        "type": "GeometryInstance",
                        "template": 0,
                        "boundaries": [0],
                        "transformationMatrix": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
                    }
                ],
            },
        },
        "geometry-templates": {
            "templates": [{"type": "MultiSurface", "lod": "2", "boundaries": [[[0, 1, 2]]]}],
            "vertices-templates": [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        },
        "appearance": {
            "textures": [{"type": "PNG", "image": "a.png"}],
            "vertices-texture": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]],
        },
        "vertices": [[0, 0, 0], [1000, 0, 0], [1000, 1000, 0], [0, 1000, 0]],
    }


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node: Any = out
    for k in path[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


_DELETE = object()
_GEOM = ("CityObjects", "c", "geometry", 0)
_TMPL = ("geometry-templates", "templates", 0)
MALFORMED = {
    "geometry type is a list": ((*_GEOM, "type"), ["MultiSurface"]),
    "geometry type is an object": ((*_GEOM, "type"), {}),
    "template type is a list": ((*_TMPL, "type"), ["MultiSurface"]),
    "template without boundaries": ((*_TMPL, "boundaries"), _DELETE),
    "texture values null surface": ((*_GEOM, "texture", "t", "values"), [None]),
    "texture ring with nested list": ((*_GEOM, "texture", "t", "values"), [[[0, [], 1, 2, 3]]]),
    "boolean vertex index": ((*_GEOM, "boundaries"), [[[0, 1, 2, True]]]),
    "surfaces one level too shallow": ((*_GEOM, "boundaries"), [0, 1, 2, 3]),
    "vertices not a list": (("vertices",), {"a": 1}),
    "vertex with 2 numbers": (("vertices",), [[0, 0], [1, 1, 1]]),
    "transform scale short": (("transform", "scale"), [1, 1]),
    "CityObjects is a list": (("CityObjects",), []),
    "object without type": (("CityObjects", "c", "type"), _DELETE),
    "unknown object type": (("CityObjects", "c", "type"), "House"),
    "geometry without lod": ((*_GEOM, "lod"), _DELETE),
    "template index out of range": (("CityObjects", "tree", "geometry", 0, "template"), 7),
}


def test_mutation_baseline_loads() -> None:
    model = parse_cityjson(json.dumps(_cube()).encode(), source="m.city.json")
    assert model.feature_ids == ["c", "tree"]


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_document_is_an_ingest_error(case: str) -> None:
    path, value = MALFORMED[case]
    data = json.dumps(_set(_cube(), path, value)).encode()
    with pytest.raises(IngestError) as info:
        parse_cityjson(data, source="m.city.json")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("case", "path", "value"),
    [
        ("null template vertex", ("geometry-templates", "vertices-templates"), [[0, 0, None]] * 3),
        (
            "overflowing matrix",
            ("CityObjects", "tree", "geometry", 0, "transformationMatrix"),
            [1e308, 0, 0, 0, 0, 1e308, 0, 0, 0, 0, 1e308, 0, 0, 0, 0, 1e308],
        ),
    ],
)
def test_placed_templates_stay_finite(case: str, path: tuple[Any, ...], value: Any) -> None:
    """A template that places to NaN/inf must not reach the model (IngestError or dropped)."""
    data = json.dumps(_set(_cube(), path, value)).encode()
    try:
        model = parse_cityjson(data, source="m.city.json")
    except IngestError:
        return
    used = np.concatenate([model.ring_vertices, model.point_vertices])
    assert np.isfinite(model.vertices[used]).all(), case
    assert all(math.isfinite(x) for x in model.bbox() or ())
    for obj in model.twin:
        if obj.geometry is not None:
            g = obj.geometry
            assert all(math.isfinite(x) for x in (*g.bbox, g.height, g.footprint_area)), obj.id


# -- random damage: IngestError or a model, never another exception -----------------------

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def _fuzz_dir(factory: pytest.TempPathFactory) -> Path:
    d = factory.getbasetemp() / "fuzz"
    d.mkdir(exist_ok=True)
    return d


def _check_damaged(tmp: Path, name: str, damaged: bytes) -> None:
    path = tmp / name
    path.write_bytes(damaged)
    try:
        model = load_cityjson(path)
    except IngestError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(model, CityModel)


@pytest.mark.parametrize("rel", ["small/cube.city.json", "seq/small.city.jsonl"])
@FUZZ
@given(data=st.data())
def test_fuzz_truncation(
    cityjson_dir: Path, tmp_path_factory: pytest.TempPathFactory, rel: str, data: st.DataObject
) -> None:
    original = (cityjson_dir / rel).read_bytes()
    cut = data.draw(st.integers(0, len(original) - 1), label="cut")
    _check_damaged(_fuzz_dir(tmp_path_factory), Path(rel).name, original[:cut])


@pytest.mark.parametrize("rel", ["small/cube.city.json", "seq/small.city.jsonl"])
@FUZZ
@given(data=st.data())
def test_fuzz_single_byte(
    cityjson_dir: Path, tmp_path_factory: pytest.TempPathFactory, rel: str, data: st.DataObject
) -> None:
    original = (cityjson_dir / rel).read_bytes()
    pos = data.draw(st.integers(0, len(original) - 1), label="pos")
    byte = data.draw(st.integers(0, 255), label="byte")
    damaged = original[:pos] + bytes([byte]) + original[pos + 1 :]
    _check_damaged(_fuzz_dir(tmp_path_factory), Path(rel).name, damaged)


# -- streaming (iter_cityjson) agrees with the whole-file reader --------------------------

SEQ_FILES = [p for p in VALID_FILES if p.startswith("seq/")]


@pytest.mark.parametrize("chunk", [1, 2, 2000])
@pytest.mark.parametrize("rel", SEQ_FILES)
def test_stream_chunks_equal_whole_file(cityjson_dir: Path, rel: str, chunk: int) -> None:
    path = cityjson_dir / rel
    whole = cached_model(path)
    models = list(iter_cityjson(path, chunk=chunk))
    ids = [oid for m in models for oid in m.twin.ids()]
    # Every object once (a later feature with the same id replaces the earlier one).
    assert len(ids) == len(set(ids)), "an id appears in two chunks"
    assert set(ids) == set(whole.twin.ids())
    for m in models:
        for obj in m.twin:
            ref = whole.twin[obj.id]
            assert (obj.type, obj.parents, obj.children) == (ref.type, ref.parents, ref.children)
            assert obj.attributes == ref.attributes
            assert (obj.geometry is None) == (ref.geometry is None)
            if obj.geometry and ref.geometry:
                assert obj.geometry.bbox == pytest.approx(ref.geometry.bbox)
    assert {w.code for m in models for w in m.warnings} == {w.code for w in whole.warnings}


def test_stream_reports_the_same_location_as_whole_file(cityjson_dir: Path) -> None:
    path = cityjson_dir / "invalid/seq_unclosedbracket.city.jsonl"
    with pytest.raises(IngestError) as whole:
        load_cityjson(path)
    with pytest.raises(IngestError) as streamed:
        list(iter_cityjson(path))
    assert streamed.value.where == whole.value.where


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        load_cityjson(tmp_path / "absent.city.json")
    with pytest.raises(IngestError, match="directory"):
        load_cityjson(tmp_path)

"""CityJSON -> CityJSONSeq in bounded memory: same objects and coordinates, read back."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ingest.cityjsonseq as cjseq
from ingest.cityjson import load_cityjson
from ingest.cityjsonseq import SequenceStats, write_sequence
from twin.errors import IngestError
from twin.geometry import CityModel

# Real files covering: semantics + texture refs (Delfshaven), Building/BuildingPart
# hierarchies with parts before their parent (Zurich 1.1, Den Haag 1.1 + materials,
# 3D BAG), CityJSON 1.0 with templates, materials, textures, LoD1-3 (GeoRes), templates
# with appearance, LoD3 with installations + materials + textures, a CityObjectGroup and
# one-sided links (spec example), 1.0 without transform (two buildings), non-ASCII.
ROUND_TRIP = [
    "real/delfshaven_3-20.city.json",
    "real/zurich_subset_lod2.city.json",
    "real/geores_testdata.city.json",
    "real/3db_sub.city.json",
    "real/delft.city.json",
    "small/DH_01_subs.city.json",
    "small/3dbag_b2.city.json",
    "small/dummy_templates_appearance.city.json",
    "small/texture4_lod3.city.json",
    "small/spec_example_v11.city.json",
    "small/japanese_nonascii.city.json",
    "small/cityfurniture_lod3_material.city.json",
    "legacy/twobuildings_m_v10.json",
    "legacy/denhaag_01_v08.json",
    "conformance/cityobject_building_address.city.json",
]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _scale(path: Path) -> float:
    return float(max(_lines(path)[0]["transform"]["scale"]))


def _by_object(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order items by object id (stable: file order within an object); the positions of
    their ``counts`` sub-items in that order."""
    order = np.argsort(keys, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[order]
    n = counts[order]
    pos = np.repeat(starts - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(n.sum())
    return order, pos.astype(np.int64)


def _geometry(model: CityModel) -> dict[str, Any]:
    """Per object (sorted by id, rings in file order): ring sizes, ring coordinates, and
    each ring's semantic type and material; points and line segments likewise."""
    ids = np.asarray([*model.feature_ids, ""], dtype=object)
    ring_surface = np.repeat(np.arange(model.n_surfaces), np.diff(model.surface_rings))
    ring_object = ids[model.surf_feature[ring_surface]] if model.n_rings else ids[:0]
    order, pos = _by_object(ring_object.astype(str), np.diff(model.ring_offsets))
    surf = ring_surface[order]
    sem = [model.semantic_types[i] if i >= 0 else None for i in model.surf_semantic[surf]]
    mat = [model.materials[i] if i >= 0 else None for i in model.surf_material[surf]]
    p_order = np.argsort(ids[model.point_feature].astype(str), kind="stable")
    l_order = np.argsort(ids[model.line_feature].astype(str), kind="stable")
    return {
        "ring objects": ring_object[order].tolist(),
        "ring sizes": np.diff(model.ring_offsets)[order].tolist(),
        "semantics": sem,
        "materials": mat,
        "coordinates": model.vertices[model.ring_vertices[pos]],
        "points": model.vertices[model.point_vertices[p_order]],
        "lines": model.vertices[model.line_segments[l_order]],
    }


def _assert_same_model(before: CityModel, after: CityModel, tol: float, *, extra: bool) -> None:
    assert {o.id for o in after.twin} == {o.id for o in before.twin}
    for a in before.twin:
        b = after.twin[a.id]
        assert (b.type, b.attributes) == (a.type, a.attributes), a.id
        assert sorted(b.parents) == sorted(a.parents), a.id
        assert sorted(b.children) == sorted(a.children), a.id
        if extra:
            assert b.extra == a.extra, a.id
    assert sorted(after.feature_ids) == sorted(before.feature_ids)
    ga, gb = _geometry(before), _geometry(after)
    for key in ("ring objects", "ring sizes", "semantics", "materials"):
        assert gb[key] == ga[key], key
    for key in ("coordinates", "points", "lines"):
        assert gb[key].shape == ga[key].shape, key
        np.testing.assert_allclose(gb[key], ga[key], rtol=0, atol=tol, err_msg=key)


def _convert(src: Path, tmp_path: Path, name: str = "out.city.jsonl") -> tuple[Path, SequenceStats]:
    dest = tmp_path / name
    return dest, write_sequence(src, dest)


@pytest.mark.parametrize("rel", ROUND_TRIP)
def test_round_trip_keeps_objects_links_and_coordinates(
    cityjson_dir: Path, tmp_path: Path, rel: str
) -> None:
    src = cityjson_dir / rel
    dest, stats = _convert(src, tmp_path)
    before = load_cityjson(src, wgs84=False)
    after = load_cityjson(dest, wgs84=False)
    assert after.version == "2.0"
    assert stats.objects == len(before.twin) == len(after.twin)
    assert stats.features == len(_lines(dest)) - 1
    assert stats.bytes == dest.stat().st_size
    assert not [w for w in after.warnings if w.code in ("dangling-parent", "dangling-child")]
    # Coordinates quantized here (no transform in the source) may move half a step.
    _assert_same_model(before, after, _scale(dest), extra=before.version == "2.0")


@pytest.mark.parametrize("rel", ROUND_TRIP)
def test_every_line_is_a_cityjsonseq_feature_with_local_indices(
    cityjson_dir: Path, tmp_path: Path, rel: str
) -> None:
    dest, _ = _convert(cityjson_dir / rel, tmp_path)
    header, *features = _lines(dest)
    assert header["type"] == "CityJSON" and header["version"] == "2.0"
    assert header["CityObjects"] == {} and header["vertices"] == []
    assert len(header["transform"]["scale"]) == len(header["transform"]["translate"]) == 3
    ids: list[str] = []
    for f in features:
        assert set(f) <= {"type", "id", "CityObjects", "vertices", "appearance"}
        assert f["type"] == "CityJSONFeature"
        objs = f["CityObjects"]
        assert next(iter(objs)) == f["id"]
        ids += list(objs)
        # The root has no parent inside its feature; every other object has one, and
        # every child of an owning (non-group) object sits in the same feature.
        for oid, obj in objs.items():
            inside = [p for p in obj.get("parents", []) if p in objs]
            assert (oid == f["id"]) == (not inside), (f["id"], oid)
            if obj["type"] != "CityObjectGroup":
                assert set(obj.get("children", [])) <= set(objs), oid
        used: set[int] = set()
        mats: set[int] = set()
        for obj in objs.values():
            for addr in obj.get("address", []):
                used.update(_ints(addr.get("location", {}).get("boundaries", [])))
            for g in obj.get("geometry", []):
                used.update(_ints(g["boundaries"]))
                themes = g.get("material")
                for ent in themes.values() if isinstance(themes, dict) else []:
                    mats.update(_ints(ent.get("values", [])))
                    if ent.get("value") is not None:
                        mats.add(ent["value"])
        assert used == set(range(len(f["vertices"])))
        n_mat = len(f.get("appearance", {}).get("materials", []))
        assert mats <= set(range(n_mat)) or (not n_mat and not mats)
        assert all(isinstance(c, int) for v in f["vertices"] for c in v)
    assert len(ids) == len(set(ids))


def _ints(value: Any) -> Iterator[int]:
    if isinstance(value, list):
        for v in value:
            yield from _ints(v)
    elif isinstance(value, int):
        yield value


@pytest.mark.parametrize(
    "rel", ["small/texture4_lod3.city.json", "real/zurich_subset_lod2.city.json"]
)
def test_same_triangles_in_the_glb(cityjson_dir: Path, tmp_path: Path, rel: str) -> None:
    from scene.gltf import model_to_glb

    src = cityjson_dir / rel
    dest, _ = _convert(src, tmp_path)
    _, a = model_to_glb(load_cityjson(src, wgs84=False))
    _, b = model_to_glb(load_cityjson(dest, wgs84=False))
    assert a.triangles > 0
    assert (b.triangles, b.features) == (a.triangles, a.features)


def test_templates_and_their_appearance_go_in_the_header(
    cityjson_dir: Path, tmp_path: Path
) -> None:
    src = cityjson_dir / "real" / "geores_testdata.city.json"
    doc = orjson.loads(src.read_bytes())
    dest, _ = _convert(src, tmp_path)
    header, *features = _lines(dest)
    assert len(header["geometry-templates"]["templates"]) == len(
        doc["geometry-templates"]["templates"]
    )
    assert (
        header["geometry-templates"]["vertices-templates"]
        == (doc["geometry-templates"]["vertices-templates"])
    )
    # Each feature carries only the materials/textures it uses (CityJSON 2.0 §9).
    n_total = len(doc["appearance"]["materials"])
    with_app = [f for f in features if "appearance" in f]
    assert with_app
    assert all(len(f["appearance"].get("materials", [])) <= n_total for f in with_app)
    assert sum(len(f["appearance"].get("textures", [])) for f in with_app) > 0


def test_address_locations_are_reindexed(cityjson_dir: Path, tmp_path: Path) -> None:
    src = cityjson_dir / "conformance" / "cityobject_building_address.city.json"
    doc = orjson.loads(src.read_bytes())
    dest, _ = _convert(src, tmp_path)
    header, feat = _lines(dest)
    checked = 0
    for oid, obj in doc["CityObjects"].items():
        for a, b in zip(obj["address"], feat["CityObjects"][oid]["address"], strict=True):
            before = [doc["vertices"][i] for i in a["location"]["boundaries"]]
            after = [feat["vertices"][i] for i in b["location"]["boundaries"]]
            real = [
                [c * s + t for c, s, t in zip(v, t["scale"], t["translate"], strict=True)]
                for v, t in ((v, doc["transform"]) for v in before)
            ]
            placed = [
                [
                    c * s + t
                    for c, s, t in zip(
                        v,
                        header["transform"]["scale"],
                        header["transform"]["translate"],
                        strict=True,
                    )
                ]
                for v in after
            ]
            np.testing.assert_allclose(placed, real)
            checked += len(before)
    assert checked


def test_group_members_stay_their_own_features(cityjson_dir: Path, tmp_path: Path) -> None:
    dest, stats = _convert(cityjson_dir / "small" / "spec_example_v11.city.json", tmp_path)
    features = {f["id"]: set(f["CityObjects"]) for f in _lines(dest)[1:]}
    assert features["gr"] == {"gr"}  # a CityObjectGroup lists members, it does not own them
    # br1, tu1, oc1, bu1 name LondonTower as parent, which does not list them as children
    # and came first: they are merged into its feature at the end.
    assert features["LondonTower"] == {"LondonTower", "oneroom", "br1", "tu1", "oc1", "bu1"}
    assert features["oneroad"] == {"oneroad", "oneroadsegment"}
    assert "late-link" in {w.code for w in stats.warnings}


def _rewrite(src: Path, dest: Path, edit: Any) -> Path:
    doc = orjson.loads(src.read_bytes())
    edit(doc)
    dest.write_bytes(orjson.dumps(doc))
    return dest


@pytest.mark.parametrize("case", ["children-only", "parents-only-parent-first"])
def test_one_sided_links_still_make_one_feature(
    cityjson_dir: Path, tmp_path: Path, case: str
) -> None:
    """Parts that came before their parent without 'parents', or a parent without
    'children' that came before its parts: each building is still one feature."""
    src = cityjson_dir / "real" / "zurich_subset_lod2.city.json"

    def edit(doc: dict[str, Any]) -> None:
        objs = doc["CityObjects"]
        if case == "children-only":
            for o in objs.values():
                o.pop("parents", None)
            # parts first (as in the file), then their parents
            doc["CityObjects"] = dict(
                sorted(objs.items(), key=lambda kv: kv[1]["type"] != "BuildingPart")
            )
        else:
            for o in objs.values():
                o.pop("children", None)
            doc["CityObjects"] = dict(
                sorted(objs.items(), key=lambda kv: kv[1]["type"] == "BuildingPart")
            )

    edited = _rewrite(src, tmp_path / "edited.city.json", edit)
    dest, stats = _convert(edited, tmp_path)
    original = orjson.loads(src.read_bytes())["CityObjects"]
    roots = {k for k, o in original.items() if not o.get("parents")}
    features = {f["id"]: set(f["CityObjects"]) for f in _lines(dest)[1:]}
    assert set(features) == roots
    for root in roots:
        assert features[root] == {root, *original[root].get("children", [])}
    assert "late-link" in {w.code for w in stats.warnings}
    _assert_same_model(
        load_cityjson(edited, wgs84=False), load_cityjson(dest, wgs84=False), 1e-9, extra=False
    )


def test_waiting_objects_spill_to_disk_with_the_same_result(
    cityjson_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = cityjson_dir / "real" / "zurich_subset_lod2.city.json"
    in_memory, _ = _convert(src, tmp_path, "a.city.jsonl")
    monkeypatch.setattr(cjseq, "_SPILL_BYTES", 0)
    spilled: list[int] = []
    real_put = cjseq._Store.put

    def put(self: cjseq._Store, oid: str, data: bytes) -> None:
        real_put(self, oid, data)
        spilled.append(len(self.disk))

    monkeypatch.setattr(cjseq._Store, "put", put)
    on_disk, _ = _convert(src, tmp_path, "b.city.jsonl")
    assert max(spilled) > 0
    assert on_disk.read_bytes() == in_memory.read_bytes()


def test_member_order_does_not_matter(cityjson_dir: Path, tmp_path: Path) -> None:
    src = cityjson_dir / "small" / "DH_01_subs.city.json"
    doc = orjson.loads(src.read_bytes())
    outs = []
    for order in (list(doc), list(reversed(doc))):
        path = tmp_path / f"{order[0]}.city.json"
        path.write_bytes(orjson.dumps({k: doc[k] for k in order}, option=orjson.OPT_INDENT_2))
        outs.append(_convert(path, tmp_path, f"{order[0]}.city.jsonl")[0].read_bytes())
    assert outs[0] == outs[1]


def test_document_without_transform_is_quantized(cityjson_dir: Path, tmp_path: Path) -> None:
    src = cityjson_dir / "legacy" / "twobuildings_m_v10.json"
    verts = np.asarray(orjson.loads(src.read_bytes())["vertices"])
    dest, stats = _convert(src, tmp_path)
    t = _lines(dest)[0]["transform"]
    assert t["scale"] == [0.001, 0.001, 0.001]
    np.testing.assert_allclose(t["translate"], verts.min(axis=0))
    assert "quantized" in {w.code for w in stats.warnings}


def test_sequence_input_is_validated_and_copied(cityjson_dir: Path, tmp_path: Path) -> None:
    src = cityjson_dir / "seq" / "denhaag_random_5.city.jsonl"  # a 1.1 sequence
    dest, stats = _convert(src, tmp_path)
    assert stats.copied and stats.source_version == "1.1"
    assert _lines(dest)[0]["version"] == "2.0"
    assert stats.features == len(_lines(src)) - 1
    _assert_same_model(
        load_cityjson(src, wgs84=False), load_cityjson(dest, wgs84=False), 1e-9, extra=True
    )


def test_progress_reaches_the_file_size(cityjson_dir: Path, tmp_path: Path) -> None:
    src = cityjson_dir / "real" / "delft.city.json"
    calls: list[tuple[int, int]] = []
    write_sequence(src, tmp_path / "o.city.jsonl", progress=lambda d, t: calls.append((d, t)))
    size = src.stat().st_size
    assert calls[-1] == (size, size)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(calls) >= 3


# -- bad input -------------------------------------------------------------------------


def _truncated(cityjson_dir: Path, tmp: Path) -> Path:
    data = (cityjson_dir / "real" / "delfshaven_3-20.city.json").read_bytes()
    (tmp / "in.city.json").write_bytes(data[: len(data) // 2])
    return tmp / "in.city.json"


def _garbage(_: Path, tmp: Path) -> Path:
    (tmp / "in.city.json").write_bytes(b"\x89PNG\r\n\x1a\n not json at all")
    return tmp / "in.city.json"


def _bad_index(cityjson_dir: Path, tmp: Path) -> Path:
    doc = orjson.loads((cityjson_dir / "small" / "3dbag_b2.city.json").read_bytes())
    obj = next(o for o in doc["CityObjects"].values() if o.get("geometry"))
    obj["geometry"][0]["boundaries"][0][0][0][0] = len(doc["vertices"]) + 5
    (tmp / "in.city.json").write_bytes(orjson.dumps(doc))
    return tmp / "in.city.json"


def _no_objects(_: Path, tmp: Path) -> Path:
    (tmp / "in.city.json").write_bytes(b'{"type":"CityJSON","version":"2.0","vertices":[]}')
    return tmp / "in.city.json"


def _bad_vertex(cityjson_dir: Path, tmp: Path) -> Path:
    doc = orjson.loads((cityjson_dir / "small" / "3dbag_b2.city.json").read_bytes())
    doc["vertices"][3] = [1, 2]
    (tmp / "in.city.json").write_bytes(orjson.dumps(doc))
    return tmp / "in.city.json"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_garbage, "not JSON"),
        (_truncated, "truncated"),
        (_bad_index, "out of range"),
        (_no_objects, "CityObjects"),
        (_bad_vertex, "vertices index 3: entry is not 3 numbers"),
    ],
)
def test_bad_input_raises_and_writes_nothing(
    cityjson_dir: Path, tmp_path: Path, make: Any, message: str
) -> None:
    src = make(cityjson_dir, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = out_dir / "o.city.jsonl"
    with pytest.raises(IngestError, match=message):
        write_sequence(src, dest)
    assert list(out_dir.iterdir()) == []  # no dest, no temporary left behind
    dest.write_bytes(b"previous")
    with pytest.raises(IngestError):
        write_sequence(src, dest)
    assert dest.read_bytes() == b"previous"


def test_every_invalid_file_fails_clearly_or_reads_back(cityjson_dir: Path, tmp_path: Path) -> None:
    outcomes = {"error": 0, "ok": 0}
    for src in sorted((cityjson_dir / "invalid").iterdir()):
        if src.name.endswith("invariants.json"):
            continue
        dest = tmp_path / f"{src.name}.jsonl"
        try:
            write_sequence(src, dest)
        except IngestError as exc:
            assert str(exc) and "Traceback" not in str(exc)
            assert not dest.exists()
            outcomes["error"] += 1
            continue
        outcomes["ok"] += 1
        try:
            load_cityjson(src, wgs84=False)
        except IngestError:
            # what the reader refuses, it must refuse in the sequence too
            with pytest.raises(IngestError):
                load_cityjson(dest, wgs84=False)
        else:
            load_cityjson(dest, wgs84=False)
    assert outcomes["error"] >= 15 and outcomes["ok"] >= 5


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        write_sequence(tmp_path / "nope.city.json", tmp_path / "o.city.jsonl")
    assert not (tmp_path / "o.city.jsonl").exists()


# -- the structure scan ------------------------------------------------------------------

_text = st.text(alphabet=st.sampled_from('ab"\\{}[],: \n\u00e9'), max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(_text, _json, max_size=6), indent=st.booleans(), chunk=st.integers(1, 9))
def test_scan_finds_every_member_whatever_the_strings(
    tmp_path_factory: pytest.TempPathFactory, doc: dict[str, Any], indent: bool, chunk: int
) -> None:
    """Quotes, backslashes and brackets inside strings, split at any chunk boundary."""
    path = tmp_path_factory.mktemp("scan") / "doc.json"
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else 0)
    path.write_bytes(b" \n" + data + b"\n")
    old = cjseq._SCAN_CHUNK
    cjseq._SCAN_CHUNK = chunk
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            layout = cjseq._scan_object(fd, 0, len(data) + 3, str(path), "document")
            got = {k: orjson.loads(os.pread(fd, b - a, a)) for k, (a, b) in layout.members.items()}
        finally:
            os.close(fd)
    finally:
        cjseq._SCAN_CHUNK = old
    assert got == doc
    assert layout.trailing is None


# -- bounded memory ----------------------------------------------------------------------


def _big_document(src: Path, dest: Path, copies: int) -> int:
    """Write ``copies`` shifted copies of a real document as one CityJSON file, streamed
    (objects first, vertices last, as large exports often are). Returns the object count."""
    doc = orjson.loads(src.read_bytes())
    nv = len(doc["vertices"])
    verts = np.asarray(doc["vertices"], dtype=np.int64)
    step = int(verts[:, 0].max() - verts[:, 0].min()) + 100_000

    def shift(node: list[Any], off: int) -> list[Any]:
        return [shift(x, off) if isinstance(x, list) else x + off for x in node]

    with dest.open("wb") as fh:
        head = {k: v for k, v in doc.items() if k not in ("CityObjects", "vertices")}
        fh.write(orjson.dumps(head)[:-1] + b',"CityObjects":{')
        n = 0
        for k in range(copies):
            for oid, obj in doc["CityObjects"].items():
                o = dict(obj)
                o["geometry"] = [
                    dict(g, boundaries=shift(g["boundaries"], k * nv))
                    for g in obj.get("geometry", [])
                ]
                for key in ("parents", "children"):
                    if key in o:
                        o[key] = [f"{x}-c{k}" for x in o[key]]
                fh.write((b"," if n else b"") + orjson.dumps(f"{oid}-c{k}") + b":")
                fh.write(orjson.dumps(o))
                n += 1
        fh.write(b'},"vertices":[')
        for k in range(copies):
            block = verts + np.asarray([k * step, 0, 0])
            fh.write(
                (b"," if k else b"") + orjson.dumps(block, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
            )
        fh.write(b"]}")
    return n


def _traced_peak(fn: Any) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_bounded_by_features_not_by_the_city(
    cityjson_dir: Path, tmp_path: Path
) -> None:
    src = cityjson_dir / "real" / "zurich_subset_lod2.city.json"  # parts before parents
    small, big = tmp_path / "x2.city.json", tmp_path / "x10.city.json"
    _big_document(src, small, 2)
    n_big = _big_document(src, big, 10)
    # What a whole-document parse costs: measured on the original, times the copies.
    parsed_big = 10 * _traced_peak(lambda: orjson.loads(src.read_bytes()))
    peak_small = _traced_peak(lambda: write_sequence(small, tmp_path / "s.city.jsonl"))
    stats: list[SequenceStats] = []
    peak_big = _traced_peak(lambda: stats.append(write_sequence(big, tmp_path / "b.city.jsonl")))
    assert stats[0].objects == n_big
    assert peak_big < parsed_big / 10, (peak_big, parsed_big)
    # Five times the city, the same memory: it does not grow with the document.
    assert peak_big < 1.2 * peak_small, (peak_small, peak_big)
    model = load_cityjson(tmp_path / "b.city.jsonl", wgs84=False)
    assert len(model.twin) == n_big


# VmHWM (this address space's peak), not getrusage's ru_maxrss: Linux carries maxrss
# over fork + exec, so a child of a big pytest process would report the parent's size.
_CHILD = """
import sys
from ingest.cityjsonseq import write_sequence
stats = write_sequence(sys.argv[1], sys.argv[2])
hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print(stats.objects, int(hwm.split()[1]) * 1024)
"""


@pytest.mark.slow
def test_a_city_of_100_megabytes_converts_in_a_small_resident_set(
    cityjson_dir: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    src = cityjson_dir / "real" / "delfshaven_3-20.city.json"
    big = tmp_path / "x56.city.json"
    n = _big_document(src, big, 56)
    assert big.stat().st_size > 100e6
    parsed = 56 * _traced_peak(lambda: orjson.loads(src.read_bytes()))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(big), str(tmp_path / "x56.city.jsonl")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=600,
    )
    objects, rss = map(int, out.stdout.split())
    assert objects == n
    # The peak resident set includes the interpreter, numpy and the mapped vertex pages.
    assert rss < parsed / 4, (rss, parsed)  # parsed: about 1.9 GB
    assert rss < 400e6, rss

"""Quantized GLB output (KHR_mesh_quantization) of real cities, checked against the float32
export of the same builder input: by the Khronos glTF-Validator and by our own decoder
(tests/glbdecode.py, which applies the node's dequantizing translation and scale).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from glbdecode import Glb

from ingest.cityjson import iter_cityjson, load_cityjson, parse_cityjson
from scene.gltf import GlbBuilder, SceneStats, model_to_glb
from twin.geometry import CityModel

TRIANGLES = 4
_FLOAT, _BYTE, _UNSIGNED_SHORT = 5126, 5120, 5123
# glTF-Validator's tolerance on |length - 1| of a NORMAL (ACCESSOR_VECTOR3_NON_UNIT).
UNIT_TOLERANCE = 0.00674
CITIES = {
    "delfshaven": "real/delfshaven_3-20.city.json",
    "denhaag": "legacy/denhaag_01_v08.json",
}


@dataclass
class Pair:
    """The float32 and the quantized GLB of the same input, plus the quantized builder."""

    name: str
    plain: bytes
    quant: bytes
    stats: SceneStats
    builder: GlbBuilder

    @cached_property
    def p(self) -> Glb:
        return Glb.parse(self.plain)

    @cached_property
    def q(self) -> Glb:
        return Glb.parse(self.quant)


def _pair(name: str, models: list[CityModel]) -> Pair:
    plain, _ = _write(GlbBuilder(name), models)
    builder = GlbBuilder(name, quantize=True)
    quant, stats = _write(builder, models)
    return Pair(name, plain, quant, stats, builder)


def _write(builder: GlbBuilder, models: list[CityModel]) -> tuple[bytes, SceneStats]:
    for model in models:
        builder.add(model)
    buf = io.BytesIO()
    stats = builder.write(buf)
    assert stats.bytes == len(buf.getvalue())
    return buf.getvalue(), stats


@pytest.fixture(scope="module")
def pairs(cityjson_dir: Path) -> dict[str, Pair]:
    got = {
        key: _pair(key, [load_cityjson(cityjson_dir / rel, wgs84=False)])
        for key, rel in CITIES.items()
    }
    # Points and lines, and a city streamed in chunks (one quantization box over all).
    got["points"] = _pair(
        "points", [load_cityjson(cityjson_dir / "small/sem_point.city.json", wgs84=False)]
    )
    chunks = list(
        iter_cityjson(cityjson_dir / "seq/denhaag_random_5.city.jsonl", chunk=2, wgs84=False)
    )
    assert len(chunks) > 1
    got["stream"] = _pair("stream", chunks)
    return got


@pytest.fixture(scope="module")
def reports(
    pairs: dict[str, Pair], gltf_validator: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("quant")
    files = []
    for key, pair in pairs.items():
        files.append(out / f"{key}.glb")
        files[-1].write_bytes(pair.quant)
    return dict(zip(pairs, gltf_validator.validate(*files), strict=True))


@pytest.mark.parametrize("key", ["delfshaven", "denhaag", "points", "stream"])
def test_quantized_glb_has_no_validator_errors(
    reports: dict[str, dict[str, Any]], key: str
) -> None:
    report = reports[key]
    assert report["errors"] == 0, report["messages"]
    assert report["warnings"] == 0, report["messages"]
    assert "KHR_mesh_quantization" in report["extensionsUsed"]


@pytest.mark.parametrize("key", ["delfshaven", "denhaag", "points", "stream"])
def test_layout_is_khr_mesh_quantization(pairs: dict[str, Pair], key: str) -> None:
    q = pairs[key].q
    doc = q.doc
    assert "KHR_mesh_quantization" in doc["extensionsUsed"]
    assert doc["extensionsRequired"] == ["KHR_mesh_quantization"]
    (node,) = doc["nodes"]
    scale = node["scale"]
    assert scale[0] == scale[1] == scale[2] > 0
    assert pairs[key].stats.max_position_error == pytest.approx(scale[0] / 65535 / 2)
    for prim in q.primitives:
        attrs = prim["attributes"]
        pos = doc["accessors"][attrs["POSITION"]]
        view = doc["bufferViews"][pos["bufferView"]]
        assert (pos["componentType"], pos["type"], pos["normalized"]) == (
            _UNSIGNED_SHORT,
            "VEC3",
            True,
        )
        assert view["byteStride"] == 8 and view["byteOffset"] % 4 == 0
        # Declared min/max are the integers actually stored (glTF 2.0 §3.6.2.5).
        raw = q.accessor(attrs["POSITION"], raw=True)
        assert pos["min"] == raw.min(axis=0).tolist()
        assert pos["max"] == raw.max(axis=0).tolist()
        if "NORMAL" in attrs:
            nrm = doc["accessors"][attrs["NORMAL"]]
            nview = doc["bufferViews"][nrm["bufferView"]]
            assert (nrm["componentType"], nrm["type"], nrm["normalized"]) == (_BYTE, "VEC3", True)
            assert nview["byteStride"] == 4 and nview["byteOffset"] % 4 == 0
        fid = doc["accessors"][attrs["_FEATURE_ID_0"]]
        assert fid["componentType"] == _FLOAT and not fid.get("normalized", False)
    # The whole box spans the unit cube on its longest axis.
    raw_all = np.vstack([q.accessor(p["attributes"]["POSITION"], raw=True) for p in q.primitives])
    assert raw_all.min() == 0 and raw_all.max() == 65535


@pytest.mark.parametrize("key", ["delfshaven", "denhaag", "points", "stream"])
def test_positions_match_the_float_export_within_half_a_step(
    pairs: dict[str, Pair], key: str
) -> None:
    pair = pairs[key]
    p, q = pair.p, pair.q
    assert len(p.primitives) == len(q.primitives)
    flo = np.vstack([p.accessor(pr["attributes"]["POSITION"]) for pr in p.primitives])
    qua = np.vstack([q.accessor(pr["attributes"]["POSITION"]) for pr in q.primitives])
    assert flo.shape == qua.shape
    extent = float((flo.max(axis=0) - flo.min(axis=0)).max())
    step = extent / 65535
    assert pair.stats.max_position_error == pytest.approx(step / 2, rel=1e-6)
    err = np.abs(qua - flo.astype(np.float64)).max()
    assert 0 < err <= step / 2 * (1 + 1e-6)
    # Same world coordinates through the origin (the source CRS).
    assert np.array_equal(p.origin, q.origin)
    # The builder's float bounds still describe the float content (tiles.py regions).
    lo = np.min([g.lo for g in pair.builder.groups.values() if g.lo is not None], axis=0)
    hi = np.max([g.hi for g in pair.builder.groups.values() if g.hi is not None], axis=0)
    assert np.array_equal(lo, flo.min(axis=0)) and np.array_equal(hi, flo.max(axis=0))
    assert (qua >= lo - step / 2).all() and (qua <= hi + step / 2).all()


def test_half_a_step_is_millimetres_on_a_real_city(pairs: dict[str, Pair]) -> None:
    # Delfshaven spans ~1 km: ~8 mm; a 500 m tile would be ~4 mm.
    stats = pairs["delfshaven"].stats
    assert 0.001 < stats.max_position_error < 0.01


@pytest.mark.parametrize("key", ["delfshaven", "denhaag", "points", "stream"])
def test_same_triangles_features_and_property_table(pairs: dict[str, Pair], key: str) -> None:
    p, q = pairs[key].p, pairs[key].q
    for pp, qp in zip(p.primitives, q.primitives, strict=True):
        assert pp.get("mode", TRIANGLES) == qp.get("mode", TRIANGLES)
        assert p.material_of(pp) == q.material_of(qp)
        assert pp["extensions"] == qp["extensions"]
        pa, qa = pp["attributes"], qp["attributes"]
        assert np.array_equal(p.accessor(pa["_FEATURE_ID_0"]), q.accessor(qa["_FEATURE_ID_0"]))
        if "indices" in pp:
            assert np.array_equal(p.accessor(pp["indices"]), q.accessor(qp["indices"]))
    pc, pt = p.table()
    qc, qt = q.table()
    assert pc == qc and pt.keys() == qt.keys()
    for name, values in pt.items():
        assert np.array_equal(values, qt[name]), name
    assert p.doc["asset"] == q.doc["asset"]


@pytest.mark.parametrize("key", ["delfshaven", "denhaag", "stream"])
def test_normals_are_unit_and_close_to_the_float_normals(pairs: dict[str, Pair], key: str) -> None:
    p, q = pairs[key].p, pairs[key].q
    flo = np.vstack(
        [
            p.accessor(pr["attributes"]["NORMAL"])
            for pr in p.primitives
            if "NORMAL" in pr["attributes"]
        ]
    )
    qua = np.vstack(
        [
            q.accessor(pr["attributes"]["NORMAL"])
            for pr in q.primitives
            if "NORMAL" in pr["attributes"]
        ]
    )
    length = np.linalg.norm(qua, axis=1)
    assert np.abs(length - 1).max() < UNIT_TOLERANCE
    cos = np.einsum("ij,ij->i", qua / length[:, None], flo.astype(np.float64))
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    assert angle.max() < 0.5, angle.max()


@pytest.mark.parametrize("key", ["delfshaven", "denhaag"])
def test_quantized_real_city_is_much_smaller(pairs: dict[str, Pair], key: str) -> None:
    pair = pairs[key]
    ratio = len(pair.quant) / len(pair.plain)
    # Measured: Delfshaven 0.630, Den Haag 0.647 (16 instead of 28 bytes per vertex;
    # indices and the property table are unchanged).
    assert ratio < 0.70, ratio


def test_float_output_is_unchanged_by_default(cityjson_dir: Path) -> None:
    model = load_cityjson(cityjson_dir / CITIES["delfshaven"], wgs84=False)
    name = Path(model.source).name
    data, _ = model_to_glb(model)
    default, stats = _write(GlbBuilder(name), [model])
    explicit, _ = _write(GlbBuilder(name, quantize=False), [model])
    assert default == explicit == data
    assert stats.max_position_error == 0.0
    # And it is the float32 layout: raw float32 positions, no stride, no node transform.
    glb = Glb.parse(data)
    assert glb.doc["extensionsUsed"] == ["EXT_mesh_features", "EXT_structural_metadata"]
    assert "extensionsRequired" not in glb.doc
    assert glb.doc["nodes"] == [{"mesh": 0, "name": name}]
    assert all("byteStride" not in v for v in glb.doc["bufferViews"])
    pos = [glb.doc["accessors"][p["attributes"]["POSITION"]] for p in glb.primitives]
    assert {a["componentType"] for a in pos} == {_FLOAT}
    assert all(not a.get("normalized", False) for a in pos)


def test_a_single_point_gets_an_invertible_box(gltf_validator: Any, tmp_path: Path) -> None:
    doc = {
        "type": "CityJSON",
        "version": "2.0",
        "transform": {"scale": [0.001] * 3, "translate": [85000.0, 446000.0, 0.0]},
        "CityObjects": {
            "tree": {
                "type": "SolitaryVegetationObject",
                "geometry": [{"type": "MultiPoint", "lod": "1", "boundaries": [0]}],
            }
        },
        "vertices": [[1000, 2000, 3000]],
    }
    model = parse_cityjson(orjson.dumps(doc), source="point.city.json", wgs84=False)
    builder = GlbBuilder("point", quantize=True)
    builder.add(model)
    buf = io.BytesIO()
    builder.write(buf)
    path = tmp_path / "point.glb"
    path.write_bytes(buf.getvalue())
    (report,) = gltf_validator.validate(path)
    assert report["errors"] == 0, report["messages"]
    glb = Glb.parse(buf.getvalue())
    assert glb.doc["nodes"][0]["scale"] == [1.0, 1.0, 1.0]
    real = glb.real_positions(0)
    assert np.allclose(real, [[85001.0, 446002.0, 3.0]], atol=1e-6)

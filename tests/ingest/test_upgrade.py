"""`twin upgrade`: legacy CityJSON to 2.0 through cjio, read back by our reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.cityjson import load_cityjson
from ingest.upgrade import upgrade_cityjson
from twin.errors import IngestError


@pytest.mark.parametrize(
    "rel", ["legacy/delfshaven_v08.json", "legacy/mt_v10.json", "small/cube.city.json"]
)
def test_upgrade_keeps_every_object(cityjson_dir: Path, tmp_path: Path, rel: str) -> None:
    src = cityjson_dir / rel
    out = tmp_path / "up.city.json"
    upgrade_cityjson(src, out)
    before, after = load_cityjson(src), load_cityjson(out)
    assert after.version == "2.0"
    assert not [w for w in after.warnings if w.code == "legacy-version"]
    assert after.twin.counts_by_type() == before.twin.counts_by_type()
    assert after.feature_ids == before.feature_ids
    for oid in before.feature_ids:
        a, b = before.twin[oid].geometry, after.twin[oid].geometry
        assert a is not None and b is not None
        assert a.bbox == pytest.approx(b.bbox, abs=1e-3)


@pytest.mark.parametrize("rel", ["legacy/tetra_v02.json", "legacy/o4_v09.json"])
def test_upgrade_refuses_clearly(cityjson_dir: Path, tmp_path: Path, rel: str) -> None:
    out = tmp_path / "up.city.json"
    with pytest.raises(IngestError, match="upgrade"):
        upgrade_cityjson(cityjson_dir / rel, out)
    assert not out.exists()


def test_glb_bounds_stay_exact_after_cjio_was_imported(cityjson_dir: Path, tmp_path: Path) -> None:
    """cjio replaces the stdlib JSON float encoder (6 decimals) process-wide on import;
    the GLB writer must not be affected (accessor min/max must equal the data)."""
    import struct

    import numpy as np
    import orjson

    from scene.gltf import model_to_glb

    upgrade_cityjson(cityjson_dir / "small" / "cube.city.json", tmp_path / "u.city.json")
    import json

    assert json.dumps(0.123456789) == "0.123456789"  # cjio's global patch did not leak
    data, _ = model_to_glb(load_cityjson(cityjson_dir / "real" / "geores_testdata.city.json"))
    n = struct.unpack("<I", data[12:16])[0]
    doc = orjson.loads(data[20 : 20 + n])
    base = 20 + n + 8
    checked = 0
    for acc in doc["accessors"]:
        if "min" not in acc:
            continue
        view = doc["bufferViews"][acc["bufferView"]]
        arr = np.frombuffer(data, np.float32, acc["count"] * 3, base + view["byteOffset"])
        arr = arr.reshape(-1, 3)
        assert arr.min(axis=0).tolist() == acc["min"]
        assert arr.max(axis=0).tolist() == acc["max"]
        checked += 1
    assert checked > 5

"""The benchmark's grid tiler writes valid CityJSONSeq copies of the real Delfshaven buildings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from benchload import load_bench

from ingest.cityjson import load_cityjson
from twin.geometry import CityModel

ROOT = Path(__file__).resolve().parents[2]
COPIES = 3


tile_city = load_bench("tile_city")


@pytest.fixture(scope="module")
def source(cityjson_dir: Path) -> Path:
    return cityjson_dir / "real" / "delfshaven_3-20.city.json"


@pytest.fixture(scope="module")
def tiled(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("tiles") / "delfshaven_x3.city.jsonl"
    stats = tile_city.tile(source, out, COPIES)
    return out, stats


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _surface_coords(model: CityModel) -> dict[str, list[np.ndarray]]:
    """Per object id: the coordinates of each ring, in file order."""
    out: dict[str, list[np.ndarray]] = {fid: [] for fid in model.feature_ids}
    for ring in range(model.n_rings):
        surface = int(np.searchsorted(model.surface_rings, ring, side="right") - 1)
        fid = model.feature_ids[int(model.surf_feature[surface])]
        idx = model.ring_vertices[model.ring_offsets[ring] : model.ring_offsets[ring + 1]]
        out[fid].append(model.vertices[idx])
    return out


def test_header_and_features_follow_cityjsonseq(tiled: tuple[Path, Any]) -> None:
    path, stats = tiled
    lines = _lines(path)
    header, features = lines[0], lines[1:]
    assert header["type"] == "CityJSON"
    assert header["version"] == "2.0"
    assert set(header["transform"]) == {"scale", "translate"}
    assert header["CityObjects"] == {}
    assert header["vertices"] == []
    assert "EPSG/0/28992" in header["metadata"]["referenceSystem"]
    assert all(f["type"] == "CityJSONFeature" for f in features)
    assert all(f["id"] in f["CityObjects"] for f in features)
    assert len(features) == stats.features


def test_counts_and_ids(tiled: tuple[Path, Any], source: Path) -> None:
    path, stats = tiled
    n_source = len(orjson.loads(source.read_bytes())["CityObjects"])
    ids = [oid for f in _lines(path)[1:] for oid in f["CityObjects"]]
    assert len(ids) == COPIES * n_source == stats.objects
    assert len(set(ids)) == len(ids)
    assert stats.buildings == COPIES * n_source  # Delfshaven is Buildings only


def test_every_feature_has_its_own_local_vertices(tiled: tuple[Path, Any]) -> None:
    path, _ = tiled
    for f in _lines(path)[1:50]:
        used: set[int] = set()
        todo = [g["boundaries"] for o in f["CityObjects"].values() for g in o["geometry"]]
        while todo:
            v = todo.pop()
            if isinstance(v, list):
                todo.extend(v)
            else:
                used.add(v)
        assert used == set(range(len(f["vertices"])))


def test_load_cityjson_reads_the_copies(tiled: tuple[Path, Any], source: Path) -> None:
    path, stats = tiled
    original = load_cityjson(source)
    copy = load_cityjson(path)
    assert len(copy.twin) == stats.objects
    assert len(copy.feature_ids) == COPIES * len(original.feature_ids)
    assert not [w for w in copy.warnings if w.code == "seq-duplicate-id"]


def test_copied_vertices_are_the_originals_plus_the_grid_offset(
    tiled: tuple[Path, Any], source: Path
) -> None:
    path, stats = tiled
    grid = stats.grid
    assert grid is not None
    orig = _surface_coords(load_cityjson(source))
    copy = _surface_coords(load_cityjson(path))
    for k in range(COPIES):
        offset = np.asarray(grid.offset(k))
        for oid in list(orig)[::37]:
            rings_o, rings_c = orig[oid], copy[tile_city.copy_id(oid, k)]
            assert len(rings_o) == len(rings_c)
            for ro, rc in zip(rings_o, rings_c, strict=True):
                np.testing.assert_allclose(rc, ro + offset, rtol=0, atol=1e-3)


def test_grid_step_is_larger_than_the_district(tiled: tuple[Path, Any]) -> None:
    _, stats = tiled
    grid = stats.grid
    assert grid is not None
    # Delfshaven spans about 1.04 km x 0.65 km; copies must not overlap.
    assert grid.step[0] * grid.scale[0] > 1044.6
    assert grid.step[1] * grid.scale[1] > 649.6
    assert grid.cols * grid.rows >= COPIES


def test_cli_writes_the_file(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "x1.city.jsonl"
    assert tile_city.main([str(source), "--copies", "1", "-o", str(out)]) == 0
    lines = _lines(out)
    assert len(lines) == 1 + 853
    assert lines[1]["id"].endswith("-t0")
    assert not list(tmp_path.glob(".*.part"))


def test_rejects_zero_copies(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        tile_city.tile(source, tmp_path / "none.city.jsonl", 0)
    assert not list(tmp_path.iterdir())


def test_parts_stay_in_their_feature_with_renamed_links(cityjson_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b2.city.jsonl"
    stats = tile_city.tile(cityjson_dir / "small" / "3dbag_b2.city.json", out, 2)
    features = _lines(out)[1:]
    assert stats.features == len(features) == 4  # 2 buildings x 2 copies
    for f in features:
        k = f["id"].rsplit("-t", 1)[1]
        root = f["CityObjects"][f["id"]]
        for child in root["children"]:
            assert child.endswith(f"-t{k}")
            assert f["CityObjects"][child]["parents"] == [f["id"]]
    model = load_cityjson(out)
    assert len(model.twin) == stats.objects == 8

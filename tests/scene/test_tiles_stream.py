"""Tiling streamed from CityJSONSeq files: process pool, Dask cluster, bounded memory, errors."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
from benchload import load_bench
from glbdecode import Glb

from ingest.cityjson import load_cityjson
from scene.tiles import TilesetStats, write_tileset
from twin.errors import SceneError, TwinError

ROOT = Path(__file__).resolve().parents[2]
DELFSHAVEN = "real/delfshaven_3-20.city.json"
MAX = 400


tile_city = load_bench("tile_city")


@pytest.fixture(scope="module")
def seq(cityjson_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three grid copies of the real Delfshaven buildings as one CityJSONSeq."""
    out = tmp_path_factory.mktemp("seq") / "delfshaven3.city.jsonl"
    tile_city.tile(cityjson_dir / DELFSHAVEN, out, 3)
    return out


@pytest.fixture(scope="module")
def pooled(seq: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TilesetStats]:
    out = tmp_path_factory.mktemp("pool")
    return out, write_tileset([seq], out, max_features=MAX, workers=2)


def _tiles(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out, stack = [], [doc["root"]]
    while stack:
        t = stack.pop()
        out.append(t)
        stack.extend(t.get("children", []))
    return out


def _leaf_ids(out: Path) -> list[str]:
    doc = json.loads((out / "tileset.json").read_text())
    ids: list[str] = []
    for t in _tiles(doc):
        if "children" not in t:
            ids += Glb.parse((out / t["content"]["uri"]).read_bytes()).strings("id") or []
    return ids


def test_streamed_pool_tiles_every_object_once_like_the_in_memory_writer(
    seq: Path, pooled: tuple[Path, TilesetStats], tmp_path: Path
) -> None:
    out, stats = pooled
    model = load_cityjson(seq, wgs84=False)
    assert stats.objects == len(model.feature_ids) > 2 * MAX
    assert stats.depth >= 2 and stats.leaves > 1
    ids = _leaf_ids(out)
    assert len(ids) == len(set(ids)) == stats.leaf_features
    # The in-memory path (one model, in this process) places the same objects.
    mem = write_tileset([model], tmp_path / "mem", max_features=MAX, workers=0)
    assert mem.objects == stats.objects
    assert set(_leaf_ids(tmp_path / "mem")) == set(ids) == set(model.feature_ids)
    assert not list(out.glob(".staging-*"))


def test_pool_tiles_pass_the_khronos_validator_and_are_quantized(
    pooled: tuple[Path, TilesetStats], gltf_validator: Any
) -> None:
    out, _ = pooled
    files = sorted((out / "tiles").glob("*.glb"))
    reports = gltf_validator.validate(*files)
    bad = [(r["file"], r["messages"][:3]) for r in reports if r["errors"]]
    assert len(reports) == len(files) and not bad
    used = {tuple(Glb.parse(f.read_bytes()).doc.get("extensionsRequired", [])) for f in files}
    assert used == {("KHR_mesh_quantization",)}


@pytest.mark.slow
def test_dask_local_cluster_builds_the_same_tileset(
    seq: Path, pooled: tuple[Path, TilesetStats], tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed", reason="dask.distributed not installed")
    out, stats = pooled
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        d = write_tileset(
            [seq], tmp_path / "dask", max_features=MAX, dask=cluster.scheduler_address
        )
    assert (d.tiles, d.objects, d.leaf_features) == (
        stats.tiles,
        stats.objects,
        stats.leaf_features,
    )
    assert (tmp_path / "dask" / "tileset.json").read_bytes() == (out / "tileset.json").read_bytes()
    for f in (out / "tiles").glob("*.glb"):
        assert (tmp_path / "dask" / "tiles" / f.name).read_bytes() == f.read_bytes(), f.name


def test_unreachable_dask_scheduler_is_a_clear_error(seq: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason="dask.distributed not installed")
    with pytest.raises(SceneError, match="Dask scheduler"):
        write_tileset([seq], tmp_path / "o", dask="tcp://127.0.0.1:9")
    assert not (tmp_path / "o" / "tileset.json").exists()


def _peak(fn: Any) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_is_bounded_by_tile_size_not_city_size(cityjson_dir: Path, tmp_path: Path) -> None:
    one, eight = tmp_path / "1.city.jsonl", tmp_path / "8.city.jsonl"
    tile_city.tile(cityjson_dir / DELFSHAVEN, one, 1)
    tile_city.tile(cityjson_dir / DELFSHAVEN, eight, 8)
    # 8x the city with 1/8 the tile size needs less memory (Python allocations traced,
    # numpy included): what is held per object is a few numbers, geometry only per tile.
    small_tiles = _peak(lambda: write_tileset([eight], tmp_path / "a", max_features=100, workers=0))
    big_tiles = _peak(lambda: write_tileset([one], tmp_path / "b", max_features=800, workers=0))
    parsed = _peak(lambda: load_cityjson(eight, wgs84=False))
    assert small_tiles < big_tiles, (small_tiles, big_tiles)
    assert small_tiles < parsed / 3, (small_tiles, parsed)


def test_progress_reports_scan_bytes_and_tiles(seq: Path, tmp_path: Path) -> None:
    scans: list[tuple[int, int]] = []
    tiles: list[tuple[int, int]] = []
    stats = write_tileset(
        [seq],
        tmp_path / "o",
        max_features=MAX,
        workers=0,
        progress=lambda d, t: tiles.append((d, t)),
        scan_progress=lambda d, t: scans.append((d, t)),
    )
    assert scans[-1] == (seq.stat().st_size, seq.stat().st_size)
    assert tiles[-1] == (stats.tiles, stats.tiles) and len(tiles) == stats.tiles


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_a_broken_line_fails_cleanly_and_keeps_the_previous_tileset(
    seq: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    write_tileset([seq], out, max_features=MAX, workers=0)
    before = {p.name: p.read_bytes() for p in (out / "tiles").glob("*.glb")}
    doc = (out / "tileset.json").read_bytes()
    lines = _lines(seq)
    bad = tmp_path / "bad.city.jsonl"
    bad.write_bytes(b"\n".join([*lines[:50], b'{"type": "CityJSONFeature", "Ci', *lines[50:]]))
    with pytest.raises(SceneError, match="line 51"):
        write_tileset([bad], out, max_features=MAX, workers=0)
    # A bad vertex index is found by the worker that parses the tile: same outcome.
    feat = orjson.loads(lines[10])
    obj = next(iter(feat["CityObjects"].values()))
    obj["geometry"][0]["boundaries"] = (
        [[[[0, 1, 99999]]]] if obj["geometry"][0]["type"] == "Solid" else [[[0, 1, 99999]]]
    )
    broken = tmp_path / "broken.city.jsonl"
    broken.write_bytes(b"\n".join([*lines[:10], orjson.dumps(feat), *lines[11:]]))
    with pytest.raises(SceneError):
        write_tileset([broken], out, max_features=MAX, workers=2)
    assert (out / "tileset.json").read_bytes() == doc
    assert {p.name: p.read_bytes() for p in (out / "tiles").glob("*.glb")} == before
    assert not list(out.glob(".staging-*"))


def test_a_sequence_without_crs_or_header_is_refused(seq: Path, tmp_path: Path) -> None:
    lines = _lines(seq)
    header = orjson.loads(lines[0])
    del header["metadata"]["referenceSystem"]
    p = tmp_path / "nocrs.city.jsonl"
    p.write_bytes(b"\n".join([orjson.dumps(header), *lines[1:20]]))
    with pytest.raises(SceneError, match="no known CRS"):
        write_tileset([p], tmp_path / "o")
    p2 = tmp_path / "nohead.city.jsonl"
    p2.write_bytes(b"\n".join(lines[1:20]))
    with pytest.raises(TwinError, match="header"):
        write_tileset([p2], tmp_path / "o2")


def test_two_cities_far_apart_share_a_tree_without_one_child_chains(
    cityjson_dir: Path, tmp_path: Path
) -> None:
    delft = load_cityjson(cityjson_dir / "real" / "delft.city.json", wgs84=False)
    zurich = load_cityjson(cityjson_dir / "real" / "zurich_subset_lod2.city.json", wgs84=False)
    stats = write_tileset([delft, zurich], tmp_path / "o", max_features=100, workers=0)
    doc = json.loads((tmp_path / "o" / "tileset.json").read_text())
    tiles = _tiles(doc)
    assert len(doc["root"]["children"]) == 2  # one subtree per city, 700 km apart
    assert all(len(t.get("children", [])) != 1 for t in tiles)
    assert stats.depth == max(_depths(doc["root"]))
    ids = _leaf_ids(tmp_path / "o")
    assert set(ids) == set(delft.feature_ids) | set(zurich.feature_ids)


def _depths(tile: dict[str, Any], level: int = 0) -> list[int]:
    return [level] + [d for c in tile.get("children", []) for d in _depths(c, level + 1)]


def test_in_memory_models_on_a_pool_give_the_same_tiles(cityjson_dir: Path, tmp_path: Path) -> None:
    delft = load_cityjson(cityjson_dir / "real" / "delft.city.json", wgs84=False)
    write_tileset([delft], tmp_path / "one", max_features=100, workers=0)
    write_tileset([delft], tmp_path / "pool", max_features=100, workers=2)
    one = {p.name: p.read_bytes() for p in (tmp_path / "one" / "tiles").glob("*.glb")}
    pool = {p.name: p.read_bytes() for p in (tmp_path / "pool" / "tiles").glob("*.glb")}
    assert len(one) > 3 and one == pool
    assert (tmp_path / "one" / "tileset.json").read_bytes() == (
        tmp_path / "pool" / "tileset.json"
    ).read_bytes()


class _DiesOnArrival:
    """Unpickled in a worker, it ends that process (as the kernel's OOM killer would)."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        import os

        return (os._exit, (1,))


def test_a_worker_that_dies_is_a_clear_error() -> None:
    import numpy as np

    from scene import tiles

    job = tiles._Job("0", "leaf", np.eye(4), True, None, models=[_DiesOnArrival()])  # type: ignore[list-item]
    runner = tiles._Runner(2, None)
    try:
        with pytest.raises(SceneError, match="worker process died"):
            list(runner.run([job]))
    finally:
        runner.close()

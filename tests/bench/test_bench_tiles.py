"""bench/tiles.py on a tiny city: its rows come from real runs, files and validators."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchload import load_bench
from pyproj import Transformer

ROOT = Path(__file__).resolve().parents[2]


tiles = load_bench("tiles")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench_tiles")


@pytest.fixture(scope="module")
def city(shared_data: Path, work: Path) -> Any:
    """About 200 real Zurich buildings: 5 grid copies of the 49 of the shared file."""
    return tiles.build_city(200, ["zurich"], shared_data, work=work, label="tiny")


@pytest.fixture(scope="module")
def row(city: Any, work: Path, shared_data: Path, gltf_validator: Any) -> Any:
    return tiles.run_tiler(
        city,
        work / "out",
        flags=tiles.tiler_flags(),
        workers=1,
        dask=None,
        max_features=60,
        timeout=300.0,
        schemas=shared_data / "schemas" / "3d-tiles-1.1",
        validate_max=4,
        validate_timeout=300.0,
    )


def test_the_city_is_grid_copies_of_real_buildings(city: Any, shared_data: Path) -> None:
    (f,) = city.files
    assert f.copies == 5
    assert city.buildings == 5 * 49 >= 200
    lines = f.path.read_bytes().splitlines()
    header = json.loads(lines[0])
    assert header["metadata"]["referenceSystem"].endswith("/2056")
    assert json.loads(lines[1])["type"] == "CityJSONFeature"
    # A second call reuses the file instead of writing it again.
    again = tiles.build_city(200, ["zurich"], shared_data, work=f.path.parent)
    assert again.files[0].reused and again.files[0].path == f.path


@pytest.mark.node
def test_tiler_row_is_measured_from_the_written_tileset(row: Any) -> None:
    out = Path(row.output)
    assert row.status == "ok", row.status
    assert row.buildings == 245
    assert row.wall_s > 0 and row.cpu_s > 0 and row.bps > 0
    assert row.rss > 50 * 2**20  # a Python process tree holds at least this
    files = [p for p in out.rglob("*") if p.is_file()]
    assert row.bytes == sum(p.stat().st_size for p in files)
    glbs = [p for p in files if p.suffix == ".glb"]
    assert row.tiles == len(glbs) > 1
    assert row.depth >= 1 and row.leaves >= 1
    assert 0 < row.leaf_bytes < row.bytes
    assert row.schema.startswith("valid ("), row.schema
    # More GLBs than --validate-max: a sample, with the validator's counts filled in.
    assert row.validated.startswith(f"sample of 4 of {len(glbs)}")
    assert row.val_errors is not None and row.val_warnings is not None


@pytest.mark.node
def test_sample_has_the_root_and_is_deterministic(row: Any) -> None:
    info = tiles.inspect_tileset(Path(row.output))
    a, how = tiles.pick_sample(info, 4)
    assert how.startswith("sample of 4")
    b, _ = tiles.pick_sample(info, 4)
    assert a == b and len(a) == 4
    assert info.roots[0] in a
    assert any(p in info.leaf_glbs for p in a)
    every, how_all = tiles.pick_sample(info, 10_000)
    assert how_all == f"all {len(info.glbs)}" and every == info.glbs


@pytest.mark.node
def test_glb_validator_reports_a_broken_tile(row: Any, tmp_path: Path) -> None:
    glb = tiles.inspect_tileset(Path(row.output)).glbs[0]
    good = tiles.validate_glbs([glb], 120.0, work=tmp_path)
    bad_glb = tmp_path / "bad.glb"
    data = bytearray(glb.read_bytes())
    struct.pack_into("<I", data, 8, len(data) + 64)  # header length past the end
    bad_glb.write_bytes(bytes(data))
    bad = tiles.validate_glbs([glb, bad_glb], 120.0, work=tmp_path)
    assert good.status == bad.status == "ok"
    assert good.files == 1 and bad.files == 2
    assert bad.errors > good.errors
    assert bad.error_codes


@pytest.mark.node
def test_schema_check_rejects_a_broken_tileset(row: Any, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(row.output, out)
    doc = json.loads((out / "tileset.json").read_text())
    doc["root"]["geometricError"] = -1
    (out / "tileset.json").write_text(json.dumps(doc))
    checked, errors, first = tiles.validate_schemas(
        tiles.inspect_tileset(out), shared_data / "schemas" / "3d-tiles-1.1"
    )
    assert checked >= 1 and errors >= 1
    assert "geometricError" in first[0] or "-1" in first[0]


def test_run_tree_sums_the_memory_of_every_process() -> None:
    code = (
        "import multiprocessing as mp, time\n"
        "def hold():\n"
        "    b = bytearray(120 * 2**20); time.sleep(1.5)\n"
        "if __name__ == '__main__':\n"
        "    ps = [mp.Process(target=hold) for _ in range(2)]\n"
        "    [p.start() for p in ps]; [p.join() for p in ps]\n"
    )
    p = tiles.run_tree([sys.executable, "-c", code], timeout=60.0, interval=0.1)
    assert p.ok, p.stderr
    assert p.processes >= 3
    assert p.rss_peak >= 240 * 2**20  # two children at 120 MiB each, summed
    assert p.cpu_s > 0


def test_run_tree_kills_a_run_past_its_timeout() -> None:
    p = tiles.run_tree([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
    assert p.status == "timeout (0.5 s)"
    assert p.wall_s < 10


def test_wkb_input_for_py3dtiles_round_trips_to_the_source(city: Any, work: Path) -> None:
    seq = city.files[0].path
    res = tiles.write_wkbs(seq, work / "wkb")
    files = sorted((work / "wkb").glob("*.wkb"))
    assert res.written == len(files) > 0
    data = files[0].read_bytes()
    order, kind, n_polys = struct.unpack_from("<BII", data)
    assert (order, kind) == (1, 1006) and n_polys > 0  # little-endian MultiPolygonZ
    _, ptype, n_rings = struct.unpack_from("<BII", data, 9)
    (n_pts,) = struct.unpack_from("<I", data, 18)
    assert ptype == 1003 and n_rings >= 1 and n_pts >= 4
    ring = np.frombuffer(data, dtype="<f8", count=3 * n_pts, offset=22).reshape(-1, 3)
    np.testing.assert_array_equal(ring[0], ring[-1])  # closed, as WKB wants
    # y-up local -> ECEF -> LV95 lands on a real vertex of the copied city.
    x, y, z = ring[:, 0], -ring[:, 2], ring[:, 1]
    ecef = np.column_stack([x, y, z]) + np.asarray(res.offset)
    back = Transformer.from_crs("EPSG:4978", "EPSG:2056", always_xy=True).transform(
        ecef[:, 0], ecef[:, 1], ecef[:, 2]
    )
    pts = np.column_stack(back)
    lines = seq.read_bytes().splitlines()
    tr = json.loads(lines[0])["transform"]
    real = np.vstack(
        [np.asarray(json.loads(line)["vertices"], dtype=float) for line in lines[1:60]]
    ) * np.asarray(tr["scale"]) + np.asarray(tr["translate"])
    nearest = np.min(np.linalg.norm(pts[:, None, :] - real[None, :, :], axis=2), axis=1)
    assert nearest.max() < 0.005  # metres: every ring point is a vertex of the source


def test_b3dm_glb_splits_the_container() -> None:
    glb = b"glTF" + struct.pack("<II", 2, 20) + b"\0" * 8
    ft = b'{"BATCH_LENGTH":0}'
    head = struct.pack("<4sIIIIII", b"b3dm", 1, 28 + len(ft) + len(glb), len(ft), 0, 0, 0)
    inner, table = tiles.b3dm_glb(head + ft + glb)
    assert inner == glb and table == {"BATCH_LENGTH": 0}
    with pytest.raises(ValueError):
        tiles.b3dm_glb(b"pnts" + head[4:])


@pytest.mark.node
def test_section_has_the_rows_and_targets(row: Any, city: Any, tmp_path: Path) -> None:
    args = tiles.parse_args(["--sizes", "200", "--no-viewer"])
    report = tiles.Report(args, {"--workers"}, cities=[city], rows=[row, tiles.citydb_row()])
    export = tiles.Row("twin export (single GLB per file)", city.label, city.buildings)
    export.status, export.bytes = "ok", row.bytes * 2
    report.rows.append(export)
    text = report.section()
    assert f"| twin tiles | tiny | {city.buildings:,} | ok |" in text
    assert "bytes/building <= single-GLB export (tiny)" in text
    assert "| PASS |" in text  # the tileset is half the (made-up) export size
    assert "0 validator errors" in text
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    tiles._bench_module("common").write_section("tiles", text, results)
    written = results.read_text()
    assert "kept" in written and "<!-- tiles:start -->" in written and text.strip() in written

"""The `twin` console script, run as a real subprocess (exit codes, stdout/stderr, files)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from twin.store import open_store

TWIN = Path(sys.executable).parent / "twin"


def twin(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not TWIN.exists():
        pytest.skip(f"console script not installed at {TWIN}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    return subprocess.run(
        [str(TWIN), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def _no_crash(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert "internal error" not in r.stderr


def _one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_help(tmp_path: Path) -> None:
    r = twin("--help", cwd=tmp_path)
    assert r.returncode == 0
    for command in ("export", "info", "validate", "ingest", "demo"):
        assert command in r.stdout


def test_export_writes_a_glb(cityjson_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cube.glb"
    r = twin("export", cityjson_dir / "small/cube.city.json", "-o", out, cwd=tmp_path)
    _no_crash(r)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    assert re.match(rf"^{re.escape(str(out))}: 1 objects, 12 triangles, \d+ vertices, ", lines[0])
    data = out.read_bytes()
    assert data[:4] == b"glTF"
    assert int.from_bytes(data[8:12], "little") == len(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.glb"]


def test_export_streams_a_sequence(cityjson_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "seq.glb"
    r = twin(
        "export", cityjson_dir / "seq/small.city.jsonl", "-o", out, "--lod", "1.2", cwd=tmp_path
    )
    _no_crash(r)
    assert r.returncode == 0, r.stderr
    assert ": 6 objects," in r.stdout
    assert out.read_bytes()[:4] == b"glTF"


def test_export_invalid_json(cityjson_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad.glb"
    r = twin("export", cityjson_dir / "invalid/json_syntax.json", "-o", out, cwd=tmp_path)
    _no_crash(r)
    assert r.returncode == 2
    line = _one_error_line(r)
    assert "json_syntax.json" in line and "line 3:11" in line
    assert list(tmp_path.iterdir()) == []  # no GLB, no partial file


def test_export_empty_model(cityjson_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty.glb"
    r = twin("export", cityjson_dir / "small/minimal_empty.city.json", "-o", out, cwd=tmp_path)
    _no_crash(r)
    assert r.returncode == 2
    assert "nothing to draw" in _one_error_line(r)
    assert list(tmp_path.iterdir()) == []


def test_export_missing_file(tmp_path: Path) -> None:
    r = twin("export", tmp_path / "absent.city.json", "-o", tmp_path / "x.glb", cwd=tmp_path)
    _no_crash(r)
    assert r.returncode == 2
    assert "no such file" in _one_error_line(r)
    assert list(tmp_path.iterdir()) == []


def test_export_bad_lod_is_a_usage_error(cityjson_dir: Path, tmp_path: Path) -> None:
    r = twin(
        "export",
        cityjson_dir / "small/cube.city.json",
        "-o",
        tmp_path / "c.glb",
        "--lod",
        "top",
        cwd=tmp_path,
    )
    _no_crash(r)
    assert r.returncode == 2
    assert "'top'" in _one_error_line(r)


def test_info_json(cityjson_dir: Path, tmp_path: Path) -> None:
    r = twin("info", cityjson_dir / "real/zurich_subset_lod2.city.json", "--json", cwd=tmp_path)
    _no_crash(r)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["objects"] == 210
    assert data["objects_with_geometry"] == 161
    assert data["counts_by_type"] == {"BuildingPart": 161, "Building": 49}
    assert data["version"] == "1.1" and data["lods"] == ["2"]
    assert data["epsg"] == 2056
    lon0, lat0, _, lon1, lat1, _ = data["bbox_wgs84"]
    assert 8.4 < lon0 < lon1 < 8.7 and 47.3 < lat0 < lat1 < 47.5


def test_info_text(cityjson_dir: Path, tmp_path: Path) -> None:
    r = twin("info", cityjson_dir / "small/noise_extension.city.json", cwd=tmp_path)
    _no_crash(r)
    assert r.returncode == 0
    assert "+NoiseCityFurnitureSegment" in r.stdout
    assert "Noise" in r.stdout  # the extensions line


def test_ingest_prints_counts_and_is_idempotent(cityjson_dir: Path, tmp_path: Path) -> None:
    files = [
        cityjson_dir / "small/cube.city.json",
        cityjson_dir / "real/zurich_subset_lod2.city.json",
    ]
    r = twin("ingest", *files, "--db", "memory://", cwd=tmp_path)
    _no_crash(r)
    assert r.returncode == 0, r.stderr
    assert re.search(r"cube\.city\.json: 1 objects", r.stdout)
    assert re.search(r"zurich_subset_lod2\.city\.json: 210 objects", r.stdout)
    assert "211 objects from 2 file(s)" in r.stdout

    url = f"sqlite:///{tmp_path / 'twin.db'}"
    for _ in range(2):
        r = twin("ingest", *files, "--db", url, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    store = open_store(url)
    try:
        assert store.count() == 211
        assert store.counts_by_type() == {"BuildingPart": 161, "Building": 50}
    finally:
        store.close()


def test_ingest_bad_file_writes_nothing(cityjson_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'twin.db'}"
    r = twin("ingest", cityjson_dir / "invalid/schema_invalid_2.json", "--db", url, cwd=tmp_path)
    _no_crash(r)
    assert r.returncode == 2
    assert "vertex index 22" in _one_error_line(r)
    store = open_store(url)
    try:
        assert store.count() == 0
    finally:
        store.close()


def test_demo_no_serve(tmp_path: Path) -> None:
    db = tmp_path / "out" / "demo.db"
    r = twin("demo", "--no-serve", "--db", db, cwd=tmp_path)
    _no_crash(r)
    assert r.returncode == 0, r.stderr
    # Delft's 570 city objects, plus the two stand-in networks (97 + 119 water assets from
    # Net3, 972 power assets), every one of them a pickable feature of the scene.
    assert "1,758 objects" in r.stdout and "1,758 pickable features" in r.stdout
    store = open_store(f"sqlite:///{db}")
    try:
        assert store.count() == 1758
        assert [s.name for s in store.sources()] == [
            "delft.city.json",
            "network:water",
            "network:power",
        ]
        assert store.counts_by_type()["WaterPipe"] == 117
    finally:
        store.close()


def test_demo_unknown_city(tmp_path: Path) -> None:
    r = twin("demo", "--no-serve", "--city", "atlantis", "--db", tmp_path / "d.db", cwd=tmp_path)
    _no_crash(r)
    assert r.returncode != 0
    assert "atlantis" in _one_error_line(r)


def test_validate_smoke(cityjson_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ingest.validate")
    r = twin("validate", cityjson_dir / "small/cube.city.json", cwd=tmp_path)
    _no_crash(r)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout


def test_export_big_sequence_streams_with_progress(cityjson_dir: Path, tmp_path: Path) -> None:
    """A CityJSONSeq over the progress threshold (4 MB) exports (regression: exit 70)."""
    big = tmp_path / "delfshaven_x4.city.jsonl"
    tiler = Path(__file__).resolve().parents[2] / "bench" / "tile_city.py"
    src = cityjson_dir / "real" / "delfshaven_3-20.city.json"
    subprocess.run(
        [sys.executable, str(tiler), str(src), "--copies", "4", "-o", str(big)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert big.stat().st_size > 4 * 1024 * 1024
    out = tmp_path / "big.glb"
    r = twin("export", big, "-o", out, "--no-check", cwd=tmp_path)
    _no_crash(r)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"glTF"
    assert "3,412 objects" in r.stdout  # 4 copies x 853 buildings
    # `info` over the same threshold draws the per-object progress bar.
    info = twin("info", big, "--json", cwd=tmp_path)
    _no_crash(info)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["objects"] == 3412

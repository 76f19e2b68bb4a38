"""The tileset API (/api/tiles) on a real store, and the `twin tiles` command."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ingest.cityjson import load_cityjson
from viewer.app import create_app
from viewer.bootstrap import bootstrap
from viewer.settings import Settings

DELFT = "real/delft.city.json"
TWIN = Path(sys.executable).parent / "twin"


@pytest.fixture
def client(tmp_path: Path, cityjson_dir: Path) -> Iterator[TestClient]:
    path = cityjson_dir / DELFT
    model = load_cityjson(path)
    services = bootstrap(Settings(db=f"sqlite:///{tmp_path / 'twin.db'}"))
    services.store.put_objects(model.twin, source="delft.city.json", source_data=path.read_bytes())
    app: FastAPI = create_app(services, live=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    cache = getattr(app.state, "tiles", None)
    if cache is not None:
        cache.close()
    services.store.close()


def test_tileset_etag_304_and_gzip(client: TestClient) -> None:
    r = client.get("/api/tiles/base/tileset.json", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["asset"]["version"] == "1.1"
    etag = r.headers["etag"]
    again = client.get("/api/tiles/base/tileset.json", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    raw = client.get("/api/tiles/base/tileset.json", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    # httpx decodes gzip transparently: same JSON either way.
    assert raw.json() == doc


def test_tiles_are_served_with_their_ids(client: TestClient) -> None:
    doc = client.get("/api/tiles/base/tileset.json").json()
    uris = []
    stack = [doc["root"]]
    while stack:
        t = stack.pop()
        uris.append(t["content"]["uri"])
        stack.extend(t.get("children", []))
    for uri in uris:
        r = client.get(f"/api/tiles/base/{uri}", headers={"Accept-Encoding": "identity"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "model/gltf-binary"
        assert r.content[:4] == b"glTF"
        assert b"EXT_structural_metadata" in r.content
        etag = r.headers["etag"]
        assert (
            client.get(f"/api/tiles/base/{uri}", headers={"If-None-Match": etag}).status_code == 304
        )
        z = client.get(f"/api/tiles/base/{uri}", headers={"Accept-Encoding": "gzip"})
        assert z.headers["content-encoding"] == "gzip" and z.content == r.content


def test_unknown_tile_scenario_and_traversal_are_404_json(client: TestClient) -> None:
    for path in (
        "/api/tiles/base/tiles/nope.glb",
        "/api/tiles/base/../../../etc/passwd",
        "/api/tiles/base/%2e%2e/%2e%2e/etc/passwd",
        "/api/tiles/base/tiles/..%2f..%2ftileset.json",
        "/api/tiles/base//etc/passwd",
        "/api/tiles/nosuch/tileset.json",
    ):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text)
        body = r.json()
        assert body["error"] == "not_found" and body["message"]
        if "%2" in path:  # decoded to "..": refused by the route itself, not the router
            assert "no tile" in body["message"]


def _twin(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not TWIN.exists():
        pytest.skip(f"console script not installed at {TWIN}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    return subprocess.run(
        [str(TWIN), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


def test_cli_writes_tileset_and_3tz(cityjson_dir: Path, tmp_path: Path) -> None:
    r = _twin(
        "tiles",
        cityjson_dir / DELFT,
        "-o",
        tmp_path / "out",
        "--max-features",
        "200",
        "--3tz",
        tmp_path / "delft.3tz",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "570 objects" in r.stdout and "3D Tiles archive" in r.stdout
    # Progress lines: scan and tiles, each with a rate and an ETA.
    assert "scan 1/1 " in r.stderr and "tiles " in r.stderr
    assert "tiles/s, ETA " in r.stderr and "MB/s, ETA " in r.stderr
    doc = json.loads((tmp_path / "out" / "tileset.json").read_text())
    assert len(doc["root"]["children"]) >= 2
    with zipfile.ZipFile(tmp_path / "delft.3tz") as zf:
        assert json.loads(zf.read("tileset.json")) == doc


def test_cli_city_without_crs_is_one_error_line(cityjson_dir: Path, tmp_path: Path) -> None:
    r = _twin(
        "tiles",
        cityjson_dir / "small" / "twobuildings.city.json",
        "-o",
        tmp_path / "o",
        cwd=tmp_path,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no known CRS" in lines[0]
    assert "Traceback" not in r.stderr


def test_gzip_body_is_real_gzip(client: TestClient) -> None:
    with client.stream(
        "GET", "/api/tiles/base/tileset.json", headers={"Accept-Encoding": "gzip"}
    ) as r:
        body = b"".join(r.iter_raw())
    assert json.loads(gzip.decompress(body))["asset"]["version"] == "1.1"


def test_a_prebuilt_tileset_is_served_as_base_and_the_viewer_told_to_stream(
    cityjson_dir: Path, tmp_path: Path
) -> None:
    from scene.tiles import write_tileset

    prebuilt = tmp_path / "prebuilt"
    write_tileset([load_cityjson(cityjson_dir / DELFT, wgs84=False)], prebuilt, max_features=100)
    services = bootstrap(Settings(db="memory://", tileset=str(prebuilt)))
    app: FastAPI = create_app(services, live=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/tiles/base/tileset.json", headers={"Accept-Encoding": "identity"})
        assert r.status_code == 200 and r.content == (prebuilt / "tileset.json").read_bytes()
        uri = r.json()["root"]["children"][0]["content"]["uri"]
        tile = c.get(f"/api/tiles/base/{uri}", headers={"Accept-Encoding": "identity"})
        assert tile.content == (prebuilt / uri).read_bytes()
        # An empty store, and still a city to stream: the viewer is told to use tiles.
        stats = c.get("/api/stats").json()
        assert stats["objects"] == 0 and stats["tiles"] is True
        # Other scenarios are not served from the prebuilt folder.
        assert c.get("/api/tiles/other/tileset.json").status_code == 404
    # The server does not delete a prebuilt tileset when it stops.
    assert (prebuilt / "tileset.json").is_file() and (prebuilt / uri).is_file()
    services.store.close()


def test_stats_say_tiles_from_the_threshold(cityjson_dir: Path, tmp_path: Path) -> None:
    path = cityjson_dir / DELFT
    model = load_cityjson(path)
    for threshold, expect in ((len(model.twin), True), (len(model.twin) + 1, False)):
        services = bootstrap(
            Settings(db=f"sqlite:///{tmp_path / f'{threshold}.db'}", tiles_threshold=threshold)
        )
        services.store.put_objects(
            model.twin, source="delft.city.json", source_data=path.read_bytes()
        )
        with TestClient(create_app(services, live=False)) as c:
            assert c.get("/api/stats").json()["tiles"] is expect
        services.store.close()

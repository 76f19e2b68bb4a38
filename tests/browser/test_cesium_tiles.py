"""Our 3D Tiles 1.1 tilesets in CesiumJS (npm ``cesium``) in a real Chromium.

An independent 3D Tiles runtime loads tilesets of real cities, written to disk by
:func:`scene.tiles.write_tileset` and served by the API (``/api/tiles/...``, ETag + gzip):
no tile may fail, the tree must refine to its leaves, the leaves' features must be exactly
the city's objects with geometry (by CityJSON id), parents' LoD1 blocks carry ids too, and
the tileset must sit on the globe where pyproj puts the city.
"""

from __future__ import annotations

import inspect
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import ROOT, need
from pyproj import Geod, Transformer
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from browser.conftest import GPU_DIAGNOSTIC, save_screenshot
from ingest.cityjson import load_cityjson
from scene.tiles import TileCache, TilesetStats, write_tileset
from twin.geometry import CityModel

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CESIUM = ROOT / "node_modules" / "cesium" / "Build" / "Cesium"
PAGE = Path(__file__).with_name("cesium_page.html")
DELFT = "real/delft.city.json"
# 210 CityObjects of which 161 have geometry (the rest are parents of BuildingParts).
ZURICH = "real/zurich_subset_lod2.city.json"
# Small, so the quadtree has several levels (Delft: 570 objects, Zurich: 161).
MAX_FEATURES = 40
LOAD_TIMEOUT_MS = 90_000
# The tileset's bounding sphere centre is at most this far from the city's centre.
CENTRE_TOLERANCE_M = 100.0
# Both encodings when write_tileset has the KHR_mesh_quantization switch, else float.
HAS_QUANTIZE = "quantize" in inspect.signature(write_tileset).parameters
FILE_CASES = [pytest.param(False, id="float")] + (
    [pytest.param(True, id="quantized")] if HAS_QUANTIZE else []
)
QUANTIZATION = b"KHR_mesh_quantization"
# Screen points picked from straight above (columns, rows), and how far (metres, in the
# source CRS) a pick position may fall outside its object's box: depth-buffer precision.
PICK_GRID = (12, 9)
PICK_TOLERANCE_M = 0.5
F64 = npt.NDArray[np.float64]


@dataclass
class City:
    """A real city: its model, its CityJSON ids with geometry, its WGS84 centre, and
    each object's box in the source CRS (read from the CityJSON itself)."""

    path: Path
    model: CityModel
    ids_with_geometry: set[str]
    lon: float
    lat: float
    height: float
    boxes: dict[str, tuple[F64, F64]]


def _flatten(boundaries: Any) -> Iterator[int]:
    if isinstance(boundaries, int):
        yield boundaries
    else:
        for b in boundaries:
            yield from _flatten(b)


def _city(path: Path) -> City:
    doc = json.loads(path.read_bytes())
    ids = {k for k, o in doc["CityObjects"].items() if o.get("geometry")}
    model = load_cityjson(path, wgs84=False)
    assert model.epsg is not None
    # The centre of the box of the vertices in the source CRS, to WGS84 by pyproj.
    v = model.vertices
    mid = (v.min(axis=0) + v.max(axis=0)) / 2
    lon, lat, h = Transformer.from_crs(model.epsg, 4979, always_xy=True).transform(*mid)
    # CityJSON 2.0 § Transform object: real coordinates = vertex * scale + translate.
    verts = np.asarray(doc["vertices"], dtype=np.float64)
    if "transform" in doc:
        verts = verts * doc["transform"]["scale"] + doc["transform"]["translate"]
    boxes = {}
    for oid in ids:
        geoms = doc["CityObjects"][oid]["geometry"]
        idx = [
            i for g in geoms if g["type"] != "GeometryInstance" for i in _flatten(g["boundaries"])
        ]
        if idx:
            box = verts[np.unique(idx)]
            boxes[oid] = (box.min(axis=0), box.max(axis=0))
    return City(path, model, ids, float(lon), float(lat), float(h), boxes)


@dataclass
class Exchange:
    """One HTTP request the test server answered."""

    path: str
    status: int = 0
    if_none_match: str | None = None
    etag: str | None = None
    encoding: str | None = None


@dataclass
class Recorder:
    """ASGI wrapper that records each request's path, status and caching headers."""

    app: ASGIApp
    log: list[Exchange] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        row = Exchange(scope["path"], if_none_match=headers.get("if-none-match"))

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
                row.status = int(message["status"])
                row.etag = out.get("etag")
                row.encoding = out.get("content-encoding")
            await send(message)

        await self.app(scope, receive, recording)
        self.log.append(row)


@dataclass
class Site:
    """The test server: the viewer API, Cesium's build, tileset folders and the page."""

    url: str
    files: Path
    recorder: Recorder
    api_city: City


@pytest.fixture(scope="module")
def site(cityjson_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The real viewer app on a store holding Zurich, plus static Cesium and tilesets.

    One uvicorn server in a thread; the API's tile cache uses a small ``max_features``
    so the served tileset has several levels.
    """
    if not (CESIUM / "Cesium.js").is_file():
        need("node_modules/cesium missing: run `make setup` (npm ci)")
    import uvicorn

    from viewer.app import create_app
    from viewer.bootstrap import bootstrap
    from viewer.settings import Settings

    work = tmp_path_factory.mktemp("cesium")
    files = work / "files"
    files.mkdir()
    city = _city(cityjson_dir / ZURICH)
    services = bootstrap(Settings(db=f"sqlite:///{work / 'twin.db'}"))
    services.store.put_objects(
        load_cityjson(city.path).twin, source=city.path.name, source_data=city.path.read_bytes()
    )
    app = create_app(services, live=False)
    app.state.tiles = TileCache(services.store, max_features=MAX_FEATURES)

    async def page(_: Request) -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    app.router.add_route("/cesium_page.html", page, include_in_schema=False)
    app.mount("/cesium", StaticFiles(directory=CESIUM))
    app.mount("/files", StaticFiles(directory=files))
    recorder = Recorder(app)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(recorder, log_level="warning", lifespan="off", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield Site(f"http://127.0.0.1:{port}", files, recorder, city)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        app.state.tiles.close()
        services.store.close()


@dataclass
class CesiumPage:
    """The Cesium test page, its WebGL set-up and what it reported."""

    page: Any
    webgl: dict[str, Any]
    problems: list[str]

    def load(self, url: str) -> dict[str, Any]:
        """Load the tileset at ``url`` (root first, then to the leaves) and describe it.

        ``problems`` restarts empty: it then holds what the page reported since.
        """
        self.problems.clear()
        self.page.evaluate("cesiumTest.clear()")
        result: dict[str, Any] = self.page.evaluate(
            "([url, ms]) => cesiumTest.run(url, ms)", [url, LOAD_TIMEOUT_MS]
        )
        return result


@pytest.fixture(scope="module")
def cesium(chromium: Any, site: Site) -> Iterator[CesiumPage]:
    """One page for the module: Cesium's widget with no imagery, terrain or ion."""
    ctx = chromium.new_context(viewport={"width": 800, "height": 600}, device_scale_factor=1)
    page = ctx.new_page()
    problems: list[str] = []

    def on_console(msg: Any) -> None:
        if msg.type in ("error", "warning") and GPU_DIAGNOSTIC not in msg.text:
            problems.append(f"console {msg.type}: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on(
        "response",
        lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    )
    # Nothing may leave the machine (ion, imagery, terrain): only the test server answers.
    # (Watched, not routed: routing would turn off the HTTP cache the ETag test needs.)
    page.on(
        "request",
        lambda r: (
            None
            if r.url.startswith((site.url, f"blob:{site.url}/", "data:"))
            else problems.append(f"off-site request: {r.url}")
        ),
    )
    page.set_default_timeout(LOAD_TIMEOUT_MS + 30_000)
    page.goto(f"{site.url}/cesium_page.html")
    page.wait_for_function("window.cesiumTest !== undefined")
    webgl: dict[str, Any] = page.evaluate("cesiumTest.start()")
    try:
        yield CesiumPage(page, webgl, problems)
    finally:
        ctx.close()


def _check(
    result: dict[str, Any], city: City, problems: list[str], expect: TilesetStats | None
) -> None:
    """The assertions every loaded tileset must pass (see the module docstring)."""
    assert result["failures"] == []
    assert result["renderErrors"] == []
    assert problems == []
    tiles = result["tiles"]
    # Every tile of the tree was fetched and decoded: none failed, none left unloaded.
    assert [t for t in tiles if t["failed"] or not t["ready"]] == []
    leaves = [t for t in tiles if t["leaf"]]
    parents = [t for t in tiles if not t["leaf"]]
    assert len(parents) >= 2 and max(t["depth"] for t in tiles) >= 2
    # The leaves hold every object with geometry exactly once, under its CityJSON id.
    leaf_ids = [i for t in leaves for i in t["ids"]]
    assert sum(t["features"] for t in leaves) == len(leaf_ids) == len(city.ids_with_geometry)
    assert sorted(leaf_ids) == sorted(city.ids_with_geometry)
    # Parents (LoD1 blocks) carry real ids, each tile's ids distinct.
    for t in parents:
        assert 0 < t["features"] == len(t["ids"]) == len(set(t["ids"]))
        assert set(t["ids"]) <= city.ids_with_geometry, t["url"]
    if expect is not None:
        assert len(tiles) == expect.tiles and len(leaves) == expect.leaves
        assert max(t["depth"] for t in tiles) == expect.depth
        assert sum(t["features"] for t in leaves) == expect.leaf_features
        assert sum(t["features"] for t in parents) == expect.parent_features
    # The first phase (a maximumScreenSpaceError between the tileset's and the root's
    # screen-space error) drew the root's blocks alone: refinement follows geometricError.
    root = result["rootAtStart"]
    assert result["phases"]["root"]["tiles"] == 1 and root["ready"] and root["features"] > 0
    assert set(root["ids"]) <= city.ids_with_geometry
    # Where the city is: the bounding sphere centre against pyproj's WGS84 centre.
    c = result["centre"]
    _, _, dist = Geod(ellps="WGS84").inv(c["lon"], c["lat"], city.lon, city.lat)
    assert dist < CENTRE_TOLERANCE_M, (c, city.lon, city.lat)
    assert abs(c["height"] - city.height) < CENTRE_TOLERANCE_M
    west, south, east, north = result["rootRectangle"]
    assert west < city.lon < east and south < city.lat < north
    assert result["phases"]["leaves"]["allTilesLoadedEvents"] >= 1


def _check_picks(cesium: CesiumPage, city: City, result: dict[str, Any]) -> None:
    """Picked from straight above, each feature is hit where its own source vertices are.

    Cesium's pick gives the feature's ``id``; its pick position (depth buffer) goes back to
    the source CRS through pyproj and must fall in that object's box: the tiles' glTF
    y-up, transforms and (de)quantization all land the geometry where the city is.
    """
    # Over the leaf with the most objects per area (a city's buildings may be far apart,
    # and a few pixels wide from above a whole tile): from 10 m up, radius squared.
    densest = max(
        (t for t in result["tiles"] if t["leaf"]),
        key=lambda t: t["features"] / max(t["radius"], 10.0) ** 2,
    )
    grid = cesium.page.evaluate(
        "([url, c, r, ms]) => cesiumTest.pickGrid(url, c, r, ms)",
        [densest["url"], PICK_GRID[0], PICK_GRID[1], LOAD_TIMEOUT_MS],
    )
    assert grid["pickPositionSupported"]
    hits = grid["hits"]
    leaf_urls = {t["url"] for t in result["tiles"] if t["leaf"]}
    assert city.model.epsg is not None
    to_ecef = Transformer.from_crs(city.model.epsg, 4978, always_xy=True)
    misses = []
    worst = 0.0
    for hit in hits:
        assert hit["id"] in city.boxes and hit["url"] in leaf_urls, hit
        assert hit["ecef"] is not None, hit
        ex, ey, ez = hit["ecef"]
        x, y, z = to_ecef.transform(ex, ey, ez, direction="INVERSE")
        lo, hi = city.boxes[hit["id"]]
        p = np.array([x, y, z])
        outside = float(np.max(np.maximum(np.maximum(lo - p, p - hi), 0.0)))
        worst = max(worst, outside)
        if outside > PICK_TOLERANCE_M:
            misses.append((hit["id"], round(outside, 3)))
    assert misses == []
    assert len(hits) >= 10 and len({h["id"] for h in hits}) >= 3, hits
    assert cesium.problems == []
    print(f"picks: {len(hits)} hits on {densest['url']}, at most {worst:.3f} m outside")


@pytest.mark.parametrize("quantize", FILE_CASES)
def test_written_tileset_loads_in_cesium_to_the_leaves(
    cesium: CesiumPage, site: Site, cityjson_dir: Path, quantize: bool
) -> None:
    city = _city(cityjson_dir / DELFT)
    name = f"delft-{'q' if quantize else 'f'}"
    options: dict[str, Any] = {"quantize": quantize} if HAS_QUANTIZE else {}
    out = site.files / name
    stats = write_tileset([city.model], out, max_features=MAX_FEATURES, **options)
    assert stats.objects == stats.leaf_features == len(city.ids_with_geometry)
    assert stats.depth >= 2
    # The case is what it says: every tile quantized, or none.
    glbs = [p.read_bytes() for p in (out / "tiles").glob("*.glb")]
    assert len(glbs) == stats.tiles
    assert [QUANTIZATION in g for g in glbs] == [quantize] * len(glbs)
    t0 = time.monotonic()
    result = cesium.load(f"{site.url}/files/{name}/tileset.json")
    elapsed = time.monotonic() - t0
    save_screenshot(cesium.page, f"cesium-{name}.png")
    _check(result, city, cesium.problems, stats)
    assert result["geometryBytes"] > 0
    _check_picks(cesium, city, result)
    print(f"cesium {name}: {stats.tiles} tiles in {elapsed:.1f} s, webgl {cesium.webgl}")


def test_api_tileset_loads_in_cesium_with_etag_and_gzip(
    cesium: CesiumPage, site: Site, tmp_path: Path
) -> None:
    city = site.api_city
    assert len(city.ids_with_geometry) < len(json.loads(city.path.read_bytes())["CityObjects"])
    # What the API's tile cache must have built: the same city, the same max_features.
    expect = write_tileset([city.model], tmp_path / "expect", max_features=MAX_FEATURES)
    assert expect.leaf_features == len(city.ids_with_geometry) and expect.depth >= 2
    url = f"{site.url}/api/tiles/base/tileset.json"
    start = len(site.recorder.log)
    t0 = time.monotonic()
    result = cesium.load(url)
    elapsed = time.monotonic() - t0
    save_screenshot(cesium.page, "cesium-api-zurich.png")
    _check(result, city, cesium.problems, expect)
    _check_picks(cesium, city, result)
    first = _tile_requests(site.recorder.log[start:])
    # Each tile fetched once, gzip-encoded with its ETag (Chromium asks for gzip itself).
    assert sorted(e.path for e in first) == sorted(
        "/api/tiles/base/tiles/" + t["url"].rsplit("/", 1)[-1] for t in result["tiles"]
    )
    assert all(e.status == 200 and e.encoding == "gzip" and e.etag for e in first), first
    etags = {e.path: e.etag for e in first}

    # Again in the same page: the browser revalidates each tile with its ETag, the API
    # answers 304, and Cesium still gets every tile (from the HTTP cache) intact.
    start = len(site.recorder.log)
    again = cesium.load(url)
    _check(again, city, cesium.problems, expect)
    assert _tile_ids(again) == _tile_ids(result)
    second = _tile_requests(site.recorder.log[start:])
    assert sorted(e.path for e in second) == sorted(etags)
    assert all(e.status == 304 and e.if_none_match == etags[e.path] for e in second), second
    print(f"cesium api: {expect.tiles} tiles in {elapsed:.1f} s, webgl {cesium.webgl}")


def _tile_requests(log: list[Exchange]) -> list[Exchange]:
    return [e for e in log if e.path.startswith("/api/tiles/base/tiles/")]


def _tile_ids(result: dict[str, Any]) -> dict[str, list[str]]:
    return {t["url"]: sorted(t["ids"]) for t in result["tiles"]}

"""The viewer streaming the city as 3D Tiles 1.1 (3d-tiles-renderer) in a real Chromium."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import pytest
from conftest import ROOT, need
from fastapi import FastAPI
from fastapi.testclient import TestClient

import viewer.routes.web as web
from browser.conftest import (
    BUILDING_STYLE,
    GPU_DIAGNOSTIC,
    PageLog,
    Server,
    clickable_building,
    save_screenshot,
)

pytestmark = pytest.mark.browser

PANEL_OPEN = "#panel:not([hidden])"
# The demo city (the viewer_server store holds it): a tileset of it written with small
# leaves has a real hierarchy (LoD1 parents, full-geometry leaves).
DEMO_CITY = ROOT / "viewer" / "demo" / "delft.city.json"
SMALL_LEAVES = 40
BACKGROUND = (0xDF, 0xE7, 0xEE)  # viewer.js scene.background, sRGB


def _settled(page: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    """``citytwin.tiles`` once nothing is queued, downloading or parsing, twice in a row."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        info: dict[str, Any] = page.evaluate("citytwin.tiles")
        idle = info["queued"] + info["downloading"] + info["parsing"] == 0
        if idle and last is not None and info["visibleTiles"] == last["visibleTiles"]:
            return info
        last = info if idle else None
        page.wait_for_timeout(300)
    raise AssertionError(f"tiles still loading after {timeout_s} s: {last}")


def _panel_title(page: Any) -> str:
    page.wait_for_selector(PANEL_OPEN, timeout=10_000)
    page.wait_for_function(
        "!document.querySelector('#panel-body').textContent.startsWith('Loading')"
    )
    return str(page.text_content("#panel-title"))


def _not_background(px: list[int]) -> bool:
    return max(abs(a - b) for a, b in zip(px[:3], BACKGROUND, strict=True)) > 30


def _drawn_fraction(page: Any) -> float:
    """The share of a 12x12 grid of canvas pixels that are not the background."""
    return float(
        page.evaluate(
            """(bg) => {
                const r = document.querySelector('#canvas').getBoundingClientRect();
                let drawn = 0;
                for (let i = 0; i < 12; i++) for (let j = 0; j < 12; j++) {
                    const px = citytwin.pixel(r.left + (i + 0.5) * r.width / 12,
                                              r.top + (j + 0.5) * r.height / 12);
                    if (Math.max(...bg.map((b, k) => Math.abs(px[k] - b))) > 30) drawn++;
                }
                return drawn / 144;
            }""",
            list(BACKGROUND),
        )
    )


@pytest.fixture
def small_tileset(tmp_path: Path) -> Path:
    """The demo city as a tileset with at most 40 objects per leaf (written by scene.tiles)."""
    if not DEMO_CITY.is_file():
        need(f"{DEMO_CITY} missing")
    from ingest.cityjson import load_cityjson
    from scene.tiles import write_tileset

    out = tmp_path / "tileset"
    write_tileset([load_cityjson(DEMO_CITY, wgs84=False)], out, max_features=SMALL_LEAVES)
    return out


@pytest.fixture
def open_routed(chromium: Any, viewer_server: Server) -> Iterator[Callable[..., Any]]:
    """Open the viewer with ``/test-tiles/...`` answered from a tileset folder on disk."""
    contexts: list[Any] = []

    def opener(query: str, folder: Path, *, wait: bool = True) -> Any:
        ctx = chromium.new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
        contexts.append(ctx)
        page = ctx.new_page()
        log = PageLog()

        def serve(route: Any) -> None:
            rel = urlparse(route.request.url).path.removeprefix("/test-tiles/")
            file = (folder / rel).resolve()
            if not file.is_relative_to(folder.resolve()) or not file.is_file():
                route.fulfill(status=404, body="not found")
                return
            kind = "application/json" if file.suffix == ".json" else "model/gltf-binary"
            route.fulfill(status=200, body=file.read_bytes(), content_type=kind)

        def on_console(msg: Any) -> None:
            if msg.type in ("error", "warning"):
                if GPU_DIAGNOSTIC in msg.text:
                    log.gpu_diagnostics += 1
                else:
                    log.problems.append(f"console {msg.type}: {msg.text}")

        page.route(lambda url: urlparse(url).path.startswith("/test-tiles/"), serve)
        page.on("console", on_console)
        page.on("pageerror", lambda e: log.problems.append(f"page error: {e}"))
        page.on(
            "response",
            lambda r: log.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
        )
        page.log = log
        page.goto(f"{viewer_server.url}/{query}")
        page.wait_for_function("window.citytwin !== undefined")
        if wait:
            page.evaluate("citytwin.ready")
        return page

    yield opener
    for ctx in contexts:
        ctx.close()


def test_vendor_route_serves_the_tiles_renderer_build_only() -> None:
    if web.find_node_modules() is None:
        need("node_modules missing: run `make setup` (npm ci)")
    app = FastAPI()
    app.include_router(web.router)
    client = TestClient(app)
    page = client.get("/")
    assert '"3d-tiles-renderer/plugins": "/vendor/3d-tiles-renderer/build/' in page.text
    for module in ("index.js", "index.plugins.js"):
        r = client.get(f"/vendor/3d-tiles-renderer/build/{module}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        assert "export {" in r.text
    for path in ("package.json", "src/index.js", "build/../package.json", "%2e%2e/three/x.js"):
        assert client.get(f"/vendor/3d-tiles-renderer/{path}").status_code == 404, path


def test_tiles_mode_streams_the_city_and_picks_a_building(
    open_page: Any, viewer_server: Server
) -> None:
    page = open_page("?tiles=1")
    info = _settled(page)
    assert info["mode"] == "tiles" and info["url"] == "/api/tiles/base/tileset.json"
    assert info["errors"] == [] and info["failed"] == 0
    assert info["contentTiles"] > 0 and info["visibleTiles"] > 0
    # The tileset holds the city objects and, in one tile of their own, the networks'
    # assets: every object of the twin is drawn.
    everything = viewer_server.get("/api/stats")["objects"]
    networks = viewer_server.get("/api/networks")
    assert sum(n["nodes"] + n["edges"] for n in networks) > 0
    assert info["visibleFeatures"] == info["features"] == everything
    assert page.evaluate("citytwin.stats().features") == everything
    timings = page.evaluate("citytwin.timings")
    assert 0 < timings["sceneLoaded"] <= timings["firstFrame"]
    # Not blank: the city covers a good part of the view (about 15% here).
    assert _drawn_fraction(page) > 0.08
    save_screenshot(page, "viewer-tiles.png")

    target = clickable_building(page, viewer_server)
    x, y = target["x"], target["y"]
    before = page.evaluate("([x, y]) => citytwin.pixel(x, y)", [x, y])
    assert _not_background(before), before
    page.mouse.click(x, y)
    # The feature id under the click -> the tile's property table `id` -> the panel.
    assert _panel_title(page) == target["id"]
    assert page.evaluate("citytwin.selected()") == target["id"]
    assert page.text_content("#panel-type") == "Building"
    assert viewer_server.get(f"/api/objects/{quote(target['id'], safe='')}")["type"] == "Building"
    # The selection tint shows on the tile's vertex colors.
    page.wait_for_timeout(100)
    after = page.evaluate("([x, y]) => citytwin.pixel(x, y)", [x, y])
    assert after != before, (before, after)
    # Layers hide a type in every tile: the building is no longer drawn nor picked there.
    page.locator("#layer-types label", has_text="Building").locator("input").uncheck()
    page.wait_for_timeout(100)
    assert page.evaluate("([x, y]) => citytwin.pick(x, y)", [x, y]) != target["id"]
    assert page.evaluate("([x, y]) => citytwin.pixel(x, y)", [x, y]) != after
    assert page.log.problems == []


def test_tiles_refine_by_screen_space_error(
    open_routed: Callable[..., Any], viewer_server: Server, small_tileset: Path
) -> None:
    leaves = [p for p in (small_tileset / "tiles").rglob("*.glb")]
    assert len(leaves) > 10
    # A huge error target: the root tile's LoD1 blocks are enough.
    coarse = open_routed("?tiles=1&sse=100000&tileset=/test-tiles/tileset.json", small_tileset)
    far = _settled(coarse)
    assert far["errorTarget"] == 100000 and far["errors"] == []
    assert far["contentTiles"] == 1 and far["visibleTiles"] == 1
    assert 0 < far["visibleFeatures"] <= SMALL_LEAVES
    assert _drawn_fraction(coarse) > 0.04
    # A building no loaded tile holds yet: "fly to" goes where the API places it.
    ids = [o["id"] for o in viewer_server.get("/api/objects", type="Building", limit=50)["items"]]
    unseen = coarse.evaluate("(ids) => ids.find((id) => !citytwin.screenPosition(id))", ids)
    assert unseen is not None
    home = coarse.evaluate("citytwin.camera()")
    coarse.evaluate("(id) => citytwin.flyTo(id)", unseen)
    flown = coarse.evaluate("citytwin.camera()")
    assert flown["target"] != home["target"]
    assert coarse.log.problems == []
    # The default error target: the tiles refine down to the leaves (REPLACE).
    fine = open_routed("?tiles=1&tileset=/test-tiles/tileset.json", small_tileset)
    near = _settled(fine)
    assert near["errorTarget"] == 16 and near["errors"] == [] and near["failed"] == 0
    assert near["visibleTiles"] > 10 and near["contentTiles"] > near["visibleTiles"]
    assert near["visibleFeatures"] > far["visibleFeatures"]
    # ... the same place as its loaded geometry frames (within 2 m).
    fine.evaluate("(id) => citytwin.flyTo(id)", unseen)
    framed = fine.evaluate("citytwin.camera()")
    gap = [a - b for a, b in zip(flown["target"], framed["target"], strict=True)]
    assert max(abs(d) for d in gap) < 2.0, (flown["target"], framed["target"])
    target = clickable_building(fine, viewer_server)
    fine.mouse.click(target["x"], target["y"])
    assert _panel_title(fine) == target["id"]
    assert fine.evaluate("citytwin.selected()") == target["id"]
    save_screenshot(fine, "viewer-tiles-leaves.png")
    assert fine.log.problems == []


def test_a_tileset_whose_tiles_fail_is_reported_not_awaited_forever(
    open_routed: Callable[..., Any], small_tileset: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tileset.json").write_bytes((small_tileset / "tileset.json").read_bytes())
    page = open_routed("?tiles=1&tileset=/test-tiles/tileset.json", broken, wait=False)
    outcome = page.evaluate("citytwin.ready.then(() => 'ready', (e) => e.message)")
    assert outcome.startswith("cannot load the tiles") and "/test-tiles/tiles/" in outcome
    assert page.text_content("#progress .text") == outcome
    assert page.evaluate("citytwin.tiles.errors.length") >= 1


def test_feed_update_recolors_a_building_in_tiles_mode(
    open_page: Any, viewer_server: Server
) -> None:
    page = open_page(f"?tiles=1&style={quote(BUILDING_STYLE)}")
    assert page.input_value("#color-by") == f"live:{BUILDING_STYLE}"
    page.wait_for_function("citytwin.streamState() === 'live'", timeout=10_000)
    _settled(page)
    target = clickable_building(page, viewer_server)
    x, y = target["x"], target["y"]
    # The server is shared: another test may have set this building's status already.
    state = viewer_server.get(f"/api/objects/{quote(target['id'], safe='')}")["state"]
    value = "maintenance" if state.get("status", {}).get("value") == "alarm" else "alarm"
    before = page.evaluate("([x, y]) => citytwin.pixel(x, y)", [x, y])
    r = viewer_server.client.post(
        "/api/feeds/http/observations",
        json=[{"id": target["id"], "property": "status", "value": value, "time": time.time()}],
        headers={"Authorization": f"Bearer {viewer_server.feed_token}"},
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    after = page.evaluate(
        """async ([x, y, before]) => {
            const t0 = performance.now();
            while (performance.now() - t0 <= 2000) {
                const px = citytwin.pixel(x, y);
                if (px.some((v, i) => Math.abs(v - before[i]) > 8)) return px;
                await new Promise((r) => requestAnimationFrame(r));
            }
            return null;
        }""",
        [x, y, before],
    )
    assert after is not None, f"pixel stayed {before}"
    red, green, blue = after[:3]
    if value == "alarm":  # #d7191c: the lit surface turns red
        assert red > green + 40 and red > blue + 40, (before, after)
    else:  # maintenance, #2c7bb6: blue
        assert blue > red + 40, (before, after)
    assert page.log.problems == []
    # Leave the shared server's building "ok", so a later "alarm" is a change again.
    viewer_server.client.post(
        "/api/feeds/http/observations",
        json=[{"id": target["id"], "property": "status", "value": "ok", "time": time.time()}],
        headers={"Authorization": f"Bearer {viewer_server.feed_token}"},
    ).raise_for_status()


def test_a_small_city_loads_one_glb(open_page: Any, viewer_server: Server) -> None:
    page = open_page()
    assert page.evaluate("citytwin.tiles") == {"mode": "glb"}
    assert page.evaluate("citytwin.stats().features") == viewer_server.get("/api/stats")["objects"]
    urls = page.evaluate("performance.getEntriesByType('resource').map((e) => e.name)")
    assert any("/api/scene.glb" in u for u in urls)
    assert not any("/api/tiles/" in u or "3d-tiles-renderer" in u for u in urls), urls
    assert page.log.problems == []

"""The viewer page in a real Chromium: load, pick, live recolor, deep links, phone, networks."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

import pytest

from browser.conftest import BUILDING_STYLE, Server, clickable_building, save_screenshot

pytestmark = pytest.mark.browser

PANEL_OPEN = "#panel:not([hidden])"


def panel_title(page: Any) -> str:
    page.wait_for_selector(PANEL_OPEN, timeout=10_000)
    page.wait_for_function(
        "document.querySelector('#panel-body') && "
        "!document.querySelector('#panel-body').textContent.startsWith('Loading')"
    )
    return str(page.text_content("#panel-title"))


def test_demo_loads_cleanly_with_every_feature(open_page: Any, viewer_server: Server) -> None:
    page = open_page()
    stats = page.evaluate("citytwin.stats()")
    api = viewer_server.get("/api/stats")
    assert stats["features"] == api["objects"] == 1758
    assert stats["drawCalls"] >= 1 and stats["triangles"] > 10_000
    timings = page.evaluate("citytwin.timings")
    assert 0 <= timings["sceneLoaded"] <= timings["firstFrame"]
    # The live stream connects and the layers list both stand-in networks as such.
    page.wait_for_function("citytwin.streamState() === 'live'", timeout=10_000)
    labels = page.locator("#layer-networks label").all_text_contents()
    assert len(labels) == 2 and all("stand-in" in label for label in labels)
    # Something is drawn: the centre of the view is not the background.
    shot = save_screenshot(page, "viewer-demo.png")
    assert shot.stat().st_size > 10_000
    page.wait_for_timeout(300)
    assert page.log.problems == []


def test_click_on_a_building_opens_its_panel(open_page: Any, viewer_server: Server) -> None:
    page = open_page()
    target = clickable_building(page, viewer_server)
    page.mouse.click(target["x"], target["y"])
    assert panel_title(page) == target["id"]
    assert page.evaluate("citytwin.selected()") == target["id"]
    assert page.text_content("#panel-type") == "Building"
    body = str(page.text_content("#panel-body"))
    # Attributes and the networks that serve it (the demo links every building).
    assert "measuredHeight" in body and "Served by" in body
    assert page.log.problems == []


def test_feed_update_recolors_the_building_within_a_second(
    open_page: Any, viewer_server: Server
) -> None:
    page = open_page(f"?style={quote(BUILDING_STYLE)}")
    assert page.input_value("#color-by") == f"live:{BUILDING_STYLE}"
    page.wait_for_function("citytwin.streamState() === 'live'", timeout=10_000)
    target = clickable_building(page, viewer_server)
    x, y = target["x"], target["y"]
    before = page.evaluate("([x, y]) => citytwin.pixel(x, y)", [x, y])
    r = viewer_server.client.post(
        "/api/feeds/http/observations",
        json=[{"id": target["id"], "property": "status", "value": "alarm", "time": time.time()}],
        headers={"Authorization": f"Bearer {viewer_server.feed_token}"},
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    # Poll the rendered pixel in the page for up to 1 s after the update was committed.
    result = page.evaluate(
        """async ([x, y, before]) => {
            const t0 = performance.now();
            while (performance.now() - t0 <= 1000) {
                const px = citytwin.pixel(x, y);
                if (px.some((v, i) => Math.abs(v - before[i]) > 8)) {
                    return {px, ms: performance.now() - t0};
                }
                await new Promise((r) => requestAnimationFrame(r));
            }
            return {px: citytwin.pixel(x, y), ms: null};
        }""",
        [x, y, before],
    )
    assert result["ms"] is not None, f"pixel stayed {before} for 1 s"
    after = result["px"]
    # "alarm" is #d7191c: the lit surface turns red.
    assert after[0] > after[1] + 40 and after[0] > after[2] + 40, (before, after)
    assert page.log.problems == []


def _hash_parts(fragment: str) -> tuple[list[float], str | None]:
    cam = re.search(r"cam=([^&]+)", fragment)
    sel = re.search(r"sel=([^&]+)", fragment)
    assert cam, fragment
    return [float(v) for v in cam.group(1).split(",")], sel.group(1) if sel else None


def test_deep_link_reopens_selection_and_camera(open_page: Any, viewer_server: Server) -> None:
    page = open_page()
    target = clickable_building(page, viewer_server)
    page.evaluate("(id) => citytwin.select(id)", target["id"])
    page.evaluate("citytwin.orbit(25)")
    page.wait_for_function(
        "(id) => location.hash.includes('sel=' + encodeURIComponent(id))", arg=target["id"]
    )
    page.wait_for_timeout(400)  # the fragment follows the camera after a short debounce
    fragment = page.evaluate("location.hash")
    cam, sel = _hash_parts(fragment)
    assert sel == quote(target["id"], safe="")
    where = page.evaluate("(id) => citytwin.screenPosition(id)", target["id"])

    again = open_page("", fragment)
    assert panel_title(again) == target["id"]
    assert again.evaluate("citytwin.selected()") == target["id"]
    again.wait_for_timeout(400)
    cam2, sel2 = _hash_parts(again.evaluate("location.hash"))
    assert sel2 == sel
    assert all(abs(a - b) < 0.02 for a, b in zip(cam, cam2, strict=True)), (cam, cam2)
    where2 = again.evaluate("(id) => citytwin.screenPosition(id)", target["id"])
    assert abs(where["x"] - where2["x"]) < 1.5 and abs(where["y"] - where2["y"]) < 1.5
    save_screenshot(again, "viewer-deeplink.png")
    assert page.log.problems == [] and again.log.problems == []


def test_phone_bottom_sheet_and_keyboard(open_page: Any, viewer_server: Server) -> None:
    page = open_page(viewport=(390, 844))
    overflow = page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
    )
    assert overflow <= 390
    # Keyboard: Tab walks through the search box and the toolbar buttons.
    page.evaluate("document.activeElement && document.activeElement.blur()")
    reached = []
    for _ in range(8):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert "search-input" in reached
    assert {"btn-layers", "btn-reset", "btn-help"} <= set(reached), reached
    # Search by id with the keyboard: Enter flies to the first result and selects it.
    target = viewer_server.get("/api/objects", type="Building", limit=1)["items"][0]["id"]
    page.focus("#search-input")
    page.keyboard.type(target)
    page.keyboard.press("Enter")
    assert panel_title(page) == target
    box = page.locator("#panel").bounding_box()
    assert box is not None
    # A bottom sheet: full width, anchored to the bottom, at most half the screen.
    assert box["x"] == 0 and abs(box["width"] - 390) < 1
    assert abs(box["y"] + box["height"] - 844) < 1 and box["y"] > 844 / 2
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    save_screenshot(page, "viewer-phone.png")
    page.keyboard.press("Escape")
    page.wait_for_selector("#panel", state="hidden")
    assert page.evaluate("citytwin.selected()") is None
    assert page.log.problems == []


def _visible_pipe(page: Any, ids: list[str]) -> dict[str, Any] | None:
    for pid in ids:
        page.evaluate("(id) => citytwin.flyTo(id)", pid)
        hit = page.evaluate(
            """(id) => {
                const p = citytwin.screenPosition(id);
                if (!p || !p.visible) return null;
                const canvas = document.querySelector('#canvas');
                if (document.elementFromPoint(p.x, p.y) !== canvas) return null;
                return citytwin.pick(p.x, p.y) === id ? {id, x: p.x, y: p.y} : null;
            }""",
            pid,
        )
        if hit:
            return dict(hit)
    return None


def test_water_pipe_neighbours_and_failure_impact(open_page: Any, viewer_server: Server) -> None:
    page = open_page()
    geo = viewer_server.get("/api/networks/water")
    pipes = {
        f["id"]: f["properties"]
        for f in geo["features"]
        if f["geometry"]["type"] == "LineString" and f["properties"]["type"] == "WaterPipe"
    }
    # Prefer pipes whose failure cuts buildings off, so the counts are not all zero.
    ranked = [c["id"] for c in viewer_server.get("/api/networks/water/criticality", top=30)]
    candidates = [p for p in ranked if p in pipes] + [p for p in pipes if p not in ranked]
    target = _visible_pipe(page, candidates[:40])
    if target is None:
        # Pipes lie below the ground surfaces: hide those layers, as a user would.
        for label in ("Road", "LandUse", "PlantCover"):
            page.locator("#layer-types label", has_text=label).locator("input").uncheck()
        target = _visible_pipe(page, candidates[:40])
    assert target is not None, "no water pipe could be brought into view"
    page.mouse.click(target["x"], target["y"])
    assert panel_title(page) == target["id"]
    assert page.text_content("#panel-type") == "WaterPipe"
    props = pipes[target["id"]]
    neighbours = page.locator("#panel-body .panel-section", has_text="Neighbours")
    text = str(neighbours.text_content())
    assert props["from"] in text and props["to"] in text
    assert "stand-in" in text  # the network is labelled as a stand-in
    page.click("#impact-button")
    page.wait_for_selector("[data-count=buildings]")
    shown = {
        k: int(str(page.text_content(f"[data-count={k}]"))) for k in ("buildings", "nodes", "edges")
    }
    api = viewer_server.client.post(
        "/api/networks/water/impact", json={"failed": [target["id"]]}
    ).json()
    assert shown == api["counts"]
    save_screenshot(page, "viewer-impact.png")
    assert page.log.problems == []

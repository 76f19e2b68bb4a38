"""Participation in real Chromium: two citizens, live 3D comments, moderation, scenarios."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import ROOT

from browser.conftest import Server, save_screenshot, serve_copy

pytestmark = pytest.mark.browser

PLANNER = {"Authorization": "Bearer browser-planner"}
MODERATOR = {"Authorization": "Bearer browser-moderator"}
TOKENS = "browser-planner:planner,browser-moderator:moderator,browser-feed:feed"
DELFT = ROOT / "viewer" / "demo" / "delft.city.json"
XSS = "<img src=x onerror=alert(1)>"
TEXT = f"Too tall for this street 🏢🌳 — {XSS} ünïcödé"
RAISE = 2.5


def _surfaces(obj: dict[str, Any]) -> list[list[list[int]]]:
    out: list[list[list[int]]] = []
    for g in obj.get("geometry", []):
        shells = g["boundaries"] if g["type"] == "Solid" else [g["boundaries"]]
        for shell in shells:
            out.extend(shell)
    return out


def _raised_proposal(doc: dict[str, Any]) -> tuple[bytes, str]:
    """A proposal raising the building with the largest plan extent ×2.5 (real geometry)."""

    def extent(oid: str) -> float:
        vs = [doc["vertices"][i] for s in _surfaces(doc["CityObjects"][oid]) for r in s for i in r]
        if not vs:
            return 0.0
        xs, ys = [v[0] for v in vs], [v[1] for v in vs]
        return float((max(xs) - min(xs)) * (max(ys) - min(ys)))

    buildings = [
        oid
        for oid, o in doc["CityObjects"].items()
        if o["type"] == "Building" and o.get("geometry")
    ]
    oid = max(buildings, key=extent)
    obj = copy.deepcopy(doc["CityObjects"][oid])
    obj.pop("children", None)
    obj.pop("parents", None)
    zmin = min(doc["vertices"][i][2] for s in _surfaces(obj) for r in s for i in r)
    vertices: list[list[int]] = []
    index: dict[int, int] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, list):
            return [walk(y) for y in x]
        if x not in index:
            v = doc["vertices"][x]
            index[x] = len(vertices)
            vertices.append([v[0], v[1], zmin + round((v[2] - zmin) * RAISE)])
        return index[x]

    for g in obj["geometry"]:
        g["boundaries"] = walk(g["boundaries"])
    out = {
        "type": "CityJSON",
        "version": doc["version"],
        "transform": doc["transform"],
        "metadata": doc.get("metadata", {}),
        "CityObjects": {oid: obj},
        "vertices": vertices,
    }
    return orjson.dumps(out), oid


@pytest.fixture(scope="module")
def city(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server with the demo city, a proposal raising one building, and an open session."""
    body, raised = _raised_proposal(orjson.loads(DELFT.read_bytes()))
    with serve_copy(demo_db, tmp_path_factory.mktemp("participation"), TOKENS) as server:
        c = server.client
        assert c.get(f"/api/objects/{raised}").status_code == 200
        r = c.post(
            "/api/scenarios/proposal",
            content=body,
            headers={**PLANNER, "Content-Type": "application/json"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["diff"]["changed"] == [raised]
        r = c.post(
            "/api/sessions",
            json={
                "title": f"Raise {raised}?",
                "description": "Tell us what you think of the taller building.",
                "scenarios": ["base", "proposal"],
                "moderation": "post",
            },
            headers=PLANNER,
        )
        assert r.status_code == 201, r.text
        yield {"server": server, "raised": raised, "session": r.json()}


def _visible(page: Any, oid: str) -> dict[str, float]:
    """Fly to an object and return its on-screen, unoccluded centroid."""
    page.evaluate("(id) => citytwin.flyTo(id)", oid)
    hit = page.evaluate(
        """(id) => {
            const p = citytwin.screenPosition(id);
            if (!p || !p.visible) return null;
            const canvas = document.querySelector('#canvas');
            if (document.elementFromPoint(p.x, p.y) !== canvas) return null;
            return citytwin.pick(p.x, p.y) === id ? p : null;
        }""",
        oid,
    )
    assert hit is not None, f"{oid} is not clickable after flyTo"
    return dict(hit)


def _open_session(open_page: Any, server: Server, query: str, **kw: Any) -> Any:
    page = open_page(query, server=server, **kw)
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.wait_for_function("citytwin.streamState() === 'live'", timeout=10_000)
    page.wait_for_function("document.querySelector('#session-title').textContent !== ''")
    return page


def test_two_citizens_live_comment_moderation_and_camera(
    open_page: Any, city: dict[str, Any]
) -> None:
    server: Server = city["server"]
    sid, raised = city["session"]["id"], city["raised"]
    query = f"?session={sid}&scenario=proposal"
    a = _open_session(open_page, server, query)
    b = _open_session(open_page, server, query)
    assert a.text_content("#session-title") == f"Raise {raised}?"
    assert a.get_attribute("#session-status", "data-status") == "open"
    assert a.evaluate("citytwin.scenarioMode()") == "proposal"

    # Citizen A: "Comment here", click the raised building, write, pick a category, post.
    target = _visible(a, raised)
    a.click("#btn-comment-here")
    assert a.get_attribute("#btn-comment-here", "aria-pressed") == "true"
    a.mouse.click(target["x"], target["y"])
    a.wait_for_selector("#comment-form:not([hidden])")
    assert raised in str(a.text_content("#comment-anchor"))
    a.fill("#comment-text", TEXT)
    assert a.text_content("#comment-count") == f"{len(TEXT)} / 2000"
    a.select_option("#comment-category", "height")
    camera_a = a.evaluate("citytwin.camera()")
    a.click("#comment-submit")
    a.wait_for_function("citytwin.comments().length === 1", timeout=5_000)
    cid = a.evaluate("citytwin.comments()[0].id")
    assert a.evaluate("citytwin.comments()[0]") == {"id": cid, "text": TEXT, "state": "visible"}
    assert a.evaluate("localStorage.length") == 1  # the citizen token, kept per session

    # What was stored: the hit on the raised building, A's camera, the proposal scenario.
    stored = server.get(f"/api/comments/{cid}")
    assert stored["text"] == TEXT and stored["category"] == "height"
    assert stored["scenario"] == "proposal" and stored["anchor"]["object_id"] == raised
    point = stored["anchor"]["point"]
    assert point is not None
    for got, want in zip(stored["camera"]["position"], camera_a["position"], strict=True):
        assert abs(got - want) < 1e-6
    # The anchor point projects where A clicked (a surface hit, not the centroid).
    where = a.evaluate("(id) => citytwin.pinPosition(id)", cid)
    assert where["visible"]
    assert abs(where["x"] - target["x"]) < 2 and abs(where["y"] - target["y"]) < 2

    # Citizen B sees the list item and the pin appear live, the text shown literally.
    b.wait_for_function(
        "(id) => citytwin.comments().some((c) => c.id === id) && citytwin.pinPosition(id)",
        arg=cid,
        timeout=5_000,
    )
    item = f'#comments li[data-id="{cid}"]'
    assert b.text_content(f"{item} .comment-text") == TEXT
    assert b.evaluate("document.querySelectorAll('#comments img, #session-panel img').length") == 0
    assert b.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert "height" in str(b.text_content(f"{item} .comment-category"))
    assert b.evaluate("(id) => citytwin.pinPosition(id)", cid) is not None
    save_screenshot(a, "participation-a.png")
    save_screenshot(b, "participation-b.png")

    # Clicking the comment in B's list restores A's camera and selects the building.
    b.evaluate("citytwin.orbit(60)")
    b.click(f"{item} .comment-body")
    b.wait_for_function("(id) => citytwin.selected() === id", arg=raised, timeout=5_000)
    b.wait_for_timeout(900)  # the flight takes 700 ms
    camera_b = b.evaluate("citytwin.camera()")
    for key in ("position", "target"):
        for got, want in zip(camera_b[key], camera_a[key], strict=True):
            assert abs(got - want) < 0.05, (key, camera_a, camera_b)
    pin_b = b.evaluate("(id) => citytwin.pinPosition(id)", cid)
    assert abs(pin_b["x"] - target["x"]) < 2 and abs(pin_b["y"] - target["y"]) < 2
    save_screenshot(b, "participation-b-restored.png")

    # B: +1 (its own citizen token, issued on first use).
    b.click(f"{item} .comment-plus")
    b.wait_for_function(
        "(s) => document.querySelector(s).textContent.includes('1')",
        arg=f"{item} .comment-plus .n",
    )
    assert server.get(f"/api/comments/{cid}")["reactions"] == 1

    # The moderator hides it: it disappears for B (list and pin) and for A.
    r = server.client.post(
        f"/api/comments/{cid}/moderation",
        json={"action": "hide", "reason": "off-topic (browser test)"},
        headers=MODERATOR,
    )
    assert r.status_code == 200, r.text
    for page in (a, b):
        page.wait_for_function(
            "(id) => !citytwin.comments().some((c) => c.id === id) && !citytwin.pinPosition(id)",
            arg=cid,
            timeout=5_000,
        )
        assert page.locator(item).count() == 0
    save_screenshot(b, "participation-b-hidden.png")

    # The public log tells what was hidden and why, never the text.
    log = server.get(f"/api/sessions/{sid}/moderation-log")
    assert [(e["comment_id"], e["action"], e["reason"]) for e in log] == [
        (cid, "hide", "off-topic (browser test)")
    ]
    dumped = json.dumps(log, ensure_ascii=False)
    assert TEXT not in dumped and "onerror" not in dumped

    assert a.dialogs == [] and b.dialogs == []
    assert a.log.problems == [] and b.log.problems == []


def _differs(p: list[int], q: list[int]) -> bool:
    return max(abs(u - v) for u, v in zip(p, q, strict=True)) > 24


def _grid(page: Any, x: float, y: float) -> list[list[int]]:
    return list(
        page.evaluate(
            """([x, y]) => {
                const out = [];
                for (let dy = -60; dy <= 20; dy += 4)
                    for (let dx = -30; dx <= 30; dx += 4) out.push(citytwin.pixel(x + dx, y + dy));
                return out;
            }""",
            [x, y],
        )
    )


def test_scenario_switch_existing_proposal_and_both(open_page: Any, city: dict[str, Any]) -> None:
    server: Server = city["server"]
    sid, raised = city["session"]["id"], city["raised"]
    page = _open_session(open_page, server, f"?session={sid}")
    assert page.evaluate("citytwin.scenarioMode()") == "base"
    page.wait_for_selector("#scenario-switch:not([hidden])")
    options = page.eval_on_selector_all("#scenario-mode option", "os => os.map(o => o.value)")
    assert options == ["base", "proposal", "both:proposal"]
    assert page.locator("#diff-panel").is_hidden()

    base_pos = _visible(page, raised)
    before = _grid(page, base_pos["x"], base_pos["y"])
    features = page.evaluate("citytwin.stats().features")

    page.select_option("#scenario-mode", "proposal")
    page.wait_for_function("citytwin.scenarioMode() === 'proposal'", timeout=15_000)
    page.wait_for_selector("#diff-panel:not([hidden])")
    assert "proposal" in page.evaluate("location.search")
    # Same camera (the scenes share a frame): the raised building's centroid moved up.
    prop_pos = page.evaluate("(id) => citytwin.screenPosition(id)", raised)
    assert prop_pos["y"] < base_pos["y"] - 5
    after = _grid(page, base_pos["x"], base_pos["y"])
    changed = sum(1 for p, q in zip(before, after, strict=True) if _differs(p, q))
    assert changed >= 20, f"only {changed} of {len(before)} sampled pixels changed"
    assert page.evaluate("citytwin.stats().features") == features  # replaced, not added
    summary = str(page.text_content("#diff-panel .diff-summary"))
    assert "~1 changed" in summary and "+0 added" in summary
    row = str(page.text_content(f'#diff-panel li[data-id="{raised}"]'))
    assert "changed" in row and "height" in row

    # Both: the proposal drawn over the dimmed city, the changed building tinted orange.
    page.select_option("#scenario-mode", "both:proposal")
    page.wait_for_function("citytwin.scenarioMode() === 'both:proposal'", timeout=15_000)
    page.wait_for_timeout(300)
    px = page.evaluate("([x, y]) => citytwin.pixel(x, y)", [prop_pos["x"], prop_pos["y"]])
    assert px[0] > px[2] + 40 and px[1] > px[2], px
    save_screenshot(page, "participation-both.png")

    # And back to the existing city.
    page.select_option("#scenario-mode", "base")
    page.wait_for_function("citytwin.scenarioMode() === 'base'", timeout=15_000)
    assert page.locator("#diff-panel").is_hidden()
    again = _grid(page, base_pos["x"], base_pos["y"])
    same = sum(1 for p, q in zip(before, again, strict=True) if not _differs(p, q))
    assert same >= len(before) * 0.95
    assert page.log.problems == []


def test_phone_session_is_a_bottom_sheet(open_page: Any, city: dict[str, Any]) -> None:
    server: Server = city["server"]
    query = f"?session={city['session']['id']}"
    page = _open_session(open_page, server, query, viewport=(390, 844))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = page.locator("#session-panel").bounding_box()
    assert box is not None
    assert box["x"] == 0 and abs(box["width"] - 390) < 1
    assert abs(box["y"] + box["height"] - 844) < 1 and box["y"] > 844 / 2
    # The strip's toggle folds the sheet away to free the view, and back.
    page.click("#btn-comments")
    assert page.locator("#session-panel").is_hidden()
    page.click("#btn-comments")
    assert page.locator("#session-panel").is_visible()
    save_screenshot(page, "participation-phone.png")
    assert page.log.problems == []


def test_closed_session_refusal_is_shown(open_page: Any, city: dict[str, Any]) -> None:
    server: Server = city["server"]
    r = server.client.post(
        "/api/sessions", json={"title": "Closing soon", "scenarios": ["base"]}, headers=PLANNER
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    page = _open_session(open_page, server, f"?session={sid}")
    assert page.locator("#scenario-switch").is_hidden()  # one scenario: nothing to switch
    target = _visible(page, city["raised"])
    page.click("#btn-comment-here")
    page.mouse.click(target["x"], target["y"])
    page.fill("#comment-text", "Written while it was open")
    # The planner closes the session while the citizen writes.
    r = server.client.patch(f"/api/sessions/{sid}", json={"close": True}, headers=PLANNER)
    assert r.status_code == 200 and r.json()["status"] == "closed", r.text
    page.click("#comment-submit")
    page.wait_for_function("document.querySelector('#comment-error').textContent !== ''")
    message = str(page.text_content("#comment-error"))
    assert message.startswith("Not accepted:") and "closed" in message.lower(), message
    assert page.evaluate("citytwin.comments()") == []
    # The only problem the page saw is that refusal (of the token or of the comment).
    assert page.log.problems and all("403" in p for p in page.log.problems), page.log.problems

"""Browser fixtures: the Delft demo served by a real ``twin serve``, and Debian's Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, need

CHROMIUM = Path("/usr/bin/chromium")
# Contract: WebGL works headless with SwiftShader this way; never `playwright install`.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FEED_TOKEN = "browser-test-feed-token"
ARTIFACTS = ROOT / "out" / "test-artifacts"
# The style the live-recolor test selects with ?style= (a Building rule of our config).
BUILDING_STYLE = "building status"
CONFIG = f"""
[[styles]]
name = "{BUILDING_STYLE}"
property = "status"
types = ["Building"]
categories = {{ ok = "#1a9641", alarm = "#d7191c", maintenance = "#2c7bb6" }}

[[styles]]
name = "pressure"
property = "pressure"
types = ["WaterJunction", "WaterTank", "WaterReservoir"]
unit = "bar"
stops = [[0.0, "#d7191c"], [1.0, "#fdae61"], [2.5, "#a6d96a"], [4.0, "#1a9641"]]
"""
# Chromium's GPU process reports SwiftShader's software-compositing readbacks as console
# warnings ("GL Driver Message (OpenGL, Performance, ...): GPU stall due to ReadPixels").
# They come from the browser, not the page (a bare three.js cube shows them too), so they
# are counted apart from the page's own errors and warnings.
GPU_DIAGNOSTIC = "GL Driver Message (OpenGL, Performance"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running ``twin serve`` on the demo store."""

    url: str
    feed_token: str
    client: httpx.Client

    def get(self, path: str, **params: Any) -> Any:
        r = self.client.get(path, params=params)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Delft demo store, built once; servers run on copies of it."""
    twin = ROOT / ".venv" / "bin" / "twin"
    if not twin.exists():
        need(".venv/bin/twin missing: run `make setup`")
    if not (ROOT / "node_modules" / "three" / "build" / "three.module.js").is_file():
        need("node_modules/three missing: run `make setup` (npm ci)")
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    subprocess.run(
        [str(twin), "demo", "--no-serve", "--db", str(db)],
        check=True,
        capture_output=True,
        cwd=ROOT,
        timeout=180,
    )
    return db


@contextlib.contextmanager
def serve_copy(demo: Path, work: Path, tokens: str) -> Iterator[Server]:
    """Run ``twin serve`` on a copy of the demo store (with the test style config).

    Args:
        demo: the demo database built by :func:`demo_db`.
        work: a folder for the copy, the config and the server log.
        tokens: ``TWIN_TOKENS`` (``<token>:<role>,...``).

    Yields:
        The running server.
    """
    twin = ROOT / ".venv" / "bin" / "twin"
    db = work / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{demo}{suffix}").exists():
            shutil.copyfile(f"{demo}{suffix}", f"{db}{suffix}")
    config = work / "live.toml"
    config.write_text(CONFIG)
    port = _free_port()
    env = {**os.environ, "TWIN_TOKENS": tokens, "TWIN_DB": f"sqlite:///{db}"}
    log = (work / "serve.log").open("wb")
    argv = [str(twin), "serve", "--db", f"sqlite:///{db}", "--port", str(port)]
    argv += ["--config", str(config)]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"twin serve exited: {(work / 'serve.log').read_text()[-2000:]}")
            try:
                if client.get("/api/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("twin serve did not answer /api/healthz within 60 s")
            time.sleep(0.2)
        yield Server(url=url, feed_token=FEED_TOKEN, client=client)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def viewer_server(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Serve the Delft demo with a test style config."""
    with serve_copy(demo_db, tmp_path_factory.mktemp("viewer"), f"{FEED_TOKEN}:feed") as server:
        yield server


@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Python playwright (SwiftShader WebGL, headless)."""
    if not CHROMIUM.exists():
        need("/usr/bin/chromium missing (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("python playwright missing: pip install playwright")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What a page reported: console errors/warnings, uncaught errors, failed requests."""

    problems: list[str] = field(default_factory=list)
    gpu_diagnostics: int = 0


@pytest.fixture
def open_page(chromium: Any, viewer_server: Server) -> Iterator[Any]:
    """Open the viewer in a fresh context: ``open_page(query, hash, viewport=..., server=...)``.

    Returns the page once ``citytwin.ready`` resolved; ``page.log`` is its :class:`PageLog`.
    Each call is a new browser context (its own storage: another citizen).
    """
    contexts: list[Any] = []

    def opener(
        query: str = "",
        fragment: str = "",
        viewport: tuple[int, int] = (1280, 800),
        server: Server | None = None,
    ) -> Any:
        ctx = chromium.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}, device_scale_factor=1
        )
        contexts.append(ctx)
        page = ctx.new_page()
        log = PageLog()

        def on_console(msg: Any) -> None:
            if msg.type not in ("error", "warning"):
                return
            if GPU_DIAGNOSTIC in msg.text:
                log.gpu_diagnostics += 1
            else:
                log.problems.append(f"console {msg.type}: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda e: log.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: log.problems.append(f"request failed: {r.url}"))
        page.on(
            "response",
            lambda r: log.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
        )
        page.log = log
        page.goto(f"{(server or viewer_server).url}/{query}{fragment}")
        page.wait_for_function("window.citytwin !== undefined")
        page.evaluate("citytwin.ready")
        return page

    yield opener
    for ctx in contexts:
        ctx.close()


def save_screenshot(page: Any, name: str) -> Path:
    """Save a screenshot under out/test-artifacts/ and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def clickable_building(page: Any, server: Server, limit: int = 200) -> dict[str, Any]:
    """A building whose centroid is on screen, unoccluded and not under a page overlay.

    Returns:
        ``{"id", "x", "y"}`` in CSS pixels.
    """
    ids = [o["id"] for o in server.get("/api/objects", type="Building", limit=limit)["items"]]
    found = page.evaluate(
        """(ids) => {
            const canvas = document.querySelector('#canvas');
            for (const id of ids) {
                const p = citytwin.screenPosition(id);
                if (!p || !p.visible) continue;
                if (document.elementFromPoint(p.x, p.y) !== canvas) continue;
                if (citytwin.pick(p.x, p.y) === id) return {id, x: p.x, y: p.y};
            }
            return null;
        }""",
        ids,
    )
    assert found is not None, "no building of the demo is visible and unoccluded"
    return dict(found)


__all__ = ["BUILDING_STYLE", "Server", "clickable_building", "save_screenshot", "serve_copy"]

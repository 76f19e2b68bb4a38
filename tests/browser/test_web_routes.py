"""Serving the viewer: page, modules, three.js from node_modules, caching, and no escapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import viewer.routes.web as web

pytestmark = pytest.mark.browser


@pytest.fixture
def client() -> TestClient:
    if web.find_node_modules() is None:
        from conftest import need

        need("node_modules/three missing: run `make setup` (npm ci)")
    app = FastAPI()
    app.include_router(web.router)
    return TestClient(app)


def test_page_modules_and_three_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '"three": "/vendor/three/build/three.module.js"' in page.text
    js = client.get("/web/src/main.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "window.citytwin" in js.text
    three = client.get("/vendor/three/build/three.module.js")
    assert three.status_code == 200 and three.headers["content-encoding"] == "gzip"
    assert client.get("/vendor/three/examples/jsm/controls/OrbitControls.js").status_code == 200
    again = client.get(
        "/vendor/three/build/three.module.js", headers={"If-None-Match": three.headers["etag"]}
    )
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/web/../app.py",
        "/web/%2e%2e/app.py",
        "/vendor/three/package.json",
        "/vendor/three/src/Three.js",
    ],
)
def test_nothing_outside_the_served_folders(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_missing_node_modules_gives_a_clear_page(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(web, "PROJECT_ROOT", tmp_path)
    monkeypatch.delenv("TWIN_NODE_MODULES", raising=False)
    monkeypatch.chdir(tmp_path)
    page = client.get("/")
    assert page.status_code == 503 and "make setup" in page.text and "/api" in page.text
    assert client.get("/vendor/three/build/three.module.js").status_code == 503

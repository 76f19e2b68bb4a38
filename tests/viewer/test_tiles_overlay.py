"""A proposal's tileset is an overlay: only the tiles its objects touch are re-tiled."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from glbdecode import Glb

from ingest.cityjson import load_cityjson
from scene.proposal import add_proposal
from scene.tiles import TileCache
from viewer.app import create_app
from viewer.bootstrap import bootstrap
from viewer.settings import Settings

DELFT = "real/delft.city.json"
MAX = 40


def _surfaces(obj: dict[str, Any]) -> list[list[list[int]]]:
    out: list[list[list[int]]] = []
    for g in obj["geometry"]:
        shells = g["boundaries"] if g["type"] == "Solid" else [g["boundaries"]]
        for shell in shells:
            out.extend(shell)
    return out


def _proposal(doc: dict[str, Any], oid: str, *, new_id: str | None = None, dx: int = 0) -> bytes:
    """``oid`` raised x2 (same id: a replacement), or copied as ``new_id`` moved by ``dx``."""
    obj = copy.deepcopy(doc["CityObjects"][oid])
    zmin = min(doc["vertices"][i][2] for s in _surfaces(obj) for r in s for i in r)
    out: dict[str, Any] = {
        "type": "CityJSON",
        "version": doc["version"],
        "transform": doc["transform"],
        "metadata": doc["metadata"],
        "CityObjects": {},
        "vertices": [],
    }
    index: dict[int, int] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, list):
            return [walk(y) for y in x]
        if x not in index:
            index[x] = len(out["vertices"])
            v = doc["vertices"][x]
            out["vertices"].append(
                [v[0] + dx, v[1], v[2]] if new_id else [v[0], v[1], zmin + (v[2] - zmin) * 2]
            )
        return index[x]

    for g in obj["geometry"]:
        g["boundaries"] = walk(g["boundaries"])
    obj.pop("parents", None)
    obj.pop("children", None)
    out["CityObjects"][new_id or oid] = obj
    return orjson.dumps(out)


@pytest.fixture
def setup(tmp_path: Path, cityjson_dir: Path) -> Iterator[tuple[TestClient, dict[str, Any], str]]:
    path = cityjson_dir / DELFT
    data = path.read_bytes()
    doc = orjson.loads(data)
    model = load_cityjson(path)
    services = bootstrap(Settings(db=f"sqlite:///{tmp_path / 'twin.db'}"))
    services.store.put_objects(model.twin, source="delft.city.json", source_data=data)
    target = max(
        (o for o in model.twin if o.type == "Building" and o.geometry is not None),
        key=lambda o: o.geometry.footprint_area or 0.0,  # type: ignore[union-attr]
    ).id
    add_proposal(services.store, "raised", _proposal(doc, target))
    xs = [v[0] for v in doc["vertices"]]
    add_proposal(
        services.store,
        "added",
        _proposal(doc, target, new_id="new-building", dx=max(xs) - min(xs) + 20_000),
    )
    app = create_app(services, live=False)
    app.state.tiles = TileCache(services.store, max_features=MAX)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, doc, target
    services.store.close()


def _walk(tile: dict[str, Any], key: str = "r") -> Iterator[tuple[str, dict[str, Any]]]:
    yield key, tile
    for i, child in enumerate(tile.get("children", [])):
        yield from _walk(child, key + str(i))


def _tileset(c: TestClient, scenario: str) -> dict[str, Any]:
    r = c.get(f"/api/tiles/{scenario}/tileset.json")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def _get(c: TestClient, scenario: str, uri: str) -> Glb:
    url = urljoin(f"/api/tiles/{scenario}/tileset.json", uri)
    r = c.get(url)
    assert r.status_code == 200, (url, r.text)
    return Glb.parse(r.content)


def test_replacing_one_building_retiles_one_leaf_and_its_ancestors(
    setup: tuple[TestClient, dict[str, Any], str], gltf_validator: Any, tmp_path: Path
) -> None:
    c, _, target = setup
    base = _tileset(c, "base")
    over = _tileset(c, "raised")
    b_tiles, o_tiles = dict(_walk(base["root"])), dict(_walk(over["root"]))
    assert b_tiles.keys() == o_tiles.keys() and len(b_tiles) > 5
    # Which base leaf holds the building, and its chain of ancestors.
    leaf = next(
        k
        for k, t in b_tiles.items()
        if "children" not in t
        and target in (_get(c, "base", t["content"]["uri"]).strings("id") or [])
    )
    chain = {leaf[:i] for i in range(1, len(leaf) + 1)}
    rebuilt = {k for k, t in o_tiles.items() if not t["content"]["uri"].startswith("../")}
    assert rebuilt == chain, (rebuilt, chain)
    for k, t in o_tiles.items():
        if k not in chain:
            assert t["content"]["uri"] == "../base/" + b_tiles[k]["content"]["uri"]
            assert t["boundingVolume"] == b_tiles[k]["boundingVolume"]
            assert t["transform"] == b_tiles[k]["transform"]
    # Every tile of the overlay resolves through the API; the rebuilt leaf has the
    # building once, twice as tall as in the base leaf.
    for t in o_tiles.values():
        _get(c, "raised", t["content"]["uri"])
    n_b, cols_b = _get(c, "base", b_tiles[leaf]["content"]["uri"]).table()
    n_o, cols_o = _get(c, "raised", o_tiles[leaf]["content"]["uri"]).table()
    assert n_o == n_b and cols_o["id"].count(target) == 1
    h_b = cols_b["height"][cols_b["id"].index(target)]
    h_o = cols_o["height"][cols_o["id"].index(target)]
    assert h_o == pytest.approx(2 * h_b, rel=0.02)
    # The rebuilt leaf's region grew to hold the taller building (and still contains
    # the base's other objects).
    rb, ro = b_tiles[leaf]["boundingVolume"]["region"], o_tiles[leaf]["boundingVolume"]["region"]
    assert ro[5] > rb[5] and ro[4] <= rb[4] + 1e-6
    # The rebuilt tiles are valid GLBs.
    files = []
    for k in sorted(chain):
        f = tmp_path / f"{k}.glb"
        f.write_bytes(c.get(urljoin("/api/tiles/raised/", o_tiles[k]["content"]["uri"])).content)
        files.append(f)
    bad = [(r["file"], r["messages"][:3]) for r in gltf_validator.validate(*files) if r["errors"]]
    assert bad == []


def test_an_added_building_lands_in_one_leaf_and_ids_stay_unique(
    setup: tuple[TestClient, dict[str, Any], str],
) -> None:
    c, _, _ = setup
    over = _tileset(c, "added")
    tiles = dict(_walk(over["root"]))
    rebuilt = [k for k, t in tiles.items() if not t["content"]["uri"].startswith("../")]
    leaves = [k for k in rebuilt if "children" not in tiles[k]]
    assert len(leaves) == 1 and len(rebuilt) == len(leaves[0])
    ids: list[str] = []
    for t in tiles.values():
        if "children" not in t:
            ids += _get(c, "added", t["content"]["uri"]).strings("id") or []
    assert ids.count("new-building") == 1 and len(ids) == len(set(ids))
    # The leaf's region reaches the new building, 20 km east: its ancestors' too.
    region = tiles[leaves[0]]["boundingVolume"]["region"]
    root = tiles["r"]["boundingVolume"]["region"]
    assert root[2] >= region[2] and np.isclose(root[2], region[2])


def test_overlay_is_cached_with_an_etag(
    setup: tuple[TestClient, dict[str, Any], str],
) -> None:
    c, _, _ = setup
    r1 = c.get("/api/tiles/raised/tileset.json")
    r2 = c.get("/api/tiles/raised/tileset.json", headers={"If-None-Match": r1.headers["etag"]})
    assert r2.status_code == 304
    assert json.loads(r1.content)["asset"]["version"] == "1.1"

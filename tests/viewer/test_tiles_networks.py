"""A city's networks ride along in its tileset: one ADD tile with every asset id, placed right."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from glbdecode import Glb
from pyproj import Transformer
from typer.testing import CliRunner

from ingest.cityjson import parse_epsg
from scene.proposal import add_proposal
from twin.network import network_from_json
from viewer.app import create_app
from viewer.bootstrap import bootstrap
from viewer.cli import app
from viewer.settings import Settings

DEMO = Path(__file__).resolve().parents[2] / "viewer" / "demo"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, cityjson_dir: Path) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('tn') / 'twin.db'}"
    delft = cityjson_dir / "real" / "delft.city.json"
    res = CliRunner().invoke(
        app, ["ingest", str(delft), str(DEMO / "net3.inp"), "--fit", "--db", url]
    )
    assert res.exit_code == 0, res.output
    return url


@pytest.fixture
def client(db: str) -> Iterator[tuple[TestClient, Any]]:
    services = bootstrap(Settings(db=db))
    with TestClient(create_app(services, live=False), raise_server_exceptions=False) as c:
        yield c, services
    services.store.close()


def _net_tile(doc: dict[str, Any]) -> dict[str, Any]:
    root = doc["root"]
    assert root["refine"] == "ADD" and "content" not in root
    city, net = root["children"]
    assert city["refine"] == "REPLACE" and net["geometricError"] == 0.0
    tile: dict[str, Any] = net
    return tile


def test_networks_tile_has_every_asset_placed_on_the_globe(
    client: tuple[TestClient, Any], tmp_path: Path, gltf_validator: Any
) -> None:
    c, services = client
    doc = c.get("/api/tiles/base/tileset.json").json()
    tile = _net_tile(doc)
    r = c.get(urljoin("/api/tiles/base/tileset.json", tile["content"]["uri"]))
    assert r.status_code == 200
    (tmp_path / "n.glb").write_bytes(r.content)
    [report] = gltf_validator.validate(tmp_path / "n.glb")
    assert report["errors"] == 0, report["messages"][:3]
    glb = Glb.parse(r.content)
    net = network_from_json(services.store.get_source("network:water", "base"))
    ids = set(glb.strings("id") or [])
    assert ids == set(net.assets())
    # Every vertex, back to the source CRS, lies within the network's box (+ tube radius).
    frame = np.array(tile["transform"], dtype=float).reshape(4, 4, order="F")
    pos = np.vstack([glb.accessor(p["attributes"]["POSITION"]) for p in glb.primitives]).astype(
        float
    )
    enu = np.column_stack([pos[:, 0], -pos[:, 2], pos[:, 1]])  # glTF y-up -> ENU
    ecef = enu @ frame[:3, :3].T + frame[:3, 3]
    epsg = parse_epsg(net.crs)
    back = Transformer.from_crs(4978, epsg, always_xy=True)
    x, y, _ = back.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2])
    bbox = net.bbox()
    assert bbox is not None
    assert bbox[0] - 5 < x.min() and x.max() < bbox[3] + 5
    assert bbox[1] - 5 < y.min() and y.max() < bbox[4] + 5
    # Region of the networks tile holds it; the root's region holds both children.
    reg, root = tile["boundingVolume"]["region"], doc["root"]["boundingVolume"]["region"]
    lon, lat, _ = Transformer.from_crs(4978, 4979, always_xy=True).transform(
        ecef[:, 0], ecef[:, 1], ecef[:, 2], radians=True
    )
    assert reg[0] <= lon.min() and lon.max() <= reg[2] and reg[1] <= lat.min() <= reg[3]
    assert root[0] <= reg[0] and reg[2] <= root[2]


def test_a_proposal_overlay_keeps_the_base_networks_tile(
    client: tuple[TestClient, Any], cityjson_dir: Path
) -> None:
    c, services = client
    doc = orjson.loads((cityjson_dir / "real" / "delft.city.json").read_bytes())
    oid = next(k for k, v in doc["CityObjects"].items() if v["type"] == "Building")
    tomb = {
        "type": "CityJSON",
        "version": doc["version"],
        "transform": doc["transform"],
        "metadata": doc["metadata"],
        "CityObjects": {oid: {"type": "Building", "attributes": {"proposal_action": "remove"}}},
        "vertices": [],
    }
    add_proposal(services.store, "gone", orjson.dumps(tomb))
    over = c.get("/api/tiles/gone/tileset.json").json()
    tile = _net_tile(over)
    assert tile["content"]["uri"] == "../base/tiles/networks.glb"
    r = c.get(urljoin("/api/tiles/gone/tileset.json", tile["content"]["uri"]))
    assert r.status_code == 200 and Glb.parse(r.content).strings("id")

"""3D Tiles 1.1 tilesets of real cities: schema-valid, validator-clean, ids and frames right."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from benchload import load_bench
from glbdecode import Glb
from jsonschema import Draft202012Validator
from pyproj import Transformer
from referencing import Registry, Resource

from ingest.cityjson import iter_cityjson, load_cityjson
from scene.tiles import INDEX_3TZ, TilesetStats, write_3tz, write_tileset
from twin.errors import SceneError
from twin.geometry import CityModel

ROOT = Path(__file__).resolve().parents[2]
DELFSHAVEN = "real/delfshaven_3-20.city.json"
DELFT = "real/delft.city.json"
TRIANGLES = 4


def _tile_city() -> ModuleType:
    return load_bench("tile_city")


@dataclass
class Built:
    """A written tileset and the models it came from."""

    dir: Path
    doc: dict[str, Any]
    stats: TilesetStats
    models: list[CityModel]
    max_features: int


def _tiles(doc: dict[str, Any]) -> Iterator[tuple[dict[str, Any], np.ndarray, int]]:
    """Every tile with its absolute transform (product down the tree) and depth."""
    stack = [(doc["root"], np.eye(4), 0)]
    while stack:
        tile, parent, depth = stack.pop()
        m = parent @ np.array(tile.get("transform", np.eye(4).ravel()), dtype=float).reshape(
            4, 4, order="F"
        )
        yield tile, m, depth
        stack.extend((c, m, depth + 1) for c in tile.get("children", []))


def _build(out: Path, models: list[CityModel], max_features: int) -> Built:
    stats = write_tileset(models, out, max_features=max_features)
    doc = json.loads((out / "tileset.json").read_text())
    return Built(out, doc, stats, models, max_features)


@pytest.fixture(scope="module")
def delfshaven(cityjson_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    model = load_cityjson(cityjson_dir / DELFSHAVEN, wgs84=False)
    return _build(tmp_path_factory.mktemp("delfshaven"), [model], 150)


@pytest.fixture(scope="module")
def gridded(cityjson_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Four grid copies of the real Delft buildings as a CityJSONSeq, streamed in chunks."""
    work = tmp_path_factory.mktemp("grid")
    seq = work / "delft_x4.city.jsonl"
    _tile_city().tile(cityjson_dir / DELFT, seq, 4)
    models = list(iter_cityjson(seq, chunk=500, wgs84=False))
    assert len(models) > 1
    return _build(work / "tiles", models, 400)


@pytest.fixture(scope="module", params=["delfshaven", "gridded"])
def built(request: pytest.FixtureRequest) -> Built:
    value: Built = request.getfixturevalue(request.param)
    return value


def _glb(b: Built, tile: dict[str, Any]) -> Glb:
    return Glb.parse((b.dir / tile["content"]["uri"]).read_bytes())


def _positions(g: Glb) -> tuple[np.ndarray, np.ndarray]:
    """Triangle vertices (glTF local) and their feature ids."""
    prims = [p for p in g.primitives if p.get("mode", 4) == TRIANGLES]
    pos = np.vstack([g.accessor(p["attributes"]["POSITION"]) for p in prims]).astype(float)
    fid = np.concatenate([g.accessor(p["attributes"]["_FEATURE_ID_0"]) for p in prims])
    return pos, fid.astype(np.int64)


def _to_ecef(local: np.ndarray, m: np.ndarray) -> np.ndarray:
    # glTF y-up -> 3D Tiles z-up (3D Tiles 1.1 § glTF coordinate system), then transform.
    zup = np.column_stack([local[:, 0], -local[:, 2], local[:, 1]])
    out: np.ndarray = zup @ m[:3, :3].T + m[:3, 3]
    return out


_GEO = Transformer.from_crs(4978, 4979, always_xy=True)


def test_tileset_validates_against_the_3d_tiles_1_1_schemas(
    built: Built, shared_data: Path
) -> None:
    schemas = shared_data / "schemas" / "3d-tiles-1.1"
    by_name = {p.name: json.loads(p.read_text()) for p in schemas.rglob("*.schema.json")}

    def retrieve(uri: str) -> Resource:
        # The schemas' $ids and $refs are bare or ./relative file names.
        return Resource.from_contents(by_name[uri.rsplit("/", 1)[-1]])

    registry: Registry = Registry(retrieve=retrieve)  # type: ignore[call-arg]
    validator = Draft202012Validator(by_name["tileset.schema.json"], registry=registry)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(built.doc)]
    assert errors == []
    # The validator does check: a broken tileset is rejected.
    bad = json.loads(json.dumps(built.doc))
    bad["root"]["boundingVolume"]["region"] = [0, 0, 1]
    bad["root"]["children"][0]["geometricError"] = -1.0  # a $ref two files deep
    assert len(list(validator.iter_errors(bad))) == 2
    assert built.doc["asset"]["version"] == "1.1"


def test_every_tile_glb_passes_the_khronos_validator(built: Built, gltf_validator: Any) -> None:
    files = [built.dir / t["content"]["uri"] for t, _, _ in _tiles(built.doc)]
    assert len(files) == built.stats.tiles > 1
    reports = gltf_validator.validate(*files)
    bad = [(r["file"], r["messages"][:3]) for r in reports if r["errors"]]
    assert bad == []


def test_ids_each_in_exactly_one_leaf_and_blocks_carry_ids(built: Built) -> None:
    with_geometry = [fid for m in built.models for fid in m.feature_ids]
    leaf_ids: list[str] = []
    leaves = parents = 0
    for tile, _, _ in _tiles(built.doc):
        g = _glb(built, tile)
        ids = g.strings("id")
        assert ids is not None and len(ids) == len(set(ids))
        _, fid = _positions(g)
        # Every drawn vertex points at a row of its tile's property table.
        assert fid.min() >= 0 and fid.max() < len(ids)
        if "children" in tile:
            parents += 1
            # LoD1 blocks: same ids, from the tile's subtree, bounded in number.
            below = _subtree_ids(built, tile)
            assert ids and set(ids) <= below and len(ids) <= built.max_features
            assert set(g.strings("lod") or []) == {"1"}
        else:
            leaves += 1
            assert len(ids) <= built.max_features
            leaf_ids += ids
    assert parents >= 1 and leaves >= 2
    assert sorted(leaf_ids) == sorted(with_geometry)
    assert built.stats.leaf_features == len(with_geometry) == built.stats.objects


def _subtree_ids(b: Built, tile: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for child in tile.get("children", []):
        if "children" in child:
            out |= _subtree_ids(b, child)
        else:
            out |= set(_glb(b, child).strings("id") or [])
    return out


def _region_contains(outer: list[float], inner: list[float]) -> bool:
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and outer[2] >= inner[2]
        and outer[3] >= inner[3]
        and outer[4] <= inner[4]
        and outer[5] >= inner[5]
    )


def test_regions_contain_children_and_content_and_errors_decrease(built: Built) -> None:
    for tile, m, _ in _tiles(built.doc):
        region = tile["boundingVolume"]["region"]
        assert region[0] < region[2] and region[1] < region[3] and region[4] <= region[5]
        for child in tile.get("children", []):
            assert _region_contains(region, child["boundingVolume"]["region"])
            assert child["geometricError"] < tile["geometricError"]
        if "children" not in tile:
            assert tile["geometricError"] == 0
        pos, _ = _positions(_glb(built, tile))
        ecef = _to_ecef(pos, m)
        lon, lat, h = _GEO.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2], radians=True)
        assert region[0] <= lon.min() and lon.max() <= region[2]
        assert region[1] <= lat.min() and lat.max() <= region[3]
        assert region[4] <= h.min() and h.max() <= region[5]
    assert built.doc["geometricError"] > built.doc["root"]["geometricError"] > 0


def test_leaf_vertices_land_on_their_source_vertices_in_ecef(built: Built) -> None:
    """A GLB vertex, through y-up -> z-up and the tile transforms, is where pyproj puts the
    object's own source vertex (EPSG:source -> EPSG:4978)."""
    model_of = {fid: m for m in built.models for fid in m.feature_ids}
    checked = 0
    for tile, m, _ in _tiles(built.doc):
        if "children" in tile:
            continue
        g = _glb(built, tile)
        ids = g.strings("id")
        assert ids is not None
        pos, fid = _positions(g)
        ecef = _to_ecef(pos, m)
        for k in range(0, len(ids), max(1, len(ids) // 15)):
            model = model_of[ids[k]]
            assert model.epsg is not None
            to_ecef = Transformer.from_crs(model.epsg, 4978, always_xy=True)
            f = model.feature_ids.index(ids[k])
            surfs = np.flatnonzero(model.surf_feature == f)
            rings = np.concatenate(
                [
                    np.arange(model.surface_rings[s], model.surface_rings[s + 1])
                    for s in surfs.tolist()
                ]
            )
            vidx = np.concatenate(
                [
                    model.ring_vertices[model.ring_offsets[r] : model.ring_offsets[r + 1]]
                    for r in rings.tolist()
                ]
            )
            src = model.vertices[np.unique(vidx)]
            x, y, z = to_ecef.transform(src[:, 0], src[:, 1], src[:, 2])
            truth = np.column_stack([x, y, z])
            mine = ecef[fid == k]
            assert mine.size
            dist = np.linalg.norm(mine[:, None, :] - truth[None, :, :], axis=2).min(axis=1)
            assert dist.max() < 0.05, (ids[k], dist.max())
            # And the object's centre is within a metre of the source centroid in ECEF.
            centre_src = src.mean(axis=0)
            cx, cy, cz = to_ecef.transform(*centre_src)
            uniq = np.unique(np.round(mine, 3), axis=0)
            assert np.linalg.norm(uniq.mean(axis=0) - (cx, cy, cz)) < 1.0
            checked += 1
    assert checked >= 10


def test_a_city_without_crs_is_a_scene_error(cityjson_dir: Path, tmp_path: Path) -> None:
    model = load_cityjson(cityjson_dir / "small" / "twobuildings.city.json", wgs84=False)
    assert model.epsg is None and model.feature_ids
    with pytest.raises(SceneError, match="no known CRS"):
        write_tileset([model], tmp_path / "t")
    assert not (tmp_path / "t" / "tileset.json").exists()


def test_3tz_archive_has_root_tileset_and_a_sorted_md5_index(
    delfshaven: Built, tmp_path: Path
) -> None:
    out = tmp_path / "city.3tz"
    size = write_3tz(delfshaven.dir, out)
    assert size == out.stat().st_size
    raw = out.read_bytes()
    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names[0] == "tileset.json" and names[-1] == INDEX_3TZ
        assert json.loads(zf.read("tileset.json")) == delfshaven.doc
        index = infos[-1]
        assert index.compress_type == zipfile.ZIP_STORED
        files = infos[:-1]
        assert {i.filename for i in files} == {"tileset.json"} | {
            t["content"]["uri"] for t, _, _ in _tiles(delfshaven.doc)
        }
        for i in files:
            assert i.flag_bits & 0x8 == 0  # sizes in the local headers (no data descriptor)
        data = zf.read(INDEX_3TZ)
    assert len(data) == 24 * len(files)
    entries = [struct.unpack_from("<QQQ", data, 24 * k) for k in range(len(files))]
    assert entries == sorted(entries)
    by_hash = {(lo, hi): off for lo, hi, off in entries}
    for i in files:
        lo, hi = struct.unpack("<QQ", hashlib.md5(i.filename.encode()).digest())
        off = by_hash[(lo, hi)]
        # The offset points at this file's local file header (PKWARE APPNOTE 4.3.7).
        assert raw[off : off + 4] == b"PK\x03\x04"
        (name_len,) = struct.unpack_from("<H", raw, off + 26)
        assert raw[off + 30 : off + 30 + name_len].decode() == i.filename


def test_3tz_of_a_folder_without_tileset_is_a_scene_error(tmp_path: Path) -> None:
    with pytest.raises(SceneError, match=r"no tileset\.json"):
        write_3tz(tmp_path, tmp_path / "x.3tz")

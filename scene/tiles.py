"""Write a city as an OGC 3D Tiles 1.1 tileset: explicit quadtree, GLB tiles, LoD1 parents.

Layout (3D Tiles 1.1): ``tileset.json`` at the root of the output folder and one GLB per
tile under ``tiles/``. Objects are assigned to leaves by their centroid (an explicit
quadtree split until a tile holds at most ``max_features`` objects); a leaf carries the
full geometry of its objects, a parent carries LoD1 blocks (convex-hull prisms) of the
largest objects of its subtree, and children REPLACE their parent (§ Refinement). Every
tile GLB has ``_FEATURE_ID_0`` + EXT_mesh_features and an EXT_structural_metadata
property table whose ``id`` column is the CityJSON id, as in the single-GLB scene.

Frames: each tile's positions are exact local ENU metres (east, north, up) around the
tile's own origin, computed with pyproj from the source CRS to ECEF (EPSG:4978), written
in glTF axes (y up). The runtime turns glTF y-up into z-up (3D Tiles 1.1 § glTF
coordinate system: "rotate the model from y-up to z-up" before the tile transform), so a
tile's ``transform`` is only its ENU->ECEF matrix, stored relative to its parent's
(§ Tile transforms: transforms are multiplied down the tree). Bounding volumes are
``region`` (radians, metres above the WGS84 ellipsoid), which transforms do not affect.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import shutil
import struct
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from scene.gltf import GlbBuilder
from twin.errors import NotFound, SceneError
from twin.geometry import SEMANTIC_TYPES, CityModel
from twin.objects import Twin, TwinObject
from twin.store.base import StateStore

__all__ = [
    "INDEX_3TZ",
    "BuiltTileset",
    "TileCache",
    "TilesetStats",
    "built_tileset",
    "write_3tz",
    "write_tileset",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
ProgressFn = Callable[[int, int], None]

INDEX_3TZ = "@3dtilesIndex1@"
MAX_DEPTH = 20
# WGS84 ellipsoid (EPSG:4326/4978).
_A = 6378137.0
_F = 1.0 / 298.257223563
_E2 = _F * (2.0 - _F)
# Regions are padded by this much so float32 rounding of tile positions stays inside.
_PAD_RAD = 1e-9  # ~6 mm on the ground
_PAD_H = 0.01


@dataclass
class TilesetStats:
    """What went into a tileset."""

    tiles: int = 0
    leaves: int = 0
    depth: int = 0
    objects: int = 0
    leaf_features: int = 0
    parent_features: int = 0
    triangles: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Part:
    """One input model with its vertices in ECEF and its features' vertex lists."""

    model: CityModel
    ecef: F64
    fv_idx: I64  # vertex indices grouped by feature
    fv_start: I64  # start of each feature's group in fv_idx (len = features + 1)


@dataclass
class _Node:
    key: str
    depth: int
    feats: I64  # global feature numbers in this subtree
    children: list[_Node] = field(default_factory=list)
    lo: F64 | None = None  # region: (west, south, hmin) radians/metres
    hi: F64 | None = None
    frame: F64 | None = None  # absolute ENU->ECEF 4x4
    uri: str | None = None
    error: float = 0.0


def _transformers(epsg: int) -> tuple[Any, Any]:
    from pyproj import Transformer
    from pyproj.exceptions import CRSError, ProjError

    try:
        to_ecef = Transformer.from_crs(epsg, 4978, always_xy=True)
        to_geo = Transformer.from_crs(4978, 4979, always_xy=True)
    except (CRSError, ProjError) as exc:
        raise SceneError(f"EPSG:{epsg}: pyproj cannot place it on the globe ({exc})") from None
    return to_ecef, to_geo


def _geodetic_to_ecef(lon: float, lat: float, h: float) -> F64:
    sl, cl, sp, cp = np.sin(lon), np.cos(lon), np.sin(lat), np.cos(lat)
    n = _A / np.sqrt(1.0 - _E2 * sp * sp)
    return np.array([(n + h) * cp * cl, (n + h) * cp * sl, (n * (1.0 - _E2) + h) * sp])


def _enu_frame(lon: float, lat: float, h: float) -> F64:
    """The 4x4 matrix taking local east-north-up metres at (lon, lat, h) to ECEF."""
    sl, cl, sp, cp = np.sin(lon), np.cos(lon), np.sin(lat), np.cos(lat)
    m = np.eye(4)
    m[:3, 0] = (-sl, cl, 0.0)
    m[:3, 1] = (-sp * cl, -sp * sl, cp)
    m[:3, 2] = (cp * cl, cp * sl, sp)
    m[:3, 3] = _geodetic_to_ecef(lon, lat, h)
    return m


def _to_enu(ecef: F64, frame: F64) -> F64:
    out: F64 = (ecef - frame[:3, 3]) @ frame[:3, :3]
    return out


def _feature_vertices(model: CityModel) -> tuple[I64, I64]:
    """Vertex indices of each feature (rings, points, lines), grouped by feature."""
    nrings = np.diff(model.surface_rings)
    rlen = np.diff(model.ring_offsets)
    ring_feat = np.repeat(model.surf_feature, nrings)
    vidx = np.concatenate(
        [model.ring_vertices, model.point_vertices, model.line_segments.reshape(-1)]
    ).astype(np.int64)
    feat = np.concatenate(
        [
            np.repeat(ring_feat, rlen),
            model.point_feature,
            np.repeat(model.line_feature, 2),
        ]
    ).astype(np.int64)
    order = np.argsort(feat, kind="stable")
    counts = np.bincount(feat, minlength=len(model.feature_ids))
    start = np.zeros(len(model.feature_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    return vidx[order], start


def _subset(model: CityModel, keep_feat: npt.NDArray[np.bool_]) -> CityModel:
    """A copy of ``model`` with only the features ``keep_feat`` (their objects only)."""
    new_feat = np.cumsum(keep_feat) - 1
    keep_surf = keep_feat[model.surf_feature]
    nrings = np.diff(model.surface_rings)
    rlen = np.diff(model.ring_offsets)
    keep_ring = np.repeat(keep_surf, nrings)
    keep_rv = np.repeat(keep_ring, rlen)

    def offsets(counts: I64) -> I64:
        out = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=out[1:])
        return out

    # Shells are dropped (MultiSurface semantics): tiles need no volume checks, and the
    # triangulation has already been oriented by the source's own winding.
    keep_pt = keep_feat[model.point_feature]
    keep_ln = keep_feat[model.line_feature]
    ids = [f for f, k in zip(model.feature_ids, keep_feat, strict=True) if k]
    n_surf = int(keep_surf.sum())
    return dataclasses.replace(
        model,
        twin=Twin(model.twin[i] for i in ids),
        ring_vertices=model.ring_vertices[keep_rv],
        ring_offsets=offsets(rlen[keep_ring]),
        surface_rings=offsets(nrings[keep_surf]),
        surf_feature=new_feat[model.surf_feature[keep_surf]],
        surf_semantic=model.surf_semantic[keep_surf],
        surf_material=model.surf_material[keep_surf],
        point_vertices=model.point_vertices[keep_pt],
        point_feature=new_feat[model.point_feature[keep_pt]],
        line_segments=model.line_segments[keep_ln],
        line_feature=new_feat[model.line_feature[keep_ln]],
        surf_shell=np.full(n_surf, -1, dtype=np.int64),
        shell_solid=np.zeros(0, dtype=np.int64),
        solid_group=np.zeros(0, dtype=np.int64),
        group_type=[],
        group_feature=np.zeros(0, dtype=np.int64),
        feature_ids=ids,
        warnings=[],
    )


def _hull(xy: F64) -> F64:
    """Convex hull, counter-clockwise, of 2D points (Andrew's monotone chain)."""
    pts = np.unique(np.round(xy, 4), axis=0)
    if pts.shape[0] < 3:
        return pts
    p = pts.tolist()

    def cross(o: list[float], a: list[float], b: list[float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[list[float]] = []
    for q in p:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], q) <= 0:
            lower.pop()
        lower.append(q)
    upper: list[list[float]] = []
    for q in reversed(p):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], q) <= 0:
            upper.pop()
        upper.append(q)
    return np.array(lower[:-1] + upper[:-1], dtype=np.float64)


class _BlockModel:
    """Accumulates LoD1 prisms (one per object) into one MultiSurface CityModel."""

    _ROOF = SEMANTIC_TYPES.index("RoofSurface")
    _WALL = SEMANTIC_TYPES.index("WallSurface")
    _GROUND = SEMANTIC_TYPES.index("GroundSurface")

    def __init__(self) -> None:
        self.verts: list[F64] = []
        self.rings: list[I64] = []
        self.sem: list[int] = []
        self.feat: list[int] = []
        self.objects: list[TwinObject] = []
        self.nv = 0

    def add(self, obj: TwinObject, enu: F64) -> None:
        hull = _hull(enu[:, :2])
        if hull.shape[0] < 3 or abs(_area(hull)) < 1e-6:
            # A flat or point-like footprint (a wall, a pole): a 10 cm square keeps the
            # object pickable from afar.
            cx, cy = enu[:, 0].mean(), enu[:, 1].mean()
            d = 0.05
            hull = np.array(
                [[cx - d, cy - d], [cx + d, cy - d], [cx + d, cy + d], [cx - d, cy + d]]
            )
        z0, z1 = float(enu[:, 2].min()), float(enu[:, 2].max())
        if z1 - z0 < 0.1:
            z1 = z0 + 0.1  # a flat object still gets a visible (and valid) prism
        n = hull.shape[0]
        bottom = np.column_stack([hull, np.full(n, z0)])
        top = np.column_stack([hull, np.full(n, z1)])
        base = self.nv
        self.verts += [bottom, top]
        self.nv += 2 * n
        f = len(self.objects)
        b = np.arange(n, dtype=np.int64) + base
        t = b + n
        # Outward winding (CityJSON 2.0 §3.2: exterior rings counter-clockwise seen
        # from outside): roof ccw from above, ground reversed, walls along the ccw hull.
        self.rings.append(t)
        self.sem.append(self._ROOF)
        self.rings.append(b[::-1].copy())
        self.sem.append(self._GROUND)
        for i in range(n):
            j = (i + 1) % n
            self.rings.append(np.array([b[i], b[j], t[j], t[i]], dtype=np.int64))
            self.sem.append(self._WALL)
        self.feat += [f] * (n + 2)
        gs = obj.geometry
        lod1 = dataclasses.replace(gs, lod="1") if gs is not None else None
        self.objects.append(dataclasses.replace(obj, geometry=lod1))

    def model(self, source: str) -> CityModel:
        lens = np.array([r.size for r in self.rings], dtype=np.int64)
        offs = np.zeros(lens.size + 1, dtype=np.int64)
        np.cumsum(lens, out=offs[1:])
        n = lens.size
        return CityModel(
            source=source,
            version="2.0",
            twin=Twin(self.objects),
            vertices=np.vstack(self.verts),
            ring_vertices=np.concatenate(self.rings),
            ring_offsets=offs,
            surface_rings=np.arange(n + 1, dtype=np.int64),
            surf_feature=np.array(self.feat, dtype=np.int64),
            surf_semantic=np.array(self.sem, dtype=np.int64),
            surf_material=np.full(n, -1, dtype=np.int64),
            surf_shell=np.full(n, -1, dtype=np.int64),
            feature_ids=[o.id for o in self.objects],
            lods=["1"],
        )


def _area(ring: F64) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float(0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


class _Writer:
    """State of one tileset write: features, their bounds, the quadtree."""

    def __init__(self, out: Path, max_features: int, progress: ProgressFn | None) -> None:
        if max_features < 1:
            raise SceneError(f"max_features must be at least 1, not {max_features}")
        self.out = out
        self.max_features = max_features
        self.progress = progress
        self.stats = TilesetStats()
        self.parts: list[_Part] = []
        self.to_ecef: dict[int, Any] = {}
        self.to_geo: Any = None
        self.dropped = 0
        # Per feature (global numbering): part, index in part, centre (lon, lat radians),
        # region lo/hi (lon rad, lat rad, h), footprint weight.
        self.f_part: list[I64] = []
        self.f_local: list[I64] = []
        self.f_xy: list[F64] = []
        self.f_lo: list[F64] = []
        self.f_hi: list[F64] = []
        self.f_weight: list[F64] = []
        self.seen: set[str] = set()
        self.done = 0
        self.total = 0

    def add(self, model: CityModel) -> None:
        if not model.feature_ids:
            return
        epsg = model.epsg
        if epsg is None:
            raise SceneError(
                f"{model.source}: no known CRS (metadata.referenceSystem): the city cannot "
                "be placed on the globe for 3D Tiles"
            )
        # Each city through its own CRS: everything meets in ECEF (EPSG:4978).
        if epsg not in self.to_ecef:
            self.to_ecef[epsg], self.to_geo = _transformers(epsg)
        fv_idx, fv_start = _feature_vertices(model)
        counts = np.diff(fv_start)
        keep = counts > 0
        for k, oid in enumerate(model.feature_ids):
            if oid in self.seen:
                keep[k] = False
                self.stats.warnings.append(f"{model.source}: object {oid!r} seen before; skipped")
            elif keep[k]:
                self.seen.add(oid)
        if not keep.any():
            return
        if not keep.all():
            model = _subset(model, keep)
            fv_idx, fv_start = _feature_vertices(model)
            counts = np.diff(fv_start)
        v = model.vertices
        x, y, z = self.to_ecef[epsg].transform(v[:, 0], v[:, 1], v[:, 2])
        ecef = np.column_stack([x, y, z]).astype(np.float64)
        if not np.isfinite(ecef[fv_idx]).all():
            raise SceneError(f"{model.source}: EPSG:{model.epsg} -> ECEF gave non-finite values")
        lon, lat, h = self.to_geo.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2], radians=True)
        geo = np.column_stack([lon, lat, h])[fv_idx]
        starts = fv_start[:-1]
        lo = np.minimum.reduceat(geo, starts, axis=0)
        hi = np.maximum.reduceat(geo, starts, axis=0)
        # Quadtree keys: the geodetic centre (lon, lat), so cities in different CRSs
        # share one tree; weights: the footprint bbox area in the source CRS.
        xy = (lo[:, :2] + hi[:, :2]) / 2
        src = v[fv_idx]
        ext = np.maximum.reduceat(src[:, :2], starts, axis=0) - np.minimum.reduceat(
            src[:, :2], starts, axis=0
        )
        n = len(model.feature_ids)
        p = len(self.parts)
        self.parts.append(_Part(model, ecef, fv_idx, fv_start))
        self.f_part.append(np.full(n, p, dtype=np.int64))
        self.f_local.append(np.arange(n, dtype=np.int64))
        self.f_xy.append(xy)
        self.f_lo.append(lo)
        self.f_hi.append(hi)
        self.f_weight.append(ext[:, 0] * ext[:, 1] + 1e-3 * (hi[:, 2] - lo[:, 2]))

    # -- tree ---------------------------------------------------------------------

    def _split(self, feats: I64, box: tuple[float, float, float, float], key: str) -> _Node:
        node = _Node(key, len(key), feats)
        if feats.size <= self.max_features or len(key) >= MAX_DEPTH:
            return node
        x0, y0, x1, y1 = box
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        xy = self.xy[feats]
        quad = (xy[:, 0] >= mx).astype(np.int64) + 2 * (xy[:, 1] >= my).astype(np.int64)
        boxes = [(x0, y0, mx, my), (mx, y0, x1, my), (x0, my, mx, y1), (mx, my, x1, y1)]
        for q in range(4):
            sel = feats[quad == q]
            if sel.size:
                node.children.append(self._split(sel, boxes[q], key + str(q)))
        return node

    def build(self) -> dict[str, Any]:
        if not self.parts:
            raise SceneError("nothing to tile: no CityObject with geometry")
        self.part = np.concatenate(self.f_part)
        self.local = np.concatenate(self.f_local)
        self.xy = np.concatenate(self.f_xy)
        self.lo = np.concatenate(self.f_lo)
        self.hi = np.concatenate(self.f_hi)
        self.weight = np.concatenate(self.f_weight)
        n = self.xy.shape[0]
        self.stats.objects = n
        (x0, y0), (x1, y1) = self.xy.min(axis=0), self.xy.max(axis=0)
        side = max(x1 - x0, y1 - y0, 1e-9)
        root = self._split(np.arange(n, dtype=np.int64), (x0, y0, x0 + side, y0 + side), "")
        nodes: list[_Node] = []
        stack = [root]
        while stack:
            node = stack.pop()
            nodes.append(node)
            stack.extend(node.children)
        self.total = len(nodes)
        (self.out / "tiles").mkdir(parents=True, exist_ok=True)
        # Geometric error (3D Tiles 1.1 § Geometric error): a parent's blocks miss roof
        # shapes and small objects, an error of the order of its extent; halved per
        # level so it decreases strictly with depth; leaves are exact (0).
        diag = _metres(self.lo.min(axis=0), self.hi.max(axis=0))
        root_error = max(diag / 8.0, 1.0)
        self._write(root, None, root_error)
        self.stats.tiles = len(nodes)
        if self.dropped:
            self.stats.warnings.append(
                f"{self.dropped} degenerate surfaces (zero area) dropped over all tiles"
            )
        self.stats.depth = max(nd.depth for nd in nodes)
        tileset = {
            "asset": {"version": "1.1", "extras": {"generator": "CityTwin"}},
            "geometricError": max(2.0 * root_error, diag),
            "root": self._json(root, None),
        }
        return tileset

    def _write(self, node: _Node, parent: _Node | None, root_error: float) -> None:
        """Write the node's GLB and its children's (post-order: regions bottom-up)."""
        lo = self.lo[node.feats].min(axis=0)
        hi = self.hi[node.feats].max(axis=0)
        lon, lat = (lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2
        node.frame = _enu_frame(float(lon), float(lat), float(lo[2]))
        node.uri = f"tiles/r{node.key}.glb"
        if node.children:
            node.error = root_error / 2**node.depth
            c_lo, c_hi = self._write_blocks(node)
        else:
            node.error = 0.0
            c_lo, c_hi = self._write_leaf(node)
        for child in node.children:
            self._write(child, node, root_error)
        los = [lo, c_lo] + [c.lo for c in node.children if c.lo is not None]
        his = [hi, c_hi] + [c.hi for c in node.children if c.hi is not None]
        pad = np.array([_PAD_RAD, _PAD_RAD, _PAD_H])
        node.lo = np.min(los, axis=0) - pad
        node.hi = np.max(his, axis=0) + pad
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total)

    def _write_glb(self, builder: GlbBuilder, node: _Node) -> tuple[F64, F64]:
        assert node.uri is not None and node.frame is not None
        buf = io.BytesIO()
        stats = builder.write(buf)
        (self.out / node.uri).write_bytes(buf.getvalue())
        self.stats.bytes += stats.bytes
        self.stats.triangles += stats.triangles
        self.dropped += stats.dropped_surfaces
        # The content's own bounds (glTF accessor min/max are float32 of the same data).
        lo_l = np.min([g.lo for g in builder.groups.values() if g.lo is not None], axis=0)
        hi_l = np.max([g.hi for g in builder.groups.values() if g.hi is not None], axis=0)
        # glTF (e, u, -n) -> ENU box corners -> geodetic.
        e = (lo_l[0], hi_l[0])
        nn = (-hi_l[2], -lo_l[2])
        u = (lo_l[1], hi_l[1])
        corners = np.array([[a, b, c] for a in e for b in nn for c in u], dtype=np.float64)
        ecef = corners @ node.frame[:3, :3].T + node.frame[:3, 3]
        lon, lat, h = self.to_geo.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2], radians=True)
        geo = np.column_stack([lon, lat, h])
        return geo.min(axis=0), geo.max(axis=0)

    def _write_leaf(self, node: _Node) -> tuple[F64, F64]:
        assert node.frame is not None
        builder = GlbBuilder(f"tile r{node.key}", origin=(0.0, 0.0, 0.0))
        for p in np.unique(self.part[node.feats]).tolist():
            part = self.parts[p]
            keep = np.zeros(len(part.model.feature_ids), dtype=bool)
            keep[self.local[node.feats[self.part[node.feats] == p]]] = True
            sub = _subset(part.model, keep)
            builder.add(
                dataclasses.replace(
                    sub, vertices=_to_enu(part.ecef, node.frame), crs=None, epsg=None
                )
            )
        self.stats.leaves += 1
        self.stats.leaf_features += len(builder.rows)
        return self._write_glb(builder, node)

    def _write_blocks(self, node: _Node) -> tuple[F64, F64]:
        assert node.frame is not None
        # The largest footprints first: what is visible from the distance this tile is
        # drawn at; the rest appear with the children (REPLACE refinement).
        feats = node.feats
        if feats.size > self.max_features:
            feats = feats[np.argsort(-self.weight[feats], kind="stable")[: self.max_features]]
        blocks = _BlockModel()
        for f in np.sort(feats).tolist():
            part = self.parts[int(self.part[f])]
            k = int(self.local[f])
            vidx = part.fv_idx[part.fv_start[k] : part.fv_start[k + 1]]
            obj = part.model.twin[part.model.feature_ids[k]]
            blocks.add(obj, _to_enu(part.ecef[vidx], node.frame))
        builder = GlbBuilder(f"tile r{node.key} (LoD1 blocks)", origin=(0.0, 0.0, 0.0))
        builder.add(blocks.model(f"r{node.key}"))
        self.stats.parent_features += len(builder.rows)
        return self._write_glb(builder, node)

    def _json(self, node: _Node, parent: _Node | None) -> dict[str, Any]:
        assert node.lo is not None and node.hi is not None and node.frame is not None
        rel = node.frame
        if parent is not None:
            assert parent.frame is not None
            rel = np.asarray(np.linalg.solve(parent.frame, node.frame), dtype=np.float64)
        tile: dict[str, Any] = {
            "boundingVolume": {
                "region": [
                    float(node.lo[0]),
                    float(node.lo[1]),
                    float(node.hi[0]),
                    float(node.hi[1]),
                    float(node.lo[2]),
                    float(node.hi[2]),
                ]
            },
            "geometricError": node.error,
            "refine": "REPLACE",
            # Column-major (3D Tiles 1.1 § Tile transforms).
            "transform": [float(v) for v in rel.flatten(order="F")],
            "content": {"uri": node.uri},
        }
        if node.children:
            tile["children"] = [self._json(c, node) for c in node.children]
        return tile


def _metres(lo: F64, hi: F64) -> float:
    """Diagonal of a region in metres (spherical approximation; for error scales only)."""
    lat = (lo[1] + hi[1]) / 2
    dx = (hi[0] - lo[0]) * _A * np.cos(lat)
    dy = (hi[1] - lo[1]) * _A
    return float(np.sqrt(dx * dx + dy * dy + (hi[2] - lo[2]) ** 2))


def write_tileset(
    models: Iterable[CityModel],
    out_dir: str | Path,
    *,
    max_features: int = 2000,
    progress: ProgressFn | None = None,
) -> TilesetStats:
    """Write a 3D Tiles 1.1 tileset (``tileset.json`` + ``tiles/*.glb``) of city models.

    Args:
        models: the cities (or chunks of one, e.g. :func:`ingest.cityjson.iter_cityjson`),
            each in its own source CRS (all meet in ECEF).
        out_dir: the output folder (created; existing tiles of the same names replaced).
        max_features: the most objects a leaf tile holds (and a parent's blocks).
        progress: called as ``progress(tiles_done, tiles_total)`` while tiles are written.

    Returns:
        Statistics of the tileset.

    Raises:
        SceneError: a city without a known CRS, nothing to draw, or the
            output cannot be written.
    """
    out = Path(out_dir)
    writer = _Writer(out, max_features, progress)
    for model in models:
        writer.add(model)
    try:
        tileset = writer.build()
        data = orjson.dumps(tileset, option=orjson.OPT_INDENT_2)
        tmp = out / ".tileset.json.part"
        tmp.write_bytes(data)
        os.replace(tmp, out / "tileset.json")
    except OSError as exc:
        raise SceneError(f"{out}: cannot write the tileset ({exc.strerror or exc})") from None
    writer.stats.bytes += len(data)
    return writer.stats


def _index_3tz(zf: zipfile.ZipFile) -> bytes:
    """The 3TZ index (3D Tiles Archive Format 1.x): per entry the MD5 of its path and
    the offset of its local file header (uint64 LE), sorted by the hash read as two
    little-endian uint64 (low, high)."""
    rows = []
    for info in zf.infolist():
        digest = hashlib.md5(info.filename.encode("utf-8")).digest()
        lo, hi = struct.unpack("<QQ", digest)
        rows.append((lo, hi, info.header_offset))
    rows.sort()
    return b"".join(struct.pack("<QQQ", *r) for r in rows)


def write_3tz(tileset_dir: str | Path, path: str | Path) -> int:
    """Pack a tileset folder into a ``.3tz`` archive (3D Tiles Archive Format).

    A ZIP with ``tileset.json`` at its root, every file deflated with sizes in the local
    headers, and the ``@3dtilesIndex1@`` index (MD5 of path -> local header offset,
    sorted) stored uncompressed as the last entry, so readers seek without the central
    directory.

    Args:
        tileset_dir: a folder written by :func:`write_tileset`.
        path: the archive to write (atomically).

    Returns:
        The archive size in bytes.

    Raises:
        SceneError: the folder has no ``tileset.json`` or the archive cannot be written.
    """
    src = Path(tileset_dir)
    if not (src / "tileset.json").is_file():
        raise SceneError(f"{src}: no tileset.json (not a tileset folder)")
    dest = Path(path)
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith("."))
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            names = ["tileset.json"] + [
                p.relative_to(src).as_posix()
                for p in files
                if p.relative_to(src) != Path("tileset.json")
            ]
            for name in names:
                zf.write(src / name, name)
            zf.writestr(zipfile.ZipInfo(INDEX_3TZ), _index_3tz(zf), zipfile.ZIP_STORED)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SceneError(f"{dest}: cannot write ({exc.strerror or exc})") from None
    return dest.stat().st_size


@dataclass(frozen=True)
class BuiltTileset:
    """A scenario's tileset on disk: folder, ETag and the tileset JSON (plain and gzip)."""

    directory: Path
    etag: str
    tileset: bytes
    gzipped: bytes
    files: frozenset[str]


def built_tileset(directory: Path, etag: str) -> BuiltTileset:
    """Describe a written tileset folder for serving.

    Args:
        directory: a folder written by :func:`write_tileset`.
        etag: the quoted ETag of its sources.

    Returns:
        The tileset JSON bytes (and gzip) and the set of servable relative paths.
    """
    data = (directory / "tileset.json").read_bytes()
    files = frozenset(
        p.relative_to(directory).as_posix() for p in directory.rglob("*.glb") if p.is_file()
    )
    return BuiltTileset(directory, etag, data, gzip.compress(data, 6), files)


class TileCache:
    """Builds a scenario's tileset from its stored CityJSON sources when they change."""

    def __init__(self, store: StateStore, *, max_features: int = 2000) -> None:
        self.store = store
        self.max_features = max_features
        self._lock = threading.Lock()
        self._cache: dict[str, BuiltTileset] = {}

    def get(self, scenario: str = "base") -> BuiltTileset:
        """The tileset of ``scenario``, built into a temporary folder once per source set.

        Raises:
            NotFound: the scenario has no city sources.
            SceneError: the city cannot be tiled (no CRS, nothing to draw).
        """
        from ingest.cityjson import parse_cityjson
        from scene.proposal import scene_view
        from twin.network_index import NETWORK_SOURCE_PREFIX

        infos = [
            i for i in self.store.sources(scenario) if not i.name.startswith(NETWORK_SOURCE_PREFIX)
        ]
        if not infos:
            raise NotFound(f"scenario {scenario!r} has no city to tile (nothing ingested)")
        key = "|".join(f"{i.name}:{i.sha256}" for i in infos)
        etag = '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'
        cached = self._cache.get(scenario)
        if cached is not None and cached.etag == etag:
            return cached
        with self._lock:
            cached = self._cache.get(scenario)
            if cached is not None and cached.etag == etag:
                return cached
            view = scene_view(self.store, scenario, [i.name for i in infos])
            models = []
            for info in infos:
                if view.skips(info.name):
                    continue
                data = self.store.get_source(info.name, scenario)
                if data is not None:
                    model = parse_cityjson(data, source=info.name, wgs84=False)
                    models.append(view.apply(info.name, model))
            directory = Path(tempfile.mkdtemp(prefix="citytwin-tiles-"))
            try:
                write_tileset(models, directory, max_features=self.max_features)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            built = built_tileset(directory, etag)
            self._cache[scenario] = built
            if cached is not None:
                shutil.rmtree(cached.directory, ignore_errors=True)
            return built

    def close(self) -> None:
        """Remove every built tileset folder."""
        with self._lock:
            for built in self._cache.values():
                shutil.rmtree(built.directory, ignore_errors=True)
            self._cache.clear()

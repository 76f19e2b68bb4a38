"""Write a city as an OGC 3D Tiles 1.1 tileset: explicit quadtree, GLB tiles, LoD1 parents.

Layout (3D Tiles 1.1): ``tileset.json`` at the root of the output folder and one GLB per
tile under ``tiles/``. Objects are assigned to leaves by their centroid (an explicit
quadtree split until a tile holds at most ``max_features`` objects); a leaf carries the
full geometry of its objects, a parent carries LoD1 blocks (convex-hull prisms) of the
largest objects of its subtree (a quarter of ``max_features``), and children REPLACE their
parent (§ Refinement). Every tile GLB has ``_FEATURE_ID_0`` + EXT_mesh_features and an
EXT_structural_metadata property table whose ``id`` column is the CityJSON id, as in the
single-GLB scene; positions and normals are quantized (KHR_mesh_quantization).

Streaming: a CityJSONSeq is scanned line by line, keeping per object only its place
(centre, region, footprint weight, byte offset); each tile becomes a self-contained job
holding its objects' raw lines, run in this process, on a local process pool or on a
Dask cluster, with at most two jobs per worker in flight, so memory is bounded by the
tile size, not the city. A CityJSON document is first converted to a sequence
(:func:`ingest.cityjsonseq.write_sequence`, ijson). Tiles are staged and moved into place
with ``tileset.json`` last: a failed run leaves the previous tileset as it was.

Overlays: :func:`write_overlay` writes a proposal over a base tileset, re-tiling only the
leaves its objects touch and their ancestors; other tiles point at the base's files.

Networks: a scenario tiled from the store also gets its networks (tubes, ribbons, node
markers with the asset ids) as one tile next to the city's tree, under a root with ADD
refinement, so they are drawn at every distance.

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
import importlib
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
from twin.objects import GeometrySummary, Twin, TwinObject
from twin.store.base import StateStore

__all__ = [
    "INDEX_3TZ",
    "BuiltTileset",
    "TileCache",
    "TilesetPlan",
    "TilesetStats",
    "built_tileset",
    "write_3tz",
    "write_overlay",
    "write_tileset",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
ProgressFn = Callable[[int, int], None]

INDEX_3TZ = "@3dtilesIndex1@"
MAX_DEPTH = 20
# A parent tile draws at most max_features / PARENT_SHARE blocks: a far view loads little.
PARENT_SHARE = 4
# From this many in-memory objects the store's tileset is built on a process pool.
POOL_FROM = 20_000
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
    reused: int = 0  # an overlay's tiles taken from its base
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
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # quadrant (lon, lat)


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
    """Convex hull, counter-clockwise, of 2D points (qhull); fewer than 3 points if flat."""
    from scipy.spatial import ConvexHull, QhullError

    if xy.shape[0] < 3:
        return xy
    try:
        hull = ConvexHull(xy)
    except QhullError:
        return xy[:2]  # collinear or coincident: no area
    if hull.volume < 1e-6:  # in 2-D, .volume is the area
        return xy[:2]
    # 2-D hulls come counter-clockwise (scipy.spatial.ConvexHull.vertices).
    return np.asarray(xy[hull.vertices], dtype=np.float64)


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
        if hull.shape[0] < 3:
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
        area = float(
            0.5
            * abs(
                np.dot(hull[:, 0], np.roll(hull[:, 1], -1))
                - np.dot(hull[:, 1], np.roll(hull[:, 0], -1))
            )
        )
        lod1 = (
            dataclasses.replace(gs, lod="1", footprint_area=gs.footprint_area or area)
            if gs is not None
            else None
        )
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


@dataclass
class _Seq:
    """A CityJSONSeq file the scan read: its header line and how to place it."""

    path: Path
    header: bytes
    epsg: int


@dataclass
class _Job:
    """One tile to build, self-contained so it can run in another process or machine.

    ``seq`` holds, per sequence file, its header line and the raw CityJSONFeature lines of
    the tile's objects (read by the writer, bounded by ``max_features``); ``models`` holds
    in-memory subsets whose vertices are already ECEF.
    """

    key: str
    kind: str  # "leaf" (full geometry) or "blocks" (LoD1 prisms)
    frame: F64
    quantize: bool
    lod: str | None
    seq: list[tuple[str, bytes, list[bytes]]] = field(default_factory=list)
    models: list[CityModel] = field(default_factory=list)


@dataclass
class _Result:
    key: str
    glb: bytes
    lo: F64
    hi: F64
    features: int
    triangles: int
    dropped: int


_TRANSFORMERS: dict[int, tuple[Any, Any]] = {}


def _cached_transformers(epsg: int) -> tuple[Any, Any]:
    """Per-process pyproj transformers (worker processes build their own once)."""
    t = _TRANSFORMERS.get(epsg)
    if t is None:
        t = _TRANSFORMERS[epsg] = _transformers(epsg)
    return t


def _run_job(job: _Job) -> _Result:
    """Build one tile GLB (runs in a worker process or on a Dask worker)."""
    if job.kind == "leaf":
        models = list(job.models) + [_parse_lines(job, *item) for item in job.seq]
        if not any(m.feature_ids for m in models):
            # An overlay tile whose objects were all removed: no content.
            return _Result(job.key, b"", np.zeros(3), np.zeros(3), 0, 0, 0)
        builder = _builder(f"tile r{job.key}", job.quantize)
        for model in models:
            builder.add(dataclasses.replace(model, vertices=_to_enu(model.vertices, job.frame)))
    else:
        blocks = _BlockModel()
        for model in job.models:
            fv_idx, fv_start = _feature_vertices(model)
            for k, oid in enumerate(model.feature_ids):
                vidx = fv_idx[fv_start[k] : fv_start[k + 1]]
                if vidx.size:
                    blocks.add(model.twin[oid], _to_enu(model.vertices[vidx], job.frame))
        for source, header, lines in job.seq:
            _line_blocks(blocks, source, header, lines, job.frame)
        if not blocks.objects:
            return _Result(job.key, b"", np.zeros(3), np.zeros(3), 0, 0, 0)
        builder = _builder(f"tile r{job.key} (LoD1 blocks)", job.quantize)
        builder.add(blocks.model(f"r{job.key}"))
    buf = io.BytesIO()
    stats = builder.write(buf)
    # Quantized positions may round up to half a step past the float bounds.
    lo, hi = _content_region(builder, job.frame, getattr(stats, "max_position_error", 0.0))
    return _Result(
        job.key,
        buf.getvalue(),
        lo,
        hi,
        len(builder.rows),
        stats.triangles,
        stats.dropped_surfaces,
    )


def _parse_lines(job: _Job, source: str, header: bytes, lines: list[bytes]) -> CityModel:
    """A tile's CityJSONSeq lines as one model with ECEF vertices."""
    from ingest.cityjson import parse_cityjson
    from twin.errors import IngestError

    try:
        model = parse_cityjson(
            header + b"\n" + b"\n".join(lines), source=source, lod=job.lod, wgs84=False
        )
    except IngestError as exc:
        # A plain message: exceptions with keyword fields do not cross processes.
        raise SceneError(f"tile r{job.key}: {exc}") from None
    if model.epsg is None:
        raise SceneError(f"{source}: no known CRS (metadata.referenceSystem)")
    to_ecef, _ = _cached_transformers(model.epsg)
    v = model.vertices
    x, y, z = to_ecef.transform(v[:, 0], v[:, 1], v[:, 2])
    return dataclasses.replace(model, vertices=np.column_stack([x, y, z]), crs=None, epsg=None)


def _line_blocks(
    blocks: _BlockModel, source: str, header: bytes, lines: list[bytes], frame: F64
) -> None:
    """LoD1 blocks straight from CityJSONFeature lines: one per feature (its root id),
    over all of the feature's vertices, without parsing its geometry (parents are drawn
    from afar; the exact shapes are in the leaves)."""
    from ingest.cityjson import parse_epsg
    from scene.gltf import KEY_ATTRIBUTES

    head = orjson.loads(header)
    tf = head["transform"]
    scale = np.asarray(tf["scale"], dtype=np.float64)
    translate = np.asarray(tf["translate"], dtype=np.float64)
    epsg = parse_epsg((head.get("metadata") or {}).get("referenceSystem"))
    if epsg is None:
        raise SceneError(f"{source}: no known CRS (metadata.referenceSystem)")
    to_ecef, _ = _cached_transformers(epsg)
    # One line at a time: a parent holds the largest objects of its subtree, and their
    # parsed vertex lists (Python floats) are many times their bytes.
    for line in lines:
        it = orjson.loads(line)
        real = np.asarray(it.get("vertices") or [], dtype=np.float64).reshape(-1, 3)
        if real.shape[0] == 0:
            continue
        real = real * scale + translate
        x, y, z = to_ecef.transform(real[:, 0], real[:, 1], real[:, 2])
        enu = _to_enu(np.column_stack([x, y, z]), frame)
        objs = it["CityObjects"]
        fid = it.get("id")
        if fid not in objs:
            fid = next(iter(objs))
        root: dict[str, Any] = objs[fid] if isinstance(objs[fid], dict) else {}
        raw_attrs = root.get("attributes")
        attrs: dict[str, Any] = raw_attrs if isinstance(raw_attrs, dict) else {}
        lo, hi = real.min(axis=0), real.max(axis=0)
        summary = GeometrySummary(
            lod="1",
            geometry_types=("Solid",),
            bbox=(*lo.tolist(), *hi.tolist()),
            centroid=tuple(((lo + hi) / 2).tolist()),
            height=float(hi[2] - lo[2]),
            footprint_area=0.0,
        )
        obj = TwinObject(
            id=str(fid),
            type=str(root.get("type", "CityObject")),
            attributes={k: attrs[k] for k in KEY_ATTRIBUTES if k in attrs},
            geometry=summary,
        )
        blocks.add(obj, enu)


def _builder(name: str, quantize: bool) -> GlbBuilder:
    return GlbBuilder(name, origin=(0.0, 0.0, 0.0), quantize=quantize)


def _content_region(builder: GlbBuilder, frame: F64, pad: float = 0.0) -> tuple[F64, F64]:
    """The region (radians, metres) of a tile's content from its glTF bounds."""
    lo_l = np.min([g.lo for g in builder.groups.values() if g.lo is not None], axis=0) - pad
    hi_l = np.max([g.hi for g in builder.groups.values() if g.hi is not None], axis=0) + pad
    # glTF (e, u, -n) -> ENU box corners -> geodetic.
    e = (lo_l[0], hi_l[0])
    nn = (-hi_l[2], -lo_l[2])
    u = (lo_l[1], hi_l[1])
    corners = np.array([[a, b, c] for a in e for b in nn for c in u], dtype=np.float64)
    ecef = corners @ frame[:3, :3].T + frame[:3, 3]
    lon, lat, h = _geo_of_ecef(ecef)
    geo = np.column_stack([lon, lat, h])
    return geo.min(axis=0), geo.max(axis=0)


def _geo_of_ecef(ecef: F64) -> tuple[F64, F64, F64]:
    """ECEF -> (lon, lat radians, ellipsoidal height), WGS84 (pyproj)."""
    _, to_geo = _cached_transformers(4326)
    lon, lat, h = to_geo.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2], radians=True)
    return np.asarray(lon), np.asarray(lat), np.asarray(h)


def _compact(model: CityModel) -> CityModel:
    """``model`` with only the vertices its features use (small to send to a worker)."""
    parts = [model.ring_vertices, model.point_vertices, model.line_segments.reshape(-1)]
    used = np.unique(np.concatenate(parts).astype(np.int64))
    if used.size == model.vertices.shape[0]:
        return model

    def remap(a: I64) -> I64:
        return np.searchsorted(used, a).astype(np.int64)

    return dataclasses.replace(
        model,
        vertices=model.vertices[used],
        ring_vertices=remap(model.ring_vertices),
        point_vertices=remap(model.point_vertices),
        line_segments=remap(model.line_segments.reshape(-1)).reshape(-1, 2),
    )


class _Writer:
    """State of one tileset write: the scanned features, the quadtree, the tile jobs.

    Memory: per object a few numbers (centre, region, where its bytes are), never its
    geometry; geometry is read back per tile from the sequence file when the tile's job is
    made, so the writer holds at most ``max_features`` objects per job in flight.
    """

    def __init__(
        self,
        out: Path,
        max_features: int,
        progress: ProgressFn | None,
        quantize: bool,
        lod: str | None,
    ) -> None:
        if max_features < 1:
            raise SceneError(f"max_features must be at least 1, not {max_features}")
        self.out = out
        # Tiles are written here and moved into ``out`` once all are built, so a failed
        # run leaves the previous tileset as it was.
        self.stage = out / f".staging-{os.getpid()}-{threading.get_ident()}"
        self.max_features = max_features
        self.progress = progress
        self.quantize = quantize
        self.lod = lod
        self.stats = TilesetStats()
        self.parts: list[_Part] = []
        self.seqs: list[_Seq] = []
        self.dropped = 0
        # Per record (an in-memory feature or a sequence line), global numbering: its
        # source (>= 0 a part, < 0 sequence -1-s), index in part or byte offset, length,
        # centre (lon, lat radians), region lo/hi (lon rad, lat rad, h), weight.
        self.f_src: list[I64] = []
        self.f_pos: list[I64] = []
        self.f_len: list[I64] = []
        self.f_xy: list[F64] = []
        self.f_lo: list[F64] = []
        self.f_hi: list[F64] = []
        self.f_weight: list[F64] = []
        self.seen: set[str] = set()

    # -- scan -----------------------------------------------------------------------

    def add(self, model: CityModel) -> None:
        """Scan an in-memory model (kept until its tiles are built)."""
        if not model.feature_ids:
            return
        epsg = model.epsg
        if epsg is None:
            raise SceneError(
                f"{model.source}: no known CRS (metadata.referenceSystem): the city cannot "
                "be placed on the globe for 3D Tiles"
            )
        to_ecef, _ = _cached_transformers(epsg)
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
        v = model.vertices
        x, y, z = to_ecef.transform(v[:, 0], v[:, 1], v[:, 2])
        ecef = np.column_stack([x, y, z]).astype(np.float64)
        if not np.isfinite(ecef[fv_idx]).all():
            raise SceneError(f"{model.source}: EPSG:{model.epsg} -> ECEF gave non-finite values")
        lon, lat, h = _geo_of_ecef(ecef)
        geo = np.column_stack([lon, lat, h])[fv_idx]
        starts = fv_start[:-1]
        lo = np.minimum.reduceat(geo, starts, axis=0)
        hi = np.maximum.reduceat(geo, starts, axis=0)
        src = v[fv_idx]
        ext = np.maximum.reduceat(src[:, :2], starts, axis=0) - np.minimum.reduceat(
            src[:, :2], starts, axis=0
        )
        n = len(model.feature_ids)
        p = len(self.parts)
        self.parts.append(_Part(model, ecef, fv_idx, fv_start))
        self._record(np.full(n, p), np.arange(n), np.zeros(n), lo, hi, ext)

    def _record(self, src: Any, pos: Any, length: Any, lo: F64, hi: F64, ext: F64) -> None:
        # Quadtree keys: the geodetic centre (lon, lat), so cities in different CRSs
        # share one tree; weights: the footprint bbox area in the source CRS.
        self.f_src.append(np.asarray(src, dtype=np.int64))
        self.f_pos.append(np.asarray(pos, dtype=np.int64))
        self.f_len.append(np.asarray(length, dtype=np.int64))
        self.f_xy.append((lo[:, :2] + hi[:, :2]) / 2)
        self.f_lo.append(lo)
        self.f_hi.append(hi)
        self.f_weight.append(ext[:, 0] * ext[:, 1] + 1e-3 * (hi[:, 2] - lo[:, 2]))

    def add_sequence(self, path: Path, scan_progress: ProgressFn | None = None) -> None:
        """Scan a CityJSONSeq file line by line: per feature its place, never its geometry."""
        from ingest.cityjson import parse_epsg

        try:
            fh = path.open("rb")
            total = path.stat().st_size
        except OSError as exc:
            raise SceneError(f"{path}: cannot read ({exc.strerror or exc})") from None
        with fh:
            header_line = fh.readline()
            try:
                header = orjson.loads(header_line)
            except orjson.JSONDecodeError:
                header = None
            if not isinstance(header, dict) or header.get("type") != "CityJSON":
                raise SceneError(f"{path}: line 1 is not a CityJSON header (not a CityJSONSeq)")
            tf = header.get("transform")
            if not isinstance(tf, dict):
                raise SceneError(f"{path}: the header has no 'transform' (CityJSON 2.0 §9)")
            try:
                scale = np.array(tf["scale"], dtype=np.float64).reshape(3)
                translate = np.array(tf["translate"], dtype=np.float64).reshape(3)
            except (KeyError, TypeError, ValueError):
                raise SceneError(f"{path}: the header's 'transform' is malformed") from None
            meta = header.get("metadata") if isinstance(header.get("metadata"), dict) else {}
            epsg = parse_epsg(meta.get("referenceSystem") if meta else None)
            if epsg is None:
                raise SceneError(
                    f"{path}: no known CRS (metadata.referenceSystem): the city cannot be "
                    "placed on the globe for 3D Tiles"
                )
            to_ecef, _ = _cached_transformers(epsg)
            s = len(self.seqs)
            self.seqs.append(_Seq(path, header_line.rstrip(b"\r\n"), epsg))
            offset = len(header_line)
            lineno = 1
            batch_pos: list[int] = []
            batch_len: list[int] = []
            batch_box: list[F64] = []

            def flush() -> None:
                if not batch_pos:
                    return
                box = np.array(batch_box) * np.concatenate([scale, scale]) + np.concatenate(
                    [translate, translate]
                )
                # The 8 corners of each box -> ECEF -> geodetic, min/max per record.
                xs = box[:, [0, 3]]
                ys = box[:, [1, 4]]
                zs = box[:, [2, 5]]
                cx = np.repeat(xs, 4, axis=1)
                cy = np.tile(np.repeat(ys, 2, axis=1), 2)
                cz = np.tile(zs, 4)
                ex, ey, ez = to_ecef.transform(cx.ravel(), cy.ravel(), cz.ravel())
                ecef = np.column_stack([ex, ey, ez])
                if not np.isfinite(ecef).all():
                    raise SceneError(f"{path}: EPSG:{epsg} -> ECEF gave non-finite values")
                lon, lat, h = _geo_of_ecef(ecef)
                geo = np.column_stack([lon, lat, h]).reshape(-1, 8, 3)
                ext = box[:, 3:5] - box[:, 0:2]
                n = len(batch_pos)
                self._record(
                    np.full(n, -1 - s),
                    batch_pos,
                    batch_len,
                    geo.min(axis=1),
                    geo.max(axis=1),
                    ext,
                )
                batch_pos.clear()
                batch_len.clear()
                batch_box.clear()

            for raw in fh:
                lineno += 1
                start = offset
                offset += len(raw)
                if not raw.strip():
                    continue
                try:
                    item = orjson.loads(raw)
                    objs = item["CityObjects"]
                    verts = item.get("vertices") or []
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    raise SceneError(
                        f"{path}: line {lineno} is not a CityJSONFeature (JSON object with "
                        "'CityObjects')"
                    ) from None
                if not isinstance(objs, dict) or not verts:
                    continue  # nothing to draw
                dup = [oid for oid in objs if oid in self.seen]
                if dup:
                    self.stats.warnings.append(
                        f"{path}: line {lineno}: object {dup[0]!r} seen before; feature skipped"
                    )
                    continue
                self.seen.update(objs)
                try:
                    a = np.array(verts, dtype=np.float64)
                    box_row = np.concatenate([a.min(axis=0), a.max(axis=0)])
                except (ValueError, TypeError):
                    raise SceneError(
                        f"{path}: line {lineno}: 'vertices' is not a list of [x, y, z]"
                    ) from None
                if box_row.shape != (6,):
                    raise SceneError(f"{path}: line {lineno}: 'vertices' is not [x, y, z] rows")
                batch_pos.append(start)
                batch_len.append(len(raw))
                batch_box.append(box_row)
                if len(batch_pos) >= 8192:
                    flush()
                    if scan_progress:
                        scan_progress(offset, total)
            flush()
            if scan_progress:
                scan_progress(total, total)

    # -- tree -----------------------------------------------------------------------

    def _split(self, feats: I64, box: tuple[float, float, float, float], key: str) -> _Node:
        node = _Node(key, len(key), feats, box=box)
        if feats.size <= self.max_features or len(key) >= MAX_DEPTH:
            return node
        x0, y0, x1, y1 = box
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        xy = self.xy[feats]
        quad = (xy[:, 0] >= mx).astype(np.int64) + 2 * (xy[:, 1] >= my).astype(np.int64)
        boxes = [(x0, y0, mx, my), (mx, y0, x1, my), (x0, my, mx, y1), (mx, my, x1, y1)]
        full = [q for q in range(4) if (quad == q).any()]
        if len(full) == 1:
            # Everything in one quadrant (e.g. two cities far apart, one of them far
            # from the corner): no tile that would repeat its only child's content.
            return self._split(feats, boxes[full[0]], key + str(full[0]))
        for q in full:
            node.children.append(self._split(feats[quad == q], boxes[q], key + str(q)))
        return node

    def plan(self) -> tuple[_Node, list[_Node], float, float]:
        """The quadtree over every scanned record; frames and errors of its tiles."""
        if not self.f_src:
            raise SceneError("nothing to tile: no CityObject with geometry")
        self.src = np.concatenate(self.f_src)
        self.pos = np.concatenate(self.f_pos)
        self.len = np.concatenate(self.f_len)
        self.xy = np.concatenate(self.f_xy)
        self.lo = np.concatenate(self.f_lo)
        self.hi = np.concatenate(self.f_hi)
        self.weight = np.concatenate(self.f_weight)
        for name in ("f_src", "f_pos", "f_len", "f_xy", "f_lo", "f_hi", "f_weight"):
            getattr(self, name).clear()
        n = self.xy.shape[0]
        self.stats.objects = n
        (x0, y0), (x1, y1) = self.xy.min(axis=0), self.xy.max(axis=0)
        side = max(x1 - x0, y1 - y0, 1e-9)
        root = self._split(np.arange(n, dtype=np.int64), (x0, y0, x0 + side, y0 + side), "")
        nodes: list[_Node] = []
        stack = [(root, 0)]
        while stack:
            node, level = stack.pop()
            node.depth = level  # levels of the tree (keys skip one-child quadrants)
            nodes.append(node)
            stack.extend((c, level + 1) for c in node.children)
        # Geometric error (3D Tiles 1.1 § Geometric error): a parent's blocks miss roof
        # shapes and small objects, an error of the order of its extent; halved per
        # level so it decreases strictly with depth; leaves are exact (0).
        diag = _metres(self.lo.min(axis=0), self.hi.max(axis=0))
        root_error = max(diag / 8.0, 1.0)
        for node in nodes:
            lo = self.lo[node.feats].min(axis=0)
            hi = self.hi[node.feats].max(axis=0)
            node.frame = _enu_frame(
                float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2), float(lo[2])
            )
            node.uri = f"tiles/r{node.key}.glb"
            node.error = root_error / 2**node.depth if node.children else 0.0
        return root, nodes, root_error, diag

    def job(self, node: _Node, fh: dict[int, Any]) -> _Job:
        """The self-contained job of one tile (geometry read back from its sources)."""
        assert node.frame is not None
        feats = node.feats
        kind = "blocks" if node.children else "leaf"
        cap = max(1, self.max_features // PARENT_SHARE)
        if kind == "blocks" and feats.size > cap:
            # The largest footprints first: what is visible from the distance this tile
            # is drawn at; the rest appear with the children (REPLACE refinement).
            feats = feats[np.argsort(-self.weight[feats], kind="stable")[:cap]]
        job = _Job(node.key, kind, node.frame, self.quantize, self.lod)
        feats = np.sort(feats)
        src = self.src[feats]
        for s in np.unique(src).tolist():
            sel = feats[src == s]
            if s >= 0:
                part = self.parts[s]
                keep = np.zeros(len(part.model.feature_ids), dtype=bool)
                keep[self.pos[sel]] = True
                sub = _subset(dataclasses.replace(part.model, vertices=part.ecef), keep)
                job.models.append(_compact(dataclasses.replace(sub, crs=None, epsg=None)))
            else:
                seq = self.seqs[-1 - s]
                f = fh.get(s)
                if f is None:
                    f = fh[s] = seq.path.open("rb")
                lines = []
                for p, ln in zip(self.pos[sel].tolist(), self.len[sel].tolist(), strict=True):
                    f.seek(p)
                    lines.append(f.read(ln).rstrip(b"\r\n"))
                job.seq.append((str(seq.path), seq.header, lines))
        return job

    def json(self, node: _Node, parent: _Node | None) -> dict[str, Any]:
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
        }
        if node.uri is not None:
            tile["content"] = {"uri": node.uri}
        if node.children:
            tile["children"] = [self.json(c, node) for c in node.children]
        return tile

    def build(
        self, nodes: list[_Node], runner: _Runner, files: dict[int, Any]
    ) -> dict[str, tuple[F64, F64]]:
        """Run the jobs of ``nodes``, write their GLBs; the content region of each."""
        (self.stage / "tiles").mkdir(parents=True, exist_ok=True)
        # Leaves first (deepest first), so the progress rate is the rate of real work.
        order = sorted(nodes, key=lambda nd: -nd.depth)
        content: dict[str, tuple[F64, F64]] = {}
        leaf_keys = {nd.key for nd in nodes if not nd.children}
        total = len(order)
        st = self.stats
        for done, result in enumerate(runner.run(self.job(nd, files) for nd in order), 1):
            if result.glb:
                (self.stage / "tiles" / f"r{result.key}.glb").write_bytes(result.glb)
                content[result.key] = (result.lo, result.hi)
            st.bytes += len(result.glb)
            st.triangles += result.triangles
            self.dropped += result.dropped
            if result.key in leaf_keys:
                st.leaves += 1
                st.leaf_features += result.features
            else:
                st.parent_features += result.features
            if self.progress:
                self.progress(done, total)
        return content

    def regions(self, node: _Node, content: dict[str, tuple[F64, F64]]) -> None:
        """Bounding regions bottom-up: a tile's content and all of its children's."""
        for child in node.children:
            self.regions(child, content)
        if node.key not in content and node.lo is not None:
            return  # an overlay's tile taken from its base: the base's region
        los = [c.lo for c in node.children if c.lo is not None]
        his = [c.hi for c in node.children if c.hi is not None]
        if node.feats.size:
            los.append(self.lo[node.feats].min(axis=0))
            his.append(self.hi[node.feats].max(axis=0))
        if node.key in content:
            los.append(content[node.key][0])
            his.append(content[node.key][1])
        else:
            node.uri = None  # nothing drawn here
        if not los:
            raise SceneError(f"tile r{node.key} has neither objects nor children")
        pad = np.array([_PAD_RAD, _PAD_RAD, _PAD_H])
        node.lo = np.min(los, axis=0) - pad
        node.hi = np.max(his, axis=0) + pad


def _metres(lo: F64, hi: F64) -> float:
    """Diagonal of a region in metres (spherical approximation; for error scales only)."""
    lat = (lo[1] + hi[1]) / 2
    dx = (hi[0] - lo[0]) * _A * np.cos(lat)
    dy = (hi[1] - lo[1]) * _A
    return float(np.sqrt(dx * dx + dy * dy + (hi[2] - lo[2]) ** 2))


class _Runner:
    """Runs tile jobs: in this process, on a local process pool, or on a Dask cluster.

    At most ``2 x workers`` jobs are in flight, so the writer's memory is bounded by
    tile size whatever the city size.
    """

    def __init__(self, workers: int, dask: str | None) -> None:
        self.workers = workers
        self.dask = dask
        self.client: Any = None
        self.pool: Any = None
        if dask is not None:
            try:
                distributed: Any = importlib.import_module("distributed")
            except ImportError:
                raise SceneError(
                    "--dask needs dask.distributed: pip install 'citytwin[dask]'"
                ) from None
            try:
                self.client = distributed.Client(dask, timeout=10, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise SceneError(f"cannot reach the Dask scheduler at {dask}: {exc}") from None
            self.workers = max(1, sum(self.client.nthreads().values()))
        elif workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the caller may be a threaded server.
            self.pool = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn")
            )

    def run(self, jobs: Iterable[_Job]) -> Iterable[_Result]:
        if self.client is not None:
            yield from self._run_dask(jobs)
        elif self.pool is not None:
            yield from self._run_pool(jobs)
        else:
            for job in jobs:
                yield _run_job(job)

    def _run_pool(self, jobs: Iterable[_Job]) -> Iterable[_Result]:
        from concurrent.futures.process import BrokenProcessPool

        try:
            yield from self._pool_results(jobs)
        except BrokenProcessPool:
            raise SceneError(
                "a tile worker process died (out of memory?); try a smaller --max-features "
                "or fewer --workers"
            ) from None

    def _pool_results(self, jobs: Iterable[_Job]) -> Iterable[_Result]:
        from concurrent.futures import FIRST_COMPLETED, Future, wait

        pending: set[Future[_Result]] = set()
        for job in jobs:
            pending.add(self.pool.submit(_run_job, job))
            if len(pending) >= 2 * self.workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()

    def _run_dask(self, jobs: Iterable[_Job]) -> Iterable[_Result]:
        distributed: Any = importlib.import_module("distributed")
        # Our own client's loop: this client is not the process-wide default.
        queue = distributed.as_completed(loop=self.client.loop)
        in_flight = 0
        for job in jobs:
            # The job carries its objects' bytes: workers need no access to our files.
            [data] = self.client.scatter([job], hash=False)
            queue.add(self.client.submit(_run_job, data, pure=False, key=f"tile-r{job.key}"))
            in_flight += 1
            if in_flight >= 2 * self.workers:
                in_flight -= 1
                yield next(queue).result()
        for fut in queue:
            yield fut.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        if self.client is not None:
            self.client.close()


def _is_sequence(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            first = fh.readline(1 << 20)
            second = fh.readline(1 << 20)
    except OSError as exc:
        raise SceneError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not second.strip():
        return False
    try:
        head = orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return isinstance(head, dict) and head.get("type") == "CityJSON"


def write_tileset(
    sources: Iterable[CityModel | str | Path],
    out_dir: str | Path,
    *,
    max_features: int = 2000,
    progress: ProgressFn | None = None,
    scan_progress: ProgressFn | None = None,
    workers: int | None = None,
    dask: str | None = None,
    quantize: bool = True,
    lod: str | None = None,
    keep: list[TilesetPlan] | None = None,
) -> TilesetStats:
    """Write a 3D Tiles 1.1 tileset (``tileset.json`` + ``tiles/*.glb``) of cities.

    Files are streamed: a CityJSONSeq is scanned line by line (per object only its place
    is kept) and each tile's job reads its objects' lines back, so memory is bounded by
    the tile size (``max_features``), not the city; a CityJSON document is first
    converted to a sequence in a temporary folder, streamed with ijson.

    Args:
        sources: CityJSON / CityJSONSeq files, or in-memory models, each in its own
            source CRS (all meet in ECEF).
        out_dir: the output folder (created; existing tiles of the same names replaced).
        max_features: the most objects a leaf tile holds (a parent draws a quarter as many).
        progress: called as ``progress(tiles_done, tiles_total)`` while tiles are built.
        scan_progress: called as ``progress(bytes_read, bytes_total)`` per file scanned.
        workers: tile jobs in parallel on this machine's cores (a process pool); ``None``
            means all cores for files and in-process for in-memory models only; 0 or 1
            builds in this process.
        dask: a Dask scheduler address (``tcp://host:8786``): the same jobs run there.
        quantize: KHR_mesh_quantization positions and normals (smaller tiles).
        lod: the LoD to draw (as for :func:`ingest.cityjson.load_cityjson`).
        keep: if given, the tileset's plan is appended to it (for :func:`write_overlay`).

    Returns:
        Statistics of the tileset.

    Raises:
        SceneError: a city without a known CRS, nothing to draw, an unreadable source,
            or the output cannot be written.
    """
    out = Path(out_dir)
    writer = _Writer(out, max_features, progress, quantize, lod)
    tmp_dir: Path | None = None
    runner: _Runner | None = None
    files: dict[int, Any] = {}
    try:
        if dask is not None:
            runner = _Runner(0, dask)  # a wrong address fails before a long scan
        for source in sources:
            if isinstance(source, CityModel):
                writer.add(source)
                continue
            path = Path(source)
            if not _is_sequence(path):
                from ingest.cityjsonseq import write_sequence

                if tmp_dir is None:
                    tmp_dir = Path(tempfile.mkdtemp(prefix="citytwin-seq-"))
                seq_path = tmp_dir / f"{len(writer.seqs)}.city.jsonl"
                write_sequence(path, seq_path)
                path = seq_path
            writer.add_sequence(path, scan_progress)
        root, nodes, _, diag = writer.plan()
        writer.seen = set()  # ids were for duplicate checks while scanning only
        if workers is None:
            workers = (os.cpu_count() or 1) if writer.seqs else 0
        if runner is None:
            runner = _Runner(workers, None)
        content = writer.build(nodes, runner, files)
        writer.regions(root, content)
        st = writer.stats
        st.tiles = len(nodes)
        st.depth = max(nd.depth for nd in nodes)
        if writer.dropped:
            st.warnings.append(
                f"{writer.dropped} degenerate surfaces (zero area) dropped over all tiles"
            )
        _write_json(writer, root, diag)
    except OSError as exc:
        raise SceneError(f"{out}: cannot write the tileset ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(writer.stage, ignore_errors=True)
        for f in files.values():
            f.close()
        if runner is not None:
            runner.close()
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    if keep is not None:
        keep.append(TilesetPlan(writer, root, diag))
    return writer.stats


def _write_json(writer: _Writer, root: _Node, diag: float) -> None:
    root_error = root.error if root.children else max(diag / 8.0, 1.0)
    tileset = {
        "asset": {"version": "1.1", "extras": {"generator": "CityTwin"}},
        "geometricError": max(2.0 * root_error, diag),
        "root": writer.json(root, None),
    }
    data = orjson.dumps(tileset, option=orjson.OPT_INDENT_2)
    out, stage = writer.out, writer.stage
    (stage / "tiles").mkdir(parents=True, exist_ok=True)
    (stage / "tileset.json").write_bytes(data)
    if (out / "tiles").exists():
        os.replace(out / "tiles", stage / "old-tiles")
    os.replace(stage / "tiles", out / "tiles")
    os.replace(stage / "tileset.json", out / "tileset.json")
    shutil.rmtree(stage, ignore_errors=True)
    writer.stats.bytes += len(data)


@dataclass
class TilesetPlan:
    """A written tileset's tree and per-object records, kept to overlay proposals on it."""

    writer: _Writer
    root: _Node
    diag: float


def _descend(root: _Node, x: float, y: float) -> _Node:
    """The leaf whose quadrant holds (x, y), or the nearest one where none does."""
    node = root
    while node.children:
        inside = [
            c for c in node.children if c.box[0] <= x <= c.box[2] and c.box[1] <= y <= c.box[3]
        ]
        if inside:
            node = inside[0]
            continue
        node = min(
            node.children,
            key=lambda c: (
                ((c.box[0] + c.box[2]) / 2 - x) ** 2 + ((c.box[1] + c.box[3]) / 2 - y) ** 2
            ),
        )
    return node


def write_overlay(
    base: TilesetPlan,
    models: Iterable[CityModel],
    hidden: Iterable[str],
    out_dir: str | Path,
    *,
    base_uri: str,
    quantize: bool = True,
) -> TilesetStats:
    """Write a proposal as an overlay of a base tileset: only the tiles it touches.

    The overlay's ``tileset.json`` has the base's tree (same tiles, frames and errors);
    tiles holding a hidden (removed or replaced) base object or a proposal object are
    re-tiled into ``out_dir/tiles``, with their ancestors (whose LoD1 blocks may change);
    every other tile's content points at the base's file (``base_uri`` + its path), so
    editing one building rebuilds one leaf and its ancestors, not the city.

    Args:
        base: the plan of the base tileset (:func:`write_tileset` with ``keep``).
        models: the proposal's own objects (added or replacing base ones).
        hidden: base object ids the proposal removes or replaces.
        out_dir: the overlay folder.
        base_uri: the base tileset folder relative to the overlay's (e.g. ``../base/``).
        quantize: as for :func:`write_tileset`.

    Returns:
        Statistics: ``tiles`` re-tiled, ``reused`` taken from the base.

    Raises:
        SceneError: the base was tiled from files (records without ids), or the
            proposal cannot be placed on the globe.
    """
    import copy

    bw = base.writer
    if bw.seqs:
        raise SceneError("a tileset streamed from files cannot take overlays; tile the store")
    out = Path(out_dir)
    ow = _Writer(out, bw.max_features, None, quantize, bw.lod)
    ow.parts = list(bw.parts)
    n_base = bw.xy.shape[0]
    for model in models:
        ow.add(model)
    hidden_ids = set(hidden)
    ids = [
        bw.parts[s].model.feature_ids[p]
        for s, p in zip(bw.src.tolist(), bw.pos.tolist(), strict=True)
    ]
    gone = np.array([oid in hidden_ids for oid in ids], dtype=bool)
    new = (
        (
            np.concatenate(ow.f_src),
            np.concatenate(ow.f_pos),
            np.concatenate(ow.f_len),
            np.concatenate(ow.f_xy),
            np.concatenate(ow.f_lo),
            np.concatenate(ow.f_hi),
            np.concatenate(ow.f_weight),
        )
        if ow.f_src
        else None
    )
    arrays: list[Any] = [bw.src, bw.pos, bw.len, bw.xy, bw.lo, bw.hi, bw.weight]
    if new is not None:
        arrays = [np.concatenate([a, b]) for a, b in zip(arrays, new, strict=True)]
    ow.src, ow.pos, ow.len, ow.xy, ow.lo, ow.hi, ow.weight = arrays
    root = copy.deepcopy(base.root)
    nodes: list[_Node] = []
    parent: dict[str, _Node] = {}
    stack = [root]
    while stack:
        nd = stack.pop()
        nodes.append(nd)
        for c in nd.children:
            parent[c.key] = nd
        stack.extend(nd.children)
    touched: set[str] = set()
    if gone.any():
        for nd in nodes:
            if not nd.children and gone[nd.feats].any():
                touched.add(nd.key)
    by_key = {nd.key: nd for nd in nodes}
    added: dict[str, list[int]] = {}
    for i in range(n_base, ow.xy.shape[0]):
        leaf = _descend(root, float(ow.xy[i, 0]), float(ow.xy[i, 1]))
        added.setdefault(leaf.key, []).append(i)
        touched.add(leaf.key)
    for key in list(touched):
        k = key
        while k in parent:
            k = parent[k].key
            touched.add(k)
    keep = ~np.concatenate([gone, np.zeros(ow.xy.shape[0] - n_base, dtype=bool)])
    for nd in nodes:
        extra = [i for k, v in added.items() if k.startswith(nd.key) for i in v]
        nd.feats = np.concatenate([nd.feats[keep[nd.feats]], np.array(extra, dtype=np.int64)])
        if nd.key in touched:
            nd.uri = f"tiles/r{nd.key}.glb"
            nd.lo = nd.hi = None
        else:
            nd.uri = f"{base_uri}tiles/r{nd.key}.glb"
    runner = _Runner(0, None)
    try:
        redo = [by_key[k] for k in sorted(touched)]
        content = ow.build(redo, runner, {}) if redo else {}
        ow.regions(root, content)
        ow.stats.objects = int(keep.sum())
        ow.stats.tiles = len(redo)
        ow.stats.reused = len(nodes) - len(redo)
        ow.stats.depth = max(nd.depth for nd in nodes)
        _write_json(ow, root, base.diag)
    except OSError as exc:
        raise SceneError(f"{out}: cannot write the overlay ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(ow.stage, ignore_errors=True)
        runner.close()
    return ow.stats


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


NETWORKS_URI = "tiles/networks.glb"


def _networks_tile(
    nets: list[Any], frame: F64, quantize: bool
) -> tuple[bytes, F64, F64, list[str]] | None:
    """One GLB of the networks (pipes, cables, roads) in the root's frame, with asset ids.

    Returns:
        (glb, region lo, region hi, warnings), or None when nothing is drawn.
    """
    from ingest.cityjson import parse_epsg

    builder = _builder("networks", quantize)
    warnings = []
    for net in nets:
        epsg = parse_epsg(net.crs)
        if epsg is None:
            warnings.append(f"network {net.id!r}: no known CRS; not in the tileset")
            continue
        to_ecef, _ = _cached_transformers(epsg)

        def place(src: F64, to_ecef: Any = to_ecef) -> F64:
            x, y, z = to_ecef.transform(src[:, 0], src[:, 1], src[:, 2])
            return _to_enu(np.column_stack([x, y, z]), frame)

        builder.add_network(net, place=place)
    if not builder.rows or not builder.groups:
        return None
    buf = io.BytesIO()
    stats = builder.write(buf)
    lo, hi = _content_region(builder, frame, getattr(stats, "max_position_error", 0.0))
    return buf.getvalue(), lo, hi, warnings + stats.warnings


def _with_networks(directory: Path, net_tile: dict[str, Any]) -> None:
    """Put a networks tile next to the city's tree under an ADD root (always drawn)."""
    doc = orjson.loads((directory / "tileset.json").read_bytes())
    old = doc["root"]
    a = old["boundingVolume"]["region"]
    b = net_tile["boundingVolume"]["region"]
    region = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
    region += [min(a[4], b[4]), max(a[5], b[5])]
    doc["root"] = {
        "boundingVolume": {"region": region},
        "geometricError": doc["geometricError"],
        "refine": "ADD",
        "children": [old, net_tile],
    }
    tmp = directory / ".tileset.json.part"
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.replace(tmp, directory / "tileset.json")


def _base_networks_tile(tileset: bytes, base_uri: str) -> dict[str, Any] | None:
    """The networks tile of a base tileset, its content URI relative to an overlay."""
    root = orjson.loads(tileset)["root"]
    for child in root.get("children", []) if root.get("refine") == "ADD" else []:
        if child.get("content", {}).get("uri") == NETWORKS_URI:
            tile = dict(child)
            tile["content"] = {"uri": base_uri + NETWORKS_URI}
            return tile
    return None


class TileCache:
    """Builds a scenario's tileset from its stored CityJSON sources when they change.

    A proposal scenario is written as an overlay of its base's tileset (see
    :func:`write_overlay`): only the tiles its objects touch are re-tiled. A prebuilt
    tileset folder (``twin tiles``, e.g. a whole city streamed from files) can stand in for
    the base scenario.
    """

    def __init__(
        self, store: StateStore, *, max_features: int = 2000, prebuilt: Path | None = None
    ) -> None:
        self.store = store
        self.max_features = max_features
        self.prebuilt = prebuilt
        self._lock = threading.RLock()
        self._cache: dict[str, BuiltTileset] = {}
        self._plans: dict[str, tuple[str, TilesetPlan]] = {}

    def _prebuilt(self) -> BuiltTileset:
        assert self.prebuilt is not None
        st = (self.prebuilt / "tileset.json").stat()
        key = f"{self.prebuilt.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        etag = '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'
        cached = self._cache.get("base")
        if cached is not None and cached.etag == etag:
            return cached
        built = built_tileset(self.prebuilt, etag)
        self._cache["base"] = built
        return built

    def get(self, scenario: str = "base") -> BuiltTileset:
        """The tileset of ``scenario``, built into a temporary folder once per source set.

        Raises:
            NotFound: the scenario has no city sources.
            SceneError: the city cannot be tiled (no CRS, nothing to draw).
        """
        from scene.proposal import scene_view
        from twin.network_index import NETWORK_SOURCE_PREFIX

        if scenario == "base" and self.prebuilt is not None:
            return self._prebuilt()
        infos = [
            i for i in self.store.sources(scenario) if not i.name.startswith(NETWORK_SOURCE_PREFIX)
        ]
        if not infos:
            raise NotFound(f"scenario {scenario!r} has no city to tile (nothing ingested)")
        view = scene_view(self.store, scenario, [i.name for i in infos])
        overlay = view.base is not None and not (view.base == "base" and self.prebuilt)
        key = "|".join(f"{i.name}:{i.sha256}" for i in infos)
        if overlay:
            # An overlay points at its base's tiles: a new base is a new overlay.
            key += "|" + self.get(str(view.base)).etag
        etag = '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'
        cached = self._cache.get(scenario)
        if cached is not None and cached.etag == etag:
            return cached
        with self._lock:
            cached = self._cache.get(scenario)
            if cached is not None and cached.etag == etag:
                return cached
            directory = Path(tempfile.mkdtemp(prefix="citytwin-tiles-"))
            try:
                if overlay:
                    self._overlay(scenario, view, directory)
                else:
                    self._full(scenario, infos, view, directory, etag)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            built = built_tileset(directory, etag)
            self._cache[scenario] = built
            if cached is not None:
                shutil.rmtree(cached.directory, ignore_errors=True)
            return built

    def _full(self, scenario: str, infos: list[Any], view: Any, directory: Path, etag: str) -> None:
        from scene.proposal import scenario_models
        from twin.network_index import NetworkIndex

        models = scenario_models(
            self.store, scenario, names=[i.name for i in infos], view=view, wgs84=False
        )
        plans: list[TilesetPlan] = []
        # A big city is tiled on all cores (jobs carry compact copies of their objects).
        n = sum(len(m.feature_ids) for m in models)
        workers = (os.cpu_count() or 1) if n >= POOL_FROM else 0
        write_tileset(
            models, directory, max_features=self.max_features, workers=workers, keep=plans
        )
        self._plans[scenario] = (etag, plans[0])
        nets = NetworkIndex(self.store).all(scenario)
        if nets:
            frame = plans[0].root.frame
            assert frame is not None
            drawn = _networks_tile(nets, frame, quantize=True)
            if drawn is not None:
                glb, lo, hi, _ = drawn
                (directory / NETWORKS_URI).write_bytes(glb)
                pad = np.array([_PAD_RAD, _PAD_RAD, _PAD_H])
                lo, hi = lo - pad, hi + pad
                _with_networks(
                    directory,
                    {
                        "boundingVolume": {
                            "region": [
                                float(v) for v in (lo[0], lo[1], hi[0], hi[1], lo[2], hi[2])
                            ],
                        },
                        "geometricError": 0.0,
                        "refine": "REPLACE",
                        "transform": [float(v) for v in frame.flatten(order="F")],
                        "content": {"uri": NETWORKS_URI},
                    },
                )

    def _overlay(self, scenario: str, view: Any, directory: Path) -> None:
        """A proposal: re-tile only what it touches, over its base's tileset."""
        from urllib.parse import quote

        from scene.proposal import PROPOSAL_SOURCE, scenario_models

        base = view.base
        base_built = self.get(base)
        plan = self._plans.get(base)
        if plan is None or plan[0] != base_built.etag:
            raise SceneError(f"scenario {base!r}: its tileset plan is gone; rebuild it")
        models = scenario_models(
            self.store, scenario, names=[PROPOSAL_SOURCE], view=view, wgs84=False
        )
        base_uri = f"../{quote(base, safe='')}/"
        write_overlay(plan[1], models, view.hidden, directory, base_uri=base_uri)
        net_tile = _base_networks_tile(base_built.tileset, base_uri)
        if net_tile is not None:
            _with_networks(directory, net_tile)

    def close(self) -> None:
        """Remove every built tileset folder (never a prebuilt one)."""
        with self._lock:
            for scenario, built in self._cache.items():
                if not (scenario == "base" and self.prebuilt is not None):
                    shutil.rmtree(built.directory, ignore_errors=True)
            self._cache.clear()
            self._plans.clear()

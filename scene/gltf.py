"""Write a city model as one pickable GLB (glTF 2.0 binary) with pygltflib.

Layout (glTF 2.0 §3): one node, one mesh, one primitive per material, so a city is a
handful of draw calls, not one node per object. Positions are float32 in a local frame
(Y up, metres, origin at the model centre; the offset and CRS are in
``asset.extras.citytwin``) so there is no float32 jitter. Every vertex carries its
object's feature id (``_FEATURE_ID_0``, EXT_mesh_features) and the property table
(EXT_structural_metadata) maps feature id -> CityJSON id, type, parent, LoD, height and
a few key attributes. Vertices are shared within a surface (flat shading per surface),
not duplicated per triangle corner.

With ``GlbBuilder(..., quantize=True)`` (3D Tiles tile contents) the vertex data is
quantized (KHR_mesh_quantization): POSITION as normalized UNSIGNED_SHORT in one box
over the whole GLB, dequantized by the node's translation and uniform scale; NORMAL as
normalized BYTE. That is 16 instead of 28 bytes per vertex, at a position error of at
most half a quantization step (``SceneStats.max_position_error``: the box's largest
extent / 65535 / 2, about 4 mm for a 500 m tile) and a normal error below 0.4 degrees.
"""

from __future__ import annotations

import io
import os
import re
import struct
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import orjson

from scene.triangulate import triangulate
from twin.errors import SceneError
from twin.geometry import CityModel
from twin.network import Network, ToWgs84
from twin.perf import gc_paused

__all__ = [
    "GLB_AXES",
    "GlbBuilder",
    "SceneStats",
    "model_to_glb",
    "write_glb",
    "write_glb_stream",
]

# Source (x east, y north, z up) -> glTF (x right, y up, z toward the viewer): a proper
# rotation (det = +1), so triangle winding and outward normals are preserved.
GLB_AXES = "gltf.x = east, gltf.y = up, gltf.z = -north (metres from origin)"

POINTS, LINES, TRIANGLES = 0, 1, 4
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_FLOAT = 5126
_BYTE = 5120
_UNSIGNED_SHORT = 5123
_UNSIGNED_INT = 5125

# Colours per semantic surface type (CityJSON 2.0 §5.6), linear RGB.
SEMANTIC_COLORS: dict[str, tuple[float, float, float]] = {
    "RoofSurface": (0.62, 0.18, 0.12),
    "WallSurface": (0.86, 0.83, 0.77),
    "GroundSurface": (0.25, 0.25, 0.25),
    "ClosureSurface": (0.6, 0.6, 0.65),
    "OuterCeilingSurface": (0.7, 0.7, 0.7),
    "OuterFloorSurface": (0.55, 0.55, 0.55),
    "Window": (0.25, 0.45, 0.75),
    "Door": (0.45, 0.28, 0.15),
    "InteriorWallSurface": (0.9, 0.9, 0.85),
    "CeilingSurface": (0.85, 0.85, 0.85),
    "FloorSurface": (0.5, 0.45, 0.4),
    "WaterSurface": (0.15, 0.35, 0.65),
    "WaterGroundSurface": (0.2, 0.25, 0.35),
    "WaterClosureSurface": (0.3, 0.45, 0.7),
    "TrafficArea": (0.3, 0.3, 0.32),
    "AuxiliaryTrafficArea": (0.45, 0.5, 0.4),
    "TransportationMarking": (0.95, 0.95, 0.9),
    "TransportationHole": (0.2, 0.2, 0.2),
}
# Colours per CityObject type for surfaces without semantics or material.
TYPE_COLORS: dict[str, tuple[float, float, float]] = {
    "Building": (0.85, 0.8, 0.72),
    "BuildingPart": (0.85, 0.8, 0.72),
    "BuildingInstallation": (0.7, 0.68, 0.62),
    "Road": (0.35, 0.35, 0.37),
    "Railway": (0.4, 0.35, 0.3),
    "TransportSquare": (0.45, 0.45, 0.45),
    "WaterBody": (0.2, 0.4, 0.7),
    "Waterway": (0.2, 0.4, 0.7),
    "PlantCover": (0.3, 0.55, 0.25),
    "SolitaryVegetationObject": (0.25, 0.5, 0.2),
    "LandUse": (0.6, 0.68, 0.45),
    "TINRelief": (0.65, 0.6, 0.5),
    "Bridge": (0.6, 0.6, 0.62),
    "BridgePart": (0.6, 0.6, 0.62),
    "Tunnel": (0.5, 0.5, 0.5),
    "CityFurniture": (0.55, 0.4, 0.3),
    "GenericCityObject": (0.7, 0.7, 0.75),
}
_DEFAULT_COLOR = (0.75, 0.75, 0.75)
# Attributes carried into the property table when present (common in CityJSON data).
KEY_ATTRIBUTES = (
    "name",
    "function",
    "usage",
    "class",
    "yearOfConstruction",
    "measuredHeight",
    "storeysAboveGround",
    "roofType",
    "status",
)
_PROP_NAME = re.compile(r"[^A-Za-z0-9_]")
_EPSG_CODE = re.compile(r"EPSG(?::+|/0/|/)(\d+)$", re.IGNORECASE)


@dataclass
class SceneStats:
    """What went into a GLB."""

    features: int = 0
    triangles: int = 0
    vertices: int = 0
    primitives: int = 0
    points: int = 0
    line_segments: int = 0
    dropped_surfaces: int = 0
    flipped_shells: int = 0
    bytes: int = 0
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    warnings: list[str] = field(default_factory=list)
    # Largest distance (metres, per axis) a quantized position can be from its float32
    # value: half a step of the 16-bit grid, extent / 65535 / 2. 0 without quantization.
    max_position_error: float = 0.0


@dataclass
class _Group:
    """Everything that becomes one glTF primitive, accumulated over model chunks."""

    name: str
    mode: int
    color: tuple[float, float, float]
    alpha: float = 1.0
    roughness: float = 0.9
    emissive: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pos: list[npt.NDArray[np.float32]] = field(default_factory=list)
    nrm: list[npt.NDArray[np.float32]] = field(default_factory=list)
    fid: list[npt.NDArray[np.float32]] = field(default_factory=list)
    idx: list[npt.NDArray[np.int64]] = field(default_factory=list)
    nverts: int = 0
    nidx: int = 0
    lo: npt.NDArray[np.float32] | None = None
    hi: npt.NDArray[np.float32] | None = None

    def add(
        self,
        pos: npt.NDArray[np.float32],
        nrm: npt.NDArray[np.float32] | None,
        fid: npt.NDArray[np.int64],
        idx: npt.NDArray[np.int64] | None,
    ) -> None:
        if idx is not None:
            # Indices are stored local to their part; the part's vertex offset is
            # added when the BIN chunk is written.
            self.idx.append(idx.astype(np.int64) + self.nverts)
            self.nidx += int(idx.size)
        self.pos.append(pos)
        if nrm is not None:
            self.nrm.append(nrm)
        self.fid.append(fid.astype(np.float32))
        self.nverts += int(pos.shape[0])
        lo, hi = pos.min(axis=0), pos.max(axis=0)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)


@dataclass
class _Row:
    """One property-table row (one feature)."""

    id: str
    type: str
    parent: str
    lod: str
    height: float | None
    footprint: float | None
    attrs: dict[str, Any]


class GlbBuilder:
    """Accumulates city models (whole, or chunks of a stream) into one GLB.

    Only compact float32/int arrays per material are kept, never the parsed JSON, so a
    streamed CityJSONSeq city needs memory for its output, not its input.

    Args:
        name: the scene name (node name and ``asset.extras.citytwin.source``).
        origin: the local frame's origin in the source CRS; by default the centre of the
            first model's bounding box at its lowest height.
        quantize: write KHR_mesh_quantization (16-bit positions, 8-bit normals) instead
            of float32; the default keeps the float32 layout that the viewer's own GLB
            reader expects. ``groups[...].lo/hi`` stay the float32 local bounds either
            way; every quantized position is within ``stats.max_position_error`` (per
            axis) of its float32 value, so the written content lies in those bounds
            widened by that error (rounding can carry a top vertex up by half a step).
    """

    def __init__(
        self,
        name: str = "city",
        origin: Sequence[float] | None = None,
        *,
        quantize: bool = False,
    ) -> None:
        self.name = name
        self.quantize = quantize
        self.origin = np.asarray(origin, dtype=np.float64) if origin is not None else None
        self.groups: dict[str, _Group] = {}
        self.rows: list[_Row] = []
        self.stats = SceneStats()
        if self.origin is not None:
            # A given origin (e.g. a proposal drawn in its base's frame) is the scene's.
            self.stats.origin = (
                float(self.origin[0]),
                float(self.origin[1]),
                float(self.origin[2]),
            )
        self.crs: str | None = None
        self.epsg: int | None = None
        self.version = ""
        self.lods: set[str] = set()
        self.n_objects = 0

    def add(self, model: CityModel) -> None:
        """Triangulate one model (or chunk) and append its geometry and rows."""
        self.n_objects += len(model.twin)
        self.crs = self.crs or model.crs
        self.epsg = self.epsg or model.epsg
        self.version = self.version or model.version
        self.lods.update(model.lods)
        n_feat = len(model.feature_ids)
        if n_feat == 0:
            return
        if self.origin is None:
            bbox = model.bbox()
            assert bbox is not None
            self.origin = np.array([(bbox[0] + bbox[3]) / 2, (bbox[1] + bbox[4]) / 2, bbox[2]])
            self.stats.origin = (
                float(self.origin[0]),
                float(self.origin[1]),
                float(self.origin[2]),
            )
        base = len(self.rows)
        tri = triangulate(model, origin=self.origin)
        self.stats.dropped_surfaces += tri.dropped
        self.stats.flipped_shells += tri.flipped_shells
        local = _to_gltf_axes(model.vertices - self.origin)
        used = np.concatenate(
            [model.ring_vertices, model.point_vertices, model.line_segments.reshape(-1)]
        )
        if used.size and not np.isfinite(local[used].astype(np.float32)).all():
            raise SceneError(
                f"{model.source}: coordinates too far from the scene origin for float32 "
                f"(origin {self.stats.origin}); check the file's transform"
            )
        normals = _to_gltf_axes(tri.surface_normals)
        nv = np.int64(model.vertices.shape[0])

        keys, specs = _surface_material_keys(model)
        # Collapse material keys that look the same before splitting (a file can have
        # thousands of materials with a handful of distinct looks).
        canon: dict[tuple[Any, ...], int] = {}
        remap = {
            k: canon.setdefault((sp.color, sp.alpha, sp.roughness, sp.emissive), k)
            for k, sp in specs.items()
        }
        if len(canon) < len(specs):
            src = np.fromiter(remap.keys(), dtype=np.int64)
            dst = np.fromiter(remap.values(), dtype=np.int64)
            order = np.argsort(src)
            keys = dst[order][np.searchsorted(src[order], keys)]
        if tri.triangles.size:
            tkey = keys[tri.tri_surface]
            order = np.argsort(tkey, kind="stable")
            cuts = np.flatnonzero(np.diff(tkey[order])) + 1
            for grp in np.split(order, cuts):
                t = tri.triangles[grp]
                ts = tri.tri_surface[grp]
                # One glTF vertex per (source vertex, surface): shared inside a flat
                # surface, never one per triangle corner.
                pair = np.repeat(ts, 3) * nv + t.reshape(-1)
                uniq, inverse = np.unique(pair, return_inverse=True)
                u_s, u_v = uniq // nv, uniq % nv
                spec = specs[int(tkey[grp[0]])]
                group = self._group(spec, TRIANGLES)
                group.add(
                    local[u_v].astype(np.float32),
                    normals[u_s].astype(np.float32),
                    model.surf_feature[u_s] + base,
                    inverse.reshape(-1),
                )
                self.stats.triangles += int(t.shape[0])
        if model.point_vertices.size:
            group = self._group(_Spec("points", (0.95, 0.6, 0.1)), POINTS)
            group.add(
                local[model.point_vertices].astype(np.float32),
                None,
                model.point_feature + base,
                None,
            )
            self.stats.points += int(model.point_vertices.size)
        if model.line_segments.size:
            group = self._group(_Spec("lines", (0.1, 0.1, 0.1)), LINES)
            group.add(
                local[model.line_segments.reshape(-1)].astype(np.float32),
                None,
                np.repeat(model.line_feature, 2) + base,
                None,
            )
            self.stats.line_segments += int(model.line_segments.shape[0])
        for oid in model.feature_ids:
            o = model.twin[oid]
            gs = o.geometry
            self.rows.append(
                _Row(
                    id=o.id,
                    type=o.type,
                    parent=o.parent or "",
                    lod=(gs.lod if gs else "") or "",
                    height=gs.height if gs else None,
                    footprint=gs.footprint_area if gs else None,
                    attrs={k: o.attributes[k] for k in KEY_ATTRIBUTES if k in o.attributes},
                )
            )

    def add_network(
        self,
        net: Network,
        to_wgs84: ToWgs84 | None = None,
        *,
        place: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]] | None = None,
    ) -> None:
        """Append a network's tubes, ribbons and node markers, one row per asset.

        The network shares the scene's local frame and feature-id scheme with the
        buildings: it must be in the same CRS (a different EPSG code is recorded as a
        warning, since e.g. EPSG:7415 and EPSG:28992 share their plan coordinates).

        Args:
            net: the network (see :func:`scene.network.network_mesh` for the geometry).
            to_wgs84: accepted for symmetry with :meth:`Network.to_objects`; the GLB
                stores only the local frame, so it is not used here.
            place: maps source-CRS coordinates (n, 3) to this GLB's local east-north-up
                metres (3D Tiles, where each tile has its own frame on the globe); the
                builder's origin is then not used. Normals keep the source grid's axes.

        Raises:
            SceneError: coordinates too far from the origin for float32.
        """
        from scene.network import network_mesh

        del to_wgs84  # the GLB keeps source-CRS coordinates (origin + local)
        bbox = net.bbox()
        if bbox is None:
            return
        self.n_objects += net.n_nodes + net.n_edges
        net_epsg = _epsg_of(net.crs)
        if self.crs is None:
            self.crs, self.epsg = net.crs, net_epsg
        elif net_epsg is not None and self.epsg is not None and net_epsg != self.epsg:
            self.stats.warnings.append(
                f"network {net.id!r} is in {net.crs}, the scene in EPSG:{self.epsg}"
            )
        if self.origin is None:
            self.origin = np.array([(bbox[0] + bbox[3]) / 2, (bbox[1] + bbox[4]) / 2, bbox[2]])
            self.stats.origin = (
                float(self.origin[0]),
                float(self.origin[1]),
                float(self.origin[2]),
            )
        mesh = network_mesh(net, np.zeros(3) if place is not None else self.origin)
        base = len(self.rows)
        for part in mesh.parts:
            if part.positions.size == 0:
                continue
            pos = place(part.positions) if place is not None else part.positions
            local = _to_gltf_axes(pos).astype(np.float32)
            if not np.isfinite(local).all():
                raise SceneError(
                    f"network {net.id!r}: coordinates too far from the scene origin for "
                    f"float32 (origin {self.stats.origin}); is it in the scene's CRS?"
                )
            spec = _Spec(f"network:{part.look}", part.color, roughness=part.roughness)
            group = self._group(spec, TRIANGLES)
            group.add(
                local,
                _to_gltf_axes(part.normals).astype(np.float32),
                part.feature + base,
                part.indices.reshape(-1).astype(np.int64),
            )
            self.stats.triangles += int(part.indices.shape[0])
        for asset in mesh.feature_ids:
            if net.is_edge(asset):
                d = net.edge(asset)[2]
                attrs = d["attributes"]
                size = attrs.get("diameter") or attrs.get("width")
            else:
                d = net.node(asset)
                attrs = d["attributes"]
                size = attrs.get("diameter")
            height = float(size) if isinstance(size, int | float) else None
            self.rows.append(
                _Row(
                    id=asset,
                    type=net.object_type(d["type"]),
                    parent="",
                    lod="",
                    height=height,
                    footprint=None,
                    attrs={k: attrs[k] for k in KEY_ATTRIBUTES if k in attrs},
                )
            )

    def _group(self, spec: _Spec, mode: int) -> _Group:
        # Grouped by look, not name: materials that render alike share a draw call and
        # same-named materials that differ stay apart.
        key = repr((mode, spec.color, spec.alpha, spec.roughness, spec.emissive))
        group = self.groups.get(key)
        if group is None:
            group = _Group(
                name=spec.name,
                mode=mode,
                color=spec.color,
                alpha=spec.alpha,
                roughness=spec.roughness,
                emissive=spec.emissive,
            )
            self.groups[key] = group
        return group

    def write(self, fh: BinaryIO) -> SceneStats:
        """Write the GLB to a binary file object.

        Raises:
            SceneError: nothing was drawable.
        """
        import pygltflib as g

        stats = self.stats
        stats.features = len(self.rows)
        if not self.rows or not self.groups:
            if stats.dropped_surfaces:
                raise SceneError(
                    f"{self.name}: nothing to draw: every surface is degenerate "
                    f"({stats.dropped_surfaces} dropped); no GLB written"
                )
            raise SceneError(
                f"{self.name}: nothing to draw: the model has no CityObject with geometry "
                f"({self.n_objects} objects); no GLB written"
            )
        if stats.dropped_surfaces:
            stats.warnings.append(
                f"{stats.dropped_surfaces} degenerate surfaces (zero area) dropped"
            )
        if stats.flipped_shells:
            stats.warnings.append(f"{stats.flipped_shells} inward-facing shells turned outward")

        layout = _Layout()
        accessors: list[Any] = []
        materials: list[Any] = []
        primitives: list[Any] = []

        def accessor(
            parts: list[Any],
            nbytes: int,
            count: int,
            ctype: int,
            atype: str,
            target: int,
            lo: Any = None,
            hi: Any = None,
            stride: int | None = None,
            normalized: bool = False,
        ) -> int:
            view = layout.add(parts, nbytes, target=target, stride=stride)
            acc = g.Accessor(bufferView=view, componentType=ctype, count=count, type=atype)
            if normalized:
                acc.normalized = True
            if lo is not None and hi is not None:
                acc.min = [x if isinstance(x, int) else float(x) for x in lo]
                acc.max = [x if isinstance(x, int) else float(x) for x in hi]
            accessors.append(acc)
            return len(accessors) - 1

        box = _QuantBox.around(self.groups.values()) if self.quantize else None
        for group in self.groups.values():
            n = group.nverts
            if box is None:
                attrs = g.Attributes(
                    POSITION=accessor(
                        group.pos, n * 12, n, _FLOAT, "VEC3", _ARRAY_BUFFER, group.lo, group.hi
                    )
                )
                if group.nrm:
                    attrs.NORMAL = accessor(group.nrm, n * 12, n, _FLOAT, "VEC3", _ARRAY_BUFFER)
            else:
                assert group.lo is not None and group.hi is not None
                # Quantization is monotonic per axis, so the quantized bounds are the
                # quantized float bounds: the min/max the validator finds in the data.
                attrs = g.Attributes(
                    POSITION=accessor(
                        [_QuantPos(part, box) for part in group.pos],
                        n * 8,
                        n,
                        _UNSIGNED_SHORT,
                        "VEC3",
                        _ARRAY_BUFFER,
                        box.quantize(group.lo[None, :])[0, :3].tolist(),
                        box.quantize(group.hi[None, :])[0, :3].tolist(),
                        stride=8,
                        normalized=True,
                    )
                )
                if group.nrm:
                    attrs.NORMAL = accessor(
                        [_QuantNormal(part) for part in group.nrm],
                        n * 4,
                        n,
                        _BYTE,
                        "VEC3",
                        _ARRAY_BUFFER,
                        stride=4,
                        normalized=True,
                    )
            # FLOAT feature ids: exact up to 2^24 features and 4-byte aligned without a
            # stride (glTF 2.0 §3.6.2.4: vertex attributes are aligned to 4 bytes).
            attrs._FEATURE_ID_0 = accessor(group.fid, n * 4, n, _FLOAT, "SCALAR", _ARRAY_BUFFER)
            prim = g.Primitive(
                attributes=attrs,
                mode=group.mode,
                material=len(materials),
                extensions={
                    "EXT_mesh_features": {
                        "featureIds": [
                            {
                                # Distinct features in this primitive (EXT_mesh_features).
                                "featureCount": int(np.unique(np.concatenate(group.fid)).size),
                                "attribute": 0,
                                "propertyTable": 0,
                            }
                        ]
                    }
                },
            )
            if group.idx:
                wide = n >= 65535
                dtype = np.uint32 if wide else np.uint16
                parts = [_Cast(part, dtype) for part in group.idx]
                prim.indices = accessor(
                    parts,
                    group.nidx * (4 if wide else 2),
                    group.nidx,
                    _UNSIGNED_INT if wide else _UNSIGNED_SHORT,
                    "SCALAR",
                    _ELEMENT_ARRAY_BUFFER,
                )
            materials.append(_material(g, group))
            primitives.append(prim)
            stats.vertices += n
        stats.primitives = len(primitives)

        metadata = _property_table(self.rows, layout)
        layout.total += (-layout.total) % 4  # BIN chunk length is a multiple of 4
        assert self.origin is not None
        node = g.Node(mesh=0, name=self.name)
        used = ["EXT_mesh_features", "EXT_structural_metadata"]
        required: list[str] = []
        if box is not None:
            # KHR_mesh_quantization: the node's transform maps the unit box of the
            # normalized positions back to the local frame (uniform scale: normals and
            # winding are unaffected).
            node.translation = box.lo.tolist()
            node.scale = [box.scale] * 3
            used.append("KHR_mesh_quantization")
            required.append("KHR_mesh_quantization")
            stats.max_position_error = box.scale / 65535 / 2
        gltf = g.GLTF2(
            asset=g.Asset(
                version="2.0",
                generator="CityTwin",
                extras={
                    "citytwin": {
                        "origin": list(stats.origin),
                        "crs": self.crs,
                        "epsg": self.epsg,
                        "axes": GLB_AXES,
                        "source": self.name,
                        "cityjsonVersion": self.version,
                        "featureCount": len(self.rows),
                        "lods": sorted(self.lods, key=_lod_key),
                    }
                },
            ),
            scene=0,
            scenes=[g.Scene(nodes=[0])],
            nodes=[node],
            meshes=[g.Mesh(primitives=primitives, name="city")],
            materials=materials,
            accessors=accessors,
            bufferViews=[g.BufferView(**v) for v in layout.views],
            buffers=[g.Buffer(byteLength=layout.total)],
            extensionsUsed=used,
            extensionsRequired=required,
            extensions={"EXT_structural_metadata": metadata},
        )
        # orjson, not pygltflib's json.dumps: the stdlib float encoder is process-global
        # and cjio replaces it with a 6-decimal one on import, which would round the
        # accessor min/max (a validator error). orjson writes shortest exact floats.
        js = orjson.dumps(g.delete_empty_keys(g.gltf_asdict(gltf)))
        js += b" " * ((-len(js)) % 4)
        total = 12 + 8 + len(js) + 8 + layout.total
        # GLB container (glTF 2.0 §4.4): header, JSON chunk, BIN chunk.
        fh.write(struct.pack("<III", 0x46546C67, 2, total))
        fh.write(struct.pack("<II", len(js), 0x4E4F534A))
        fh.write(js)
        fh.write(struct.pack("<II", layout.total, 0x004E4942))
        layout.write(fh)
        stats.bytes = total
        return stats


class _Cast:
    """A part written with a dtype conversion at write time (indices)."""

    def __init__(self, arr: npt.NDArray[Any], dtype: Any) -> None:
        self.arr = arr
        self.dtype = dtype

    def tobytes(self) -> bytes:
        return self.arr.astype(self.dtype).tobytes()


class _Layout:
    """Buffer views over parts that are written later, in order, with alignment."""

    def __init__(self) -> None:
        self.views: list[dict[str, Any]] = []
        self.pieces: list[tuple[int, list[Any]]] = []  # (padding before, parts)
        self.total = 0

    def add(
        self,
        parts: list[Any],
        nbytes: int,
        *,
        target: int | None = None,
        align: int = 4,
        stride: int | None = None,
    ) -> int:
        pad = (-self.total) % align
        self.total += pad
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self.total, "byteLength": nbytes}
        if stride is not None:
            view["byteStride"] = stride
        if target is not None:
            view["target"] = target
        self.views.append(view)
        self.pieces.append((pad, parts))
        self.total += nbytes
        return len(self.views) - 1

    def add_bytes(self, data: bytes, *, align: int = 8) -> int:
        return self.add([data], len(data), align=align)

    def write(self, fh: BinaryIO) -> None:
        written = 0
        for pad, parts in self.pieces:
            if pad:
                fh.write(b"\0" * pad)
                written += pad
            for part in parts:
                data = part if isinstance(part, bytes) else part.tobytes()
                fh.write(data)
                written += len(data)
        tail = self.total - written
        if tail:
            fh.write(b"\0" * tail)


@dataclass(frozen=True)
class _QuantBox:
    """The one quantization box of a GLB (KHR_mesh_quantization): local = lo + q * scale.

    ``q`` is the normalized UNSIGNED_SHORT value (stored integer / 65535). The scale is
    the box's largest extent on every axis: uniform, so normals need no correction for
    the node's scale and keep their 8-bit accuracy (a per-axis scale would skew them).
    """

    lo: npt.NDArray[np.float64]
    scale: float

    @classmethod
    def around(cls, groups: Iterable[_Group]) -> _QuantBox:
        los = [gr.lo for gr in groups if gr.lo is not None]
        his = [gr.hi for gr in groups if gr.hi is not None]
        lo = np.min(los, axis=0).astype(np.float64)
        extent = float((np.max(his, axis=0).astype(np.float64) - lo).max())
        # A single point (zero extent) still needs an invertible node transform.
        return cls(lo, extent if extent > 0.0 else 1.0)

    def quantize(self, pos: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
        """Positions (n, 3) -> (n, 4) uint16 rows; the 4th column pads to 8 bytes.

        glTF 2.0 §3.6.2.4: each vertex attribute element starts at a multiple of 4 bytes,
        so a 6-byte VEC3 is written with a byte stride of 8.
        """
        q = np.zeros((pos.shape[0], 4), dtype=np.uint16)
        unit = (pos.astype(np.float64) - self.lo) / self.scale
        q[:, :3] = np.clip(np.rint(unit * 65535.0), 0, 65535)
        return q


class _QuantPos:
    """A POSITION part quantized to UNSIGNED_SHORT at write time."""

    def __init__(self, arr: npt.NDArray[np.float32], box: _QuantBox) -> None:
        self.arr = arr
        self.box = box

    def tobytes(self) -> bytes:
        return self.box.quantize(self.arr).tobytes()


class _QuantNormal:
    """A NORMAL part quantized to normalized BYTE (+1 pad byte) at write time."""

    def __init__(self, arr: npt.NDArray[np.float32]) -> None:
        self.arr = arr

    def tobytes(self) -> bytes:
        out = np.zeros((self.arr.shape[0], 4), dtype=np.int8)
        step = 1 << 16  # bounds the (rows, 8, 3) candidate array
        for a in range(0, self.arr.shape[0], step):
            out[a : a + step, :3] = _quantize_normals(self.arr[a : a + step])
        return out.tobytes()


# The 8 ways to round a vector's three components down or up.
_CORNERS = np.array([[(i >> k) & 1 for k in range(3)] for i in range(8)], dtype=np.float64)
# glTF-Validator reports a NORMAL as not unit length past |length - 1| > 0.00674.
_UNIT_TOLERANCE = 0.005


def _quantize_normals(nrm: npt.NDArray[np.float32]) -> npt.NDArray[np.int8]:
    """Unit normals -> int8 triples (value / 127, glTF 2.0 §3.11) of unit length.

    Plain rounding can leave a decoded length up to ~0.0068 off 1, past the validator's
    tolerance; of the 8 floor/ceil roundings the closest in direction whose length is
    within ``_UNIT_TOLERANCE`` is kept (there always was one for 10^6 random unit
    vectors; the angle error stays below 0.4 degrees).
    """
    n = nrm.astype(np.float64)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, length, out=np.zeros_like(n), where=length > 0)
    cand = np.clip(np.floor(n * 127.0)[:, None, :] + _CORNERS[None], -127.0, 127.0)
    clen = np.linalg.norm(cand, axis=2)
    off = np.abs(clen / 127.0 - 1.0)
    cos = np.einsum("nkc,nc->nk", cand, n) / np.maximum(clen, 1e-12)
    score = np.where(off < _UNIT_TOLERANCE, 1.0 - cos, 10.0 + off)
    best = np.argmin(score, axis=1)
    out: npt.NDArray[np.int8] = cand[np.arange(n.shape[0]), best].astype(np.int8)
    return out


def _to_gltf_axes(xyz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.column_stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]])


def _epsg_of(crs: str | None) -> int | None:
    m = _EPSG_CODE.search(crs.strip()) if crs else None
    return int(m.group(1)) if m else None


def _lod_key(lod: str) -> float:
    try:
        return float(lod)
    except ValueError:
        return -1.0


def model_to_glb(model: CityModel) -> tuple[bytes, SceneStats]:
    """Build the GLB bytes of a model.

    Args:
        model: the city model (its chosen LoD is what gets drawn).

    Returns:
        The GLB bytes and statistics.

    Raises:
        SceneError: the model has nothing to draw.
    """
    builder = GlbBuilder(Path(model.source).name)
    builder.add(model)
    buf = io.BytesIO()
    stats = builder.write(buf)
    return buf.getvalue(), stats


def write_glb(model: CityModel, path: str | Path) -> SceneStats:
    """Write the model's GLB to ``path`` atomically (no partial file on failure).

    Raises:
        SceneError: nothing to draw, or the file cannot be written.
    """
    return write_glb_stream([model], path, name=Path(model.source).name)


def write_glb_stream(
    models: Iterable[CityModel], path: str | Path, *, name: str | None = None
) -> SceneStats:
    """Write one GLB from a stream of models (chunks of one city), atomically.

    Args:
        models: the chunks, e.g. from :func:`ingest.cityjson.iter_cityjson`.
        path: output file; written to a temporary file first, renamed when complete.
        name: the scene name (defaults to the output file stem).

    Returns:
        Statistics of the written scene.

    Raises:
        SceneError: nothing to draw, or the file cannot be written.
    """
    out = Path(path)
    builder = GlbBuilder(name or out.stem)
    for model in models:
        with gc_paused():
            builder.add(model)
    tmp: str | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
        with os.fdopen(fd, "wb") as fh:
            stats = builder.write(fh)
        # mkstemp makes the file private (0600); give it the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
        tmp = None
    except OSError as exc:
        raise SceneError(f"{out}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return stats


@dataclass(frozen=True)
class _Spec:
    """Look of one material group."""

    name: str
    color: tuple[float, float, float]
    alpha: float = 1.0
    roughness: float = 0.9
    emissive: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _surface_material_keys(model: CityModel) -> tuple[npt.NDArray[np.int64], dict[int, _Spec]]:
    """A material key per surface: CityJSON material, else semantic type, else object type.

    Keys: material i -> i; semantic s -> 1_000_000 + s; object type t -> 2_000_000 + t.
    """
    specs: dict[int, _Spec] = {}
    keys = np.empty(model.n_surfaces, dtype=np.int64)
    types = sorted({model.twin[f].type for f in model.feature_ids})
    type_code = {t: i for i, t in enumerate(types)}
    feat_type = np.array([type_code[model.twin[f].type] for f in model.feature_ids])
    has_mat = model.surf_material >= 0
    has_sem = (model.surf_semantic >= 0) & ~has_mat
    rest = ~has_mat & ~has_sem
    keys[has_mat] = model.surf_material[has_mat]
    keys[has_sem] = 1_000_000 + model.surf_semantic[has_sem]
    keys[rest] = 2_000_000 + feat_type[model.surf_feature[rest]]
    for k in np.unique(keys).tolist():
        if k < 1_000_000:
            # CityJSON material (X3D) -> glTF PBR metallic-roughness (glTF 2.0 §3.9.2).
            m = model.materials[k]
            specs[k] = _Spec(
                f"material:{m.name}",
                m.diffuse,
                alpha=1.0 - m.transparency,
                roughness=float(max(0.05, 1.0 - m.shininess)),
                emissive=m.emissive,
            )
        elif k < 2_000_000:
            st = model.semantic_types[k - 1_000_000]
            specs[k] = _Spec(f"semantic:{st}", SEMANTIC_COLORS.get(st, _DEFAULT_COLOR))
        else:
            ot = types[k - 2_000_000]
            specs[k] = _Spec(f"type:{ot}", TYPE_COLORS.get(ot, _DEFAULT_COLOR))
    return keys, specs


def _material(g: Any, group: _Group) -> Any:
    return g.Material(
        name=group.name,
        pbrMetallicRoughness=g.PbrMetallicRoughness(
            baseColorFactor=[*group.color, group.alpha],
            metallicFactor=0.0,
            roughnessFactor=group.roughness,
        ),
        emissiveFactor=list(group.emissive),
        doubleSided=group.mode == TRIANGLES,
        alphaMode="BLEND" if group.alpha < 1.0 else "OPAQUE",
    )


def _property_table(rows: list[_Row], layout: _Layout) -> dict[str, Any]:
    """EXT_structural_metadata schema + one property table, row = feature id."""
    columns: dict[str, tuple[str, list[Any]]] = {
        "id": ("STRING", [r.id for r in rows]),
        "type": ("STRING", [r.type for r in rows]),
        "parent": ("STRING", [r.parent for r in rows]),
        "lod": ("STRING", [r.lod for r in rows]),
        "height": ("FLOAT64", [r.height for r in rows]),
        "footprintArea": ("FLOAT64", [r.footprint for r in rows]),
    }
    for attr in KEY_ATTRIBUTES:
        vals = [r.attrs.get(attr) for r in rows]
        present = [v for v in vals if v is not None]
        if not present:
            continue
        name = "attr_" + _PROP_NAME.sub("_", attr)
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
        if numeric:
            columns[name] = ("FLOAT64", vals)
        else:
            columns[name] = ("STRING", ["" if v is None else str(v) for v in vals])

    class_props: dict[str, Any] = {}
    table_props: dict[str, Any] = {}
    no_data = -9999.0
    for name, (kind, vals) in columns.items():
        if kind == "STRING" and name != "id" and not any(vals):
            continue  # an all-empty column would need a zero-length bufferView
        if kind == "STRING":
            encoded = [str(v).encode("utf-8") for v in vals]
            offsets = np.zeros(len(encoded) + 1, dtype=np.uint32)
            np.cumsum([len(e) for e in encoded], out=offsets[1:])
            # Property-table buffer views are 8-byte aligned (EXT_structural_metadata).
            values_view = layout.add_bytes(b"".join(encoded))
            offsets_view = layout.add_bytes(offsets.tobytes())
            class_props[name] = {"type": "STRING"}
            if name == "id":
                class_props[name]["required"] = True
            table_props[name] = {
                "values": values_view,
                "stringOffsets": offsets_view,
                "stringOffsetType": "UINT32",
            }
        else:
            arr = np.array([no_data if v is None else float(v) for v in vals], dtype=np.float64)
            arr[~np.isfinite(arr)] = no_data
            values_view = layout.add_bytes(arr.tobytes())
            class_props[name] = {"type": "SCALAR", "componentType": "FLOAT64", "noData": no_data}
            table_props[name] = {"values": values_view}
    return {
        "schema": {
            "id": "citytwin",
            "classes": {"cityobject": {"name": "CityJSON CityObject", "properties": class_props}},
        },
        "propertyTables": [{"class": "cityobject", "count": len(rows), "properties": table_props}],
    }

"""Write a city model as one pickable GLB (glTF 2.0 binary) with pygltflib.

Layout (glTF 2.0 §3): one node, one mesh, one primitive per material, so a city is a
handful of draw calls, not one node per object. Positions are float32 in a local frame
(Y up, metres, origin at the model centre; the offset and CRS are in
``asset.extras.citytwin``) so there is no float32 jitter. Every vertex carries its
object's feature id (``_FEATURE_ID_0``, EXT_mesh_features) and the property table
(EXT_structural_metadata) maps feature id -> CityJSON id, type, parent, LoD, height and
a few key attributes. Vertices are shared within a surface (flat shading per surface),
not duplicated per triangle corner.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from scene.triangulate import triangulate
from twin.errors import SceneError
from twin.geometry import CityModel

__all__ = [
    "GLB_AXES",
    "SceneStats",
    "model_to_glb",
    "write_glb",
]

# Source (x east, y north, z up) -> glTF (x right, y up, z toward the viewer): a proper
# rotation (det = +1), so triangle winding and outward normals are preserved.
GLB_AXES = "gltf.x = east, gltf.y = up, gltf.z = -north (metres from origin)"

_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_FLOAT = 5126
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


class _Bin:
    """The GLB binary chunk, built from aligned pieces."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.views: list[dict[str, Any]] = []

    def add(self, data: bytes, *, target: int | None = None, align: int = 4) -> int:
        pad = (-self.size) % align
        if pad:
            self.parts.append(b"\0" * pad)
            self.size += pad
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self.size, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.parts.append(data)
        self.size += len(data)
        self.views.append(view)
        return len(self.views) - 1

    def blob(self) -> bytes:
        pad = (-self.size) % 4
        return b"".join(self.parts) + b"\0" * pad


def _to_gltf_axes(xyz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.column_stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]])


def model_to_glb(model: CityModel) -> tuple[bytes, SceneStats]:
    """Build the GLB bytes of a model.

    Args:
        model: the city model (its chosen LoD is what gets drawn).

    Returns:
        The GLB bytes and statistics.

    Raises:
        SceneError: the model has nothing to draw.
    """
    import pygltflib as g

    n_feat = len(model.feature_ids)
    if n_feat == 0:
        raise SceneError(
            f"{model.source}: nothing to draw: the model has no CityObject with geometry "
            f"({len(model.twin)} objects); no GLB written"
        )
    bbox = model.bbox()
    assert bbox is not None
    origin = np.array([(bbox[0] + bbox[3]) / 2, (bbox[1] + bbox[4]) / 2, bbox[2]])
    tri = triangulate(model, origin=origin)
    stats = SceneStats(
        features=n_feat,
        dropped_surfaces=tri.dropped,
        flipped_shells=tri.flipped_shells,
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
    )
    if tri.dropped:
        stats.warnings.append(f"{tri.dropped} degenerate surfaces (zero area) dropped")
    if tri.flipped_shells:
        stats.warnings.append(f"{tri.flipped_shells} inward-facing shells turned outward")
    local = _to_gltf_axes(model.vertices - origin)
    normals = _to_gltf_axes(tri.surface_normals)

    bin_ = _Bin()
    accessors: list[Any] = []
    materials: list[Any] = []
    primitives: list[Any] = []

    def accessor(
        data: npt.NDArray[Any], ctype: int, atype: str, *, target: int, minmax: bool = False
    ) -> int:
        view = bin_.add(np.ascontiguousarray(data).tobytes(), target=target)
        acc = g.Accessor(
            bufferView=view,
            componentType=ctype,
            count=int(data.shape[0]),
            type=atype,
        )
        if minmax:
            acc.min = data.min(axis=0).tolist() if data.ndim > 1 else [float(data.min())]
            acc.max = data.max(axis=0).tolist() if data.ndim > 1 else [float(data.max())]
        accessors.append(acc)
        return len(accessors) - 1

    def feature_attr(fids: npt.NDArray[np.int64]) -> int:
        # FLOAT feature ids: exact up to 2^24 features and 4-byte aligned without a
        # stride (glTF 2.0 §3.6.2.4 requires vertex attributes aligned to 4 bytes).
        return accessor(fids.astype(np.float32), _FLOAT, "SCALAR", target=_ARRAY_BUFFER)

    def mesh_features(fids: npt.NDArray[np.int64]) -> dict[str, Any]:
        return {
            "EXT_mesh_features": {
                "featureIds": [
                    {
                        "featureCount": int(np.unique(fids).size),
                        "attribute": 0,
                        "propertyTable": 0,
                    }
                ]
            }
        }

    # -- surfaces, batched by material ----------------------------------------------
    keys, names, colors = _surface_material_keys(model)
    if tri.triangles.size:
        tkey = keys[tri.tri_surface]
        order = np.argsort(tkey, kind="stable")
        tkey_sorted = tkey[order]
        cuts = np.flatnonzero(np.diff(tkey_sorted)) + 1
        for grp in np.split(order, cuts):
            key = int(tkey[grp[0]])
            t = tri.triangles[grp]
            ts = tri.tri_surface[grp]
            corner_v = t.reshape(-1)
            corner_s = np.repeat(ts, 3)
            # One glTF vertex per (source vertex, surface): shared inside a flat surface.
            pair = corner_s * np.int64(model.vertices.shape[0]) + corner_v
            uniq, inverse = np.unique(pair, return_inverse=True)
            u_s = uniq // model.vertices.shape[0]
            u_v = uniq % model.vertices.shape[0]
            pos = local[u_v].astype(np.float32)
            nrm = normals[u_s].astype(np.float32)
            fids = model.surf_feature[u_s]
            nverts = pos.shape[0]
            idx = inverse.reshape(-1).astype(np.uint16 if nverts < 65535 else np.uint32)
            a_pos = accessor(pos, _FLOAT, "VEC3", target=_ARRAY_BUFFER, minmax=True)
            a_nrm = accessor(nrm, _FLOAT, "VEC3", target=_ARRAY_BUFFER)
            a_fid = feature_attr(fids)
            a_idx = accessor(
                idx,
                _UNSIGNED_SHORT if idx.dtype == np.uint16 else _UNSIGNED_INT,
                "SCALAR",
                target=_ELEMENT_ARRAY_BUFFER,
            )
            attrs = g.Attributes(POSITION=a_pos, NORMAL=a_nrm)
            setattr(attrs, "_FEATURE_ID_0", a_fid)
            mat_index = _material(g, materials, names[key], colors[key], model, key)
            primitives.append(
                g.Primitive(
                    attributes=attrs,
                    indices=a_idx,
                    material=mat_index,
                    mode=g.TRIANGLES,
                    extensions=mesh_features(fids),
                )
            )
            stats.triangles += int(t.shape[0])
            stats.vertices += nverts

    # -- points and lines (CityJSON MultiPoint / MultiLineString) -------------------
    if model.point_vertices.size:
        pos = local[model.point_vertices].astype(np.float32)
        attrs = g.Attributes(
            POSITION=accessor(pos, _FLOAT, "VEC3", target=_ARRAY_BUFFER, minmax=True)
        )
        setattr(attrs, "_FEATURE_ID_0", feature_attr(model.point_feature))
        materials.append(_plain_material(g, "points", (0.95, 0.6, 0.1)))
        primitives.append(
            g.Primitive(
                attributes=attrs,
                material=len(materials) - 1,
                mode=g.POINTS,
                extensions=mesh_features(model.point_feature),
            )
        )
        stats.points = int(pos.shape[0])
        stats.vertices += int(pos.shape[0])
    if model.line_segments.size:
        corner_v = model.line_segments.reshape(-1)
        pos = local[corner_v].astype(np.float32)
        fids = np.repeat(model.line_feature, 2)
        attrs = g.Attributes(
            POSITION=accessor(pos, _FLOAT, "VEC3", target=_ARRAY_BUFFER, minmax=True)
        )
        setattr(attrs, "_FEATURE_ID_0", feature_attr(fids))
        materials.append(_plain_material(g, "lines", (0.1, 0.1, 0.1)))
        primitives.append(
            g.Primitive(
                attributes=attrs,
                material=len(materials) - 1,
                mode=g.LINES,
                extensions=mesh_features(fids),
            )
        )
        stats.line_segments = int(model.line_segments.shape[0])
        stats.vertices += int(pos.shape[0])

    if not primitives:
        raise SceneError(
            f"{model.source}: nothing to draw: every surface is degenerate "
            f"({tri.dropped} dropped); no GLB written"
        )

    metadata = _property_table(model, bin_)
    gltf = g.GLTF2(
        asset=g.Asset(
            version="2.0",
            generator="CityTwin",
            extras={
                "citytwin": {
                    "origin": list(stats.origin),
                    "crs": model.crs,
                    "epsg": model.epsg,
                    "axes": GLB_AXES,
                    "source": Path(model.source).name,
                    "cityjsonVersion": model.version,
                    "featureCount": n_feat,
                    "lods": model.lods,
                }
            },
        ),
        scene=0,
        scenes=[g.Scene(nodes=[0])],
        nodes=[g.Node(mesh=0, name=Path(model.source).stem or "city")],
        meshes=[g.Mesh(primitives=primitives, name="city")],
        materials=materials,
        accessors=accessors,
        buffers=[g.Buffer(byteLength=0)],
        extensionsUsed=["EXT_mesh_features", "EXT_structural_metadata"],
        extensions={"EXT_structural_metadata": metadata},
    )
    blob = bin_.blob()
    gltf.buffers[0].byteLength = len(blob)
    gltf.bufferViews = [g.BufferView(**v) for v in bin_.views]
    stats.primitives = len(primitives)
    data = _glb_bytes(gltf.to_json(separators=(",", ":")), blob)
    stats.bytes = len(data)
    return data, stats


def _glb_bytes(json_text: str, blob: bytes) -> bytes:
    """Assemble a GLB container (glTF 2.0 §4.4): header, JSON chunk, BIN chunk."""
    js = json_text.encode("utf-8")
    js += b" " * ((-len(js)) % 4)
    total = 12 + 8 + len(js) + 8 + len(blob)
    return b"".join(
        [
            struct.pack("<III", 0x46546C67, 2, total),
            struct.pack("<II", len(js), 0x4E4F534A),
            js,
            struct.pack("<II", len(blob), 0x004E4942),
            blob,
        ]
    )


def write_glb(model: CityModel, path: str | Path) -> SceneStats:
    """Write the model's GLB to ``path`` atomically (no partial file on failure).

    Args:
        model: the city model.
        path: output file.

    Returns:
        Statistics of the written scene.

    Raises:
        SceneError: nothing to draw, or the file cannot be written.
    """
    data, stats = model_to_glb(model)
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise SceneError(f"{out}: cannot write ({exc.strerror or exc})") from None
    return stats


def _surface_material_keys(
    model: CityModel,
) -> tuple[npt.NDArray[np.int64], dict[int, str], dict[int, tuple[float, float, float]]]:
    """A material key per surface: CityJSON material, else semantic type, else object type.

    Keys: material i -> i; semantic s -> 1_000_000 + s; object type t -> 2_000_000 + t.
    """
    names: dict[int, str] = {}
    colors: dict[int, tuple[float, float, float]] = {}
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
            m = model.materials[k]
            names[k] = f"material:{m.name}"
            colors[k] = m.diffuse
        elif k < 2_000_000:
            st = model.semantic_types[k - 1_000_000]
            names[k] = f"semantic:{st}"
            colors[k] = SEMANTIC_COLORS.get(st, _DEFAULT_COLOR)
        else:
            ot = types[k - 2_000_000]
            names[k] = f"type:{ot}"
            colors[k] = TYPE_COLORS.get(ot, _DEFAULT_COLOR)
    return keys, names, colors


def _material(
    g: Any,
    materials: list[Any],
    name: str,
    color: tuple[float, float, float],
    model: CityModel,
    key: int,
) -> int:
    alpha = 1.0
    metallic, rough = 0.0, 0.9
    emissive = [0.0, 0.0, 0.0]
    if key < 1_000_000:
        # CityJSON material (X3D) -> glTF PBR metallic-roughness (glTF 2.0 §3.9.2).
        m = model.materials[key]
        alpha = 1.0 - m.transparency
        rough = float(max(0.05, 1.0 - m.shininess))
        emissive = list(m.emissive)
    mat = g.Material(
        name=name,
        pbrMetallicRoughness=g.PbrMetallicRoughness(
            baseColorFactor=[*color, alpha], metallicFactor=metallic, roughnessFactor=rough
        ),
        emissiveFactor=emissive,
        doubleSided=True,
        alphaMode="BLEND" if alpha < 1.0 else "OPAQUE",
    )
    materials.append(mat)
    return len(materials) - 1


def _plain_material(g: Any, name: str, color: tuple[float, float, float]) -> Any:
    return g.Material(
        name=name,
        pbrMetallicRoughness=g.PbrMetallicRoughness(
            baseColorFactor=[*color, 1.0], metallicFactor=0.0, roughnessFactor=1.0
        ),
    )


def _property_table(model: CityModel, bin_: _Bin) -> dict[str, Any]:
    """EXT_structural_metadata schema + one property table, row = feature id."""
    objs = [model.twin[f] for f in model.feature_ids]
    columns: dict[str, tuple[str, list[Any]]] = {
        "id": ("STRING", [o.id for o in objs]),
        "type": ("STRING", [o.type for o in objs]),
        "parent": ("STRING", [o.parent or "" for o in objs]),
        "lod": ("STRING", [(o.geometry.lod if o.geometry else "") or "" for o in objs]),
        "height": ("FLOAT64", [o.geometry.height if o.geometry else None for o in objs]),
        "footprintArea": (
            "FLOAT64",
            [o.geometry.footprint_area if o.geometry else None for o in objs],
        ),
    }
    for attr in KEY_ATTRIBUTES:
        vals = [o.attributes.get(attr) for o in objs]
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
            values_view = bin_.add(b"".join(encoded), align=8)
            offsets_view = bin_.add(offsets.tobytes(), align=8)
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
            values_view = bin_.add(arr.tobytes(), align=8)
            class_props[name] = {"type": "SCALAR", "componentType": "FLOAT64", "noData": no_data}
            table_props[name] = {"values": values_view}
    return {
        "schema": {
            "id": "citytwin",
            "classes": {
                "cityobject": {
                    "name": "CityJSON CityObject",
                    "properties": class_props,
                }
            },
        },
        "propertyTables": [
            {"class": "cityobject", "count": len(objs), "properties": table_props}
        ],
    }


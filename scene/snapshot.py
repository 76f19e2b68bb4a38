"""Server-side PNG snapshots of a scenario's GLB from a camera, rendered off-screen by pyvista.

The GLB is read back with struct/numpy (glTF 2.0 §4.4 container, §3.6 accessors) and drawn
in its own local frame (Y up, metres from ``asset.extras.citytwin.origin``), so a camera
pose the browser viewer reports can be replayed here unchanged. VTK renders without an X
server through EGL or OSMesa (whichever its wheel was built with); highlighted objects are
drawn unlit in one flat colour so they stand out, and are easy to find in the image.
"""

from __future__ import annotations

import io
import json
import math
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from twin.errors import MissingExtra, SceneError

__all__ = [
    "HIGHLIGHT_COLOR",
    "MAX_SIZE",
    "Camera",
    "SceneFrame",
    "default_camera",
    "read_frame",
    "render_snapshot",
]

HIGHLIGHT_COLOR: tuple[int, int, int] = (255, 102, 0)
BACKGROUND_COLOR: tuple[int, int, int] = (255, 255, 255)
MAX_SIZE = 2048
_COMPONENTS = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
# VTK is not thread-safe and one process renders one frame at a time anyway.
_render_lock = threading.Lock()


@dataclass(frozen=True)
class Camera:
    """A perspective camera in the scene's glTF frame (x east, y up, z south; metres).

    Attributes:
        position: the eye.
        target: the point looked at.
        up: the up direction (glTF Y by default).
        fov: vertical field of view in degrees.
    """

    position: tuple[float, float, float]
    target: tuple[float, float, float]
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)
    fov: float = 45.0

    @classmethod
    def parse(cls, text: str) -> Camera:
        """Parse ``px,py,pz,tx,ty,tz[,fov]``.

        Args:
            text: six or seven comma-separated numbers.

        Returns:
            The camera.

        Raises:
            SceneError: not six or seven finite numbers, eye on the target, or a field of
                view outside (1, 170) degrees.
        """
        try:
            nums = [float(p) for p in text.split(",")]
        except ValueError:
            raise SceneError(f"camera {text[:80]!r} is not px,py,pz,tx,ty,tz[,fov]") from None
        if len(nums) not in (6, 7) or not all(math.isfinite(n) for n in nums):
            raise SceneError(f"camera {text[:80]!r} is not px,py,pz,tx,ty,tz[,fov]")
        cam = cls(
            (nums[0], nums[1], nums[2]),
            (nums[3], nums[4], nums[5]),
            fov=nums[6] if len(nums) == 7 else 45.0,
        )
        cam.check()
        return cam

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Camera:
        """Read ``{"position": [..], "target": [..], "up"?: [..], "fov"?: n}``.

        Raises:
            SceneError: missing or malformed members.
        """
        try:
            cam = cls(
                _vec3(d["position"]),
                _vec3(d["target"]),
                _vec3(d["up"]) if d.get("up") is not None else (0.0, 1.0, 0.0),
                float(d["fov"]) if d.get("fov") is not None else 45.0,
            )
        except (KeyError, TypeError, ValueError):
            raise SceneError("camera needs position [x,y,z] and target [x,y,z]") from None
        cam.check()
        return cam

    def check(self) -> None:
        """Raise :class:`SceneError` for a camera that cannot render."""
        nums = [*self.position, *self.target, *self.up, self.fov]
        if not all(math.isfinite(n) for n in nums):
            raise SceneError("camera values must be finite numbers")
        if not 1.0 < self.fov < 170.0:
            raise SceneError(f"camera fov {self.fov} outside (1, 170) degrees")
        if math.dist(self.position, self.target) < 1e-6:
            raise SceneError("camera position equals its target")

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "position": list(self.position),
            "target": list(self.target),
            "up": list(self.up),
            "fov": self.fov,
        }


def _vec3(v: Any) -> tuple[float, float, float]:
    x, y, z = (float(a) for a in v)
    return (x, y, z)


@dataclass(frozen=True)
class SceneFrame:
    """Where a GLB's local frame sits: origin and CRS from ``asset.extras.citytwin``."""

    origin: tuple[float, float, float]
    crs: str | None
    epsg: int | None

    def to_source(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Scene (glTF) coordinates to source-CRS coordinates (x east, y north, z up).

        Args:
            points: (N, 3) glTF-frame points.

        Returns:
            (N, 3) source-CRS points.
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        # Inverse of scene.gltf's axes: gltf (x, y, z) = (east, up, -north).
        out: npt.NDArray[np.float64] = np.column_stack([p[:, 0], -p[:, 2], p[:, 1]])
        return out + np.asarray(self.origin, dtype=np.float64)

    def to_wgs84(self, points: npt.ArrayLike) -> npt.NDArray[np.float64] | None:
        """Scene coordinates to (lon, lat, h) WGS84, or None when the CRS is unknown.

        Args:
            points: (N, 3) glTF-frame points.

        Returns:
            (N, 3) lon/lat/height, or None.
        """
        if self.epsg is None:
            return None
        from ingest.crs import to_wgs84

        out: npt.NDArray[np.float64] | None = to_wgs84(self.to_source(points), self.epsg)
        return out


@dataclass
class _Glb:
    doc: dict[str, Any]
    blob: bytes

    def accessor(self, index: int) -> npt.NDArray[Any]:
        acc = self.doc["accessors"][index]
        view = self.doc["bufferViews"][acc["bufferView"]]
        width = _WIDTH[acc["type"]]
        arr = np.frombuffer(
            self.blob,
            dtype=_COMPONENTS[acc["componentType"]],
            count=acc["count"] * width,
            offset=view.get("byteOffset", 0) + acc.get("byteOffset", 0),
        )
        return arr.reshape(-1, width) if width > 1 else arr

    def view(self, index: int) -> bytes:
        v = self.doc["bufferViews"][index]
        start = v.get("byteOffset", 0)
        return self.blob[start : start + v["byteLength"]]


def _read_glb(data: bytes) -> _Glb:
    """Split a GLB into its JSON and BIN chunks (glTF 2.0 §4.4)."""
    if len(data) < 20:
        raise SceneError("not a GLB: too short")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != 0x46546C67 or version != 2 or length != len(data):
        raise SceneError("not a glTF 2.0 GLB")
    jlen, _ = struct.unpack_from("<II", data, 12)
    doc = json.loads(data[20 : 20 + jlen])
    blob = b""
    if 20 + jlen + 8 <= len(data):
        blen, _ = struct.unpack_from("<II", data, 20 + jlen)
        blob = data[28 + jlen : 28 + jlen + blen]
    return _Glb(doc, blob)


def read_frame(glb: bytes) -> SceneFrame:
    """The local frame of a CityTwin GLB.

    Args:
        glb: the GLB bytes (from :class:`scene.service.SceneCache`).

    Returns:
        Origin (source CRS) and CRS.

    Raises:
        SceneError: not a GLB.
    """
    doc = _read_glb(glb).doc
    info = (doc.get("asset", {}).get("extras") or {}).get("citytwin") or {}
    origin = info.get("origin") or [0.0, 0.0, 0.0]
    epsg = info.get("epsg")
    return SceneFrame(
        (float(origin[0]), float(origin[1]), float(origin[2])),
        info.get("crs"),
        int(epsg) if isinstance(epsg, int) else None,
    )


def _feature_ids(g: _Glb) -> list[str]:
    """The ``id`` column of the EXT_structural_metadata property table (row = feature id)."""
    meta = (g.doc.get("extensions") or {}).get("EXT_structural_metadata") or {}
    tables = meta.get("propertyTables") or []
    if not tables:
        return []
    prop = tables[0]["properties"].get("id")
    if prop is None:
        return []
    values = g.view(prop["values"])
    offsets = np.frombuffer(g.view(prop["stringOffsets"]), dtype=np.uint32)
    return [values[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]


@dataclass
class _Part:
    positions: npt.NDArray[np.float32]
    cells: npt.NDArray[np.int64]  # (M, 3) triangles or (M, 2) segments
    feature: npt.NDArray[np.int64]  # per cell
    color: tuple[float, float, float]


def _parts(g: _Glb) -> list[_Part]:
    out: list[_Part] = []
    materials = g.doc.get("materials") or []
    for mesh in g.doc.get("meshes") or []:
        for prim in mesh["primitives"]:
            mode = prim.get("mode", 4)
            if mode not in (1, 4):
                continue  # points (node markers) are not drawn in snapshots
            attrs = prim["attributes"]
            pos = g.accessor(attrs["POSITION"]).astype(np.float32)
            if "indices" in prim:
                idx = g.accessor(prim["indices"]).astype(np.int64)
            else:
                idx = np.arange(pos.shape[0], dtype=np.int64)
            cells = idx.reshape(-1, 3 if mode == 4 else 2)
            if "_FEATURE_ID_0" in attrs:
                fid = g.accessor(attrs["_FEATURE_ID_0"]).astype(np.int64)
                feature = fid[cells[:, 0]]
            else:
                feature = np.full(cells.shape[0], -1, dtype=np.int64)
            color = (0.75, 0.75, 0.75)
            if prim.get("material") is not None and prim["material"] < len(materials):
                pbr = materials[prim["material"]].get("pbrMetallicRoughness") or {}
                c = pbr.get("baseColorFactor") or [0.75, 0.75, 0.75, 1.0]
                color = (float(c[0]), float(c[1]), float(c[2]))
            out.append(_Part(pos, cells, feature, color))
    return out


def _bounds(parts: Sequence[_Part]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    pts = [p.positions for p in parts if p.positions.size]
    if not pts:
        raise SceneError("nothing to draw in this scene")
    allp = np.concatenate(pts).astype(np.float64)
    return allp.min(axis=0), allp.max(axis=0)


def default_camera(glb: bytes, object_ids: Iterable[str] = ()) -> Camera:
    """A bird's-eye camera from the south-east that frames the scene (or some objects).

    Args:
        glb: the GLB.
        object_ids: frame these objects instead of the whole scene, when present.

    Returns:
        The camera.

    Raises:
        SceneError: not a GLB, or nothing to draw.
    """
    g = _read_glb(glb)
    parts = _parts(g)
    wanted = _feature_set(_feature_ids(g), object_ids)
    chosen = parts
    if wanted.size:
        chosen = []
        for p in parts:
            keep = np.isin(p.feature, wanted)
            if keep.any():
                chosen.append(
                    _Part(
                        p.positions[np.unique(p.cells[keep])], p.cells[:0], p.feature[:0], p.color
                    )
                )
        chosen = chosen or parts
    lo, hi = _bounds(chosen)
    center = (lo + hi) / 2.0
    radius = max(float(np.linalg.norm(hi - lo)) / 2.0, 1.0)
    dist = radius / math.tan(math.radians(45.0) / 2.0) * 1.1
    # East (+x), south (+z) and up (+y): a 45° azimuth, 35° above the horizon.
    d = np.array(
        [
            math.cos(math.radians(35)) * math.sin(math.radians(45)),
            math.sin(math.radians(35)),
            math.cos(math.radians(35)) * math.cos(math.radians(45)),
        ]
    )
    eye = center + d * dist
    return Camera(_vec3(eye), _vec3(center))


def _feature_set(ids: list[str], wanted: Iterable[str]) -> npt.NDArray[np.int64]:
    want = set(wanted)
    return np.array([i for i, oid in enumerate(ids) if oid in want], dtype=np.int64)


def render_snapshot(
    glb: bytes,
    camera: Camera,
    *,
    width: int = 800,
    height: int = 600,
    highlight: Iterable[str] = (),
    highlight_color: tuple[int, int, int] = HIGHLIGHT_COLOR,
) -> bytes:
    """Render a scene GLB from ``camera`` to a PNG, off-screen.

    Args:
        glb: the scene (:class:`scene.service.SceneCache` output).
        camera: the camera, in the GLB's local frame.
        width: image width in pixels (1..2048).
        height: image height in pixels (1..2048).
        highlight: object ids drawn unlit in ``highlight_color``.
        highlight_color: 8-bit RGB.

    Returns:
        PNG bytes of exactly ``width`` × ``height`` pixels, RGB.

    Raises:
        SceneError: a bad size or camera, not a GLB, or nothing to draw.
        MissingExtra: pyvista is not installed.
    """
    if not (1 <= width <= MAX_SIZE and 1 <= height <= MAX_SIZE):
        raise SceneError(f"snapshot size {width}x{height} outside 1..{MAX_SIZE} pixels")
    camera.check()
    try:
        import pyvista as pv
    except ImportError:  # pragma: no cover - pyvista is a core dependency
        raise MissingExtra("pyvista", "snapshot") from None
    from PIL import Image

    g = _read_glb(glb)
    parts = _parts(g)
    _bounds(parts)
    hl = _feature_set(_feature_ids(g), highlight)
    hl_rgb = tuple(c / 255.0 for c in highlight_color)
    with _render_lock:
        pv.OFF_SCREEN = True
        pl = pv.Plotter(off_screen=True, window_size=[width, height])
        try:
            pl.set_background([c / 255.0 for c in BACKGROUND_COLOR])  # type: ignore[arg-type]
            for p in parts:
                mark = np.isin(p.feature, hl) if hl.size else np.zeros(p.feature.size, bool)
                for sel, lit in ((~mark, True), (mark, False)):
                    if not sel.any():
                        continue
                    mesh = _polydata(pv, p.positions, p.cells[sel])
                    if lit:
                        pl.add_mesh(mesh, color=p.color, line_width=2, smooth_shading=False)
                    else:
                        pl.add_mesh(mesh, color=hl_rgb, lighting=False, line_width=3)
            pl.camera.position = camera.position
            pl.camera.focal_point = camera.target
            pl.camera.up = camera.up
            pl.camera.view_angle = camera.fov
            pl.reset_camera_clipping_range()
            img = pl.screenshot(return_img=True)
        finally:
            pl.close()
    if img is None or img.shape[:2] != (height, width):
        raise SceneError("the off-screen renderer returned no image of the asked size")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img[:, :, :3])).save(buf, format="PNG")
    return buf.getvalue()


def _polydata(pv: Any, positions: npt.NDArray[np.float32], cells: npt.NDArray[np.int64]) -> Any:
    used, inverse = np.unique(cells.reshape(-1), return_inverse=True)
    n = int(cells.size // max(len(cells), 1))
    local = inverse.reshape(-1, n)
    packed = np.hstack([np.full((len(local), 1), n, dtype=np.int64), local]).ravel()
    if n == 3:
        return pv.PolyData(positions[used].astype(np.float64), faces=packed)
    return pv.PolyData(positions[used].astype(np.float64), lines=packed)

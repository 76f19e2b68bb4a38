"""Georeference: place a network drawn in plan units (no CRS) into a real CRS."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twin.errors import IngestError
from twin.network import Network

__all__ = ["Georeference", "apply_georef"]

BBox2D = tuple[float, float, float, float]
_KEYS = ("origin", "scale", "rotation", "crs", "plan_origin", "z_scale")


@dataclass(frozen=True)
class Georeference:
    """A similarity transform from plan coordinates into a target CRS.

    A plan point ``p`` maps to ``origin + scale * R(rotation) @ (p - plan_origin)`` in x, y
    and ``z * z_scale + origin[2]`` in z.

    Attributes:
        origin: where ``plan_origin`` lands in the target CRS (x, y, z).
        scale: target units per plan unit (0.3048 for plan feet into a metre CRS).
        rotation: counter-clockwise rotation in degrees.
        crs: the target CRS (``EPSG:28992``), or None when unknown.
        plan_origin: the plan point mapped to ``origin``.
        z_scale: factor on z; 1 because EPANET elevations are already converted to metres.
    """

    origin: tuple[float, float, float]
    scale: float = 1.0
    rotation: float = 0.0
    crs: str | None = None
    plan_origin: tuple[float, float] = (0.0, 0.0)
    z_scale: float = 1.0

    def __post_init__(self) -> None:
        values = (*self.origin, self.scale, self.rotation, *self.plan_origin, self.z_scale)
        if len(self.origin) != 3 or len(self.plan_origin) != 2:
            raise IngestError("origin needs 3 values and plan_origin 2", where="georeference")
        if not all(math.isfinite(v) for v in values):
            raise IngestError("georeference values must be finite numbers", where="georeference")
        if self.scale <= 0:
            raise IngestError(f"scale must be > 0, got {self.scale}", where="georeference")

    # -- transform ----------------------------------------------------------------
    def apply(self, xyz: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Transform plan points into the target CRS.

        Args:
            xyz: an (n, 3) (or (n, 2), z taken as 0) array of plan coordinates.

        Returns:
            A new (n, 3) float array in the target CRS.
        """
        pts = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
        if pts.size == 0:
            return np.zeros((0, 3), dtype=np.float64)
        if pts.shape[1] == 2:
            pts = np.hstack([pts, np.zeros((len(pts), 1))])
        theta = math.radians(self.rotation)
        c, s = math.cos(theta), math.sin(theta)
        dx = pts[:, 0] - self.plan_origin[0]
        dy = pts[:, 1] - self.plan_origin[1]
        out = np.empty((len(pts), 3), dtype=np.float64)
        out[:, 0] = self.origin[0] + self.scale * (c * dx - s * dy)
        out[:, 1] = self.origin[1] + self.scale * (s * dx + c * dy)
        out[:, 2] = self.origin[2] + self.z_scale * pts[:, 2]
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the keys :meth:`load` reads)."""
        return {
            "origin": list(self.origin),
            "scale": self.scale,
            "rotation": self.rotation,
            "crs": self.crs,
            "plan_origin": list(self.plan_origin),
            "z_scale": self.z_scale,
        }

    # -- construction -------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> Georeference:
        """Parse a command-line string such as ``origin=84500,447000,0;scale=0.5;crs=EPSG:28992``.

        Keys: ``origin`` (x,y[,z], required), ``scale``, ``rotation`` (degrees CCW),
        ``crs`` (``none`` for no CRS), ``plan_origin`` (x,y), ``z_scale``.

        Args:
            text: ``key=value`` pairs separated by ``;``.

        Returns:
            The georeference.

        Raises:
            IngestError: unknown or repeated key, a bad value, or no origin.
        """
        raw: dict[str, Any] = {}
        for part in text.split(";"):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep:
                raise IngestError(f"expected key=value, got {part!r}", where="georeference")
            if key in raw:
                raise IngestError(f"key {key!r} given twice", where="georeference")
            value = value.strip()
            if key in ("origin", "plan_origin"):
                raw[key] = [v.strip() for v in value.split(",")]
            else:
                raw[key] = value
        return cls._from_mapping(raw, where="georeference")

    @classmethod
    def load(cls, path: str | Path) -> Georeference:
        """Read a georeference from a small JSON or TOML file (same keys as :meth:`parse`).

        The keys may sit at the top level or under a ``georeference`` table/object.

        Args:
            path: a ``.json`` or ``.toml`` file.

        Returns:
            The georeference.

        Raises:
            IngestError: unreadable file, bad syntax, unknown key or bad value.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise IngestError(f"cannot read georeference: {exc}", source=str(p)) from None
        doc: Any
        try:
            doc = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise IngestError(f"bad georeference file: {exc}", source=str(p)) from None
        if isinstance(doc, dict) and isinstance(doc.get("georeference"), dict):
            doc = doc["georeference"]
        if not isinstance(doc, dict):
            raise IngestError("georeference file must hold an object/table", source=str(p))
        return cls._from_mapping(doc, where=str(p))

    @classmethod
    def fit(
        cls,
        source_bbox2d: Sequence[float],
        target_bbox2d: Sequence[float],
        *,
        crs: str | None,
        margin: float = 0.1,
    ) -> Georeference:
        """Place a plan bbox centred inside a target bbox, uniformly scaled, unrotated.

        Used to put a stand-in network onto a demo city's area. The scale makes the plan
        bbox fit within ``1 - margin`` of the target in both directions.

        Args:
            source_bbox2d: ``(minx, miny, maxx, maxy)`` in plan units.
            target_bbox2d: ``(minx, miny, maxx, maxy)`` in the target CRS.
            crs: the target CRS.
            margin: share of the target left free (0 <= margin < 1).

        Returns:
            The georeference (origin z = 0).

        Raises:
            IngestError: a bbox is not 4 finite numbers with max >= min, a target bbox
                is empty, or the margin is out of range.
        """
        src = _bbox(source_bbox2d, "source bbox")
        dst = _bbox(target_bbox2d, "target bbox")
        if not 0.0 <= margin < 1.0:
            raise IngestError(f"margin must be in [0, 1), got {margin}", where="georeference")
        tw, th = dst[2] - dst[0], dst[3] - dst[1]
        if tw <= 0 or th <= 0:
            raise IngestError("target bbox has no area", where="georeference")
        sw, sh = src[2] - src[0], src[3] - src[1]
        ratios = [t / s for t, s in ((tw, sw), (th, sh)) if s > 0]
        # A single point or a straight line along one axis fits on the other axis alone.
        scale = (1.0 - margin) * min(ratios) if ratios else 1.0
        return cls(
            origin=((dst[0] + dst[2]) / 2, (dst[1] + dst[3]) / 2, 0.0),
            scale=scale,
            rotation=0.0,
            crs=crs,
            plan_origin=((src[0] + src[2]) / 2, (src[1] + src[3]) / 2),
        )

    @classmethod
    def _from_mapping(cls, raw: Mapping[str, Any], *, where: str) -> Georeference:
        unknown = sorted(set(raw) - set(_KEYS))
        if unknown:
            raise IngestError(
                f"unknown georeference key {unknown[0]!r} (one of {', '.join(_KEYS)})",
                where=where,
            )
        if "origin" not in raw:
            raise IngestError("georeference needs an origin", where=where)
        origin = _numbers(raw["origin"], "origin", (2, 3), where)
        kwargs: dict[str, Any] = {
            "origin": (origin[0], origin[1], origin[2] if len(origin) > 2 else 0.0)
        }
        for key in ("scale", "rotation", "z_scale"):
            if key in raw:
                kwargs[key] = _number(raw[key], key, where)
        if "plan_origin" in raw:
            po = _numbers(raw["plan_origin"], "plan_origin", (2,), where)
            kwargs["plan_origin"] = (po[0], po[1])
        if "crs" in raw:
            crs = raw["crs"]
            if crs is not None and not isinstance(crs, str):
                raise IngestError(f"crs must be a string, got {crs!r}", where=where)
            crs = (crs or "").strip()
            kwargs["crs"] = None if crs.lower() in ("", "none", "null") else crs
        try:
            return cls(**kwargs)
        except IngestError as exc:
            raise IngestError(exc.problem, where=where) from None


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool):
        raise IngestError(f"{key}: not a number: {value!r}", where=where)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise IngestError(f"{key}: not a number: {value!r}", where=where) from None
    if not math.isfinite(out):
        raise IngestError(f"{key}: not a finite number: {value!r}", where=where)
    return out


def _numbers(value: Any, key: str, sizes: tuple[int, ...], where: str) -> list[float]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or len(value) not in sizes:
        want = " or ".join(map(str, sizes))
        raise IngestError(f"{key}: expected {want} numbers, got {value!r}", where=where)
    return [_number(v, key, where) for v in value]


def _bbox(box: Sequence[float], name: str) -> BBox2D:
    vals = _numbers(list(box), name, (4,), "georeference")
    if vals[2] < vals[0] or vals[3] < vals[1]:
        raise IngestError(f"{name}: max below min in {vals}", where="georeference")
    return (vals[0], vals[1], vals[2], vals[3])


def apply_georef(net: Network, geo: Georeference) -> None:
    """Move a network from plan coordinates into the georeference's CRS, in place.

    Node positions and edge polylines are transformed; ``net.crs`` becomes ``geo.crs``.
    An edge ``length`` drawn from plan geometry is scaled by ``geo.scale``; a length the
    source file measured (edge attribute ``length_source == "file"``, e.g. an EPANET pipe
    length already in metres) and every ``diameter`` are physical and kept as they are.

    Args:
        net: the network (changed in place).
        geo: the georeference.
    """
    g = net.graph
    nodes = list(g.nodes)
    if nodes:
        moved = geo.apply(np.asarray([g.nodes[n]["xyz"] for n in nodes], dtype=np.float64))
        for n, p in zip(nodes, moved, strict=True):
            g.nodes[n]["xyz"] = (float(p[0]), float(p[1]), float(p[2]))
    for _u, _v, data in g.edges(data=True):
        coords = data["coords"]
        if coords:
            moved = geo.apply(np.asarray(coords, dtype=np.float64).reshape(-1, 3))
            data["coords"] = [(float(p[0]), float(p[1]), float(p[2])) for p in moved]
        attrs = data["attributes"]
        if attrs.get("length_source") != "file" and isinstance(attrs.get("length"), int | float):
            attrs["length"] = float(attrs["length"]) * geo.scale
    net.crs = geo.crs
    net.attributes["georeference"] = geo.as_dict()
    net.attributes["placed"] = True

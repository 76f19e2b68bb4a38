"""A city model's geometry as flat numpy arrays, ready for triangulation and export.

CityJSON boundaries are deeply nested lists (CityJSON 2.0 §3.3); walking them per face in
Python is what makes naive exporters slow. The reader flattens every chosen geometry once
into the arrays below, so later stages (bbox, triangulation, glTF) are vectorized.

Surfaces are grouped by object in object order: the surfaces of feature ``f`` are the
contiguous range where ``surf_feature == f``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from twin.objects import Twin

__all__ = ["SEMANTIC_TYPES", "CityModel", "Material", "ModelWarning"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# Semantic surface types of CityJSON 2.0 §5.6 (and 1.x); an unknown or extension type
# ("+Type") is appended to a model's own table at read time.
SEMANTIC_TYPES: tuple[str, ...] = (
    "RoofSurface",
    "GroundSurface",
    "WallSurface",
    "ClosureSurface",
    "OuterCeilingSurface",
    "OuterFloorSurface",
    "Window",
    "Door",
    "InteriorWallSurface",
    "CeilingSurface",
    "FloorSurface",
    "WaterSurface",
    "WaterGroundSurface",
    "WaterClosureSurface",
    "TrafficArea",
    "AuxiliaryTrafficArea",
    "TransportationMarking",
    "TransportationHole",
)


@dataclass(frozen=True, slots=True)
class Material:
    """A CityJSON material (CityJSON 2.0 §8.2), X3D-style."""

    name: str
    diffuse: tuple[float, float, float] = (0.8, 0.8, 0.8)
    emissive: tuple[float, float, float] = (0.0, 0.0, 0.0)
    transparency: float = 0.0
    shininess: float = 0.2
    smooth: bool = False


@dataclass(frozen=True, slots=True)
class ModelWarning:
    """Something a viewer can still draw but a user should know about."""

    code: str
    message: str
    object_id: str | None = None


def _empty_int() -> IntArray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class CityModel:
    """One read city model: objects plus flattened geometry of the chosen LoD.

    Attributes:
        vertices: (N, 3) float64 real-world coordinates in the source CRS (transform
            applied; geometry-instance vertices appended after the file's own).
        ring_vertices: vertex indices of every ring, concatenated.
        ring_offsets: start of each ring in ``ring_vertices`` (len = rings + 1).
        surface_rings: start of each surface in the ring list (len = surfaces + 1);
            the first ring of a surface is its outer ring, the rest are holes.
        surf_feature: feature index (position in ``feature_ids``) of each surface.
        surf_semantic: index into ``semantic_types`` per surface, -1 if none.
        surf_material: index into ``materials`` per surface, -1 if none.
        point_vertices/point_feature: MultiPoint vertices and their feature.
        line_segments/line_feature: (M, 2) vertex pairs of MultiLineStrings.
        feature_ids: the object id of each feature index (objects with drawn geometry).
        surf_shell: shell index per surface (-1 for MultiSurface/CompositeSurface).
        shell_solid: solid index per shell; solid_group: geometry-group index per solid;
            group_type/group_feature: the geometry type (Solid, MultiSolid,
            CompositeSolid) and feature of each group. Kept for the geometric validator.
    """

    source: str
    version: str
    twin: Twin
    vertices: FloatArray
    ring_vertices: IntArray = field(default_factory=_empty_int)
    ring_offsets: IntArray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    surface_rings: IntArray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    surf_feature: IntArray = field(default_factory=_empty_int)
    surf_semantic: IntArray = field(default_factory=_empty_int)
    surf_material: IntArray = field(default_factory=_empty_int)
    point_vertices: IntArray = field(default_factory=_empty_int)
    point_feature: IntArray = field(default_factory=_empty_int)
    line_segments: IntArray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    line_feature: IntArray = field(default_factory=_empty_int)
    surf_shell: IntArray = field(default_factory=_empty_int)
    shell_solid: IntArray = field(default_factory=_empty_int)
    solid_group: IntArray = field(default_factory=_empty_int)
    group_type: list[str] = field(default_factory=list)
    group_feature: IntArray = field(default_factory=_empty_int)
    feature_ids: list[str] = field(default_factory=list)
    semantic_types: list[str] = field(default_factory=lambda: list(SEMANTIC_TYPES))
    materials: list[Material] = field(default_factory=list)
    crs: str | None = None
    epsg: int | None = None
    transform: dict[str, list[float]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)
    lods: list[str] = field(default_factory=list)
    warnings: list[ModelWarning] = field(default_factory=list)

    @property
    def n_surfaces(self) -> int:
        """Number of surfaces (polygons, maybe with holes)."""
        return int(self.surface_rings.shape[0] - 1)

    @property
    def n_rings(self) -> int:
        """Number of rings."""
        return int(self.ring_offsets.shape[0] - 1)

    def bbox(self) -> tuple[float, float, float, float, float, float] | None:
        """Bounding box of all drawn vertices, or None when nothing is drawn."""
        used = np.concatenate(
            [self.ring_vertices, self.point_vertices, self.line_segments.reshape(-1)]
        )
        if used.size == 0:
            return None
        pts = self.vertices[used]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        return (
            float(lo[0]),
            float(lo[1]),
            float(lo[2]),
            float(hi[0]),
            float(hi[1]),
            float(hi[2]),
        )

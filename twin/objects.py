"""Twin objects and the in-memory registry that holds them (pure Python, no I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GeometrySummary", "Twin", "TwinObject"]

BBox = tuple[float, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class GeometrySummary:
    """What a client needs to know about an object's shape without the shape.

    Coordinates are in the source CRS; ``*_wgs84`` are (lon, lat, h) when the CRS is known.
    """

    lod: str | None
    geometry_types: tuple[str, ...]
    bbox: BBox
    centroid: tuple[float, float, float]
    height: float
    footprint_area: float
    bbox_wgs84: BBox | None = None
    centroid_wgs84: tuple[float, float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "lod": self.lod,
            "geometry_types": list(self.geometry_types),
            "bbox": list(self.bbox),
            "centroid": list(self.centroid),
            "height": self.height,
            "footprint_area": self.footprint_area,
            "bbox_wgs84": list(self.bbox_wgs84) if self.bbox_wgs84 else None,
            "centroid_wgs84": list(self.centroid_wgs84) if self.centroid_wgs84 else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeometrySummary:
        """Inverse of :meth:`as_dict`."""

        def tup(v: Any) -> Any:
            return tuple(map(float, v)) if v is not None else None

        return cls(
            lod=d.get("lod"),
            geometry_types=tuple(d.get("geometry_types") or ()),
            bbox=tup(d["bbox"]),
            centroid=tup(d["centroid"]),
            height=float(d.get("height", 0.0)),
            footprint_area=float(d.get("footprint_area", 0.0)),
            bbox_wgs84=tup(d.get("bbox_wgs84")),
            centroid_wgs84=tup(d.get("centroid_wgs84")),
        )


@dataclass(slots=True)
class TwinObject:
    """One thing in the city: a building, a part, a pipe, a road.

    The id is the CityJSON id and runs through every layer (glTF feature, feed key,
    comment anchor).
    """

    id: str
    type: str
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    geometry: GeometrySummary | None = None
    scenario: str = "base"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the stored form)."""
        return {
            "id": self.id,
            "type": self.type,
            "parents": self.parents,
            "children": self.children,
            "attributes": self.attributes,
            "geometry": self.geometry.as_dict() if self.geometry else None,
            "scenario": self.scenario,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TwinObject:
        """Inverse of :meth:`as_dict`."""
        geom = d.get("geometry")
        return cls(
            id=d["id"],
            type=d["type"],
            parents=list(d.get("parents") or []),
            children=list(d.get("children") or []),
            attributes=dict(d.get("attributes") or {}),
            geometry=GeometrySummary.from_dict(geom) if geom else None,
            scenario=d.get("scenario", "base"),
            extra=dict(d.get("extra") or {}),
        )

    @property
    def parent(self) -> str | None:
        """The first parent, if any (CityJSON allows several)."""
        return self.parents[0] if self.parents else None

    @property
    def is_extension(self) -> bool:
        """True for Extension types (``+Type``, CityJSON 2.0 §7)."""
        return self.type.startswith("+")

    @property
    def name(self) -> str | None:
        """A human name from common attributes, if any."""
        for key in ("name", "naam", "gml:name", "Name"):
            value = self.attributes.get(key)
            if isinstance(value, str):
                return value
        return None


class Twin:
    """Registry of twin objects by id; keeps parent/child links consistent."""

    def __init__(self, objects: Iterable[TwinObject] = ()) -> None:
        self._objects: dict[str, TwinObject] = {}
        for obj in objects:
            self.add(obj)

    def add(self, obj: TwinObject) -> None:
        """Add or replace an object."""
        self._objects[obj.id] = obj

    def get(self, object_id: str) -> TwinObject | None:
        """Return the object with this id, or None."""
        return self._objects.get(object_id)

    def __getitem__(self, object_id: str) -> TwinObject:
        return self._objects[object_id]

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._objects

    def __iter__(self) -> Iterator[TwinObject]:
        return iter(self._objects.values())

    def __len__(self) -> int:
        return len(self._objects)

    def ids(self) -> list[str]:
        """All ids in insertion order."""
        return list(self._objects)

    def counts_by_type(self) -> dict[str, int]:
        """Number of objects per type, most common first."""
        return dict(Counter(o.type for o in self._objects.values()).most_common())

    def roots(self) -> list[TwinObject]:
        """Objects without a parent."""
        return [o for o in self._objects.values() if not o.parents]

    def children_of(self, object_id: str) -> list[TwinObject]:
        """Direct children that are present in the registry."""
        obj = self._objects.get(object_id)
        if obj is None:
            return []
        return [self._objects[c] for c in obj.children if c in self._objects]

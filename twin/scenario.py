"""Compare two scenarios object by object: added, removed, changed, with size changes (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from twin.objects import TwinObject

__all__ = ["ObjectChange", "ScenarioDiff", "diff_scenarios", "prism_volume"]

ChangeKind = Literal["added", "removed", "changed"]
VolumeMethod = Literal["solid", "prism"]

# Geometry summaries are float64 read from integer-quantized CityJSON vertices
# (CityJSON 2.0 §3.1 "transform"); a millimetre-scale file gives values exact to well
# below this, so anything larger is a real edit, not float noise.
_TOLERANCE = 1e-6


def prism_volume(obj: TwinObject) -> float | None:
    """Footprint area × height: the volume of an extruded footprint (exact for LoD1 blocks).

    Args:
        obj: the object.

    Returns:
        The approximate volume in cubic CRS units, or None without a geometry summary.
    """
    g = obj.geometry
    if g is None:
        return None
    return g.footprint_area * g.height


@dataclass(frozen=True)
class ObjectChange:
    """How one object differs between the base and the proposal (None: not there / no shape)."""

    id: str
    type: str
    change: ChangeKind
    height_before: float | None = None
    height_after: float | None = None
    footprint_before: float | None = None
    footprint_after: float | None = None
    volume_before: float | None = None
    volume_after: float | None = None
    volume_method: VolumeMethod | None = None
    fields: tuple[str, ...] = ()

    @property
    def height_change(self) -> float:
        """After minus before (a missing side counts as 0)."""
        return (self.height_after or 0.0) - (self.height_before or 0.0)

    @property
    def footprint_change(self) -> float:
        """After minus before (a missing side counts as 0)."""
        return (self.footprint_after or 0.0) - (self.footprint_before or 0.0)

    @property
    def volume_change(self) -> float:
        """After minus before (a missing side counts as 0)."""
        return (self.volume_after or 0.0) - (self.volume_before or 0.0)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "id": self.id,
            "type": self.type,
            "change": self.change,
            "fields": list(self.fields),
            "height": {
                "before": self.height_before,
                "after": self.height_after,
                "change": self.height_change,
            },
            "footprint": {
                "before": self.footprint_before,
                "after": self.footprint_after,
                "change": self.footprint_change,
            },
            "volume": {
                "before": self.volume_before,
                "after": self.volume_after,
                "change": self.volume_change,
                "method": self.volume_method,
            },
        }


@dataclass(frozen=True)
class ScenarioDiff:
    """What a proposal adds, removes and changes relative to its base, with totals."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    objects: list[ObjectChange] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, float | int]:
        """Counts and summed footprint/volume changes over every differing object."""
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
            "footprint_change": math.fsum(o.footprint_change for o in self.objects),
            "volume_change": math.fsum(o.volume_change for o in self.objects),
            "footprint_added": math.fsum(o.footprint_after or 0.0 for o in self._of("added")),
            "footprint_removed": math.fsum(o.footprint_before or 0.0 for o in self._of("removed")),
            "volume_added": math.fsum(o.volume_after or 0.0 for o in self._of("added")),
            "volume_removed": math.fsum(o.volume_before or 0.0 for o in self._of("removed")),
        }

    def _of(self, kind: ChangeKind) -> list[ObjectChange]:
        return [o for o in self.objects if o.change == kind]

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "totals": self.totals,
            "objects": [o.as_dict() for o in self.objects],
        }


def diff_scenarios(
    base_objects: Iterable[TwinObject],
    proposal_objects: Iterable[TwinObject],
    *,
    base_volumes: Mapping[str, float] | None = None,
    proposal_volumes: Mapping[str, float] | None = None,
) -> ScenarioDiff:
    """Compare the objects of two scenarios by id.

    An object is *changed* when its type, parents, attributes or geometry summary (LoD,
    bbox, height, footprint) differ. Volumes come from ``*_volumes`` (e.g. the enclosed
    volume of closed solids, :func:`scene.proposal.solid_volumes`) and fall back to
    :func:`prism_volume` (footprint × height) for objects missing there; an object's
    ``volume_method`` says which was used (``solid`` only when both sides had one).

    Args:
        base_objects: every object of the base scenario.
        proposal_objects: every object of the proposal scenario.
        base_volumes: measured volumes of base objects by id, where known.
        proposal_volumes: measured volumes of proposal objects by id, where known.

    Returns:
        The diff; ids are sorted within each list.
    """
    base = {o.id: o for o in base_objects}
    prop = {o.id: o for o in proposal_objects}
    bv = base_volumes or {}
    pv = proposal_volumes or {}
    changes: list[ObjectChange] = []
    for oid in sorted(base.keys() | prop.keys()):
        before, after = base.get(oid), prop.get(oid)
        if before is not None and after is not None:
            fields = _changed_fields(before, after)
            if not fields:
                continue
            kind: ChangeKind = "changed"
        else:
            fields = ()
            kind = "added" if before is None else "removed"
        sides = [(before, bv), (after, pv)]
        vols = [_volume(o, vm) for o, vm in sides]
        present = [v for v in vols if v[0] is not None]
        method: VolumeMethod | None = None
        if present:
            method = "solid" if all(m == "solid" for _, m in present) else "prism"
            if method == "prism":
                # Never mix methods inside one object's change: both sides as prisms.
                vols = [(prism_volume(o) if o is not None else None, "prism") for o, _ in sides]
        obj = after if after is not None else before
        assert obj is not None
        changes.append(
            ObjectChange(
                id=oid,
                type=obj.type,
                change=kind,
                height_before=_height(before),
                height_after=_height(after),
                footprint_before=_footprint(before),
                footprint_after=_footprint(after),
                volume_before=vols[0][0],
                volume_after=vols[1][0],
                volume_method=method,
                fields=fields,
            )
        )
    return ScenarioDiff(
        added=[c.id for c in changes if c.change == "added"],
        removed=[c.id for c in changes if c.change == "removed"],
        changed=[c.id for c in changes if c.change == "changed"],
        objects=changes,
    )


def _height(obj: TwinObject | None) -> float | None:
    return obj.geometry.height if obj is not None and obj.geometry is not None else None


def _footprint(obj: TwinObject | None) -> float | None:
    return obj.geometry.footprint_area if obj is not None and obj.geometry is not None else None


def _volume(
    obj: TwinObject | None, volumes: Mapping[str, float]
) -> tuple[float | None, VolumeMethod | None]:
    if obj is None:
        return None, None
    if obj.id in volumes:
        return volumes[obj.id], "solid"
    v = prism_volume(obj)
    return v, "prism" if v is not None else None


def _close(a: Iterable[float], b: Iterable[float]) -> bool:
    pa, pb = list(a), list(b)
    return len(pa) == len(pb) and all(
        math.isclose(x, y, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE)
        for x, y in zip(pa, pb, strict=True)
    )


def _changed_fields(before: TwinObject, after: TwinObject) -> tuple[str, ...]:
    out: list[str] = []
    if before.type != after.type:
        out.append("type")
    if before.parents != after.parents:
        out.append("parents")
    if before.attributes != after.attributes:
        out.append("attributes")
    gb, ga = before.geometry, after.geometry
    if (gb is None) != (ga is None):
        out.append("geometry")
    elif gb is not None and ga is not None:
        if gb.lod != ga.lod:
            out.append("lod")
        if not _close(gb.bbox, ga.bbox):
            out.append("bbox")
        if not _close([gb.height], [ga.height]):
            out.append("height")
        if not _close([gb.footprint_area], [ga.footprint_area]):
            out.append("footprint")
    return tuple(out)

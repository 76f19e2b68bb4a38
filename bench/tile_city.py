"""Tile a real CityJSON district on a grid into a big CityJSONSeq (copies only, streamed)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

__all__ = [
    "DEFAULT_GAP",
    "Grid",
    "SourceFeature",
    "TileStats",
    "copy_id",
    "prepare",
    "tile",
]

DEFAULT_GAP = 100.0  # metres of empty ground between two copies
DEFAULT_SCALE = 0.001  # quantisation used when the source has no transform
IntArray = npt.NDArray[np.int64]


@dataclass
class SourceFeature:
    """One root CityObject of the source with its descendants and local integer vertices."""

    root: str
    objects: dict[str, dict[str, Any]]
    vertices: IntArray  # (n, 3) quantised with the source transform, local to the feature
    buildings: int


@dataclass
class Grid:
    """Where copy ``k`` goes: column ``k % cols``, row ``k // cols``, offsets in file units."""

    copies: int
    cols: int
    rows: int
    step: tuple[int, int]  # (x, y) step in quantised units (exact multiples of the scale)
    scale: tuple[float, float, float]

    def offset_units(self, k: int) -> tuple[int, int, int]:
        """The integer (quantised) offset of copy ``k``."""
        return (k % self.cols) * self.step[0], (k // self.cols) * self.step[1], 0

    def offset(self, k: int) -> tuple[float, float, float]:
        """The offset of copy ``k`` in real-world units (metres for a projected CRS)."""
        ox, oy, oz = self.offset_units(k)
        return ox * self.scale[0], oy * self.scale[1], oz * self.scale[2]


@dataclass
class TileStats:
    """What a tiling run wrote."""

    copies: int
    features: int = 0
    objects: int = 0
    buildings: int = 0
    bytes: int = 0
    grid: Grid | None = None
    dropped: list[str] = field(default_factory=list)


def copy_id(oid: str, k: int) -> str:
    """The id of object ``oid`` in copy ``k``."""
    return f"{oid}-t{k}"


def _version(doc: dict[str, Any]) -> tuple[int, ...]:
    raw = str(doc.get("version", "0"))
    try:
        return tuple(int(p) for p in raw.split("."))
    except ValueError:
        return (0,)


def _quantised(doc: dict[str, Any]) -> tuple[IntArray, list[float], list[float]]:
    """The source vertices as integers plus the (scale, translate) that decodes them."""
    raw = np.asarray(doc.get("vertices") or np.zeros((0, 3)), dtype=np.float64).reshape(-1, 3)
    tr = doc.get("transform")
    if isinstance(tr, dict):
        scale = [float(s) for s in tr["scale"]]
        translate = [float(t) for t in tr["translate"]]
        return raw.astype(np.int64), scale, translate
    scale = [DEFAULT_SCALE] * 3
    translate = [float(v) for v in raw.min(axis=0)] if len(raw) else [0.0, 0.0, 0.0]
    ints = np.rint((raw - np.asarray(translate)) / DEFAULT_SCALE).astype(np.int64)
    return ints, scale, translate


def _remap(value: Any, mapping: dict[int, int]) -> Any:
    """Copy a nested boundary array with every vertex index replaced by its local index."""
    if isinstance(value, list):
        return [_remap(v, mapping) for v in value]
    if isinstance(value, int):
        local = mapping.get(value)
        if local is None:
            local = mapping[value] = len(mapping)
        return local
    return value


def _descendants(root: str, objects: dict[str, Any]) -> list[str]:
    out, todo, seen = [], [root], {root}
    while todo:
        oid = todo.pop(0)
        out.append(oid)
        for child in objects.get(oid, {}).get("children") or []:
            if child in objects and child not in seen:
                seen.add(child)
                todo.append(child)
    return out


def prepare(doc: dict[str, Any]) -> tuple[list[SourceFeature], list[float], list[float], list[str]]:
    """Split a CityJSON document into features with local vertex lists.

    Returns:
        The features, the (scale, translate) of the integer vertices, and notes about what
        was left out: materials and textures (a CityJSONFeature would need its own copy of
        the appearance; the exporters under test draw geometry and semantics).
    """
    if doc.get("type") != "CityJSON" or _version(doc) < (1, 0):
        raise ValueError(f"need a CityJSON 1.0+ document, got version {doc.get('version')!r}")
    ints, scale, translate = _quantised(doc)
    cos: dict[str, Any] = doc.get("CityObjects") or {}
    dropped: set[str] = set()
    roots = [oid for oid, o in cos.items() if not o.get("parents")]
    assigned: set[str] = set()
    features: list[SourceFeature] = []
    for root in roots:
        members = [m for m in _descendants(root, cos) if m not in assigned]
        assigned.update(members)
        mapping: dict[int, int] = {}
        objects: dict[str, dict[str, Any]] = {}
        for oid in members:
            obj = dict(cos[oid])
            geoms = []
            for g in obj.get("geometry") or []:
                g2 = {k: v for k, v in g.items() if k not in ("material", "texture")}
                dropped.update(k for k in ("material", "texture") if k in g)
                if "boundaries" in g2:
                    g2["boundaries"] = _remap(g2["boundaries"], mapping)
                geoms.append(g2)
            if "geometry" in obj:
                obj["geometry"] = geoms
            objects[oid] = obj
        order = np.fromiter(mapping.keys(), dtype=np.int64, count=len(mapping))
        local = ints[order] if len(order) else np.zeros((0, 3), dtype=np.int64)
        n_bld = sum(1 for o in objects.values() if o.get("type") == "Building")
        features.append(SourceFeature(root, objects, local, n_bld))
    notes = [f"dropped {what} (appearance is not copied)" for what in sorted(dropped)]
    return features, scale, translate, notes


def _extent(features: list[SourceFeature]) -> tuple[IntArray, IntArray]:
    allv = [f.vertices for f in features if len(f.vertices)]
    if not allv:
        zero = np.zeros(3, dtype=np.int64)
        return zero, zero
    stacked = np.concatenate(allv)
    return stacked.min(axis=0), stacked.max(axis=0)


def make_grid(
    lo: IntArray, hi: IntArray, scale: list[float], copies: int, gap: float = DEFAULT_GAP
) -> Grid:
    """A near-square grid whose step is the district's extent plus ``gap`` (whole metres)."""
    cols = max(1, math.ceil(math.sqrt(copies)))
    rows = max(1, math.ceil(copies / cols))
    step = []
    for axis in (0, 1):
        metres = math.ceil((hi[axis] - lo[axis]) * scale[axis] + gap)
        step.append(round(metres / scale[axis]))
    return Grid(copies, cols, rows, (step[0], step[1]), (scale[0], scale[1], scale[2]))


def _rename(obj: dict[str, Any], k: int, offset: tuple[float, float, float]) -> dict[str, Any]:
    if not ("children" in obj or "parents" in obj or "geographicalExtent" in obj):
        return obj
    out = dict(obj)
    for key in ("children", "parents"):
        if key in out:
            out[key] = [copy_id(c, k) for c in out[key]]
    ext = out.get("geographicalExtent")
    if isinstance(ext, list) and len(ext) == 6:
        out["geographicalExtent"] = [v + offset[i % 3] for i, v in enumerate(ext)]
    return out


def iter_lines(
    doc: dict[str, Any], copies: int, gap: float = DEFAULT_GAP, stats: TileStats | None = None
) -> Iterator[bytes]:
    """Yield the CityJSONSeq lines (header first), one feature per root object per copy."""
    if copies < 1:
        raise ValueError("copies must be >= 1")
    features, scale, translate, notes = prepare(doc)
    lo_a, hi_a = _extent(features)
    grid = make_grid(lo_a, hi_a, scale, copies, gap)
    lo, hi = [int(v) for v in lo_a], [int(v) for v in hi_a]
    far = ((grid.cols - 1) * grid.step[0], (grid.rows - 1) * grid.step[1])
    extent = [
        translate[0] + lo[0] * scale[0],
        translate[1] + lo[1] * scale[1],
        translate[2] + lo[2] * scale[2],
        translate[0] + (hi[0] + far[0]) * scale[0],
        translate[1] + (hi[1] + far[1]) * scale[1],
        translate[2] + hi[2] * scale[2],
    ]
    src_meta = doc.get("metadata") or {}
    metadata: dict[str, Any] = {"geographicalExtent": [round(v, 3) for v in extent]}
    crs = src_meta.get("referenceSystem")
    if crs:
        metadata["referenceSystem"] = crs
    n_src = sum(len(f.objects) for f in features)
    metadata["title"] = (
        f"{copies} grid copies of {n_src} real CityObjects (bench/tile_city.py; "
        f"step {grid.step[0] * scale[0]:g} x {grid.step[1] * scale[1]:g})"
    )
    header: dict[str, Any] = {
        "type": "CityJSON",
        "version": "2.0",
        "transform": {"scale": scale, "translate": translate},
        "CityObjects": {},
        "vertices": [],
        "metadata": metadata,
    }
    # Shared by every copy: GeometryInstances point into the header's templates (§9).
    if doc.get("extensions"):
        header["extensions"] = doc["extensions"]
    templates = doc.get("geometry-templates")
    if isinstance(templates, dict):
        header["geometry-templates"] = {
            **templates,
            "templates": [
                {k: v for k, v in t.items() if k not in ("material", "texture")}
                for t in templates.get("templates") or []
            ],
        }
    if stats is not None:
        stats.grid = grid
        stats.dropped = notes
    yield orjson.dumps(header) + b"\n"
    for k in range(copies):
        units = np.asarray(grid.offset_units(k), dtype=np.int64)
        offset = grid.offset(k)
        for f in features:
            objs = {copy_id(oid, k): _rename(o, k, offset) for oid, o in f.objects.items()}
            line = orjson.dumps(
                {
                    "type": "CityJSONFeature",
                    "id": copy_id(f.root, k),
                    "CityObjects": objs,
                    "vertices": f.vertices + units,
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            if stats is not None:
                stats.features += 1
                stats.objects += len(objs)
                stats.buildings += f.buildings
            yield line + b"\n"


def tile(source: str | Path, out: str | Path, copies: int, gap: float = DEFAULT_GAP) -> TileStats:
    """Write ``copies`` grid copies of ``source`` to ``out`` as CityJSONSeq (atomic, streamed)."""
    doc = orjson.loads(Path(source).read_bytes())
    stats = TileStats(copies)
    dest = Path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with tmp.open("wb", buffering=1 << 20) as fh:
            for line in iter_lines(doc, copies, gap, stats):
                fh.write(line)
                stats.bytes += len(line)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("source", type=Path, help="CityJSON 1.0+ file (e.g. Delfshaven)")
    ap.add_argument("--copies", type=int, required=True, help="number of grid copies")
    ap.add_argument("-o", "--output", type=Path, required=True, help="output .city.jsonl")
    ap.add_argument("--gap", type=float, default=DEFAULT_GAP, help="metres between copies")
    args = ap.parse_args(argv)
    try:
        stats = tile(args.source, args.output, args.copies, args.gap)
    except (OSError, ValueError, orjson.JSONDecodeError) as exc:
        print(f"tile_city: {exc}", file=sys.stderr)
        return 1
    assert stats.grid is not None
    g = stats.grid
    print(
        f"{args.output}: {stats.features:,} features, {stats.objects:,} objects "
        f"({stats.buildings:,} buildings), {stats.bytes / 1e6:.1f} MB; grid {g.cols}x{g.rows}, "
        f"step {g.step[0] * g.scale[0]:g} x {g.step[1] * g.scale[1]:g}"
        + "".join(f"; {n}" for n in stats.dropped)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

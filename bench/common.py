"""Shared by the benchmark scripts: RESULTS.md sections and grid copies of real objects."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twin.objects import GeometrySummary, TwinObject

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
ROOT = RESULTS.parent.parent
GAP = 100.0  # metres of empty ground between two copies, as bench/tile_city.py


def write_section(name: str, section: str, results: Path = RESULTS) -> None:
    """Replace the ``<!-- name:start -->`` .. ``end`` section of RESULTS.md, keeping others."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{section.rstrip()}\n{end}\n"
    if results.exists():
        text = results.read_text()
        a, b = text.find(start), text.find(end)
        if a != -1 and b > a:
            text = text[:a] + block + text[b + len(end) :].lstrip("\n")
        else:
            text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + block
    else:
        text = "# Benchmark results\n\n" + block
    tmp = results.with_name(f".{results.name}.{name}.part")
    tmp.write_text(text)
    os.replace(tmp, results)


def degrees_per_metre(objs: list[TwinObject]) -> tuple[float, float]:
    """Local lon/lat degrees per source-CRS metre, fitted on the real bbox pairs."""
    xs: list[float] = []
    lons: list[float] = []
    ys: list[float] = []
    lats: list[float] = []
    for o in objs:
        g = o.geometry
        if g is None or g.bbox_wgs84 is None:
            continue
        xs += [g.bbox[0], g.bbox[3]]
        lons += [g.bbox_wgs84[0], g.bbox_wgs84[3]]
        ys += [g.bbox[1], g.bbox[4]]
        lats += [g.bbox_wgs84[1], g.bbox_wgs84[4]]
    if len(xs) < 4:
        return 0.0, 0.0
    lon = statistics.linear_regression(xs, lons).slope
    lat = statistics.linear_regression(ys, lats).slope
    return lon, lat


def _shift(b: Any, dx: float, dy: float) -> Any:
    return (b[0] + dx, b[1] + dy, b[2], b[3] + dx, b[4] + dy, b[5])


def shift_geometry(
    g: GeometrySummary, dx: float, dy: float, dlon: float, dlat: float
) -> GeometrySummary:
    """The same summary moved by (dx, dy) metres and (dlon, dlat) degrees."""
    cw = g.centroid_wgs84
    return GeometrySummary(
        lod=g.lod,
        geometry_types=g.geometry_types,
        bbox=_shift(g.bbox, dx, dy),
        centroid=(g.centroid[0] + dx, g.centroid[1] + dy, g.centroid[2]),
        height=g.height,
        footprint_area=g.footprint_area,
        bbox_wgs84=_shift(g.bbox_wgs84, dlon, dlat) if g.bbox_wgs84 else None,
        centroid_wgs84=(cw[0] + dlon, cw[1] + dlat, cw[2]) if cw else None,
    )


def tiled(objs: list[TwinObject], copies: int, suffix: str = "-t") -> Iterator[TwinObject]:
    """Grid copies of real objects: ids ``<id><suffix><k>``, shifted geometry summaries.

    Never invents geometry: every copy is a real object moved by a grid step larger than
    the district's extent.
    """
    geoms = [o.geometry for o in objs if o.geometry]
    step_x = max(g.bbox[3] for g in geoms) - min(g.bbox[0] for g in geoms) + GAP
    step_y = max(g.bbox[4] for g in geoms) - min(g.bbox[1] for g in geoms) + GAP
    cols = math.ceil(math.sqrt(copies))
    lon_per_m, lat_per_m = degrees_per_metre(objs)
    for k in range(copies):
        dx, dy = (k % cols) * step_x, (k // cols) * step_y
        for o in objs:
            d = o.as_dict()
            d["id"] = f"{o.id}{suffix}{k}"
            d["parents"] = [f"{p}{suffix}{k}" for p in o.parents]
            d["children"] = [f"{c}{suffix}{k}" for c in o.children]
            d["geometry"] = None
            clone = TwinObject.from_dict(d)
            if o.geometry is not None:
                clone.geometry = shift_geometry(o.geometry, dx, dy, dx * lon_per_m, dy * lat_per_m)
            yield clone


def commit() -> str:
    """Short HEAD and whether tracked files differ from it (for a results section)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + (" (with uncommitted changes)" if dirty else "")

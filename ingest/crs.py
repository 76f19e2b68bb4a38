"""Coordinate reference systems: source CRS to WGS84 with pyproj (imported lazily)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["to_wgs84"]


@lru_cache(maxsize=16)
def _transformer(epsg: int) -> Any:
    from pyproj import Transformer
    from pyproj.exceptions import CRSError

    try:
        return Transformer.from_crs(epsg, 4979, always_xy=True)
    except CRSError:
        try:
            return Transformer.from_crs(epsg, 4326, always_xy=True)
        except CRSError:
            return None


def to_wgs84(points: np.ndarray, epsg: int) -> np.ndarray | None:
    """Transform (N, 3) points from EPSG:``epsg`` to (lon, lat, h) WGS84.

    Args:
        points: coordinates in the source CRS.
        epsg: the source EPSG code.

    Returns:
        (N, 3) lon/lat/height, or None when pyproj does not know the CRS.
    """
    tr = _transformer(epsg)
    if tr is None:
        return None
    x, y, z = tr.transform(points[:, 0], points[:, 1], points[:, 2])
    out = np.column_stack([x, y, z]).astype(np.float64)
    if not np.isfinite(out).all():
        return None
    return out

"""Triangulate a city model's surfaces: vectorized for convex polygons, earcut otherwise.

Every surface gets a best-fit plane normal by Newell's method (robust to slightly
non-planar rings). Triangles and convex polygons without holes (the vast majority in
city models) are fanned in numpy; concave polygons and polygons with holes go through
earcut (mapbox-earcut, C++) in that plane. Degenerate surfaces (zero area, fewer than
three distinct points) are dropped and counted. Triangles are wound to agree with the
surface normal, and closed shells are flipped to face outward by their signed volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from twin.geometry import CityModel

__all__ = ["Triangulation", "triangulate"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_TWO_PI = 2.0 * np.pi


@dataclass
class Triangulation:
    """Triangles of a model, indexing ``model.vertices``.

    Attributes:
        triangles: (M, 3) vertex indices, counter-clockwise seen from outside.
        tri_surface: surface index of each triangle.
        surface_normals: (S, 3) unit normals per surface (zero for dropped surfaces).
        dropped: number of degenerate surfaces dropped.
        flipped_shells: number of closed shells turned outward.
        earcut_surfaces: number of surfaces that needed earcut.
    """

    triangles: IntArray
    tri_surface: IntArray
    surface_normals: FloatArray
    dropped: int = 0
    flipped_shells: int = 0
    earcut_surfaces: int = 0


def triangulate(model: CityModel, *, origin: FloatArray | None = None) -> Triangulation:
    """Triangulate every surface of ``model``.

    Args:
        model: the flattened city model.
        origin: a point near the data subtracted before computing normals (precision);
            defaults to the mean vertex.

    Returns:
        The triangles, their surfaces, and per-surface unit normals.
    """
    n_surf = model.n_surfaces
    if n_surf == 0:
        return Triangulation(
            np.zeros((0, 3), dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            np.zeros((0, 3)),
        )
    if origin is None:
        used = model.ring_vertices
        origin = model.vertices[used].mean(axis=0) if used.size else np.zeros(3)
    verts = model.vertices - origin
    rv = model.ring_vertices
    roffs = model.ring_offsets
    rlen = np.diff(roffs)
    srings = model.surface_rings
    nrings = np.diff(srings)
    outer = srings[:-1]  # ring index of each surface's outer ring
    olen = rlen[outer]
    ostart = roffs[outer]

    normals = _newell_normals(verts, rv, roffs, outer)
    norm_len = np.linalg.norm(normals, axis=1)
    # Newell's vector has length 2*area. Degenerate = (near) collinear: judged relative
    # to the ring's own size, so models in km or degrees are not dropped wholesale.
    extent2 = _ring_extent2(verts, rv, roffs, outer)
    ok = (norm_len > 1e-9 * extent2) & (extent2 > 0) & (olen >= 3)
    unit = np.zeros_like(normals)
    unit[ok] = normals[ok] / norm_len[ok, None]

    simple = ok & (nrings == 1)
    convex = np.zeros(n_surf, dtype=bool)
    is_tri = simple & (olen == 3)
    convex[is_tri] = True
    cand = np.flatnonzero(simple & (olen > 3))
    if cand.size:
        convex[cand] = _convex(verts, rv, ostart[cand], olen[cand], unit[cand])

    tris: list[IntArray] = []
    tsurf: list[IntArray] = []
    # Fan every convex surface at once: triangle k of a surface is (v0, v_k+1, v_k+2).
    conv_idx = np.flatnonzero(convex)
    if conv_idx.size:
        ntri = olen[conv_idx] - 2
        surf_of_tri = np.repeat(conv_idx, ntri)
        first = np.repeat(ostart[conv_idx], ntri)
        k = np.arange(surf_of_tri.size) - np.repeat(np.cumsum(ntri) - ntri, ntri)
        t = np.column_stack([rv[first], rv[first + k + 1], rv[first + k + 2]])
        tris.append(t)
        tsurf.append(surf_of_tri)

    hard = np.flatnonzero(ok & ~convex)
    if hard.size:
        t, s = _earcut(verts, rv, roffs, srings, hard, unit)
        tris.append(t)
        tsurf.append(s)

    triangles = np.concatenate(tris) if tris else np.zeros((0, 3), dtype=np.int64)
    tri_surface = np.concatenate(tsurf) if tsurf else np.zeros(0, dtype=np.int64)

    # Drop zero-area triangles (repeated points in a ring give them).
    if triangles.size:
        a = verts[triangles[:, 0]]
        cross = np.cross(verts[triangles[:, 1]] - a, verts[triangles[:, 2]] - a)
        area2 = np.einsum("ij,ij->i", cross, unit[tri_surface])
        keep = np.abs(area2) > 1e-9
        # Wind every triangle like its surface (earcut's 2D orientation is arbitrary).
        flip = keep & (area2 < 0)
        triangles[flip] = triangles[flip][:, [0, 2, 1]]
        triangles = triangles[keep]
        tri_surface = tri_surface[keep]

    drawn = np.zeros(n_surf, dtype=bool)
    drawn[tri_surface] = True
    dropped = int((~drawn).sum())
    unit[~drawn] = 0.0

    flipped = _orient_shells(model, verts, triangles, tri_surface, unit)
    return Triangulation(
        triangles=triangles,
        tri_surface=tri_surface,
        surface_normals=unit,
        dropped=dropped,
        flipped_shells=flipped,
        earcut_surfaces=int(hard.size),
    )


def _newell_normals(
    verts: FloatArray, rv: IntArray, roffs: IntArray, outer: IntArray
) -> FloatArray:
    """Newell's normal of each surface's outer ring (area-weighted, any polygon)."""
    n_rings = roffs.shape[0] - 1
    nxt = np.arange(rv.shape[0]) + 1
    nxt[roffs[1:] - 1] = roffs[:-1]
    p = verts[rv]
    q = verts[rv[nxt]]
    terms = np.column_stack(
        [
            (p[:, 1] - q[:, 1]) * (p[:, 2] + q[:, 2]),
            (p[:, 2] - q[:, 2]) * (p[:, 0] + q[:, 0]),
            (p[:, 0] - q[:, 0]) * (p[:, 1] + q[:, 1]),
        ]
    )
    ring_n = np.zeros((n_rings, 3))
    nonempty = np.diff(roffs) > 0
    ring_n[nonempty] = np.add.reduceat(terms, roffs[:-1][nonempty], axis=0)
    return ring_n[outer]


def _ring_extent2(verts: FloatArray, rv: IntArray, roffs: IntArray, outer: IntArray) -> FloatArray:
    """Largest squared distance from each outer ring's first vertex to its others."""
    n_rings = roffs.shape[0] - 1
    lengths = np.diff(roffs)
    first = np.repeat(rv[roffs[:-1]], lengths)
    d2 = ((verts[rv] - verts[first]) ** 2).sum(axis=1)
    out = np.zeros(n_rings)
    nonempty = lengths > 0
    out[nonempty] = np.maximum.reduceat(d2, roffs[:-1][nonempty])
    return out[outer]


def _convex(
    verts: FloatArray, rv: IntArray, start: IntArray, length: IntArray, normal: FloatArray
) -> npt.NDArray[np.bool_]:
    """True where a simple ring is strictly convex around ``normal`` (fan-safe).

    Every turn must be to the left (or straight) and the turns must add up to one full
    revolution; a star polygon turns left everywhere but twice around.
    """
    n = length.sum()
    ring_of = np.repeat(np.arange(length.size), length)
    local = np.arange(n) - np.repeat(np.cumsum(length) - length, length)
    base = np.repeat(start, length)
    ln = np.repeat(length, length)
    cur = verts[rv[base + local]]
    prev = verts[rv[base + (local - 1) % ln]]
    nxt = verts[rv[base + (local + 1) % ln]]
    e1 = cur - prev
    e2 = nxt - cur
    nrm = normal[ring_of]
    sin = np.einsum("ij,ij->i", np.cross(e1, e2), nrm)
    cos = np.einsum("ij,ij->i", e1, e2)
    # Normalize so the tolerance is an angle, not an area.
    scale = np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_sin = np.where(scale > 0, sin / np.where(scale > 0, scale, 1), 0.0)
    angle = np.arctan2(sin, cos)
    left = rel_sin > -1e-6
    all_left = np.logical_and.reduceat(left, np.cumsum(length) - length)
    turning = np.add.reduceat(angle, np.cumsum(length) - length)
    return all_left & (np.abs(turning - _TWO_PI) < 1e-3)


def _earcut(
    verts: FloatArray,
    rv: IntArray,
    roffs: IntArray,
    srings: IntArray,
    surfaces: IntArray,
    unit: FloatArray,
) -> tuple[IntArray, IntArray]:
    """Earcut the given surfaces in their best-fit planes.

    The plane projection is done for all surfaces at once; the loop only slices and
    calls the C++ earcut.
    """
    import mapbox_earcut as earcut

    n = unit[surfaces]
    # Plane basis per surface: u orthogonal to n, v = n x u (right-handed, CCW kept).
    helper = np.zeros_like(n)
    use_x = np.abs(n[:, 0]) < 0.9
    helper[use_x, 0] = 1.0
    helper[~use_x, 1] = 1.0
    u = np.cross(n, helper)
    u /= np.linalg.norm(u, axis=1)[:, None]
    v = np.cross(n, u)
    first_ring = srings[surfaces]
    last_ring = srings[surfaces + 1]
    start = roffs[first_ring]
    stop = roffs[last_ring]
    count = stop - start
    pos = np.repeat(start - np.cumsum(count) + count, count) + np.arange(count.sum())
    idx_all = rv[pos]
    p = verts[idx_all]
    su = np.repeat(u, count, axis=0)
    sv = np.repeat(v, count, axis=0)
    xy_all = np.column_stack([np.einsum("ij,ij->i", p, su), np.einsum("ij,ij->i", p, sv)])
    bounds = np.concatenate([[0], np.cumsum(count)]).tolist()
    roffs_l = roffs.tolist()
    fr, lr, st = first_ring.tolist(), last_ring.tolist(), start.tolist()
    out_t: list[IntArray] = []
    out_s: list[IntArray] = []
    for k, s in enumerate(surfaces.tolist()):
        a, b = bounds[k], bounds[k + 1]
        ends = np.asarray(roffs_l[fr[k] + 1 : lr[k] + 1], dtype=np.uint32) - np.uint32(st[k])
        try:
            local = earcut.triangulate_float64(xy_all[a:b], ends)
        except (ValueError, RuntimeError):
            continue
        if local.size == 0:
            continue
        t = idx_all[a:b][local.astype(np.int64)].reshape(-1, 3)
        out_t.append(t)
        out_s.append(np.full(t.shape[0], s, dtype=np.int64))
    if not out_t:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_t), np.concatenate(out_s)


def _orient_shells(
    model: CityModel,
    verts: FloatArray,
    triangles: IntArray,
    tri_surface: IntArray,
    unit: FloatArray,
) -> int:
    """Flip closed shells whose signed volume is negative (faces pointing inward)."""
    if model.surf_shell.size == 0 or triangles.size == 0:
        return 0
    shell = model.surf_shell[tri_surface]
    in_shell = shell >= 0
    if not in_shell.any():
        return 0
    n_shells = int(model.surf_shell.max()) + 1
    # Signed volume of the shell relative to its own centroid (translation-invariant
    # for closed shells; the local centre avoids cancellation).
    a, b, c = (verts[triangles[in_shell, k]] for k in range(3))
    vol6 = np.einsum("ij,ij->i", a, np.cross(b, c))
    vol = np.bincount(shell[in_shell], weights=vol6, minlength=n_shells)
    # Inner shells (cavities) of a Solid are oriented inward on purpose (CityJSON 2.0
    # §3.3.3): only outer shells (first of each solid) are corrected.
    first_shell = np.ones(n_shells, dtype=bool)
    if model.shell_solid.size:
        first_shell[1:] = model.shell_solid[1:] != model.shell_solid[:-1]
    bad = (vol < 0) & first_shell
    if not bad.any():
        return 0
    flip_tri = in_shell.copy()
    flip_tri[in_shell] = bad[shell[in_shell]]
    triangles[flip_tri] = triangles[flip_tri][:, [0, 2, 1]]
    surf_bad = np.zeros(unit.shape[0], dtype=bool)
    has_shell = model.surf_shell >= 0
    surf_bad[has_shell] = bad[model.surf_shell[has_shell]]
    unit[surf_bad] *= -1.0
    return int(bad.sum())

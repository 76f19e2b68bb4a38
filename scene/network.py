"""Network geometry for the 3D scene: pipes and cables as tubes, roads as ribbons (numpy).

Every edge polyline becomes, per segment, an n-sided prism (tube) or a flat quad strip
(ribbon), built for all segments of a network at once with array operations; nodes are
small octahedra. Coordinates stay in the source CRS minus an origin (x east, y north,
z up); :mod:`scene.gltf` turns them into glTF axes.

Placement rules (attributes in metres, see :mod:`twin.network`):

* tube radius = ``max(diameter / 2, min_radius)``; power lines without a diameter get
  0.15 m so a cable is visible;
* an edge with a ``depth`` attribute is drawn at ``z - depth`` (buried pipes); z of
  the input (e.g. EPANET junction elevation) is taken as the ground;
* an overhead power line (``underground`` not true) is lifted by its ``height``;
* a road is a ribbon of its ``width`` (default 6 m) 0.05 m above z, mitred at bends;
* a node sits at ``z - depth`` of its own ``depth``, else at the mean offset of its
  edges, and is ``max(1.5 × adjacent tube diameter, 0.3)`` m across. Road networks get
  no node markers (they would hide under the ribbon).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from twin.errors import SceneError
from twin.network import Network

__all__ = ["LOOKS", "Look", "MeshPart", "NetworkMesh", "network_mesh"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Look:
    """How one kind of network is drawn: colour (linear RGB) and tube or ribbon."""

    name: str
    color: tuple[float, float, float]
    ribbon: bool = False
    roughness: float = 0.7

    @property
    def node_color(self) -> tuple[float, float, float]:
        """The darker colour of node markers."""
        r, g, b = self.color
        return (round(r * 0.55, 4), round(g * 0.55, 4), round(b * 0.55, 4))


LOOKS: dict[str, Look] = {
    "water": Look("water", (0.1, 0.35, 0.85)),
    "power": Look("power", (0.98, 0.62, 0.08)),
    "road": Look("road", (0.2, 0.2, 0.22), ribbon=True, roughness=0.95),
    "heat": Look("heat", (0.8, 0.12, 0.08)),
    "gas": Look("gas", (0.95, 0.85, 0.1)),
    "sewer": Look("sewer", (0.45, 0.3, 0.15)),
    "pipeline": Look("pipeline", (0.5, 0.52, 0.55)),
}

_ROAD_WIDTH = 6.0
_ROAD_LIFT = 0.05
_POWER_RADIUS = 0.15
_NODE_MIN = 0.3
_MITER_LIMIT = 3.0


@dataclass
class MeshPart:
    """One look's triangles: arrays in source axes relative to the origin.

    Attributes:
        look: look name (``water``, ``road-node``...).
        color: linear RGB.
        roughness: PBR roughness.
        positions: (n, 3) float64, source CRS minus origin.
        normals: (n, 3) float64 unit vectors.
        indices: (m, 3) uint32 triangles, counter-clockwise seen from outside.
        feature: (n,) int64 index into :attr:`NetworkMesh.feature_ids` per vertex.
    """

    look: str
    color: tuple[float, float, float]
    roughness: float
    positions: F64
    normals: F64
    indices: npt.NDArray[np.uint32]
    feature: I64


@dataclass
class NetworkMesh:
    """The triangles of one network, per look, with the twin id of every feature."""

    feature_ids: list[str]
    parts: list[MeshPart]

    @property
    def triangles(self) -> int:
        """Number of triangles over all parts."""
        return sum(int(p.indices.shape[0]) for p in self.parts)

    @property
    def vertices(self) -> int:
        """Number of vertices over all parts."""
        return sum(int(p.positions.shape[0]) for p in self.parts)


def network_mesh(
    net: Network,
    origin: npt.ArrayLike,
    *,
    sides: int = 8,
    min_radius: float = 0.05,
    nodes: bool = True,
    caps: bool = True,
) -> NetworkMesh:
    """Triangulate a network: tubes (or road ribbons) for edges, octahedra for nodes.

    Args:
        net: the network (coordinates in its CRS).
        origin: (3,) subtracted from every coordinate (the scene's local frame).
        sides: tube cross-section polygon sides (>= 3).
        min_radius: smallest tube radius (also used when an edge has no diameter).
        nodes: draw node markers.
        caps: close each tube segment with flat end caps (closed, watertight prisms).

    Returns:
        Per-look mesh parts; feature ids are the drawn nodes then every edge.

    Raises:
        SceneError: bad ``sides``/``origin``, or non-finite coordinates.
    """
    if sides < 3:
        raise SceneError(f"a tube needs at least 3 sides, got {sides}")
    org = np.asarray(origin, dtype=np.float64).reshape(-1)
    if org.shape != (3,) or not np.isfinite(org).all():
        raise SceneError(f"origin must be 3 finite numbers, got {origin!r}")
    look = LOOKS.get(net.kind, LOOKS["pipeline"])
    # adjacency() yields the raw dicts (public API), much faster than the edge view.
    edges = [
        (u, v, k, d)
        for u, nbrs in net.graph.adjacency()
        for v, keyed in nbrs.items()
        for k, d in keyed.items()
    ]
    node_list = list(net.graph.nodes) if nodes and not look.ribbon else []
    feature_ids = node_list + [k for _, _, k, _ in edges]
    node_index = {n: i for i, n in enumerate(net.graph.nodes)}
    n_nodes_drawn = len(node_list)

    # Per-edge parameters: one Python pass over edges (never over segments), then arrays.
    ne = len(edges)
    attrs = [d["attributes"] for _, _, _, d in edges]
    chunks = [d["coords"] for _, _, _, d in edges]
    counts = np.fromiter(map(len, chunks), dtype=np.int64, count=ne)
    ends = np.fromiter(
        (node_index[x] for u, v, _, _ in edges for x in (u, v)), dtype=np.int64, count=2 * ne
    ).reshape(ne, 2)
    depth = _column(attrs, "depth")
    has_depth = ~np.isnan(depth)
    if look.ribbon:
        width = _column(attrs, "width")
        size = np.where(width > 0, width, _ROAD_WIDTH) / 2  # NaN > 0 is False
        dz = _ROAD_LIFT - np.where(has_depth, depth, 0.0)
    else:
        dia = _column(attrs, "diameter")
        fallback = _POWER_RADIUS if net.kind == "power" else min_radius
        size = np.where(dia > 0, np.maximum(dia / 2, min_radius), fallback)
        dz = np.where(has_depth, -depth, 0.0)
        if net.kind == "power":
            overhead = np.fromiter((not a.get("underground") for a in attrs), dtype=bool, count=ne)
            height = _column(attrs, "height")
            dz += np.where(overhead & ~np.isnan(height), height, 0.0)
    total = int(counts.sum())
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(chunks))
    pts = np.fromiter(flat, dtype=np.float64, count=3 * total).reshape(-1, 3)
    if not np.isfinite(pts).all():
        raise SceneError(f"network {net.id!r}: non-finite edge coordinates")
    pts = pts - org
    edge_of_pt = np.repeat(np.arange(ne), counts)
    pts[:, 2] += dz[edge_of_pt]
    feat_edge = n_nodes_drawn + np.arange(ne, dtype=np.int64)

    parts: list[MeshPart] = []
    if ne:
        if look.ribbon:
            arrays = _ribbons(pts, edge_of_pt, size, feat_edge)
        else:
            arrays = _tubes(pts, edge_of_pt, size, feat_edge, sides, caps)
        if arrays[0].size:
            parts.append(MeshPart(look.name, look.color, look.roughness, *arrays))
    if n_nodes_drawn:
        parts.append(_octahedra(net, node_list, ends, size, dz, org, look))
    return NetworkMesh(feature_ids, parts)


def _column(attrs: list[dict[str, Any]], key: str) -> F64:
    """A numeric attribute per edge; NaN where missing or not a finite number."""
    return np.fromiter(
        (_num(a.get(key)) if key in a else math.nan for a in attrs),
        dtype=np.float64,
        count=len(attrs),
    )


def _num(v: Any) -> float:
    """A finite number, else NaN."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    f = float(v)
    return f if math.isfinite(f) else math.nan


def _segments(pts: F64, edge_of_pt: I64) -> tuple[I64, F64, F64]:
    """Start index, unit direction and length of every non-degenerate segment."""
    start = np.flatnonzero(edge_of_pt[:-1] == edge_of_pt[1:])
    d = pts[start + 1] - pts[start]
    length = np.linalg.norm(d, axis=1)
    keep = length > 1e-9
    start, d, length = start[keep], d[keep], length[keep]
    return start, d / length[:, None], length


def _tubes(
    pts: F64, edge_of_pt: I64, radius: F64, feat_edge: I64, sides: int, caps: bool
) -> tuple[F64, F64, npt.NDArray[np.uint32], I64]:
    start, t, _length = _segments(pts, edge_of_pt)
    ns = start.size
    edge = edge_of_pt[start]
    r = radius[edge]
    # Frame (u, w, t) right-handed: u ⟂ t and horizontal unless the segment is vertical.
    ref = np.zeros_like(t)
    vertical = np.abs(t[:, 2]) > 0.9
    ref[~vertical, 2] = 1.0
    ref[vertical, 0] = 1.0
    u = np.cross(t, ref)
    u /= np.linalg.norm(u, axis=1)[:, None]
    w = np.cross(t, u)
    ang = 2 * np.pi * np.arange(sides) / sides
    # (ns, sides, 3) unit radial directions; increasing angle turns counter-clockwise
    # around t, which fixes the outward winding below.
    radial = np.cos(ang)[None, :, None] * u[:, None, :] + np.sin(ang)[None, :, None] * w[:, None, :]
    a = pts[start][:, None, :] + r[:, None, None] * radial
    b = pts[start + 1][:, None, :] + r[:, None, None] * radial
    pos = [a, b]
    nrm = [radial, radial]
    j = np.arange(sides)
    j1 = (j + 1) % sides
    # Side quads (a_j, a_j+1, b_j+1), (a_j, b_j+1, b_j); b ring is offset by `sides`.
    side = np.concatenate(
        [np.stack([j, j1, sides + j1], axis=1), np.stack([j, sides + j1, sides + j], axis=1)]
    )
    tris = [side]
    per = 2 * sides
    if caps:
        k = np.arange(1, sides - 1)
        zero = np.zeros_like(k)
        # Fans: the start cap faces -t (reversed order), the end cap faces +t.
        tris.append(np.stack([zero, k + 1, k], axis=1) + per)
        tris.append(np.stack([zero, k, k + 1], axis=1) + per + sides)
        pos += [a, b]
        nrm += [np.broadcast_to(-t[:, None, :], a.shape), np.broadcast_to(t[:, None, :], b.shape)]
        per += 2 * sides
    tmpl = np.concatenate(tris)
    positions = np.concatenate(pos, axis=1).reshape(-1, 3)
    normals = np.concatenate(nrm, axis=1).reshape(-1, 3)
    indices = (tmpl[None, :, :] + per * np.arange(ns)[:, None, None]).reshape(-1, 3)
    feature = np.repeat(feat_edge[edge], per)
    return positions, np.ascontiguousarray(normals), indices.astype(np.uint32), feature


def _ribbons(
    pts: F64, edge_of_pt: I64, half: F64, feat_edge: I64
) -> tuple[F64, F64, npt.NDArray[np.uint32], I64]:
    # Drop repeated points inside a polyline so every segment has a direction.
    keep = np.ones(len(pts), dtype=bool)
    same_edge = edge_of_pt[1:] == edge_of_pt[:-1]
    dup = same_edge & (np.linalg.norm(np.diff(pts[:, :2], axis=0), axis=1) <= 1e-9)
    keep[1:] &= ~dup
    pts, edge_of_pt = pts[keep], edge_of_pt[keep]
    n = len(pts)
    same = edge_of_pt[1:] == edge_of_pt[:-1]  # segment i joins point i and i+1
    d = np.diff(pts[:, :2], axis=0)
    seg_len = np.linalg.norm(d, axis=1)
    seg_len[seg_len == 0] = 1.0
    left = np.column_stack([-d[:, 1], d[:, 0]]) / seg_len[:, None]
    left[~same] = 0.0
    # Vertex normal in plan = sum of the left normals of its (up to two) segments.
    acc = np.zeros((n, 2))
    acc[:-1] += left
    acc[1:] += left
    norm = np.linalg.norm(acc, axis=1)
    ok = norm > 1e-9
    miter = np.zeros((n, 2))
    miter[ok] = acc[ok] / norm[ok, None]
    # Scale so the ribbon keeps its width across a bend: 1 / cos(half angle), limited.
    ref = np.zeros((n, 2))
    has_next = np.zeros(n, dtype=bool)
    has_next[:-1] = same
    ref[has_next] = left[np.flatnonzero(has_next)]
    has_prev = np.zeros(n, dtype=bool)
    has_prev[1:] = same
    only_prev = has_prev & ~has_next
    ref[only_prev] = left[np.flatnonzero(only_prev) - 1]
    cos = np.einsum("ij,ij->i", miter, ref)
    scale = 1.0 / np.clip(cos, 1.0 / _MITER_LIMIT, None)
    off = miter * (half[edge_of_pt] * scale)[:, None]
    usable = ok & (has_next | has_prev)
    left_pts = pts.copy()
    right_pts = pts.copy()
    left_pts[:, :2] += off
    right_pts[:, :2] -= off
    # Vertex 2i is the left, 2i+1 the right side of point i.
    positions = np.stack([left_pts, right_pts], axis=1).reshape(-1, 3)
    seg = np.flatnonzero(same & usable[:-1] & usable[1:])
    li, ri = 2 * seg, 2 * seg + 1
    ln, rn = li + 2, ri + 2
    # (R_i, R_i+1, L_i+1), (R_i, L_i+1, L_i): counter-clockwise seen from above.
    indices = np.concatenate([np.stack([ri, rn, ln], 1), np.stack([ri, ln, li], 1)])
    normals = np.zeros_like(positions)
    normals[:, 2] = 1.0
    feature = np.repeat(feat_edge[edge_of_pt], 2)
    return positions, normals, indices.astype(np.uint32), feature


# Unit octahedron faces as (x-sign, y-sign, z-sign).
_OCTANTS = np.array([[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)])


def _octahedra(
    net: Network,
    node_list: list[str],
    ends: I64,
    radius: F64,
    dz: F64,
    org: F64,
    look: Look,
) -> MeshPart:
    n = len(node_list)
    xyz = np.asarray([net.graph.nodes[k]["xyz"] for k in node_list], dtype=np.float64)
    if not np.isfinite(xyz).all():
        raise SceneError(f"network {net.id!r}: non-finite node coordinates")
    # Node offsets and sizes from adjacent edges (node_list is graph order, as `ends`).
    diam = np.zeros(n)
    dz_sum = np.zeros(n)
    deg = np.zeros(n)
    if ends.size:
        flat = ends.reshape(-1)
        np.maximum.at(diam, flat, np.repeat(2 * radius, 2))
        np.add.at(dz_sum, flat, np.repeat(dz, 2))
        np.add.at(deg, flat, 1.0)
    node_dz = np.where(deg > 0, dz_sum / np.maximum(deg, 1), 0.0)
    for i, k in enumerate(node_list):
        depth = _num(net.graph.nodes[k]["attributes"].get("depth"))
        if not math.isnan(depth):
            node_dz[i] = -depth
    half = np.maximum(1.5 * diam, _NODE_MIN) / 2
    centre = xyz - org
    centre[:, 2] += node_dz
    # Each face: its three axis vertices, ordered counter-clockwise seen from outside
    # (x, y, z when the octant's sign product is positive, else x, z, y).
    corners = np.zeros((8, 3, 3))
    for f, (sx, sy, sz) in enumerate(_OCTANTS):
        vx, vy, vz = np.array([sx, 0, 0]), np.array([0, sy, 0]), np.array([0, 0, sz])
        corners[f] = (vx, vy, vz) if sx * sy * sz > 0 else (vx, vz, vy)
    face_n = _OCTANTS / math.sqrt(3.0)
    positions = centre[:, None, None, :] + half[:, None, None, None] * corners[None]
    normals = np.broadcast_to(face_n[None, :, None, :], positions.shape)
    indices = np.arange(n * 24, dtype=np.uint32).reshape(-1, 3)
    feature = np.repeat(np.arange(n, dtype=np.int64), 24)
    return MeshPart(
        f"{look.name}-node",
        look.node_color,
        look.roughness,
        positions.reshape(-1, 3),
        np.ascontiguousarray(normals.reshape(-1, 3)),
        indices,
        feature,
    )

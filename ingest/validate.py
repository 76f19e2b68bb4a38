"""Validate CityJSON files: structure, duplicate JSON keys and val3dity-style geometry.

Two entry points:

* :func:`check_geometry` runs geometric-validity checks on a read
  :class:`~twin.geometry.CityModel` and returns :class:`~twin.geometry.ModelWarning` entries
  whose ``code`` is the val3dity error code (https://val3dity.readthedocs.io/ "Errors"):
  101/102/104 (rings), 203 (polygons), 301/302/303/305/307 (shells), 405 (solids),
  501/502/503 (CompositeSolids) and 601 (BuildingParts). Ring, polygon and shell checks are
  vectorized numpy over the flattened arrays; the volume checks (501/601) use a bbox
  prefilter and point-in-solid tests by ray parity, bounded by a time budget.
* :func:`validate_path` lists every problem of a file: the read error (if any), duplicate
  JSON keys, cheap schema-level problems, the reader's warnings and the geometry checks of
  every LoD present in the file.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import mapbox_earcut
import numpy as np
import numpy.typing as npt

from ingest.cityjson import load_cityjson, parse_cityjson
from twin.errors import IngestError
from twin.geometry import CityModel, ModelWarning

__all__ = [
    "OVERLAP_TOL",
    "PLANARITY_TOL",
    "SNAP_TOL",
    "Problem",
    "ValidationReport",
    "check_geometry",
    "format_problem",
    "validate_path",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# val3dity defaults: vertices closer than snap_tol are the same vertex; a polygon is
# non-planar (203) when a vertex is further than planarity_d2p from its best-fit plane.
SNAP_TOL = 0.001
PLANARITY_TOL = 0.01
# Two volumes overlap (501/601) only where a point lies at least this deep in both.
OVERLAP_TOL = 0.001
# A ring whose area (Newell) is below this is collapsed to a line or a point (104).
COLLAPSED_AREA = 1e-8
# Volume tests skip solids with more triangles than this (reported as "skipped").
MAX_SOLID_TRIANGLES = 20_000
# Coordinates beyond this (after the transform) cannot be checked with metre tolerances.
MAX_COORDINATE = 1e10
# Element budget of one (points x triangles) block in the ray tests.
_BLOCK = 200_000
_INT_KEY_LIMIT = 2**62
_SEQ_SUFFIXES = (".jsonl", ".city.jsonl", ".cjseq")
_PART_TYPES = ("BuildingPart", "BridgePart", "TunnelPart")
_ROOT_TYPES = ("Building", "Bridge", "Tunnel")

# Three ray directions with no zero component (axis-aligned faces are common): a point is
# inside a solid when at least two rays cross its boundary an odd number of times.
_RAYS: FloatArray = np.array(
    [[0.6011, 0.3713, 0.7075], [-0.4417, 0.7818, 0.4401], [0.3092, -0.5321, -0.7882]]
)
_RAYS = _RAYS / np.linalg.norm(_RAYS, axis=1)[:, None]
# Asymmetric barycentric weights: a sample point strictly inside a triangle that avoids its
# medians (where symmetric test data puts other solids' edges).
_BARY: FloatArray = np.array([0.3, 0.33, 0.37])

Severity = Literal["error", "warning"]


# -- report ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in a file.

    Attributes:
        severity: "error" (the file cannot be read as intended) or "warning" (it can be
            drawn but something is wrong).
        code: a val3dity code ("302"), "901" for a file that cannot be read, or a short
            kebab-case name ("duplicate-key", "dangling-parent", ...).
        message: what is wrong, one line.
        object_id: the CityObject concerned, if any.
        where: where in the file (``object 'b1' LoD 2``, ``line 3``, ``CityObjects``).
    """

    severity: Severity
    code: str
    message: str
    object_id: str | None = None
    where: str = ""


@dataclass
class ValidationReport:
    """Every problem found in one file."""

    source: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem (error or warning) was found."""
        return not self.problems

    @property
    def errors(self) -> list[Problem]:
        """The error-severity problems."""
        return [p for p in self.problems if p.severity == "error"]

    def add(
        self,
        severity: Severity,
        code: str,
        message: str,
        object_id: str | None = None,
        where: str | None = None,
    ) -> None:
        """Append a problem; ``where`` defaults to ``object '<id>'``."""
        if where is None:
            where = f"object {object_id!r}" if object_id is not None else ""
        self.problems.append(
            Problem(severity, code, _one_line(message) or "-", object_id, _one_line(where))
        )


def format_problem(p: Problem) -> str:
    """Format a problem as one line.

    Args:
        p: the problem.

    Returns:
        E.g. ``warning 302 object 'b1': shell not closed (edge 12-13 used once)``.
    """
    where = p.where or (f"object {p.object_id!r}" if p.object_id is not None else "")
    head = f"{p.severity} {p.code}" + (f" {where}" if where else "")
    return _one_line(f"{head}: {p.message}")


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()).strip()


# -- validate a file -------------------------------------------------------------------


def validate_path(path: str | Path, *, max_seconds: float = 10.0) -> ValidationReport:
    """Validate a CityJSON file (document, CityJSONSeq or lone CityJSONFeature).

    Lists every problem found: duplicate JSON keys (errors), the read error if the file
    cannot be read (one error, then the validation stops), schema-level problems (objects
    without geometry, empty primitives, one-way parent/child links, numeric ``lod`` in
    CityJSON >= 1.1), the reader's warnings, and :func:`check_geometry` for each LoD.

    Args:
        path: the file.
        max_seconds: time budget of the geometric checks (all LoDs together).

    Returns:
        The report; never raises for bad input.
    """
    p = Path(path)
    report = ValidationReport(source=str(p))
    try:
        data = p.read_bytes()
    except OSError:
        try:
            load_cityjson(p)  # the reader phrases missing/unreadable files
        except IngestError as exc:
            _add_ingest_error(report, exc)
        return report
    docs = _parse_documents(data, p.name.endswith(_SEQ_SUFFIXES))
    for line, doc in docs:
        _duplicate_keys(report, doc, line)
    try:
        model = parse_cityjson(data, source=str(p))
    except IngestError as exc:
        _add_ingest_error(report, exc)
        return report
    _schema_checks(report, [doc for _, doc in docs], model)
    seen: set[tuple[str, str | None, str]] = set()
    for w in model.warnings:
        seen.add((w.code, w.object_id, w.message))
        report.add("warning", w.code, w.message, w.object_id)
    deadline = time.monotonic() + max_seconds
    models: list[tuple[str | None, CityModel]] = [(None, model)]
    for lod in model.lods[:-1]:
        try:
            models.append((lod, parse_cityjson(data, source=str(p), lod=lod)))
        except IngestError as exc:
            _add_ingest_error(report, exc, prefix=f"LoD {lod}: ")
    geo_seen: set[tuple[str, str | None, str, str]] = set()
    for model_lod, m in models:
        if model_lod is not None:
            for w in m.warnings:
                if (w.code, w.object_id, w.message) not in seen:
                    seen.add((w.code, w.object_id, w.message))
                    report.add("warning", w.code, w.message, w.object_id)
        budget = max(0.0, deadline - time.monotonic())
        for w in check_geometry(m, max_seconds=budget):
            obj = m.twin.get(w.object_id) if w.object_id is not None else None
            obj_lod = obj.geometry.lod if obj is not None and obj.geometry is not None else None
            key = (w.code, w.object_id, str(obj_lod), w.message)
            if key in geo_seen:
                continue
            geo_seen.add(key)
            where = f"object {w.object_id!r}" if w.object_id is not None else ""
            if obj_lod is not None and len(models) > 1:
                where += f" LoD {obj_lod}"
            report.add("warning", w.code, w.message, w.object_id, where=where)
    return report


def _add_ingest_error(report: ValidationReport, exc: IngestError, prefix: str = "") -> None:
    # val3dity 901 INVALID_INPUT_FILE: the file cannot be read as CityJSON.
    report.add("error", "901", prefix + exc.problem, None, where=exc.where)


def _parse_documents(data: bytes, seq: bool) -> list[tuple[int | None, Any]]:
    """Parse with the stdlib (duplicate keys kept visible); a sequence line by line.

    Returns (line number or None, value) pairs; values that do not parse are left out
    (the reader reports them).
    """
    if not seq:
        try:
            return [(None, json.loads(data, object_pairs_hook=_DupDict.from_pairs))]
        except (ValueError, RecursionError):
            pass
    out: list[tuple[int | None, Any]] = []
    for lineno, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw, object_pairs_hook=_DupDict.from_pairs)
        except (ValueError, RecursionError):
            value = None
        if not out and not isinstance(value, dict):
            return []  # not a sequence either (its first line is not an object)
        if value is not None:
            out.append((lineno, value))
    return out


class _DupDict(dict[str, Any]):
    """A JSON object that remembers its duplicated keys (the stdlib keeps the last value)."""

    dups: dict[str, int]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _DupDict:
        d = cls()
        counts: dict[str, int] = {}
        for k, v in pairs:
            if k in d:
                counts[k] = counts.get(k, 1) + 1
            d[k] = v
        d.dups = counts
        return d


def _duplicate_keys(report: ValidationReport, doc: Any, line: int | None) -> None:
    """Report every duplicated key (RFC 8259 §4: names SHOULD be unique; CityJSON ids MUST)."""
    stack: list[tuple[Any, str]] = [(doc, "")]
    prefix = f"line {line}: " if line is not None else ""
    while stack:
        node, path = stack.pop()
        if isinstance(node, _DupDict):
            for key, n in node.dups.items():
                where = prefix + (path or "top level")
                if path == "CityObjects":
                    msg = f"CityObjects id {key!r} duplicated ({n} times; only the last is read)"
                    report.add("error", "duplicate-key", msg, key, where=where)
                else:
                    msg = f"key {key!r} duplicated ({n} times; only the last is read)"
                    report.add("error", "duplicate-key", msg, None, where=where)
            for k, v in node.items():
                if isinstance(v, dict | list):
                    stack.append((v, f"{path}.{k}" if path else k))
        elif isinstance(node, list):
            # Boundaries are long lists of lists of ints: only descend where objects live.
            for i, v in enumerate(node):
                nested = isinstance(v, list) and v and isinstance(v[0], dict | list)
                if isinstance(v, dict) or nested:
                    stack.append((v, f"{path}[{i}]"))


def _version_at_least(version: Any, major: int, minor: int) -> bool:
    try:
        parts = [int(x) for x in str(version).split(".")[:2]]
    except ValueError:
        return False
    while len(parts) < 2:
        parts.append(0)
    return (parts[0], parts[1]) >= (major, minor)


def _schema_checks(report: ValidationReport, docs: list[Any], model: CityModel) -> None:
    """Cheap schema-level checks on the raw JSON of a file the reader accepted."""
    version: Any = model.version
    objects: dict[str, Any] = {}
    templates: list[Any] = []
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        if doc.get("type") == "CityJSON" and "version" in doc:
            version = doc["version"]
        cos = doc.get("CityObjects")
        if isinstance(cos, dict):
            objects.update(cos)
        gt = doc.get("geometry-templates")
        if isinstance(gt, dict) and isinstance(gt.get("templates"), list):
            templates = gt["templates"]
    lod_is_string = _version_at_least(version, 1, 1)
    # The reader already warns about empty primitives of the geometries it flattened;
    # its messages start with "object '<id>' geometry <i>:".
    reported_empty = [
        w.message for w in model.warnings if w.code in ("empty-primitive", "empty-geometry")
    ]
    for oid, raw in objects.items():
        if not isinstance(raw, dict):
            continue
        geoms = raw.get("geometry")
        children = raw.get("children")
        no_geometry = not isinstance(geoms, list) or not geoms
        has_children = isinstance(children, list) and bool(children)
        if no_geometry and not has_children and raw.get("type") != "CityObjectGroup":
            # val3dity 906 PRIMITIVE_NO_GEOMETRY (CityJSON allows it, nothing is drawn).
            report.add("warning", "906", "no geometry", oid)
        for gi, g in enumerate(geoms if isinstance(geoms, list) else []):
            if not isinstance(g, dict):
                continue
            where = f"object {oid!r} geometry {gi}"
            lod = g.get("lod")
            if lod_is_string and lod is not None and not isinstance(lod, str):
                report.add(
                    "warning",
                    "lod-not-string",
                    f"geometry {gi} has lod {lod!r}: CityJSON >= 1.1 requires a string "
                    f'such as "{lod}"',
                    oid,
                )
            n_empty = _count_empty(g.get("boundaries"), g.get("type"))
            if n_empty and not any(m.startswith(where + ":") for m in reported_empty):
                # val3dity 902 EMPTY_PRIMITIVE.
                report.add(
                    "warning",
                    "902",
                    f"geometry {gi} ({g.get('type')}) has {n_empty} empty primitive(s)",
                    oid,
                )
        _check_links(report, oid, raw, objects)
    for ti, t in enumerate(templates):
        if isinstance(t, dict) and lod_is_string:
            lod = t.get("lod")
            if lod is not None and not isinstance(lod, str):
                report.add(
                    "warning",
                    "lod-not-string",
                    f"geometry template {ti} has lod {lod!r}: CityJSON >= 1.1 requires a string",
                    where="geometry-templates",
                )


def _check_links(
    report: ValidationReport, oid: str, raw: dict[str, Any], objects: dict[str, Any]
) -> None:
    """Parent/child links must resolve and be mutual (CityJSON 2.0 §3.1.4).

    Unresolved links are already reader warnings (dangling-parent/-child); here only the
    one-way links among resolved objects are reported.
    """
    for key, back in (("children", "parents"), ("parents", "children")):
        links = raw.get(key)
        if not isinstance(links, list):
            continue
        for other_id in links:
            other = objects.get(other_id) if isinstance(other_id, str) else None
            if not isinstance(other, dict):
                continue
            back_links = other.get(back)
            if not isinstance(back_links, list):
                # CityJSON < 1.0 had a single "parent" member.
                legacy = other.get("parent") if back == "parents" else None
                back_links = [legacy] if isinstance(legacy, str) else []
            if oid not in back_links:
                report.add(
                    "warning",
                    "one-way-link",
                    f"{oid!r} lists {other_id!r} in {key!r} but {other_id!r} does not list "
                    f"{oid!r} in {back!r}",
                    oid,
                )


# Number of list levels above the vertex indices, per geometry type (CityJSON 2.0 §3.3).
_LIST_LEVELS = {
    "MultiPoint": 1,
    "MultiLineString": 2,
    "MultiSurface": 3,
    "CompositeSurface": 3,
    "Solid": 4,
    "MultiSolid": 5,
    "CompositeSolid": 5,
}


def _count_empty(b: Any, gtype: Any) -> int:
    """Count empty lists in a boundaries array above the vertex-index level."""
    levels = _LIST_LEVELS.get(gtype) if isinstance(gtype, str) else None
    if levels is None or not isinstance(b, list):
        return 0
    n = 0
    stack: list[tuple[Any, int]] = [(b, levels)]
    while stack:
        node, lv = stack.pop()
        if not isinstance(node, list):
            continue
        if not node:
            n += 1
        elif lv > 1:
            stack.extend((child, lv - 1) for child in node)
    return n


# -- geometry: entry point -------------------------------------------------------------


def check_geometry(model: CityModel, *, max_seconds: float = 10.0) -> list[ModelWarning]:
    """Check the geometric validity of a model's drawn (flattened) geometry.

    Codes follow val3dity (https://val3dity.readthedocs.io/, "Errors"); vertices closer
    than :data:`SNAP_TOL` count as the same vertex:

    * 101 ring with fewer than 3 distinct points; 102 consecutive duplicate points;
      104 ring self-intersection (a vertex repeated, or collapsed to zero area);
    * 203 polygon further than :data:`PLANARITY_TOL` from its best-fit plane;
    * shells of Solids: 301 fewer than 4 polygons, 302 not closed (an edge used once),
      303 non-manifold (an edge used by more than 2 polygons, or a vertex whose polygons
      do not form one umbrella), 305 disconnected polygons, 307 an edge used twice in the
      same direction, 405 a closed shell oriented inside-out;
    * CompositeSolids: 501 interiors of two solids intersect, 502 two identical solids,
      503 a solid sharing no face with the others. (A MultiSolid has no topological
      constraints, val3dity 402 note, so it is not checked for these.)
    * 601 volumes of one building with overlapping interiors: two of its BuildingParts,
      the Building and a part, or two geometries of one object at the same LoD (objects
      drawn at different LoDs are not compared).

    Volume tests (501/601) need closed shells and are bounded: objects with more than
    :data:`MAX_SOLID_TRIANGLES` triangles, and whatever is left when ``max_seconds`` runs
    out, are skipped with a warning of code "skipped".

    Args:
        model: a read model (only its chosen LoD is flattened).
        max_seconds: time budget.

    Returns:
        One warning per object and problem kind (counts and a first example in the text).
    """
    if model.n_surfaces == 0:
        return []
    deadline = time.monotonic() + max(0.0, max_seconds)
    with np.errstate(all="ignore"):
        reason = _unfit_reason(model)
        if reason is not None:
            return [ModelWarning("skipped", f"geometric checks skipped: {reason}")]
        checker = _Checker(model, deadline)
        checker.run()
    return checker.result()


def _unfit_reason(model: CityModel) -> str | None:
    v = model.vertices
    used = v[model.ring_vertices] if model.ring_vertices.size else v[:0]
    if not np.isfinite(used).all():
        return "non-finite coordinates"
    if used.size and float(np.abs(used).max()) > MAX_COORDINATE:
        return f"coordinates beyond {MAX_COORDINATE:g} (wrong transform?)"
    # Coordinates beyond +-180/+-90 cannot be degrees: no need to ask pyproj (slow import).
    maybe_degrees = bool(used.size) and bool(
        (np.abs(used[:, 0]) <= 180).all() and (np.abs(used[:, 1]) <= 90).all()
    )
    if model.epsg is not None and maybe_degrees and _is_geographic(model.epsg):
        return f"EPSG:{model.epsg} is geographic (degrees); the tolerances are in metres"
    return None


@functools.lru_cache(maxsize=64)
def _is_geographic(epsg: int) -> bool:
    try:
        from pyproj import CRS
        from pyproj.exceptions import CRSError
    except ImportError:  # pragma: no cover - pyproj is a dependency
        return epsg in (4326, 4979, 4258, 4937)
    try:
        return bool(CRS.from_epsg(epsg).is_geographic)
    except CRSError:
        return False


# -- geometry: helpers -----------------------------------------------------------------


def _dense_ids(cols: list[IntArray], sizes: list[int]) -> tuple[IntArray, int]:
    """Dense group ids of the rows of integer columns (mixed-radix key or row unique)."""
    n = cols[0].shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    total = 1
    for s in sizes:
        total *= max(int(s), 1)
    if total < _INT_KEY_LIMIT:
        key = np.zeros(n, dtype=np.int64)
        for c, s in zip(cols, sizes, strict=True):
            key = key * np.int64(max(int(s), 1)) + c
        uniq, inv = np.unique(key, return_inverse=True)
    else:
        uniq, inv = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), int(uniq.shape[0])


def _components(n: int, i: IntArray, j: IntArray) -> IntArray:
    """Connected-component labels of a graph (vectorized hook-and-compress union-find).

    Each round hooks every root to the smallest root it is linked to, then compresses
    the trees fully; the number of rounds is logarithmic in practice.
    """
    label = np.arange(n, dtype=np.int64)
    if i.size == 0:
        return label
    while True:
        li, lj = label[i], label[j]
        diff = li != lj
        if not diff.any():
            break
        low = np.minimum(li[diff], lj[diff])
        np.minimum.at(label, li[diff], low)
        np.minimum.at(label, lj[diff], low)
        while True:
            nxt = label[label]
            if np.array_equal(nxt, label):
                break
            label = nxt
    return label


def _cyclic(offsets: IntArray, n: int) -> tuple[IntArray, IntArray]:
    """Next and previous position of each element within its ring (rings wrap)."""
    nxt = np.arange(1, n + 1, dtype=np.int64)
    starts, ends = offsets[:-1], offsets[1:]
    nonempty = ends > starts
    nxt[ends[nonempty] - 1] = starts[nonempty]
    prv = np.empty(n, dtype=np.int64)
    prv[nxt] = np.arange(n, dtype=np.int64)
    return nxt, prv


def _first_per_group(groups: IntArray, n_groups: int) -> tuple[IntArray, IntArray]:
    """For items labelled by group: the count per group and the first item of each group."""
    counts = np.bincount(groups, minlength=n_groups).astype(np.int64)
    first = np.full(n_groups, -1, dtype=np.int64)
    if groups.size:
        uniq, idx = np.unique(groups, return_index=True)
        first[uniq] = idx
    return counts, first


def _more(n: int) -> str:
    return f"; {n - 1} more" if n > 1 else ""


def _fmt_point(p: FloatArray) -> str:
    return "(" + ", ".join(f"{float(x):.3f}" for x in p) + ")"


class _OutOfTime(Exception):
    """The time budget of :func:`check_geometry` ran out during a volume test."""


class _Solid:
    """A closed volume for the overlap tests, in model-local coordinates.

    Holds its triangles and bbox, a sample point just off each triangle, and per ray
    direction the Möller–Trumbore terms of its triangles (computed once, reused in every
    pair the solid is tested in).
    """

    def __init__(self, feature: int, label: str, tris: FloatArray) -> None:
        self.feature = feature
        self.label = label
        self.tris = tris
        flat = tris.reshape(-1, 3)
        self.lo: FloatArray = flat.min(axis=0)
        self.hi: FloatArray = flat.max(axis=0)
        self.samples, self.normals = _tri_samples(tris)
        v0 = tris[:, 0]
        e1 = tris[:, 1] - v0
        e2 = tris[:, 2] - v0
        scale = np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1)
        n = _cross(e1, e2)
        self.rays: list[tuple[FloatArray, FloatArray, BoolArray]] = []
        for d in _RAYS:
            h = _cross(np.broadcast_to(d, e2.shape), e2)
            g = _cross(e1, np.broadcast_to(d, e1.shape))
            det = np.einsum("ij,ij->i", e1, h)
            ok = np.abs(det) > 1e-12 * scale
            inv = np.zeros_like(det)
            inv[ok] = 1.0 / det[ok]
            mat = np.concatenate([h, g, n], axis=0)  # (3T, 3)
            const = np.einsum("tk,tk->t", mat, np.concatenate([v0, v0, v0]))
            self.rays.append((mat, np.concatenate([const, np.tile(inv, 3)]), ok))

    def inside(self, points: FloatArray) -> BoolArray:
        """Point-in-solid by ray parity, majority over three rays (the third ray is cast
        only where the first two disagree)."""
        first = self._parity(points, 0)
        second = self._parity(points, 1)
        out = first & second
        undecided = first ^ second
        if undecided.any():
            out[undecided] = self._parity(points[undecided], 2)
        return out

    def _parity(self, points: FloatArray, ray: int) -> BoolArray:
        """Odd number of boundary crossings along ray ``ray`` from each point.

        Möller–Trumbore with the point as ray origin: for s = p - v0 the barycentric u, w
        and the ray parameter t are s·(d×e2), s·(e1×d) and s·(e1×e2) over det, so one
        matrix product gives all three for all points and triangles.
        """
        n_pts = points.shape[0]
        n_tri = self.tris.shape[0]
        odd = np.zeros(n_pts, dtype=bool)
        if n_pts == 0 or n_tri == 0:
            return odd
        mat, const_inv, ok = self.rays[ray]
        const, inv = const_inv[: 3 * n_tri], const_inv[3 * n_tri :]
        step = max(1, _BLOCK // n_tri)
        for s0 in range(0, n_pts, step):
            q = ((points[s0 : s0 + step] @ mat.T - const) * inv).reshape(-1, 3, n_tri)
            u, w, t = q[:, 0], q[:, 1], q[:, 2]
            hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0)
            odd[s0 : s0 + step] = hit.sum(axis=1) % 2 == 1
        return odd


def _cross(a: FloatArray, b: FloatArray) -> FloatArray:
    """Row-wise cross product of (N, 3) arrays (np.cross is slow on small inputs)."""
    out = np.empty(np.broadcast_shapes(a.shape, b.shape))
    out[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    out[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    out[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return out


class _Checker:
    """One run of the geometric checks over a model."""

    def __init__(self, model: CityModel, deadline: float) -> None:
        self.m = model
        self.deadline = deadline
        self.out: list[tuple[int, str, ModelWarning]] = []
        self.timed_out = False
        self.solid_cache: dict[tuple[int, str], _Solid | None] = {}
        self._local: FloatArray | None = None
        self.origin: FloatArray = np.zeros(3)
        m = model
        self.n_feat = len(m.feature_ids)
        self.n_surf = m.n_surfaces
        self.n_rings = m.n_rings
        self.n_shells = int(m.shell_solid.shape[0])
        self.feat_first_surf = np.searchsorted(m.surf_feature, np.arange(self.n_feat))
        self.surf_of_ring = np.repeat(
            np.arange(self.n_surf, dtype=np.int64), np.diff(m.surface_rings)
        )
        self.solid_feature = (
            m.group_feature[m.solid_group] if m.solid_group.size else np.zeros(0, np.int64)
        )
        self.feat_first_solid = np.searchsorted(self.solid_feature, np.arange(self.n_feat))
        self.solid_first_shell = np.searchsorted(m.shell_solid, np.arange(m.solid_group.shape[0]))

    # -- output ------------------------------------------------------------------------

    def warn(self, feature: int, code: str, message: str) -> None:
        oid = self.m.feature_ids[feature] if 0 <= feature < self.n_feat else None
        self.out.append((feature, code, ModelWarning(code, message, oid)))

    def result(self) -> list[ModelWarning]:
        order = sorted(range(len(self.out)), key=lambda k: (self.out[k][0], self.out[k][1], k))
        return [self.out[k][2] for k in order]

    def surf_label(self, s: int) -> str:
        f = int(self.m.surf_feature[s])
        return f"surface {s - int(self.feat_first_surf[f])}"

    def ring_label(self, r: int) -> str:
        s = int(self.surf_of_ring[r])
        return f"{self.surf_label(s)} ring {r - int(self.m.surface_rings[s])}"

    def shell_label(self, sh: int) -> str:
        m = self.m
        solid = int(m.shell_solid[sh])
        f = int(self.solid_feature[solid])
        local_solid = solid - int(self.feat_first_solid[f])
        local_shell = sh - int(self.solid_first_shell[solid])
        return f"solid {local_solid} shell {local_shell}"

    def out_of_time(self) -> bool:
        if time.monotonic() > self.deadline:
            self.timed_out = True
        return self.timed_out

    # -- run ---------------------------------------------------------------------------

    def run(self) -> None:
        m = self.m
        # Snap: vertices within SNAP_TOL share one canonical id (val3dity snap_tol).
        q = np.round(m.vertices / SNAP_TOL)
        _, canon = np.unique(q, axis=0, return_inverse=True)
        self.canon = canon.reshape(-1).astype(np.int64)
        self.n_canon = int(self.canon.max()) + 1 if self.canon.size else 0
        self._rings()
        self._surface_boxes()
        self._planarity()
        self._shells()
        try:
            if not self.out_of_time():
                self._composite_solids()
            if not self.out_of_time():
                self._building_parts()
        except _OutOfTime:
            self.timed_out = True
        if self.timed_out:
            self.warn(
                -1,
                "skipped",
                "geometric checks stopped at the time limit: some interior-intersection "
                "tests (501/601) were not run",
            )

    # -- rings (101, 102, 104) ---------------------------------------------------------

    def _rings(self) -> None:
        m = self.m
        n_rings = self.n_rings
        rv = m.ring_vertices
        ring_of = np.repeat(np.arange(n_rings, dtype=np.int64), np.diff(m.ring_offsets))
        c = self.canon[rv]
        nxt, _ = _cyclic(m.ring_offsets, rv.shape[0])
        same_next = c == c[nxt]
        # Keep the last point of each run of equal points: the deduplicated ring.
        keep = ~same_next
        self.kc = c[keep]
        self.kv = rv[keep]
        self.kr = ring_of[keep]
        self.n_eff = np.bincount(self.kr, minlength=n_rings).astype(np.int64)
        self.koffs = np.zeros(n_rings + 1, dtype=np.int64)
        np.cumsum(self.n_eff, out=self.koffs[1:])
        self.knxt, self.kprv = _cyclic(self.koffs, self.kc.shape[0])
        ring_feat = m.surf_feature[self.surf_of_ring]

        # 102 CONSECUTIVE_POINTS_SAME (a ring repeating its first point counts too).
        dup_pos = np.flatnonzero(same_next)
        self._report_rings(
            ring_of[dup_pos],
            ring_feat,
            "102",
            lambda r, k: (
                f"consecutive duplicate points (vertex {int(rv[k])}; {self.ring_label(r)})"
            ),
            dup_pos,
        )
        # 101 TOO_FEW_POINTS.
        few = np.flatnonzero(self.n_eff < 3)
        self._report_rings(
            few,
            ring_feat,
            "101",
            lambda r, _k: (
                f"ring has {int(self.n_eff[r])} distinct point(s), needs at least 3 "
                f"({self.ring_label(r)})"
            ),
            few,
        )
        valid = self.n_eff >= 3
        # 104 SELF_INTERSECTION, cheap cases: a vertex repeated non-consecutively.
        ids, n_ids = _dense_ids([self.kr, self.kc], [n_rings, self.n_canon])
        counts = np.bincount(ids, minlength=n_ids)
        rep_pos = np.flatnonzero((counts[ids] > 1) & valid[self.kr])
        self._report_rings(
            self.kr[rep_pos],
            ring_feat,
            "104",
            lambda r, k: (
                f"ring self-intersects: vertex {int(self.kv[k])} is visited twice "
                f"({self.ring_label(r)})"
            ),
            rep_pos,
        )
        # 104, collapsed to a line or a point: Newell area ~ 0.
        self.ring_normal = self._newell()
        area = 0.5 * np.linalg.norm(self.ring_normal, axis=1)
        flat = np.flatnonzero(valid & (area < COLLAPSED_AREA))
        self._report_rings(
            flat,
            ring_feat,
            "104",
            lambda r, _k: (
                f"ring collapsed to a line or a point (area {float(area[r]):.2g} "
                f"m²; {self.ring_label(r)})"
            ),
            flat,
        )
        self.ring_valid = valid & (area >= COLLAPSED_AREA)

    def _newell(self) -> FloatArray:
        """Newell normal (2 x vector area) of every deduplicated ring."""
        out = np.zeros((self.n_rings, 3))
        if self.kc.size == 0:
            return out
        v = self.m.vertices
        first = self.koffs[:-1][self.kr]
        p = v[self.kv] - v[self.kv[first]]
        q = p[self.knxt]
        cross = np.cross(p, q)
        nonempty = self.n_eff > 0
        out[nonempty] = np.add.reduceat(cross, self.koffs[:-1][nonempty], axis=0)
        return out

    def _report_rings(
        self,
        rings: IntArray,
        ring_feat: IntArray,
        code: str,
        text: Any,
        items: IntArray,
    ) -> None:
        """One warning per feature: count of distinct rings and the first example."""
        if rings.size == 0:
            return
        feats = ring_feat[rings]
        counts, first = _first_per_group(feats, self.n_feat)
        n_rings = np.bincount(ring_feat[np.unique(rings)], minlength=self.n_feat)
        for f in np.flatnonzero(counts):
            k = int(first[f])
            self.warn(int(f), code, text(int(rings[k]), int(items[k])) + _more(int(n_rings[f])))

    # -- polygons (203) ----------------------------------------------------------------

    def _planarity(self) -> None:
        m = self.m
        if self.kc.size == 0:
            return
        surf_pos = self.surf_of_ring[self.kr]
        n = np.bincount(surf_pos, minlength=self.n_surf)
        has = np.flatnonzero(n > 0)
        starts = np.searchsorted(surf_pos, has)
        pts = m.vertices[self.kv]
        sp = np.zeros(self.n_surf, dtype=np.int64)
        sp[has] = starts
        d = pts - pts[sp[surf_pos]]
        cnt = n[has][:, None].astype(np.float64)
        centroid = np.zeros((self.n_surf, 3))
        centroid[has] = np.add.reduceat(d, starts, axis=0) / cnt
        d -= centroid[surf_pos]
        cov = np.zeros((self.n_surf, 3, 3))
        for a in range(3):
            for b in range(a, 3):
                s = np.zeros(self.n_surf)
                s[has] = np.add.reduceat(d[:, a] * d[:, b], starts)
                cov[:, a, b] = s
                cov[:, b, a] = s
        # Best-fit plane (least squares, as val3dity): the eigenvector of the smallest
        # eigenvalue; triangles are planar by construction and skipped.
        normal = np.zeros((self.n_surf, 3))
        big = np.flatnonzero(n >= 4)
        if big.size:
            normal[big] = np.linalg.eigh(cov[big])[1][:, :, 0]
        dist = np.abs(np.einsum("ij,ij->i", d, normal[surf_pos]))
        maxd = np.zeros(self.n_surf)
        maxd[has] = np.maximum.reduceat(dist, starts)
        bad = np.flatnonzero((maxd > PLANARITY_TOL) & (n >= 4))
        if bad.size == 0:
            return
        feats = m.surf_feature[bad]
        counts, first = _first_per_group(feats, self.n_feat)
        for f in np.flatnonzero(counts):
            worst = int(bad[first[f]])
            self.warn(
                int(f),
                "203",
                f"non-planar polygon: a vertex is {float(maxd[worst]):.3f} m from the best-fit "
                f"plane (tolerance {PLANARITY_TOL} m; {self.surf_label(worst)})"
                + _more(int(counts[f])),
            )

    # -- shells (301, 302, 303, 305, 307, 405) -----------------------------------------

    def _shells(self) -> None:
        m = self.m
        n_shells = self.n_shells
        n_keys = n_shells + self.n_feat
        # Shell key per surface: its shell, or (MultiSurface/CompositeSurface) a
        # pseudo-shell per feature, used only to know whether the surfaces close a volume.
        surf_key = np.where(m.surf_shell >= 0, m.surf_shell, n_shells + m.surf_feature)
        self.surf_key = surf_key
        pos = np.flatnonzero(self.ring_valid[self.kr])
        a = self.kc[pos]
        b = self.kc[self.knxt[pos]]
        e_surf = self.surf_of_ring[self.kr[pos]]
        sk = surf_key[e_surf]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        eid, n_e = _dense_ids([sk, lo, hi], [n_keys, self.n_canon, self.n_canon])
        cnt = np.bincount(eid, minlength=n_e)
        fwd = np.bincount(eid, weights=(a < b).astype(np.float64), minlength=n_e)
        e_key = np.zeros(n_e, dtype=np.int64)
        e_key[eid] = sk
        _, e_first = _first_per_group(eid, n_e)
        same_dir = (cnt == 2) & ((fwd == 0) | (fwd == 2))
        bad_edge = (cnt != 2) | same_dir
        key_has = np.bincount(e_key, minlength=n_keys) > 0
        key_bad = np.bincount(e_key[bad_edge], minlength=n_keys) > 0
        self.key_closed = key_has & ~key_bad
        n_surf_key = np.bincount(surf_key, minlength=n_keys)
        self.key_closed &= n_surf_key >= 4

        if n_shells == 0:
            return
        kv_a = self.kv[pos]
        kv_b = self.kv[self.knxt[pos]]

        def edge_text(e: int) -> str:
            k = int(e_first[e])
            return f"edge {int(kv_a[k])}-{int(kv_b[k])}"

        real = e_key < n_shells
        shell_feat = self.solid_feature[m.shell_solid]
        # 301 TOO_FEW_POLYGONS.
        for sh in np.flatnonzero(n_surf_key[:n_shells] < 4):
            self.warn(
                int(shell_feat[sh]),
                "301",
                f"{self.shell_label(int(sh))} has {int(n_surf_key[sh])} polygon(s); a "
                "closed shell needs at least 4",
            )
        # 302 NOT_CLOSED / 303 NON_MANIFOLD_CASE (edge) / 307 POLYGON_WRONG_ORIENTATION.
        nonmanifold_shell = np.zeros(n_shells, dtype=bool)
        for code, mask, text in (
            ("302", (cnt == 1) & real, "shell not closed ({edge} used once{more})"),
            (
                "303",
                (cnt > 2) & real,
                "non-manifold shell ({edge} used by {n} polygons{more})",
            ),
            (
                "307",
                same_dir & real,
                "wrong polygon orientation ({edge} used twice in the same direction{more})",
            ),
        ):
            edges = np.flatnonzero(mask)
            if edges.size == 0:
                continue
            counts, first = _first_per_group(e_key[edges], n_shells)
            if code == "303":
                nonmanifold_shell |= counts > 0
            for sh in np.flatnonzero(counts):
                e = int(edges[first[sh]])
                more = f"; {int(counts[sh]) - 1} more edge(s)" if counts[sh] > 1 else ""
                msg = text.format(edge=edge_text(e), n=int(cnt[e]), more=more)
                self.warn(int(shell_feat[sh]), code, f"{self.shell_label(int(sh))}: {msg}")
        self._manifold_vertices(pos, sk, nonmanifold_shell, shell_feat)
        self._shell_components(eid, e_surf, shell_feat)
        self._orientation(pos, sk, shell_feat)

    def _manifold_vertices(
        self, pos: IntArray, sk: IntArray, skip: BoolArray, shell_feat: IntArray
    ) -> None:
        """303 for vertices whose incident polygons do not form one umbrella (fan)."""
        n_shells = self.n_shells
        sel = (sk < n_shells) & ~skip[np.minimum(sk, n_shells - 1)]
        if not sel.any():
            return
        p = pos[sel]
        s = sk[sel]
        v = self.kc[p]
        prev_v = self.kc[self.kprv[p]]
        next_v = self.kc[self.knxt[p]]
        # Link graph of each (shell, vertex): nodes are its neighbours, one edge per corner.
        nodes, n_nodes = _dense_ids(
            [np.concatenate([s, s]), np.concatenate([v, v]), np.concatenate([prev_v, next_v])],
            [n_shells, self.n_canon, self.n_canon],
        )
        k = p.shape[0]
        label = _components(n_nodes, nodes[:k], nodes[k:])
        vert, n_vert = _dense_ids([s, v], [n_shells, self.n_canon])
        pairs, _ = _dense_ids([vert, label[nodes[:k]]], [n_vert, n_nodes])
        first_pair = np.unique(pairs, return_index=True)[1]
        n_comp = np.bincount(vert[first_pair], minlength=n_vert)
        bad_pos = np.flatnonzero(n_comp[vert] > 1)
        if bad_pos.size == 0:
            return
        shells = s[bad_pos]
        counts, first = _first_per_group(shells, n_shells)
        for sh in np.flatnonzero(counts):
            k0 = int(bad_pos[first[sh]])
            n_bad = int(np.unique(vert[bad_pos[shells == sh]]).size)
            self.warn(
                int(shell_feat[sh]),
                "303",
                f"{self.shell_label(int(sh))}: non-manifold vertex {int(self.kv[p[k0]])} "
                "(its polygons do not form one umbrella" + _more(n_bad) + ")",
            )

    def _shell_components(self, eid: IntArray, e_surf: IntArray, shell_feat: IntArray) -> None:
        """305 MULTIPLE_CONNECTED_COMPONENTS: polygons of a shell not connected by edges."""
        m = self.m
        order = np.argsort(eid, kind="stable")
        se = eid[order]
        same = se[1:] == se[:-1]
        i = e_surf[order[:-1]][same]
        j = e_surf[order[1:]][same]
        label = _components(self.n_surf, i, j)
        in_shell = np.flatnonzero(
            (m.surf_shell >= 0) & (np.bincount(e_surf, minlength=self.n_surf) > 0)
        )
        if in_shell.size == 0:
            return
        shell_of = m.surf_shell[in_shell]
        pairs, _ = _dense_ids([shell_of, label[in_shell]], [self.n_shells, self.n_surf])
        first_pair = np.unique(pairs, return_index=True)[1]
        n_comp = np.bincount(shell_of[first_pair], minlength=self.n_shells)
        for sh in np.flatnonzero(n_comp > 1):
            self.warn(
                int(shell_feat[sh]),
                "305",
                f"{self.shell_label(int(sh))}: polygons form {int(n_comp[sh])} disconnected parts",
            )

    def _orientation(self, pos: IntArray, sk: IntArray, shell_feat: IntArray) -> None:
        """405 WRONG_ORIENTATION_SHELL: signed volume of closed, consistent shells."""
        m = self.m
        n_shells = self.n_shells
        sel = sk < n_shells
        if not sel.any():
            return
        p = pos[sel]
        s = sk[sel]
        v = m.vertices
        # Volume of tetrahedra (shell origin, ring first point, p_i, p_i+1): a fan per ring.
        first_of_shell = np.full(n_shells, -1, dtype=np.int64)
        uniq, idx = np.unique(s, return_index=True)
        first_of_shell[uniq] = p[idx]
        o = v[self.kv[first_of_shell[s]]]
        r0 = v[self.kv[self.koffs[:-1][self.kr[p]]]] - o
        a = v[self.kv[p]] - o
        b = v[self.kv[self.knxt[p]]] - o
        det = np.einsum("ij,ij->i", r0, np.cross(a, b)) / 6.0
        vol = np.bincount(s, weights=det, minlength=n_shells)
        first_shell = np.zeros(n_shells, dtype=bool)
        first_shell[self.solid_first_shell[self.solid_first_shell < n_shells]] = True
        closed = self.key_closed[:n_shells]
        wrong = closed & np.where(first_shell, vol < 0, vol > 0)
        for sh in np.flatnonzero(wrong):
            kind = "outer shell points inward" if first_shell[sh] else "inner shell points outward"
            self.warn(
                int(shell_feat[sh]),
                "405",
                f"{self.shell_label(int(sh))}: {kind} (signed volume "
                f"{float(vol[sh]):.3f} m³); all its polygons are reversed",
            )

    # -- volumes -----------------------------------------------------------------------

    def _surface_boxes(self) -> None:
        """Bounding box of every surface (from its deduplicated rings)."""
        self.surf_lo = np.full((self.n_surf, 3), np.inf)
        self.surf_hi = np.full((self.n_surf, 3), -np.inf)
        if self.kc.size == 0:
            return
        surf_pos = self.surf_of_ring[self.kr]
        has = np.flatnonzero(np.bincount(surf_pos, minlength=self.n_surf) > 0)
        starts = np.searchsorted(surf_pos, has)
        pts = self.m.vertices[self.kv]
        self.surf_lo[has] = np.minimum.reduceat(pts, starts, axis=0)
        self.surf_hi[has] = np.maximum.reduceat(pts, starts, axis=0)

    def local_vertices(self) -> FloatArray:
        """Vertices relative to the model's centre (precision of the volume tests)."""
        if self._local is None:
            used = self.m.vertices[self.m.ring_vertices]
            self.origin = (used.min(axis=0) + used.max(axis=0)) / 2.0
            self._local = self.m.vertices - self.origin
        return self._local

    def _box(self, surfaces: IntArray) -> tuple[FloatArray, FloatArray]:
        return self.surf_lo[surfaces].min(axis=0), self.surf_hi[surfaces].max(axis=0)

    def _triangles(self, surfaces: IntArray) -> FloatArray:
        """Triangles (T, 3, 3) of surfaces, from the deduplicated valid rings."""
        out: list[FloatArray] = []
        v = self.local_vertices()
        sr = self.m.surface_rings
        for s in surfaces.tolist():
            r0, r1 = int(sr[s]), int(sr[s + 1])
            if not self.ring_valid[r0]:
                continue
            if r1 - r0 == 1 and self.n_eff[r0] == 3:
                out.append(v[self.kv[self.koffs[r0] : self.koffs[r0] + 3]][None])
                continue
            out.append(self._earcut(r0, r1, v))
        if not out:
            return np.zeros((0, 3, 3))
        return np.concatenate(out, axis=0)

    def _earcut(self, r0: int, r1: int, v: FloatArray) -> FloatArray:
        """Earcut a polygon (outer ring r0, holes up to r1) in its dominant plane."""
        rings = [r for r in range(r0, r1) if self.ring_valid[r]]
        idx = np.concatenate([self.kv[self.koffs[r] : self.koffs[r + 1]] for r in rings])
        pts = v[idx]
        axis = int(np.argmax(np.abs(self.ring_normal[r0])))
        keep = [(axis + 1) % 3, (axis + 2) % 3]
        uv = pts[:, keep] - pts[0, keep]
        ends = np.cumsum(self.n_eff[rings]).astype(np.uint32)
        tri = np.asarray(mapbox_earcut.triangulate_float64(uv, ends), dtype=np.int64)
        return np.asarray(pts[tri.reshape(-1, 3)], dtype=np.float64)

    def _solid(self, feature: int, surfaces: IntArray, label: str) -> _Solid | None:
        """Triangulate a closed solid for the overlap tests (None when too large/empty)."""
        key = (feature, label)
        if key in self.solid_cache:
            return self.solid_cache[key]
        solid: _Solid | None = None
        if surfaces.size > MAX_SOLID_TRIANGLES:
            self.warn(
                feature,
                "skipped",
                f"{label} has {surfaces.size} polygons: too large for the overlap tests",
            )
        else:
            tris = self._triangles(surfaces)
            if tris.shape[0] > MAX_SOLID_TRIANGLES:
                self.warn(
                    feature,
                    "skipped",
                    f"{label} has {tris.shape[0]} triangles: too large for the overlap tests",
                )
            elif tris.shape[0]:
                solid = _Solid(feature, label, tris)
        self.solid_cache[key] = solid
        return solid

    def _composite_solids(self) -> None:
        """501/502/503 within each CompositeSolid (val3dity: Solids of a CompositeSolid)."""
        m = self.m
        for g, gtype in enumerate(m.group_type):
            if gtype != "CompositeSolid" or self.out_of_time():
                continue
            feature = int(m.group_feature[g])
            solids = np.flatnonzero(m.solid_group == g)
            if solids.size < 2:
                continue
            first_local = int(self.feat_first_solid[feature])
            infos: list[tuple[int, IntArray, bool]] = []
            for so in solids.tolist():
                shells = np.flatnonzero(m.shell_solid == so)
                surfs = np.flatnonzero(np.isin(m.surf_shell, shells))
                closed = bool(self.key_closed[shells].all())
                infos.append((so - first_local, surfs, closed))
            self._composite(feature, infos)

    def _faces(self, surfs: IntArray) -> set[frozenset[int]]:
        """Each surface as the set of canonical vertex ids of its outer ring."""
        out: set[frozenset[int]] = set()
        sr = self.m.surface_rings
        for s in surfs.tolist():
            r = int(sr[s])
            out.add(frozenset(self.kc[self.koffs[r] : self.koffs[r + 1]].tolist()))
        return out

    def _composite(self, feature: int, infos: list[tuple[int, IntArray, bool]]) -> None:
        faces = [self._faces(surfs) for _, surfs, _ in infos]
        n = len(infos)
        # 502 DUPLICATED_SOLIDS: the same set of faces.
        dup_of: dict[int, int] = {}
        for i in range(n):
            for j in range(i + 1, n):
                if j not in dup_of and faces[i] == faces[j]:
                    dup_of[j] = i
                    self.warn(
                        feature,
                        "502",
                        f"solids {infos[i][0]} and {infos[j][0]} of the CompositeSolid are "
                        "identical",
                    )
        solids: list[_Solid | None] = []
        for local, surfs, closed in infos:
            solids.append(self._solid(feature, surfs, f"solid {local}") if closed else None)
        parent = list(range(n))

        def root(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        # 501 INTERSECTION_SOLIDS.
        for i in range(n):
            for j in range(i + 1, n):
                si, sj = solids[i], solids[j]
                if dup_of.get(j) == i:
                    parent[root(j)] = root(i)
                    continue
                if si is None or sj is None or self.out_of_time():
                    continue
                witness = _overlap(si, sj, self.deadline)
                if witness is not None:
                    parent[root(j)] = root(i)
                    self.warn(
                        feature,
                        "501",
                        f"interiors of solids {infos[i][0]} and {infos[j][0]} of the "
                        f"CompositeSolid intersect (e.g. at {_fmt_point(witness + self.origin)})",
                    )
        if self.timed_out:
            return  # overlaps not all known: connectivity would be guessed
        # 503 DISCONNECTED_SOLIDS: solids linked by a shared face (or a coplanar contact);
        # overlapping or duplicated solids already have their own error.
        for i in range(n):
            for j in range(i + 1, n):
                if root(i) == root(j):
                    continue
                linked = bool(faces[i] & faces[j])
                si, sj = solids[i], solids[j]
                if not linked and si is not None and sj is not None and _boxes_touch(si, sj):
                    linked = _touch(si.tris, sj.tris) or _touch(sj.tris, si.tris)
                if linked:
                    parent[root(j)] = root(i)
        groups: dict[int, list[int]] = {}
        for i in range(n):
            groups.setdefault(root(i), []).append(infos[i][0])
        if len(groups) > 1:
            parts = sorted(groups.values(), key=lambda g: (-len(g), g))
            lonely = ", ".join(str(x) for part in parts[1:] for x in part)
            self.warn(
                feature,
                "503",
                f"CompositeSolid is not connected: solid(s) {lonely} share no face with "
                f"solid(s) {', '.join(str(x) for x in parts[0])}",
            )

    def _units(self, f: int, lod: str | None) -> list[_Unit]:
        """Closed volumes of a feature, one unit per geometry (not yet triangulated).

        A Solid geometry is one unit, a MultiSolid/CompositeSolid one unit of several
        solids (their mutual overlaps are 501's business), and the closed MultiSurface /
        CompositeSurface surfaces of the feature one more unit.
        """
        m = self.m
        out: list[_Unit] = []
        s0 = int(self.feat_first_surf[f])
        s1 = int(np.searchsorted(m.surf_feature, f, side="right"))
        surfs = np.arange(s0, s1, dtype=np.int64)
        shells = m.surf_shell[surfs]
        by_group: dict[int, dict[int, list[int]]] = {}
        for sh in np.unique(shells[shells >= 0]).tolist():
            so = int(m.shell_solid[sh])
            by_group.setdefault(int(m.solid_group[so]), {}).setdefault(so, []).append(sh)
        first_solid = int(self.feat_first_solid[f])
        for g, solids in by_group.items():
            parts = [
                (f"solid {so - first_solid}", surfs[np.isin(shells, shs)])
                for so, shs in solids.items()
                if self.key_closed[shs].all()
            ]
            if parts:
                label = m.group_type[g]
                if len(solids) > 1 or len(by_group) > 1:
                    label += " " + "+".join(str(so - first_solid) for so in solids)
                out.append(
                    _Unit(
                        f,
                        label,
                        lod,
                        parts,
                        *self._box(
                            surfs[np.isin(shells, [sh for shs in solids.values() for sh in shs])]
                        ),
                    )
                )
        loose = surfs[shells < 0]
        if loose.size and self.key_closed[self.n_shells + f]:
            out.append(
                _Unit(f, "closed surfaces", lod, [("closed surfaces", loose)], *self._box(loose))
            )
        return out

    def _families(self) -> list[list[int]]:
        """Features of each building: a root Building/Bridge/Tunnel (or part) and its parts."""
        m = self.m
        index = {oid: i for i, oid in enumerate(m.feature_ids)}
        roots = _ROOT_TYPES + _PART_TYPES
        out: list[list[int]] = []
        for obj in m.twin:
            if obj.type not in roots:
                continue
            if any((p := m.twin.get(q)) is not None and p.type in roots for q in obj.parents):
                continue
            members: list[int] = []
            seen = {obj.id}
            stack = [obj.id]
            while stack:
                oid = stack.pop()
                if oid in index:
                    members.append(index[oid])
                cur = m.twin.get(oid)
                for c in cur.children if cur is not None else []:
                    child = m.twin.get(c)
                    if c not in seen and child is not None and child.type in _PART_TYPES:
                        seen.add(c)
                        stack.append(c)
            if members:
                out.append(sorted(members))
        return out

    def _building_parts(self) -> None:
        """601 BUILDINGPARTS_OVERLAP: volumes of one building (its parts, or several
        geometries of one object at the same LoD) whose interiors overlap."""
        m = self.m
        n_groups_of = np.bincount(m.group_feature, minlength=self.n_feat)
        for members in self._families():
            if len(members) == 1 and n_groups_of[members[0]] < 2:
                continue  # one geometry of one object: nothing to compare
            units: list[_Unit] = []
            for f in members:
                obj = m.twin.get(m.feature_ids[f])
                lod = obj.geometry.lod if obj is not None and obj.geometry is not None else None
                units.extend(self._units(f, lod))
            for k, a in enumerate(units):
                for b in units[k + 1 :]:
                    if a.lod != b.lod or not _boxes_overlap(a.lo, a.hi, b.lo, b.hi):
                        continue  # different LoDs are not comparable
                    if self.out_of_time():
                        return
                    witness = self._units_overlap(a, b)
                    if witness is None:
                        continue
                    at = f"(e.g. at {_fmt_point(witness + self.origin)})"
                    if a.feature == b.feature:
                        msg = f"interiors of its geometries {a.label} and {b.label} overlap {at}"
                    else:
                        ida, idb = m.feature_ids[a.feature], m.feature_ids[b.feature]
                        msg = f"interiors of {ida!r} and {idb!r} overlap {at}"
                    self.warn(a.feature, "601", msg)

    def _units_overlap(self, a: _Unit, b: _Unit) -> FloatArray | None:
        for la, sa in a.parts:
            for lb, sb in b.parts:
                if not _boxes_overlap(*self._box(sa), *self._box(sb)):
                    continue
                solid_a = self._solid(a.feature, sa, la)
                solid_b = self._solid(b.feature, sb, lb)
                if solid_a is None or solid_b is None:
                    continue
                witness = _overlap(solid_a, solid_b, self.deadline)
                if witness is not None:
                    return witness
        return None


# -- volume tests ----------------------------------------------------------------------


@dataclass
class _Unit:
    """One geometry of a feature that closes a volume: solids as (label, surfaces)."""

    feature: int
    label: str
    lod: str | None
    parts: list[tuple[str, IntArray]]
    lo: FloatArray
    hi: FloatArray


def _boxes_overlap(
    alo: FloatArray, ahi: FloatArray, blo: FloatArray, bhi: FloatArray, tol: float = OVERLAP_TOL
) -> bool:
    """Boxes sharing a volume thicker than 2 tol (touching boxes do not overlap)."""
    return bool(np.all(np.minimum(ahi, bhi) - np.maximum(alo, blo) > 2 * tol))


def _boxes_touch(a: _Solid, b: _Solid, tol: float = SNAP_TOL) -> bool:
    return bool(np.all(a.lo <= b.hi + tol) and np.all(b.lo <= a.hi + tol))


def _tri_samples(tris: FloatArray) -> tuple[FloatArray, FloatArray]:
    """A point strictly inside each triangle, and the triangle's unit normal."""
    pts = np.einsum("k,tkd->td", _BARY, tris)
    n = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    length = np.linalg.norm(n, axis=1)
    ok = length > 0
    unit = np.zeros_like(n)
    unit[ok] = n[ok] / length[ok, None]
    return pts[ok], unit[ok]


def _overlap(a: _Solid, b: _Solid, deadline: float, tol: float = OVERLAP_TOL) -> FloatArray | None:
    """A point at least ``tol`` deep inside both solids, or None.

    Candidates: a jittered grid over the common bbox, and points just off each face of
    either solid (a face inside the other solid is the typical overlap, even when thinner
    than the grid). A candidate counts when it and its six neighbours at ``tol`` along the
    axes are inside both solids.

    Raises:
        _OutOfTime: ``deadline`` has passed.
    """
    lo = np.maximum(a.lo, b.lo) + tol
    hi = np.minimum(a.hi, b.hi) - tol
    if np.any(hi <= lo):
        return None
    n = 6
    frac = (np.arange(n) + 0.41) / n
    gx, gy, gz = np.meshgrid(
        lo[0] + frac * (hi[0] - lo[0]),
        lo[1] + frac * (hi[1] - lo[1]),
        lo[2] + frac * (hi[2] - lo[2]),
        indexing="ij",
    )
    cands = [np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)]
    for s in (a, b):
        cands.append(s.samples + 2 * tol * s.normals)
        cands.append(s.samples - 2 * tol * s.normals)
    pts = np.concatenate(cands, axis=0)
    pts = pts[np.all((pts >= lo) & (pts <= hi), axis=1)]
    if pts.shape[0] > 4000:
        pts = pts[np.linspace(0, pts.shape[0] - 1, 4000).astype(np.int64)]
    first, second = (a, b) if a.tris.shape[0] <= b.tris.shape[0] else (b, a)
    offsets = np.concatenate([np.eye(3), -np.eye(3)]) * tol
    # Face samples first (the likely witnesses), in chunks: stop at the first witness.
    pts = pts[::-1]
    for s0 in range(0, pts.shape[0], 512):
        if time.monotonic() > deadline:
            raise _OutOfTime
        chunk = pts[s0 : s0 + 512]
        cand = chunk[first.inside(chunk)]
        cand = cand[second.inside(cand)][:64]
        if cand.shape[0] == 0:
            continue
        probe = (cand[:, None, :] + offsets[None, :, :]).reshape(-1, 3)
        ok = (a.inside(probe) & b.inside(probe)).reshape(cand.shape[0], 6).all(axis=1)
        hits = np.flatnonzero(ok)
        if hits.size:
            return np.asarray(cand[hits[0]], dtype=np.float64)
    return None


def _touch(a: FloatArray, b: FloatArray, tol: float = SNAP_TOL) -> bool:
    """True when a face of ``a`` lies (partly) on a parallel face of ``b``."""
    pts, na = _tri_samples(a)
    if pts.shape[0] == 0 or b.shape[0] == 0:
        return False
    v0 = b[:, 0]
    e1 = b[:, 1] - v0
    e2 = b[:, 2] - v0
    nb = np.cross(e1, e2)
    length = np.linalg.norm(nb, axis=1)
    good = length > 0
    v0, e1, e2 = v0[good], e1[good], e2[good]
    nb = nb[good] / length[good, None]
    d00 = np.einsum("ij,ij->i", e1, e1)
    d01 = np.einsum("ij,ij->i", e1, e2)
    d11 = np.einsum("ij,ij->i", e2, e2)
    denom = d00 * d11 - d01 * d01
    step = max(1, _BLOCK // max(1, v0.shape[0]))
    for s0 in range(0, pts.shape[0], step):
        p = pts[s0 : s0 + step, None, :] - v0[None]
        dist = np.abs(np.einsum("ptk,tk->pt", p, nb))
        d20 = np.einsum("ptk,tk->pt", p, e1)
        d21 = np.einsum("ptk,tk->pt", p, e2)
        bv = (d11 * d20 - d01 * d21) / denom
        bw = (d00 * d21 - d01 * d20) / denom
        inside = (bv >= -1e-9) & (bw >= -1e-9) & (bv + bw <= 1 + 1e-9)
        parallel = np.abs(na[s0 : s0 + step] @ nb.T) > 0.99
        if np.any(inside & parallel & (dist < tol)):
            return True
    return False

"""Read CityJSON (0.x legacy, 1.0, 1.1, 2.0), CityJSONSeq and lone CityJSONFeatures.

The nested boundary lists are walked once in Python and flattened into the arrays of
:class:`twin.geometry.CityModel`; everything after that (index checks, bboxes, areas) is
numpy. Structural problems raise :class:`twin.errors.IngestError` with a location;
problems a viewer can still draw become :class:`twin.geometry.ModelWarning`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from twin.errors import IngestError
from twin.geometry import SEMANTIC_TYPES, CityModel, Material, ModelWarning
from twin.objects import GeometrySummary, Twin, TwinObject
from twin.perf import gc_paused

__all__ = [
    "CITYOBJECT_TYPES",
    "iter_cityjson",
    "load_cityjson",
    "parse_cityjson",
]

# CityJSON 2.0 §4 plus types of 1.0/1.1 and 0.9 that were renamed or removed later.
CITYOBJECT_TYPES: frozenset[str] = frozenset(
    {
        "Bridge",
        "BridgePart",
        "BridgeInstallation",
        "BridgeConstructiveElement",
        "BridgeConstructionElement",
        "BridgeRoom",
        "BridgeFurniture",
        "Building",
        "BuildingPart",
        "BuildingInstallation",
        "BuildingConstructiveElement",
        "BuildingFurniture",
        "BuildingStorey",
        "BuildingRoom",
        "BuildingUnit",
        "CityFurniture",
        "CityObjectGroup",
        "GenericCityObject",
        "LandUse",
        "OtherConstruction",
        "PlantCover",
        "SolitaryVegetationObject",
        "TINRelief",
        "TransportSquare",
        "Railway",
        "Road",
        "Tunnel",
        "TunnelPart",
        "TunnelInstallation",
        "TunnelConstructiveElement",
        "TunnelHollowSpace",
        "TunnelFurniture",
        "WaterBody",
        "Waterway",
    }
)

# How many list levels sit above a surface, per geometry type (CityJSON 2.0 §3.3).
_SURFACE_DEPTH = {
    "MultiSurface": 1,
    "CompositeSurface": 1,
    "Solid": 2,
    "MultiSolid": 3,
    "CompositeSolid": 3,
}
_GEOMETRY_TYPES = frozenset(_SURFACE_DEPTH) | {
    "MultiPoint",
    "MultiLineString",
    "GeometryInstance",
}
_EPSG_RE = re.compile(r"EPSG(?:/\d+/|::?|:)(\d+)", re.IGNORECASE)
_SEQ_SUFFIXES = (".jsonl", ".city.jsonl", ".cjseq")
_INT64_LIMIT = float(2**62)

ProgressFn = Callable[[int, int], None]
_NO_ITEM = object()


def load_cityjson(
    path: str | Path,
    *,
    lod: str | None = None,
    progress: ProgressFn | None = None,
    wgs84: bool = True,
) -> CityModel:
    """Read a CityJSON file, a CityJSONSeq file or a lone CityJSONFeature.

    Args:
        path: the file to read.
        lod: the LoD to draw per object (falls back to the nearest lower one); by
            default the highest LoD of each object.
        progress: called as ``progress(done, total)`` while objects are read.
        wgs84: also compute WGS84 bboxes/centroids (pyproj); the GLB does not need them.

    Returns:
        The model with its objects and flattened geometry.

    Raises:
        IngestError: the file is missing, empty or structurally invalid; the message
            names the problem and where it is.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise IngestError("no such file", source=str(p)) from None
    except IsADirectoryError:
        raise IngestError("is a directory, not a CityJSON file", source=str(p)) from None
    except OSError as exc:
        raise IngestError(f"cannot read file ({exc.strerror})", source=str(p)) from None
    with gc_paused():
        return parse_cityjson(data, source=str(p), lod=lod, progress=progress, wgs84=wgs84)


def parse_cityjson(
    data: bytes,
    *,
    source: str = "<bytes>",
    lod: str | None = None,
    progress: ProgressFn | None = None,
    wgs84: bool = True,
) -> CityModel:
    """Parse CityJSON bytes (document, sequence or lone feature); see :func:`load_cityjson`."""
    if not data.strip():
        raise IngestError("empty file: no CityJSON content", source=source)
    named_seq = source.endswith(_SEQ_SUFFIXES)
    warnings: list[ModelWarning] = []
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # A CityJSONSeq is one JSON value per line; a single-document parse then stops
        # at the start of line 2. Anything else is a genuine syntax error.
        # A file named .jsonl is read line by line, so errors point at the right line.
        if named_seq or _looks_like_seq(data):
            doc = _merge_sequence(data, source, warnings)
            if not named_seq:
                warnings.append(
                    ModelWarning(
                        "seq-named-json",
                        "file holds a CityJSONSeq (one JSON object per line) but is not "
                        "named .jsonl; read as a sequence",
                    )
                )
        else:
            raise IngestError(
                f"JSON syntax error: {_json_reason(exc)}",
                source=source,
                where=f"line {exc.lineno}:{exc.colno}",
            ) from None
    else:
        if isinstance(doc, dict) and doc.get("type") == "CityJSONFeature":
            warnings.append(
                ModelWarning(
                    "lone-feature",
                    "a lone CityJSONFeature without its CityJSON header: no transform or "
                    "CRS, coordinates taken as they are",
                )
            )
            doc = _feature_as_document(doc, source, 1)
    if not isinstance(doc, dict):
        raise IngestError(
            f"top-level JSON value is {type(doc).__name__}, expected an object",
            source=source,
        )
    return _Reader(doc, source, lod, progress, warnings, wgs84=wgs84).read()


def _json_reason(exc: orjson.JSONDecodeError) -> str:
    msg = str(exc.msg if hasattr(exc, "msg") else exc)
    return msg.split(":")[0] if msg else "invalid JSON"


def _looks_like_seq(data: bytes) -> bool:
    first = data.lstrip()[:1]
    if first != b"{":
        return False
    lines = [ln for ln in data.splitlines() if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        head = orjson.loads(lines[0])
    except orjson.JSONDecodeError:
        return False
    return isinstance(head, dict) and head.get("type") in ("CityJSON", "CityJSONFeature")


def _merge_sequence(data: bytes, source: str, warnings: list[ModelWarning]) -> dict[str, Any]:
    """Merge a whole CityJSONSeq (CityJSON 2.0 §9) into one document."""
    return next(_iter_sequence(data.splitlines(), source, warnings, None))


def _iter_sequence(
    lines: Iterable[bytes],
    source: str,
    warnings: list[ModelWarning],
    chunk: int | None,
    seen: set[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield documents of up to ``chunk`` features each (all of them when None).

    Each document carries the header's members (transform, metadata, appearance,
    geometry-templates) and its features' CityObjects with vertex indices re-based on
    the document's own vertex list, so memory is bounded by the chunk, not the city.
    """
    header: dict[str, Any] | None = None
    doc: dict[str, Any] = {}
    vertices: list[Any] = []
    n_in_doc = 0
    yielded = False
    seen_ids: set[str] = seen if seen is not None else set()

    def fresh() -> tuple[dict[str, Any], list[Any]]:
        assert header is not None
        d = {k: v for k, v in header.items() if k not in ("CityObjects", "vertices")}
        if isinstance(d.get("appearance"), dict):
            d["appearance"] = {
                k: list(v) if isinstance(v, list) else v for k, v in d["appearance"].items()
            }
        d["CityObjects"] = {}
        return d, []

    for lineno, raw in enumerate(lines, start=1):
        item = sequence_line(raw, lineno, source, first=header is None)
        if item is None:
            continue
        if header is None:
            header = item
            doc, vertices = fresh()
            doc["CityObjects"] = dict(item.get("CityObjects") or {})
            vertices = list(item.get("vertices") or [])
            continue
        feat = _check_feature(item, source, lineno)
        feat_vertices = feat.get("vertices") or []
        if feat_vertices and "transform" not in header:
            raise IngestError(
                "CityJSONSeq header has no 'transform' (mandatory for sequences, "
                "CityJSON 2.0 §9): feature vertices cannot be placed",
                source=source,
                where="line 1",
            )
        offset = len(vertices)
        vertices.extend(feat_vertices)
        shifts = _merge_appearance(doc, feat.get("appearance"))
        for oid, obj in feat["CityObjects"].items():
            if oid in seen_ids:
                # A stream cannot take back what it already passed on, so the first
                # object with an id is kept, whole-file or chunked alike.
                warnings.append(
                    ModelWarning(
                        "seq-duplicate-id",
                        f"line {lineno}: object {oid!r} appears again; the first one is kept",
                        oid,
                    )
                )
                continue
            seen_ids.add(oid)
            if isinstance(obj, dict):
                obj = _shift_object(obj, offset, len(feat_vertices), shifts)
            doc["CityObjects"][oid] = obj
        n_in_doc += 1
        if chunk is not None and n_in_doc >= chunk:
            doc["vertices"] = vertices
            yield doc
            yielded = True
            doc, vertices = fresh()
            n_in_doc = 0
    if header is None:
        raise IngestError("empty sequence", source=source)
    if chunk is None or n_in_doc or doc["CityObjects"] or not yielded:
        # The rest; and always one document, so an empty sequence is an empty model.
        doc["vertices"] = vertices
        yield doc


def sequence_line(raw: bytes, lineno: int, source: str, *, first: bool) -> dict[str, Any] | None:
    """One CityJSONSeq line as a dict: the ``CityJSON`` header when ``first``, else a
    ``CityJSONFeature`` (CityJSON 2.0 §9); None for a blank line.

    Raises:
        IngestError: not JSON, not an object, or the wrong ``type`` for its place.
    """
    raw = raw.rstrip(b"\r\n")
    if not raw.strip():
        return None
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise IngestError(
            f"JSON syntax error in sequence: {_json_reason(exc)}",
            source=source,
            where=f"line {lineno}:{exc.colno}",
        ) from None
    if not isinstance(item, dict):
        raise IngestError(
            "sequence line is not a JSON object", source=source, where=f"line {lineno}"
        )
    kind = item.get("type")
    if first and kind != "CityJSON":
        raise IngestError(
            f"a CityJSONSeq must start with a CityJSON header line, found type {kind!r}",
            source=source,
            where=f"line {lineno}",
        )
    if not first and kind != "CityJSONFeature":
        raise IngestError(
            f"sequence line has type {kind!r}, expected 'CityJSONFeature'",
            source=source,
            where=f"line {lineno}",
        )
    return item


def iter_cityjson(
    path: str | Path,
    *,
    lod: str | None = None,
    chunk: int = 2000,
    progress: ProgressFn | None = None,
    wgs84: bool = True,
) -> Iterator[CityModel]:
    """Read a city file as a stream of models of up to ``chunk`` features each.

    A CityJSONSeq (``.jsonl``) is read line by line, so memory stays bounded by the
    chunk; any other file is read whole and yielded as one model.

    Args:
        path: the file.
        lod: as for :func:`load_cityjson`.
        chunk: features per yielded model (sequences only).
        progress: called as ``progress(bytes_read, total_bytes)``.

    Raises:
        IngestError: as for :func:`load_cityjson`, at the chunk where the problem is.
    """
    p = Path(path)
    if not str(p).endswith(_SEQ_SUFFIXES):
        yield load_cityjson(p, lod=lod, wgs84=wgs84)
        return
    try:
        fh = p.open("rb")
        total = p.stat().st_size
    except OSError as exc:
        raise IngestError(f"cannot read file ({exc.strerror})", source=str(p)) from None
    if total == 0:
        fh.close()
        raise IngestError("empty file: no CityJSON content", source=str(p))
    with fh:
        first = next((ln for ln in fh if ln.strip()), b"")
        try:
            head = orjson.loads(first)
        except orjson.JSONDecodeError:
            head = None
        if not isinstance(head, dict) or head.get("type") != "CityJSON":
            # A pretty-printed or lone feature, or a broken header: the whole-file reader
            # handles (and reports) those.
            fh.close()
            yield load_cityjson(p, lod=lod, wgs84=wgs84)
            return
        fh.seek(0)
        done = 0

        def lines() -> Iterator[bytes]:
            nonlocal done
            for raw in fh:
                done += len(raw)
                yield raw

        seen: set[str] = set()
        warnings: list[ModelWarning] = []
        docs = _iter_sequence(lines(), str(p), warnings, chunk, seen)
        while True:
            with gc_paused():  # not across the yield: the consumer runs with GC as it was
                doc = next(docs, None)
                if doc is None:
                    break
                chunk_warnings = list(warnings)
                warnings.clear()
                model = _Reader(doc, str(p), lod, None, chunk_warnings, wgs84=wgs84).read()
            if progress:
                progress(done, total)
            yield model


def _check_feature(item: dict[str, Any], source: str, lineno: int) -> dict[str, Any]:
    fid = item.get("id")
    objs = item.get("CityObjects")
    if not isinstance(objs, dict):
        raise IngestError(
            "CityJSONFeature has no 'CityObjects' object", source=source, where=f"line {lineno}"
        )
    if not isinstance(fid, str) or fid not in objs:
        raise IngestError(
            f"CityJSONFeature id {fid!r} is not one of its CityObjects (the feature's "
            "root object must be present, CityJSON 2.0 §9)",
            source=source,
            where=f"line {lineno}",
        )
    return item


def _feature_as_document(item: dict[str, Any], source: str, lineno: int) -> dict[str, Any]:
    feat = _check_feature(item, source, lineno)
    doc = {k: v for k, v in feat.items() if k not in ("type", "id")}
    doc["type"] = "CityJSON"
    doc["version"] = "2.0"
    return doc


def _merge_appearance(merged: dict[str, Any], app: Any) -> tuple[int, int, int]:
    """Append a feature's appearance to the merged document's.

    Returns the (material, texture, texture-vertex) offsets the feature's own indices
    must be shifted by (CityJSONSeq features carry their own appearance, §9).
    """
    if not isinstance(app, dict):
        return 0, 0, 0
    target = merged.setdefault("appearance", {})
    offsets = []
    for key in ("materials", "textures", "vertices-texture"):
        cur = target.setdefault(key, [])
        offsets.append(len(cur))
        items = app.get(key)
        if isinstance(items, list):
            cur.extend(items)
    return offsets[0], offsets[1], offsets[2]


# Internal members a sequence feature's objects carry into the reader: the offset of the
# feature's vertices in the chunk and how many it has. Boundaries keep their local
# indices; the reader adds the offset to whole spans at once (no per-index Python).
_VOFF = "\x00voff"
_VCOUNT = "\x00vcount"


def _shift_object(
    obj: dict[str, Any], offset: int, count: int, shifts: tuple[int, int, int]
) -> dict[str, Any]:
    geoms = obj.get("geometry")
    if not isinstance(geoms, list):
        return obj
    out = dict(obj)
    out[_VOFF] = offset
    out[_VCOUNT] = count
    if shifts == (0, 0, 0):
        return out
    shifted = []
    mat_off, tex_off, uv_off = shifts
    for g in geoms:
        if isinstance(g, dict):
            g = dict(g)
            if mat_off and isinstance(g.get("material"), dict):
                g["material"] = {
                    k: {kk: _shift(vv, mat_off) for kk, vv in v.items()}
                    if isinstance(v, dict)
                    else v
                    for k, v in g["material"].items()
                }
            if (tex_off or uv_off) and isinstance(g.get("texture"), dict):
                g["texture"] = {
                    k: {kk: _shift_tex(vv, tex_off, uv_off) for kk, vv in v.items()}
                    if isinstance(v, dict)
                    else v
                    for k, v in g["texture"].items()
                }
        shifted.append(g)
    out["geometry"] = shifted
    return out


def _shift_tex(value: Any, tex_off: int, uv_off: int) -> Any:
    if isinstance(value, list) and value and all(not isinstance(x, list) for x in value):
        if value[0] is None:
            return value
        return [_shift(value[0], tex_off)] + [_shift(x, uv_off) for x in value[1:]]
    if isinstance(value, list):
        return [_shift_tex(v, tex_off, uv_off) for v in value]
    return value


def _shift(value: Any, offset: int) -> Any:
    if isinstance(value, list):
        return [_shift(v, offset) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value + offset
    return value


def parse_epsg(crs: str | None) -> int | None:
    """Return the EPSG code of a CityJSON ``referenceSystem`` string, if it names one."""
    if not crs:
        return None
    m = _EPSG_RE.search(crs)
    return int(m.group(1)) if m else None


def _lod_value(lod: Any) -> float:
    try:
        return float(lod)
    except (TypeError, ValueError):
        return -1.0


def _lod_str(lod: Any) -> str:
    if isinstance(lod, float) and lod.is_integer():
        return str(int(lod))
    return str(lod)


@dataclass
class _Flat:
    """Growing flat lists, turned into arrays at the end."""

    ring_vertices: list[int] = field(default_factory=list)
    ring_lengths: list[int] = field(default_factory=list)
    surface_nrings: list[int] = field(default_factory=list)
    surf_feature: list[int] = field(default_factory=list)
    surf_semantic: list[int] = field(default_factory=list)
    surf_material: list[int] = field(default_factory=list)
    point_vertices: list[int] = field(default_factory=list)
    point_feature: list[int] = field(default_factory=list)
    line_segments: list[int] = field(default_factory=list)
    line_feature: list[int] = field(default_factory=list)
    surf_shell: list[int] = field(default_factory=list)
    shell_solid: list[int] = field(default_factory=list)
    solid_group: list[int] = field(default_factory=list)
    group_type: list[str] = field(default_factory=list)
    group_feature: list[int] = field(default_factory=list)


class _Reader:
    """One pass over a parsed CityJSON document."""

    def __init__(
        self,
        doc: dict[str, Any],
        source: str,
        lod: str | None,
        progress: ProgressFn | None,
        warnings: list[ModelWarning],
        *,
        wgs84: bool = True,
    ) -> None:
        self.wgs84 = wgs84
        self.doc = doc
        self.source = source
        self.want_lod = _lod_value(lod) if lod is not None else None
        if lod is not None and self.want_lod is not None and self.want_lod < 0:
            raise IngestError(f"--lod {lod!r} is not a number like 2 or 2.2", source=source)
        self.progress = progress
        self.warnings = warnings
        self.flat = _Flat()
        self.semantic_types = list(SEMANTIC_TYPES)
        self.semantic_index = {t: i for i, t in enumerate(self.semantic_types)}
        self.extra_vertices: list[Any] = []
        self.n_file_vertices = 0
        self.lods: set[str] = set()
        # Positions in flat.ring_vertices that belong to geometry instances (their
        # indices address appended, placed template vertices and were checked already).
        self.instance_spans: list[tuple[int, int]] = []
        # (start, end, vertex offset, vertex count, object id) of sequence features' rings.
        self.ring_spans: list[tuple[int, int, int, int, str]] = []
        self._warned_no_textures = False
        self._warned_materials = False
        self.empty_primitives = 0
        self.current_object: str | None = None
        self.file_vertices = np.zeros((0, 3), dtype=np.float64)

    def fail(self, problem: str, where: str = "") -> IngestError:
        return IngestError(problem, source=self.source, where=where)

    def warn(self, code: str, message: str, object_id: str | None = None) -> None:
        self.warnings.append(ModelWarning(code, message, object_id))

    # -- top level -------------------------------------------------------------------

    def read(self) -> CityModel:
        doc = self.doc
        version = self._version()
        city_objects = doc.get("CityObjects")
        if not isinstance(city_objects, dict):
            raise self.fail("missing or invalid 'CityObjects' member (must be an object)")
        transform = self._transform()
        vertices = self._vertices(transform)
        self.file_vertices = vertices
        self.n_file_vertices = vertices.shape[0]
        metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        assert isinstance(metadata, dict)
        crs = self._crs(metadata)
        self.materials = self._materials()
        self.n_textures, self.n_uv = self._texture_counts()
        self.templates, self.template_vertices = self._templates()

        twin = Twin()
        feature_ids: list[str] = []
        total = len(city_objects)
        step = max(1, total // 100)
        obj_ranges: list[tuple[int, int, int, int]] = []
        for i, (oid, raw) in enumerate(city_objects.items()):
            obj = self._object(oid, raw)
            twin.add(obj)
            s0 = len(self.flat.surf_feature)
            p0 = len(self.flat.point_feature)
            l0 = len(self.flat.line_feature)
            self._geometries(oid, raw, len(feature_ids), obj)
            drew = (
                len(self.flat.surf_feature) > s0
                or len(self.flat.point_feature) > p0
                or len(self.flat.line_feature) > l0
            )
            if drew:
                feature_ids.append(oid)
                obj_ranges.append((s0, len(self.flat.surf_feature), p0, l0))
            if self.progress and (i % step == 0 or i == total - 1):
                self.progress(i + 1, total)
        self._link_children(twin)

        all_vertices = vertices
        if self.extra_vertices:
            extra = np.asarray(self.extra_vertices, dtype=np.float64).reshape(-1, 3)
            all_vertices = np.vstack([vertices, extra])
        model = self._assemble(version, twin, all_vertices, feature_ids, crs, transform, metadata)
        _summarize(model, wgs84=self.wgs84)
        return model

    def _version(self) -> str:
        doc = self.doc
        kind = doc.get("type")
        version = doc.get("version")
        if kind is None:
            raise self.fail(
                "missing top-level 'type' member: not a CityJSON document "
                '(expected "type": "CityJSON")'
            )
        if kind == "CityModel":
            # CityJSON < 0.6 called itself CityModel, version as a URL.
            self.warn(
                "legacy-version",
                f"pre-1.0 CityJSON ({version}); read through the legacy path. Upgrade "
                "with: cjio FILE upgrade save OUT.city.json",
            )
            return str(version).rsplit("/", 1)[-1]
        if kind != "CityJSON":
            raise self.fail(f"top-level 'type' is {kind!r}, expected 'CityJSON'")
        if not isinstance(version, str | int | float):
            raise self.fail("missing 'version' member")
        v = str(version)
        if v.startswith("0."):
            self.warn(
                "legacy-version",
                f"CityJSON {v} is pre-1.0; read through the legacy path (lod numbers, "
                "'crs' metadata). Upgrade with: twin upgrade FILE -o OUT.city.json",
            )
        elif v not in ("1.0", "1.1", "2.0") and not v.startswith(("1.0.", "1.1.", "2.0.")):
            raise self.fail(
                f"unsupported CityJSON version {v!r} (supported: 0.x legacy, 1.0, 1.1, 2.0)"
            )
        return v

    def _transform(self) -> dict[str, list[float]] | None:
        t = self.doc.get("transform")
        if t is None:
            return None
        if not isinstance(t, dict):
            raise self.fail("'transform' must be an object with 'scale' and 'translate'")
        out: dict[str, list[float]] = {}
        for key in ("scale", "translate"):
            val = t.get(key)
            if (
                not isinstance(val, list)
                or len(val) != 3
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in val)
            ):
                raise self.fail(f"'transform.{key}' must be 3 numbers", where="transform")
            vals = [float(x) for x in val]
            if not all(math.isfinite(x) and abs(x) < 1e300 for x in vals):
                raise self.fail(
                    f"'transform.{key}' has a value outside float64 range", where="transform"
                )
            out[key] = vals
        if any(s == 0 for s in out["scale"]):
            self.warn(
                "zero-scale",
                "'transform.scale' has a zero component: vertices collapse on that axis",
            )
        return out

    def _vertices(self, transform: dict[str, list[float]] | None) -> np.ndarray:
        raw = self.doc.get("vertices")
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise self.fail("'vertices' must be an array of [x, y, z]")
        if not raw:
            return np.zeros((0, 3), dtype=np.float64)
        try:
            arr = np.asarray(raw)
        except ValueError:
            arr = np.asarray(raw, dtype=object)
        if arr.ndim != 2 or arr.shape[1] != 3 or arr.dtype.kind not in "iuf":
            bad = next(
                (
                    i
                    for i, v in enumerate(raw)
                    if not (
                        isinstance(v, list)
                        and len(v) == 3
                        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in v)
                    )
                ),
                0,
            )
            raise self.fail("vertex is not 3 numbers", where=f"vertex index {bad}")
        if arr.dtype.kind == "f":
            finite = np.isfinite(arr).all(axis=1) & (np.abs(arr) < _INT64_LIMIT).all(axis=1)
            if not finite.all():
                bad = int(np.argmin(finite))
                raise self.fail(
                    "vertex coordinate outside the integer/float64 range a CityJSON reader accepts",
                    where=f"vertex index {bad}",
                )
            if transform is not None and not np.equal(np.floor(arr), arr).all():
                bad = int(np.argmin(np.equal(np.floor(arr), arr).all(axis=1)))
                raise self.fail(
                    "vertex coordinates must be integers when 'transform' is present "
                    "(CityJSON 2.0 §3.2)",
                    where=f"vertex index {bad}",
                )
        v = arr.astype(np.float64)
        if transform is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                v = v * np.asarray(transform["scale"]) + np.asarray(transform["translate"])
            if not np.isfinite(v).all():
                bad = int(np.argmin(np.isfinite(v).all(axis=1)))
                raise self.fail(
                    "vertex outside the float64 range after applying 'transform'",
                    where=f"vertex index {bad}",
                )
        return v

    def _crs(self, metadata: dict[str, Any]) -> str | None:
        ref = metadata.get("referenceSystem")
        if isinstance(ref, str):
            return ref
        legacy = metadata.get("crs")
        if isinstance(legacy, dict) and isinstance(legacy.get("epsg"), int):
            return f"https://www.opengis.net/def/crs/EPSG/0/{legacy['epsg']}"
        return None

    def _materials(self) -> list[Material]:
        app = self.doc.get("appearance")
        if not isinstance(app, dict):
            return []
        mats = app.get("materials") or []
        if not isinstance(mats, list):
            raise self.fail("'appearance.materials' must be an array")
        out = []
        for i, m in enumerate(mats):
            if not isinstance(m, dict):
                raise self.fail("material is not an object", where=f"material index {i}")
            out.append(
                Material(
                    name=str(m.get("name", f"material-{i}")),
                    diffuse=_color(m.get("diffuseColor"), (0.8, 0.8, 0.8)),
                    emissive=_color(m.get("emissiveColor"), (0.0, 0.0, 0.0)),
                    transparency=_unit(m.get("transparency"), 0.0),
                    shininess=_unit(m.get("shininess"), 0.2),
                    smooth=bool(m.get("isSmooth", False)),
                )
            )
        return out

    def _texture_counts(self) -> tuple[int, int]:
        app = self.doc.get("appearance")
        if not isinstance(app, dict):
            return 0, 0
        tex = app.get("textures") or []
        uv = app.get("vertices-texture") or []
        return (len(tex) if isinstance(tex, list) else 0, len(uv) if isinstance(uv, list) else 0)

    def _templates(self) -> tuple[list[Any], np.ndarray]:
        gt = self.doc.get("geometry-templates")
        if not isinstance(gt, dict):
            return [], np.zeros((0, 3))
        templates = gt.get("templates") or []
        tv = gt.get("vertices-templates") or []
        ok = isinstance(tv, list) and all(
            isinstance(v, list)
            and len(v) == 3
            and all(isinstance(c, int | float) and not isinstance(c, bool) for c in v)
            for v in tv
        )
        tva = np.asarray(tv, dtype=np.float64).reshape(-1, 3) if ok else None
        if tva is None or not np.isfinite(tva).all():
            raise self.fail(
                "'vertices-templates' must be an array of [x, y, z] numbers",
                where="geometry-templates",
            )
        if not isinstance(templates, list):
            raise self.fail("'geometry-templates.templates' must be an array")
        return templates, tva

    # -- objects ---------------------------------------------------------------------

    def _object(self, oid: str, raw: Any) -> TwinObject:
        if not isinstance(raw, dict):
            raise self.fail("CityObject is not a JSON object", where=f"object {oid!r}")
        otype = raw.get("type")
        if not isinstance(otype, str):
            raise self.fail("CityObject has no 'type'", where=f"object {oid!r}")
        if otype not in CITYOBJECT_TYPES and not otype.startswith("+"):
            raise self.fail(
                f"unknown CityObject type {otype!r} (not a CityJSON type, and Extension "
                "types start with '+')",
                where=f"object {oid!r}",
            )
        attrs = raw.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise self.fail("'attributes' must be an object", where=f"object {oid!r}")
        parents = raw.get("parents") or []
        if not parents and isinstance(raw.get("parent"), str):
            parents = [raw["parent"]]  # CityJSON 0.x: a single "parent"
        children = raw.get("children") or []
        if not isinstance(parents, list) or not isinstance(children, list):
            raise self.fail("'parents'/'children' must be arrays of ids", where=f"object {oid!r}")
        # Members other than the standard ones (Extension members, address, ...) are kept.
        extra = {
            k: v
            for k, v in raw.items()
            if k not in ("type", "attributes", "geometry", "parents", "children", "parent")
            and not k.startswith("\x00")
        }
        obj = TwinObject(
            id=oid,
            type=otype,
            parents=[str(p) for p in parents],
            children=[str(c) for c in children],
            attributes=attrs,
            extra=extra,
        )
        return obj

    def _link_children(self, twin: Twin) -> None:
        for obj in twin:
            for p in obj.parents:
                parent = twin.get(p)
                if parent is None:
                    self.warn(
                        "dangling-parent", f"parent {p!r} of {obj.id!r} does not exist", obj.id
                    )
                elif obj.id not in parent.children:
                    parent.children.append(obj.id)
            for c in obj.children:
                child = twin.get(c)
                if child is None:
                    self.warn("dangling-child", f"child {c!r} of {obj.id!r} does not exist", obj.id)
                elif obj.id not in child.parents:
                    child.parents.append(obj.id)

    # -- geometry --------------------------------------------------------------------

    def _geometries(self, oid: str, raw: dict[str, Any], fidx: int, obj: TwinObject) -> None:
        self.current_object = oid
        geoms = raw.get("geometry")
        if geoms is None:
            return
        if not isinstance(geoms, list):
            raise self.fail("'geometry' must be an array", where=f"object {oid!r}")
        if not geoms:
            return
        lods: list[float] = []
        for gi, g in enumerate(geoms):
            if not isinstance(g, dict):
                raise self.fail("geometry is not an object", where=f"object {oid!r} geometry {gi}")
            gtype = g.get("type")
            if not isinstance(gtype, str) or gtype not in _GEOMETRY_TYPES:
                raise self.fail(
                    f"unknown geometry type {gtype!r}", where=f"object {oid!r} geometry {gi}"
                )
            if "boundaries" not in g:
                raise self.fail(
                    "geometry has no 'boundaries'", where=f"object {oid!r} geometry {gi}"
                )
            lod = self._geometry_lod(oid, gi, g)
            lods.append(_lod_value(lod))
            self.lods.add(_lod_str(lod))
        chosen = self._choose_lod(lods)
        gtypes: list[str] = []
        for gi, g in enumerate(geoms):
            if lods[gi] != chosen:
                continue
            gtypes.append(str(g["type"]))
            self._geometry(oid, gi, g, fidx, raw.get(_VOFF), raw.get(_VCOUNT))
        obj.extra["_lod"] = _lod_str(chosen if not float(chosen).is_integer() else int(chosen))
        obj.extra["_gtypes"] = tuple(gtypes)

    def _geometry_lod(self, oid: str, gi: int, g: dict[str, Any]) -> Any:
        if g.get("type") == "GeometryInstance":
            t = g.get("template")
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < len(self.templates):
                raise self.fail(
                    f"template index {t!r} out of range ({len(self.templates)} templates)",
                    where=f"object {oid!r} geometry {gi}",
                )
            tmpl = self.templates[t]
            lod = tmpl.get("lod") if isinstance(tmpl, dict) else None
            if lod is None or _lod_value(lod) < 0:
                raise self.fail(
                    f"geometry template {t} has lod {lod!r}, not a number",
                    where=f"object {oid!r} geometry {gi}",
                )
            return lod
        lod = g.get("lod")
        if lod is None:
            raise self.fail("geometry has no 'lod'", where=f"object {oid!r} geometry {gi}")
        if _lod_value(lod) < 0:
            raise self.fail(
                f"geometry lod {lod!r} is not a number", where=f"object {oid!r} geometry {gi}"
            )
        return lod

    def _choose_lod(self, lods: list[float]) -> float:
        if self.want_lod is None:
            return max(lods)
        at_or_below = [x for x in lods if x <= self.want_lod + 1e-9]
        if at_or_below:
            return max(at_or_below)
        return min(lods)

    def _geometry(
        self,
        oid: str,
        gi: int,
        g: dict[str, Any],
        fidx: int,
        voff: int | None = None,
        vcount: int | None = None,
    ) -> None:
        """Flatten one geometry; ``voff``/``vcount`` locate a sequence feature's vertices."""
        gtype = g["type"]
        where = f"object {oid!r} geometry {gi}"
        if gtype == "GeometryInstance":
            self._instance(oid, gi, g, fidx, voff or 0, vcount)
            return
        if voff is None or vcount is None:
            self._flatten(g, fidx, where, offset=0, limit=self.n_file_vertices)
        elif gtype in ("MultiPoint", "MultiLineString"):
            self._flatten(g, fidx, where, offset=voff, limit=vcount)
        else:
            # Rings keep their local indices here; _assemble checks them against the
            # feature's own vertex count and adds the offset to the whole span at once.
            start = len(self.flat.ring_vertices)
            self._flatten(g, fidx, where, offset=0, limit=vcount)
            self.ring_spans.append((start, len(self.flat.ring_vertices), voff, vcount, oid))

    def _flatten(self, g: dict[str, Any], fidx: int, where: str, offset: int, limit: int) -> None:
        """Append one geometry's boundaries to the flat arrays.

        ``offset`` is added to every vertex index (geometry instances) and ``limit`` is
        the number of vertices indices may address.
        """
        gtype = g["type"]
        b = g["boundaries"]
        flat = self.flat
        if gtype == "MultiPoint":
            idx = self._int_list(b, where, "MultiPoint boundaries")
            self._check_range(idx, limit, where)
            flat.point_vertices.extend(i + offset for i in idx)
            flat.point_feature.extend([fidx] * len(idx))
            return
        if gtype == "MultiLineString":
            if not isinstance(b, list):
                raise self.fail("MultiLineString boundaries must be an array", where=where)
            for li, line in enumerate(b):
                idx = self._int_list(line, f"{where} line {li}", "linestring")
                self._check_range(idx, limit, where)
                for a, c in itertools.pairwise(idx):
                    flat.line_segments.extend((a + offset, c + offset))
                    flat.line_feature.append(fidx)
            return
        depth = _SURFACE_DEPTH[gtype]
        sem_types = self._semantic_table(g, where)
        sem_values = g.get("semantics", {}).get("values") if sem_types is not None else None
        mat_values, mat_single = self._material_values(g, where, strict=offset == 0)
        self._check_textures(g, where)
        n_before = len(flat.surface_nrings)
        ring_vertices = flat.ring_vertices
        ring_lengths = flat.ring_lengths
        surface_nrings = flat.surface_nrings
        surf_semantic = flat.surf_semantic
        surf_material = flat.surf_material
        self.empty_primitives = 0
        empty_rings = 0
        surf_shell = flat.surf_shell
        group = len(flat.solid_group) if depth >= 2 else -1
        last_path: tuple[int, ...] | None = None
        last_solid: tuple[int, ...] | None = None
        for surface, sem, mat, path in _walk(b, sem_values, mat_values, depth, self, where):
            if not isinstance(surface, list):
                raise self.fail(
                    f"boundaries must be nested arrays ({gtype}: a surface is a list of "
                    f"rings, found {type(surface).__name__})",
                    where=where,
                )
            if not surface:
                empty_rings += 1
                continue
            nr = 0
            for ring in surface:
                if not isinstance(ring, list):
                    raise self.fail("ring is not an array of vertex indices", where=where)
                if not ring:
                    empty_rings += 1
                    continue
                if offset:
                    # Template indices address "vertices-templates" (CityJSON 2.0 §3.4).
                    self._check_range(self._int_list(ring, where, "ring"), limit, where)
                    ring = [i + offset for i in ring]
                ring_vertices.extend(ring)
                ring_lengths.append(len(ring))
                nr += 1
            if nr == 0:
                continue
            if depth >= 2:
                # Shells and solids keep their structure for the geometric validator.
                if path != last_path:
                    last_path = path
                    solid_key = path[:-1]
                    if solid_key != last_solid or not flat.solid_group:
                        last_solid = solid_key
                        flat.solid_group.append(group)
                    flat.shell_solid.append(len(flat.solid_group) - 1)
                surf_shell.append(len(flat.shell_solid) - 1)
            else:
                surf_shell.append(-1)
            surface_nrings.append(nr)
            if sem is None:
                surf_semantic.append(-1)
            else:
                if type(sem) is not int or not 0 <= sem < len(sem_types or ()):
                    raise self.fail(
                        f"semantics value {sem!r} out of range "
                        f"({len(sem_types or ())} semantic surfaces)",
                        where=where,
                    )
                surf_semantic.append(sem_types[sem] if sem_types else -1)
            m = mat_single if mat_single is not None else mat
            if m is None:
                surf_material.append(-1)
            else:
                if type(m) is not int or not 0 <= m < len(self.materials):
                    raise self.fail(
                        f"material index {m!r} out of range ({len(self.materials)} materials)",
                        where=where,
                    )
                surf_material.append(m)
        n_new = len(surface_nrings) - n_before
        flat.surf_feature.extend([fidx] * n_new)
        if depth >= 2 and n_new:
            flat.group_type.append(gtype)
            flat.group_feature.append(fidx)
        empty_rings += self.empty_primitives
        if empty_rings:
            self.warn(
                "empty-primitive",
                f"{where}: {empty_rings} empty surface/ring/shell dropped",
                self.current_object,
            )
        if n_new == 0 and empty_rings == 0:
            self.warn("empty-geometry", f"{where}: geometry has no surfaces")

    def _semantic_table(self, g: dict[str, Any], where: str) -> list[int] | None:
        sem = g.get("semantics")
        if sem is None:
            return None
        if not isinstance(sem, dict) or not isinstance(sem.get("surfaces"), list):
            self.warn(
                "legacy-semantics",
                f"{where}: 'semantics' is not {{surfaces, values}} (pre-1.0 form?); ignored",
            )
            return None
        table: list[int] = []
        for si, s in enumerate(sem["surfaces"]):
            st = s.get("type") if isinstance(s, dict) else None
            if not isinstance(st, str):
                raise self.fail(
                    "semantic surface has no 'type'", where=f"{where} semantic surface {si}"
                )
            idx = self.semantic_index.get(st)
            if idx is None:
                if not st.startswith("+"):
                    self.warn("unknown-semantic", f"{where}: unknown semantic type {st!r}")
                idx = len(self.semantic_types)
                self.semantic_types.append(st)
                self.semantic_index[st] = idx
            table.append(idx)
        return table

    def _material_values(
        self, g: dict[str, Any], where: str, *, strict: bool = True
    ) -> tuple[Any, int | None]:
        mat = g.get("material")
        if not isinstance(mat, dict) or not mat:
            return None, None
        if not self.materials or not strict:
            # No materials at all, or a template (shared by features whose appearances
            # differ): draw with semantic colours instead of failing.
            if not self._warned_materials:
                self._warned_materials = True
                self.warn(
                    "material-ignored",
                    f"{where}: material references without matching materials; "
                    "semantic colours used",
                )
            if not self.materials:
                return None, None
            ok = all(
                m is None or (type(m) is int and 0 <= m < len(self.materials))
                for ent in mat.values()
                if isinstance(ent, dict)
                for m in [*_leaves(ent.get("values")), ent.get("value")]
            )
            if not ok:
                return None, None
        for th, ent in mat.items():
            if isinstance(ent, dict):
                for m in _leaves(ent.get("values")):
                    if m is not None and (type(m) is not int or not 0 <= m < len(self.materials)):
                        raise self.fail(
                            f"material index {m!r} out of range ({len(self.materials)} materials)",
                            where=f"{where} material theme {th!r}",
                        )
        app = self.doc.get("appearance")
        theme = app.get("default-theme-material") if isinstance(app, dict) else None
        if theme not in mat:
            theme = next(iter(mat))
        entry = mat[theme]
        if not isinstance(entry, dict):
            raise self.fail(f"material theme {theme!r} is not an object", where=where)
        if "value" in entry:
            v = entry["value"]
            if v is not None and (type(v) is not int or not 0 <= v < len(self.materials)):
                raise self.fail(
                    f"material index {v!r} out of range ({len(self.materials)} materials)",
                    where=where,
                )
            return None, v
        return entry.get("values"), None

    def _check_textures(self, g: dict[str, Any], where: str) -> None:
        tex = g.get("texture")
        if not isinstance(tex, dict):
            return
        if self.n_textures == 0:
            if not self._warned_no_textures:
                self._warned_no_textures = True
                self.warn(
                    "missing-textures", f"{where}: texture references, but the file has no textures"
                )
            return
        depth = _SURFACE_DEPTH.get(g["type"], 1)
        for theme, entry in tex.items():
            values = entry.get("values") if isinstance(entry, dict) else None
            if values is None:
                continue
            # Each ring entry is [texture index, uv index, ...] (CityJSON 2.0 §8.3).
            t_idx: list[Any] = []
            uv_idx: list[Any] = []
            _collect_texture_indices(values, depth, t_idx, uv_idx)
            at = f"{where} texture theme {theme!r}"
            for what, items, n in (
                ("texture index", t_idx, self.n_textures),
                ("texture coordinate index", uv_idx, self.n_uv),
            ):
                if not items:
                    continue
                bad = next((x for x in items if type(x) is not int), _NO_ITEM)
                if bad is not _NO_ITEM:
                    raise self.fail(f"{what} {bad!r} is not an integer", where=at)
                arr = np.asarray(items, dtype=np.int64)
                out = (arr < 0) | (arr >= n)
                if out.any():
                    raise self.fail(
                        f"{what} {int(arr[int(np.argmax(out))])} out of range ({n})", where=at
                    )

    def _instance(
        self,
        oid: str,
        gi: int,
        g: dict[str, Any],
        fidx: int,
        voff: int = 0,
        vcount: int | None = None,
    ) -> None:
        where = f"object {oid!r} geometry {gi}"
        tmpl = self.templates[g["template"]]
        ttype = tmpl.get("type") if isinstance(tmpl, dict) else None
        if not isinstance(ttype, str) or ttype not in _GEOMETRY_TYPES - {"GeometryInstance"}:
            raise self.fail("geometry template has an invalid type", where=where)
        if "boundaries" not in tmpl:
            raise self.fail("geometry template has no 'boundaries'", where=where)
        ref = g.get("boundaries")
        if not (isinstance(ref, list) and len(ref) == 1 and type(ref[0]) is int):
            raise self.fail("GeometryInstance boundaries must be [vertex index]", where=where)
        limit = self.n_file_vertices if vcount is None else vcount
        if not 0 <= ref[0] < limit:
            raise self.fail(
                f"vertex index {ref[0]} out of range ({limit} vertices)",
                where=where,
            )
        m = g.get("transformationMatrix")
        if not (
            isinstance(m, list) and len(m) == 16 and all(isinstance(x, int | float) for x in m)
        ):
            raise self.fail("transformationMatrix must be 16 numbers", where=where)
        matrix = np.asarray(m, dtype=np.float64).reshape(4, 4)
        if not (np.isfinite(matrix).all() and np.abs(matrix).max() < 1e12):
            raise self.fail("transformationMatrix has values out of range", where=where)
        tv = self.template_vertices
        # CityJSON 2.0 §3.4: template vertices are transformed by the row-major 4x4
        # matrix, then translated by the reference point (a transformed file vertex).
        refpt = self.file_vertices[ref[0] + voff]
        homo = np.hstack([tv, np.ones((tv.shape[0], 1))])
        placed = (homo @ matrix.T)[:, :3] + refpt
        offset = self.n_file_vertices + len(self.extra_vertices) // 3
        self.extra_vertices.extend(placed.reshape(-1).tolist())
        pos = len(self.flat.ring_vertices)
        self._flatten(
            tmpl, fidx, f"{where} (template {g['template']})", offset=offset, limit=tv.shape[0]
        )
        self.instance_spans.append((pos, len(self.flat.ring_vertices)))

    def _int_list(self, value: Any, where: str, what: str) -> list[int]:
        if not isinstance(value, list) or not all(type(i) is int for i in value):
            raise self.fail(f"{what} must be an array of integer vertex indices", where=where)
        return value

    def _check_range(self, idx: list[int], limit: int, where: str) -> None:
        for i in idx:
            if not 0 <= i < limit:
                raise self.fail(f"vertex index {i} out of range ({limit} vertices)", where=where)

    # -- assembly --------------------------------------------------------------------

    def _assemble(
        self,
        version: str,
        twin: Twin,
        vertices: np.ndarray,
        feature_ids: list[str],
        crs: str | None,
        transform: dict[str, list[float]] | None,
        metadata: dict[str, Any],
    ) -> CityModel:
        flat = self.flat
        # Exact type check (a JSON true would otherwise pass as index 1).
        if set(map(type, flat.ring_vertices)) - {int}:
            bad = next(i for i, v in enumerate(flat.ring_vertices) if type(v) is not int)
            f = self._feature_of_ring_vertex(bad)
            raise self.fail(
                f"vertex index {flat.ring_vertices[bad]!r} is not an integer",
                where=f"object {feature_ids[f]!r}" if f is not None else "",
            )
        rv = np.asarray(flat.ring_vertices, dtype=np.int64)
        for a, b, voff, vcount, span_oid in self.ring_spans:
            seg = rv[a:b]
            if seg.size and (int(seg.min()) < 0 or int(seg.max()) >= vcount):
                bad = int(seg[(seg < 0) | (seg >= vcount)][0])
                raise self.fail(
                    f"vertex index {bad} out of range ({vcount} vertices in its feature)",
                    where=f"object {span_oid!r}",
                )
            seg += voff
        ring_offsets = np.zeros(len(flat.ring_lengths) + 1, dtype=np.int64)
        np.cumsum(flat.ring_lengths, out=ring_offsets[1:])
        surface_rings = np.zeros(len(flat.surface_nrings) + 1, dtype=np.int64)
        np.cumsum(flat.surface_nrings, out=surface_rings[1:])
        surf_feature = np.asarray(flat.surf_feature, dtype=np.int64)
        n_file = self.n_file_vertices
        # Vectorized range check (CityJSON 2.0 §3.3: indices address "vertices").
        limit = np.full(rv.shape[0], n_file, dtype=np.int64)
        for a, b in self.instance_spans:
            limit[a:b] = vertices.shape[0]
        bad_mask = (rv < 0) | (rv >= limit)
        if bad_mask.any():
            bad = int(np.argmax(bad_mask))
            f = self._feature_of_ring_vertex(bad, ring_offsets, surface_rings, surf_feature)
            raise self.fail(
                f"vertex index {int(rv[bad])} out of range ({n_file} vertices)",
                where=f"object {feature_ids[f]!r}" if f is not None else "",
            )
        segs = np.asarray(flat.line_segments, dtype=np.int64).reshape(-1, 2)
        epsg = parse_epsg(crs)
        extensions = self.doc.get("extensions")
        return CityModel(
            source=self.source,
            version=version,
            twin=twin,
            vertices=vertices,
            ring_vertices=rv,
            ring_offsets=ring_offsets,
            surface_rings=surface_rings,
            surf_feature=surf_feature,
            surf_semantic=np.asarray(flat.surf_semantic, dtype=np.int64),
            surf_material=np.asarray(flat.surf_material, dtype=np.int64),
            point_vertices=np.asarray(flat.point_vertices, dtype=np.int64),
            point_feature=np.asarray(flat.point_feature, dtype=np.int64),
            line_segments=segs,
            line_feature=np.asarray(flat.line_feature, dtype=np.int64),
            surf_shell=np.asarray(flat.surf_shell, dtype=np.int64),
            shell_solid=np.asarray(flat.shell_solid, dtype=np.int64),
            solid_group=np.asarray(flat.solid_group, dtype=np.int64),
            group_type=list(flat.group_type),
            group_feature=np.asarray(flat.group_feature, dtype=np.int64),
            feature_ids=feature_ids,
            semantic_types=self.semantic_types,
            materials=self.materials,
            crs=crs,
            epsg=epsg,
            transform=transform,
            metadata=metadata,
            extensions=extensions if isinstance(extensions, dict) else {},
            lods=sorted(self.lods, key=_lod_value),
            warnings=self.warnings,
        )

    def _feature_of_ring_vertex(
        self,
        pos: int,
        ring_offsets: np.ndarray | None = None,
        surface_rings: np.ndarray | None = None,
        surf_feature: np.ndarray | None = None,
    ) -> int | None:
        flat = self.flat
        if ring_offsets is None:
            ring_offsets = np.concatenate([[0], np.cumsum(flat.ring_lengths)])
        if surface_rings is None:
            surface_rings = np.concatenate([[0], np.cumsum(flat.surface_nrings)])
        if surf_feature is None:
            surf_feature = np.asarray(flat.surf_feature)
        ring = int(np.searchsorted(ring_offsets, pos, side="right") - 1)
        surf = int(np.searchsorted(surface_rings, ring, side="right") - 1)
        if 0 <= surf < len(surf_feature):
            return int(surf_feature[surf])
        return None


def _walk(
    b: Any,
    sem: Any,
    mat: Any,
    depth: int,
    reader: _Reader,
    where: str,
    path: tuple[int, ...] = (),
) -> Iterator[tuple[Any, Any, Any, tuple[int, ...]]]:
    """Yield (surface, semantic value, material value, path) ``depth`` levels down.

    ``path`` holds the indices above the surface list: () for MultiSurface,
    (shell,) for Solid, (solid, shell) for MultiSolid/CompositeSolid.
    """
    if not isinstance(b, list):
        raise reader.fail("boundaries must be nested arrays", where=where)
    if depth == 1:
        n = len(b)
        sem_l = sem if isinstance(sem, list) else None
        mat_l = mat if isinstance(mat, list) else None
        if sem_l is not None and len(sem_l) != n:
            raise reader.fail(
                f"semantics 'values' has {len(sem_l)} entries for {n} surfaces", where=where
            )
        if mat_l is not None and len(mat_l) != n:
            raise reader.fail(
                f"material 'values' has {len(mat_l)} entries for {n} surfaces", where=where
            )
        for i, s in enumerate(b):
            yield (
                s,
                sem_l[i] if sem_l is not None else None,
                (mat_l[i] if mat_l is not None else None),
                path,
            )
        return
    if not b:
        reader.empty_primitives += 1
    for i, sub in enumerate(b):
        s_sub = sem[i] if isinstance(sem, list) and i < len(sem) else None
        m_sub = mat[i] if isinstance(mat, list) and i < len(mat) else None
        yield from _walk(sub, s_sub, m_sub, depth - 1, reader, where, (*path, i))


def _leaves(values: Any) -> Iterator[Any]:
    """Yield the non-list leaves of a nested 'values' array."""
    if isinstance(values, list):
        for v in values:
            yield from _leaves(v)
    else:
        yield values


def _collect_texture_indices(values: Any, depth: int, tex: list[Any], uv: list[Any]) -> None:
    """Collect texture and uv indices from a texture 'values' array ``depth`` levels deep."""
    if not isinstance(values, list):
        return
    level: list[Any] = values
    for _ in range(depth):
        # Flatten one nesting level (surfaces -> rings); non-lists are malformed input.
        bad = next((v for v in level if not isinstance(v, list)), _NO_ITEM)
        if bad is not _NO_ITEM:
            tex.append(bad)  # reported as "not an integer" by the caller
            return
        level = [x for v in level for x in v]
    rings = [r for r in level if isinstance(r, list) and r and r[0] is not None]
    tex.extend(r[0] for r in rings)
    uv.extend(x for r in rings for x in r[1:])
    tex.extend(r for r in level if r is not None and not isinstance(r, list))


def _color(value: Any, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(c, int | float) for c in value)
    ):
        return (
            min(1.0, max(0.0, float(value[0]))),
            min(1.0, max(0.0, float(value[1]))),
            min(1.0, max(0.0, float(value[2]))),
        )
    return default


def _unit(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return min(1.0, max(0.0, float(value)))
    return default


def _summarize(model: CityModel, *, wgs84: bool = True) -> None:
    """Attach a GeometrySummary to every drawn object (vectorized per object range)."""
    n_feat = len(model.feature_ids)
    if n_feat == 0:
        return
    v = model.vertices
    # Collect (feature, vertex) pairs from surfaces, points and lines.
    ring_feat = np.repeat(
        np.repeat(model.surf_feature, np.diff(model.surface_rings)),
        np.diff(model.ring_offsets),
    )
    feats = np.concatenate([ring_feat, model.point_feature, np.repeat(model.line_feature, 2)])
    verts = np.concatenate(
        [model.ring_vertices, model.point_vertices, model.line_segments.reshape(-1)]
    )
    order = np.argsort(feats, kind="stable")
    feats_s = feats[order]
    pts = v[verts[order]]
    starts = np.searchsorted(feats_s, np.arange(n_feat))
    lo = np.minimum.reduceat(pts, starts, axis=0)
    hi = np.maximum.reduceat(pts, starts, axis=0)
    counts = np.diff(np.append(starts, feats_s.shape[0]))
    centroid = np.add.reduceat(pts, starts, axis=0) / counts[:, None]
    footprint = _footprints(model, n_feat)

    wgs_bbox: np.ndarray | None = None
    wgs_centroid: np.ndarray | None = None
    if not wgs84:
        pass
    elif model.epsg is not None and model.epsg != 4326:
        from ingest.crs import to_wgs84

        corners = np.vstack([lo, hi, centroid])
        out = to_wgs84(corners, model.epsg)
        if out is not None:
            wlo, whi, wc = out[:n_feat], out[n_feat : 2 * n_feat], out[2 * n_feat :]
            wgs_bbox = np.hstack([np.minimum(wlo, whi), np.maximum(wlo, whi)])
            wgs_centroid = wc
    elif model.epsg == 4326:
        wgs_bbox = np.hstack([lo, hi])
        wgs_centroid = centroid

    for f, oid in enumerate(model.feature_ids):
        obj = model.twin[oid]
        bbox = tuple(float(x) for x in (*lo[f], *hi[f]))
        obj.geometry = GeometrySummary(
            lod=obj.extra.pop("_lod", None),
            geometry_types=obj.extra.pop("_gtypes", ()),
            bbox=bbox,  # type: ignore[arg-type]
            centroid=(float(centroid[f, 0]), float(centroid[f, 1]), float(centroid[f, 2])),
            height=float(hi[f, 2] - lo[f, 2]),
            footprint_area=float(footprint[f]),
            bbox_wgs84=tuple(float(x) for x in wgs_bbox[f]) if wgs_bbox is not None else None,  # type: ignore[arg-type]
            centroid_wgs84=(
                (float(wgs_centroid[f, 0]), float(wgs_centroid[f, 1]), float(wgs_centroid[f, 2]))
                if wgs_centroid is not None
                else None
            ),
        )
    for obj in model.twin:
        obj.extra.pop("_lod", None)
        obj.extra.pop("_gtypes", None)


def _footprints(model: CityModel, n_feat: int) -> np.ndarray:
    """Projected (xy) area per feature: max of up- and down-facing surface areas.

    For a closed solid both equal the footprint; for an LoD0 footprint polygon only one
    side is non-zero. Shoelace per ring, holes subtract by their opposite orientation.
    """
    out = np.zeros(n_feat)
    if model.n_rings == 0:
        return out
    rv = model.ring_vertices
    offs = model.ring_offsets
    lengths = np.diff(offs)
    nxt = np.arange(rv.shape[0]) + 1
    nxt[offs[1:] - 1] = offs[:-1]
    x = model.vertices[rv, 0]
    y = model.vertices[rv, 1]
    # Centre coordinates first: real-world values (1e5..1e6 m) lose precision squared.
    x = x - x.mean()
    y = y - y.mean()
    cross = x * y[nxt] - x[nxt] * y
    valid = lengths > 0
    ring_area = np.zeros(lengths.shape[0])
    ring_area[valid] = np.add.reduceat(cross, offs[:-1][valid]) / 2.0
    surf_area = np.add.reduceat(ring_area, model.surface_rings[:-1])
    up = np.bincount(model.surf_feature, weights=np.clip(surf_area, 0, None), minlength=n_feat)
    down = np.bincount(model.surf_feature, weights=np.clip(-surf_area, 0, None), minlength=n_feat)
    np.maximum(up, down, out=out)
    return out

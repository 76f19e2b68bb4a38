"""GeoJSON and GeoPackage network readers: GIS lines become edges, points become nodes.

Utilities export their networks from GIS as line features (pipes, cables, road segments)
and point features (valves, hydrants, substations). Nothing says which lines meet, so
line endpoints are *snapped*: an endpoint within ``tolerance`` of a point feature or of an
earlier endpoint becomes the same node (greedy, on a grid of ``tolerance`` cells, so no
chaining and no O(n²) pairs). Point features are nodes with their own ids; other nodes are
``Junction`` nodes with ids ``J<n>``.

Coordinates end up metric: RFC 7946 GeoJSON is WGS84 lon/lat (RFC 7946 §4), so it is
reprojected to the UTM zone of the data's centre (EPSG:326xx north, 327xx south); a legacy
``crs`` member (GeoJSON 2008 §3) or a projected GeoPackage SRS is kept as is.

Attribute rules:

* every property is kept as an attribute;
* ``diameter`` is stored in metres: a ``diameter_mm`` property wins (divided by 1000);
  otherwise a ``diameter`` above 20 is taken as millimetres (no real pipe or cable is 20 m
  wide) and divided by 1000, keeping the raw value as ``diameter_mm``;
* ``width`` and ``depth`` given as numeric strings become numbers; ``depth`` stays an
  attribute (the scene lowers pipes by it), z comes from 3D coordinates or is 0;
* asset types come from a ``type``, ``kind`` or ``asset_type`` property; else ``Node`` for
  point features, ``Junction`` for snapped endpoints and ``Line`` (power), ``Road`` (road)
  or ``Pipe`` (others) for edges;
* a node whose type is a supply (reservoir, tank, source, substation, external grid) or
  that has ``source: true`` is a network source.

The GeoPackage reader uses only ``sqlite3`` and decodes the GeoPackage binary geometry
(GeoPackage 1.3 §2.1.3) and WKB (OGC 06-103r4 §8, ISO and EWKB Z/M codes) itself.
"""

from __future__ import annotations

import math
import re
import sqlite3
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from twin.errors import IngestError
from twin.network import Network

__all__ = ["decode_gpkg_geometry", "read_geojson", "read_gpkg"]

_TYPE_KEYS = ("type", "kind", "asset_type")
_SOURCE_TYPES = {
    "reservoir",
    "tank",
    "source",
    "substation",
    "ext_grid",
    "extgrid",
    "externalgrid",
    "external_grid",
}
_LINE_TYPES = {"LineString", "MultiLineString"}
_POINT_TYPES = {"Point", "MultiPoint"}
# Geometries a network has no use for: skipped (and counted), not an error.
_SKIPPED_TYPES = {"Polygon", "MultiPolygon"}
_GEOJSON_TYPES = _LINE_TYPES | _POINT_TYPES | _SKIPPED_TYPES | {"GeometryCollection"}
_EPSG_NAME = re.compile(r"EPSG:+(?:[\d.]*:)?(\d+)$", re.IGNORECASE)
_CRS84 = re.compile(r"CRS:?84$", re.IGNORECASE)

Coords = npt.NDArray[np.float64]


@dataclass
class _Feature:
    """One input feature reduced to what the network needs."""

    where: str
    id: str
    lines: list[Coords] = field(default_factory=list)
    points: list[Coords] = field(default_factory=list)  # each (1, 3)
    props: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Collected:
    """Features of one file plus what the builder must know about them."""

    features: list[_Feature]
    crs: str | None
    geographic: bool
    kind: str | None = None
    skipped: int = 0


# -- GeoJSON -------------------------------------------------------------------------


def read_geojson(
    path: str | Path,
    *,
    network_id: str | None = None,
    kind: str | None = None,
    tolerance: float = 0.5,
    id_property: str | None = None,
    crs: str | None = None,
) -> Network:
    """Read a GeoJSON FeatureCollection of lines (edges) and points (nodes) as a network.

    Args:
        path: the ``.geojson``/``.json`` file.
        network_id: the network id (default: the kind).
        kind: network kind (``water``, ``power``...); default the collection's ``kind``
            member, else ``pipeline``.
        tolerance: snapping distance for line endpoints, in metres (projected CRS units).
        id_property: the property holding asset ids; default the feature ``id``, then an
            ``id`` property, then ``f<feature index>``.
        crs: the CRS of the coordinates when the file has none and they are not lon/lat
            (e.g. ``EPSG:28992``); a ``crs`` member in the file wins.

    Returns:
        The network, in metric coordinates (see the module docstring for the rules).

    Raises:
        IngestError: unreadable file, not a FeatureCollection, or a malformed feature
            (the message names ``feature <index>`` and its id).
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read file ({exc.strerror or exc})", source=source) from None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise IngestError(f"not valid JSON ({exc})", source=source) from None
    collected = _collect_geojson(doc, source, id_property, crs)
    return _build(collected, source, "geojson", network_id, kind, tolerance)


def _collect_geojson(
    doc: Any, source: str, id_property: str | None, crs_arg: str | None
) -> _Collected:
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise IngestError(f"not a GeoJSON FeatureCollection (type {got!r})", source=source)
    feats = doc.get("features")
    if not isinstance(feats, list):
        raise IngestError("'features' must be a list", source=source)
    crs, geographic = _geojson_crs(doc.get("crs"), crs_arg, source)
    coll_kind = doc.get("kind")
    if coll_kind is not None and not isinstance(coll_kind, str):
        raise IngestError("'kind' member must be a string", source=source)
    out = _Collected([], crs, geographic, coll_kind)
    for i, feat in enumerate(feats):
        where = f"feature {i}"
        if not isinstance(feat, dict):
            raise IngestError("a feature must be an object", source=source, where=where)
        props = feat.get("properties")
        if props is None:
            props = {}
        if not isinstance(props, dict):
            raise IngestError("'properties' must be an object", source=source, where=where)
        fid = _geojson_id(feat, props, id_property)
        if fid is None:
            fid = f"f{i}"
        else:
            where = f"feature {i} (id {fid!r})"
        feature = _Feature(where, fid, props=dict(props))
        geom = feat.get("geometry")
        if geom is None:
            out.skipped += 1
            continue
        try:
            if not _add_geojson_geometry(feature, geom):
                out.skipped += 1
                continue
        except _BadGeometry as exc:
            raise IngestError(str(exc), source=source, where=where) from None
        out.features.append(feature)
    return out


def _geojson_id(feat: dict[str, Any], props: dict[str, Any], id_property: str | None) -> str | None:
    candidates = []
    if id_property is not None:
        candidates.append(props.get(id_property))
    candidates += [feat.get("id"), props.get("id")]
    for c in candidates:
        if isinstance(c, str) and c:
            return c
        if isinstance(c, int | float) and not isinstance(c, bool):
            return str(int(c)) if float(c).is_integer() else str(c)
    return None


def _geojson_crs(member: Any, crs_arg: str | None, source: str) -> tuple[str | None, bool]:
    """(crs, geographic) from a legacy ``crs`` member, else the argument, else lon/lat."""
    if member is None:
        if crs_arg is None:
            return "EPSG:4326", True
        return _resolve_crs(crs_arg, source)
    name: Any = None
    if isinstance(member, dict):
        props = member.get("properties")
        if member.get("type") == "name" and isinstance(props, dict):
            name = props.get("name")
        elif member.get("type") == "EPSG" and isinstance(props, dict):
            name = f"EPSG:{props.get('code')}"
    if not isinstance(name, str):
        raise IngestError(
            "unsupported 'crs' member (expected {'type': 'name', 'properties': {'name': ...}})",
            source=source,
            where="crs",
        )
    return _resolve_crs(name, source)


def _resolve_crs(name: str, source: str) -> tuple[str | None, bool]:
    if _CRS84.search(name):
        return "EPSG:4326", True
    m = _EPSG_NAME.search(name.strip())
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_epsg(int(m.group(1))) if m else CRS.from_user_input(name)
    except (CRSError, ValueError, TypeError) as exc:
        raise IngestError(f"unknown CRS {name!r} ({exc})", source=source, where="crs") from None
    epsg = crs.to_epsg()
    return (f"EPSG:{epsg}" if epsg else crs.to_string()), bool(crs.is_geographic)


class _BadGeometry(Exception):
    """A geometry problem; turned into an IngestError with the feature's place."""


def _add_geojson_geometry(feature: _Feature, geom: Any, depth: int = 0) -> bool:
    """Add a GeoJSON geometry's lines/points to the feature; False if nothing usable."""
    if not isinstance(geom, dict):
        raise _BadGeometry("'geometry' must be an object or null")
    gtype = geom.get("type")
    if gtype not in _GEOJSON_TYPES:
        raise _BadGeometry(f"unknown geometry type {gtype!r}")
    if gtype == "GeometryCollection":
        members = geom.get("geometries")
        if not isinstance(members, list) or depth > 8:
            raise _BadGeometry("GeometryCollection needs a 'geometries' list")
        used = [_add_geojson_geometry(feature, g, depth + 1) for g in members]
        return any(used)
    if gtype in _SKIPPED_TYPES:
        return False
    coords = geom.get("coordinates")
    if gtype == "Point":
        feature.points.append(_position_array([coords], gtype))
    elif gtype == "MultiPoint":
        pts = _list(coords, gtype)
        if not pts:
            return False
        arr = _position_array(pts, gtype)
        feature.points.extend(arr[k : k + 1] for k in range(len(arr)))
    elif gtype == "LineString":
        feature.lines.append(_line_array(coords, gtype))
    else:  # MultiLineString
        parts = _list(coords, gtype)
        if not parts:
            return False
        feature.lines.extend(_line_array(p, gtype) for p in parts)
    return True


def _list(value: Any, gtype: str) -> list[Any]:
    if not isinstance(value, list):
        raise _BadGeometry(f"{gtype} coordinates must be a list")
    return value


def _line_array(value: Any, gtype: str) -> Coords:
    pts = _list(value, gtype)
    if len(pts) < 2:
        raise _BadGeometry(f"{gtype} needs at least 2 positions, got {len(pts)}")
    return _position_array(pts, gtype)


def _position_array(pts: list[Any], gtype: str) -> Coords:
    out = np.zeros((len(pts), 3), dtype=np.float64)
    for k, p in enumerate(pts):
        if not isinstance(p, list) or len(p) < 2:
            raise _BadGeometry(f"{gtype} position {k}: expected [x, y] or [x, y, z]")
        for j, v in enumerate(p[:3]):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise _BadGeometry(f"{gtype} position {k}: non-numeric coordinate {v!r}")
            out[k, j] = v
    return out


# -- GeoPackage ----------------------------------------------------------------------


def read_gpkg(
    path: str | Path,
    *,
    layer: str | None = None,
    network_id: str | None = None,
    kind: str | None = None,
    tolerance: float = 0.5,
    id_property: str | None = None,
) -> Network:
    """Read the line and point layers of a GeoPackage as one network (stdlib sqlite3).

    Asset ids come from ``id_property`` or an ``id`` column, else the feature's primary
    key (prefixed ``<layer>.`` when several layers are read).

    Args:
        path: the ``.gpkg`` file.
        layer: read only this feature table; default every point and line layer.
        network_id: the network id (default: the kind).
        kind: network kind; default ``pipeline``.
        tolerance: snapping distance for line endpoints, in metres.
        id_property: the column holding asset ids.

    Returns:
        The network (geographic SRS reprojected to UTM, projected SRS kept).

    Raises:
        IngestError: not a GeoPackage, no usable layer, layers in different SRS, or a
            malformed geometry (named by layer and primary key).
    """
    source = str(path)
    p = Path(path)
    if not p.is_file():
        raise IngestError("no such file", source=source)
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise IngestError(f"cannot open as SQLite ({exc})", source=source) from None
    try:
        collected = _collect_gpkg(conn, source, layer, id_property)
    except sqlite3.Error as exc:
        raise IngestError(f"not a readable GeoPackage ({exc})", source=source) from None
    finally:
        conn.close()
    return _build(collected, source, "gpkg", network_id, kind, tolerance)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _collect_gpkg(
    conn: sqlite3.Connection, source: str, layer: str | None, id_property: str | None
) -> _Collected:
    try:
        rows = conn.execute(
            "SELECT g.table_name, g.column_name, g.geometry_type_name, g.srs_id "
            "FROM gpkg_geometry_columns g JOIN gpkg_contents c ON c.table_name = g.table_name "
            "WHERE lower(c.data_type) = 'features' ORDER BY g.table_name"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise IngestError(
            f"not a GeoPackage (no gpkg_geometry_columns/gpkg_contents: {exc})", source=source
        ) from None
    usable = {"POINT", "MULTIPOINT", "LINESTRING", "MULTILINESTRING", "GEOMETRY"}
    if layer is not None:
        rows = [r for r in rows if r[0] == layer]
        if not rows:
            raise IngestError(f"no feature layer {layer!r}", source=source)
        if str(rows[0][2]).upper() not in usable:
            raise IngestError(
                f"layer {layer!r} has {rows[0][2]} geometry, not points or lines", source=source
            )
    else:
        rows = [r for r in rows if str(r[2]).upper() in usable]
        if not rows:
            raise IngestError("no point or line feature layer", source=source)
    srs_ids = {int(r[3]) for r in rows}
    if len(srs_ids) > 1:
        raise IngestError(
            f"layers use different SRS ids {sorted(srs_ids)}; read them one by one (layer=)",
            source=source,
        )
    crs, geographic = _gpkg_crs(conn, srs_ids.pop(), source)
    out = _Collected([], crs, geographic)
    prefix = len(rows) > 1
    for table, geom_col, _gtype, _srs in rows:
        out.skipped += _read_layer(
            conn, out.features, source, str(table), str(geom_col), prefix, id_property
        )
    return out


def _gpkg_crs(conn: sqlite3.Connection, srs_id: int, source: str) -> tuple[str | None, bool]:
    row = conn.execute(
        "SELECT organization, organization_coordsys_id, definition "
        "FROM gpkg_spatial_ref_sys WHERE srs_id = ?",
        (srs_id,),
    ).fetchone()
    # GeoPackage 1.3 §1.1.2.1.1: srs_id -1 / 0 are "undefined" Cartesian / geographic.
    if row is None or srs_id in (-1, 0):
        if srs_id == 0:
            return "EPSG:4326", True
        return None, False
    org, code, definition = row
    if isinstance(org, str) and org.upper() == "EPSG" and code is not None:
        return _resolve_crs(f"EPSG:{int(code)}", source)
    if isinstance(definition, str) and definition.strip() and definition != "undefined":
        return _resolve_crs(definition, source)
    return None, False


def _read_layer(
    conn: sqlite3.Connection,
    features: list[_Feature],
    source: str,
    table: str,
    geom_col: str,
    prefix: bool,
    id_property: str | None,
) -> int:
    info = conn.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
    if not info:
        raise IngestError(f"layer {table!r} has no table", source=source)
    pk = next((str(c[1]) for c in info if c[5]), None)
    others = [str(c[1]) for c in info if str(c[1]) not in (geom_col, pk)]
    cols = [pk or "rowid", geom_col, *others]
    sql = f"SELECT {', '.join(_quote(c) for c in cols)} FROM {_quote(table)}"
    skipped = 0
    for row in conn.execute(sql):
        key, blob, values = row[0], row[1], row[2:]
        props = {k: _sql_value(v) for k, v in zip(others, values, strict=True)}
        fid = _gpkg_id(props, id_property)
        if fid is None:
            fid = f"{table}.{key}" if prefix else str(key)
        where = f"layer {table!r} feature {key} (id {fid!r})"
        if blob is None:
            skipped += 1
            continue
        if not isinstance(blob, bytes):
            raise IngestError("geometry is not a BLOB", source=source, where=where)
        try:
            gtype, coords = decode_gpkg_geometry(blob)
        except IngestError as exc:
            raise IngestError(exc.problem, source=source, where=where) from None
        feature = _Feature(where, fid, props=props)
        try:
            used = _add_decoded(feature, gtype, coords)
        except _BadGeometry as exc:
            raise IngestError(str(exc), source=source, where=where) from None
        if used:
            features.append(feature)
        else:
            skipped += 1
    return skipped


def _gpkg_id(props: dict[str, Any], id_property: str | None) -> str | None:
    for key in (id_property, "id"):
        if key is None:
            continue
        v = props.get(key)
        if isinstance(v, str) and v:
            return v
        if isinstance(v, int | float) and not isinstance(v, bool):
            return str(int(v)) if float(v).is_integer() else str(v)
    return None


def _sql_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()  # attributes must stay JSON-able
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _add_decoded(feature: _Feature, gtype: str, coords: Any) -> bool:
    if gtype == "GeometryCollection":
        return any([_add_decoded(feature, t, c) for t, c in coords])
    if gtype in _SKIPPED_TYPES or not coords:
        return False
    if gtype == "Point":
        feature.points.append(_position_array([coords], gtype))
    elif gtype == "MultiPoint":
        arr = _position_array(coords, gtype)
        feature.points.extend(arr[k : k + 1] for k in range(len(arr)))
    elif gtype == "LineString":
        feature.lines.append(_line_array(coords, gtype))
    elif gtype == "MultiLineString":
        feature.lines.extend(_line_array(p, gtype) for p in coords if p)
    return True


_WKB_NAMES = {
    1: "Point",
    2: "LineString",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}
# GeoPackage 1.3 §2.1.3.1.1: envelope contents indicator -> number of doubles.
_ENVELOPE_DOUBLES = {0: 0, 1: 4, 2: 6, 3: 6, 4: 8}


def decode_gpkg_geometry(blob: bytes) -> tuple[str, Any]:
    """Decode a GeoPackage geometry BLOB (binary header + WKB) to GeoJSON-like coordinates.

    Supports Point, LineString, Polygon, MultiPoint, MultiLineString, MultiPolygon and
    GeometryCollection, 2D, Z, M and ZM, with ISO (1000/2000/3000 offsets) and EWKB
    (high-bit Z/M/SRID flags) type codes. M values are dropped.

    Args:
        blob: the geometry column value.

    Returns:
        ``(geometry type, coordinates)`` nested like GeoJSON (a Point is ``[x, y(, z)]``);
        an empty geometry has ``[]``; a GeometryCollection's coordinates are a list of
        ``(type, coordinates)`` pairs.

    Raises:
        IngestError: not a GeoPackage geometry, or truncated/invalid WKB.
    """
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise IngestError("geometry is not binary")
    data = bytes(blob)
    if len(data) < 8 or data[:2] != b"GP":
        raise IngestError("not a GeoPackage geometry (missing 'GP' magic)")
    if data[2] != 0:
        raise IngestError(f"unsupported GeoPackage geometry version {data[2]}")
    flags = data[3]
    if flags & 0b0010_0000:
        raise IngestError("extended GeoPackage geometry types are not supported")
    envelope = (flags >> 1) & 0b111
    if envelope not in _ENVELOPE_DOUBLES:
        raise IngestError(f"invalid envelope indicator {envelope}")
    start = 8 + 8 * _ENVELOPE_DOUBLES[envelope]
    if len(data) < start:
        raise IngestError("truncated GeoPackage geometry header")
    reader = _Wkb(data, start)
    try:
        gtype, coords = reader.geometry(0)
    except (struct.error, IndexError):
        raise IngestError("truncated WKB geometry") from None
    if flags & 0b0001_0000:  # empty flag
        return gtype, []
    return gtype, coords


class _Wkb:
    """A cursor over WKB bytes (OGC 06-103r4 §8.2)."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def _unpack(self, fmt: str) -> tuple[Any, ...]:
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return out

    def geometry(self, depth: int) -> tuple[str, Any]:
        if depth > 16:
            raise IngestError("WKB nested too deeply")
        order = self.data[self.pos]
        self.pos += 1
        if order not in (0, 1):
            raise IngestError(f"invalid WKB byte order {order}")
        bo = "<" if order == 1 else ">"
        (code,) = self._unpack(bo + "I")
        has_z = bool(code & 0x8000_0000)
        has_m = bool(code & 0x4000_0000)
        if code & 0x2000_0000:  # EWKB SRID follows
            self._unpack(bo + "i")
        code &= 0x0FFF_FFFF
        iso, base = divmod(code, 1000)
        if iso in (1, 3):
            has_z = True
        if iso in (2, 3):
            has_m = True
        if iso > 3 or base not in _WKB_NAMES:
            raise IngestError(f"unsupported WKB geometry type {code}")
        name = _WKB_NAMES[base]
        dims = 2 + has_z + has_m
        if base == 1:
            p = self._point(bo, dims, has_z)
            return name, [] if any(math.isnan(v) for v in p) else p
        if base == 2:
            return name, self._points(bo, dims, has_z)
        if base == 3:
            return name, [self._points(bo, dims, has_z) for _ in range(self._count(bo, 4))]
        n = self._count(bo, 5)
        members = [self.geometry(depth + 1) for _ in range(n)]
        if base == 7:
            return name, members
        want = _WKB_NAMES[base - 3]
        for t, _ in members:
            if t != want:
                raise IngestError(f"{name} holds a {t}")
        return name, [c for _, c in members if c != []]

    def _count(self, bo: str, min_bytes: int) -> int:
        (n,) = self._unpack(bo + "I")
        if n * min_bytes > len(self.data) - self.pos:
            raise IngestError(f"WKB count {n} exceeds the data")
        return int(n)

    def _point(self, bo: str, dims: int, has_z: bool) -> list[float]:
        v = self._unpack(f"{bo}{dims}d")
        return [float(v[0]), float(v[1]), float(v[2])] if has_z else [float(v[0]), float(v[1])]

    def _points(self, bo: str, dims: int, has_z: bool) -> list[list[float]]:
        n = self._count(bo, 8 * dims)
        arr = np.frombuffer(self.data, dtype=f"{bo}f8", count=n * dims, offset=self.pos)
        self.pos += 8 * n * dims
        arr = arr.reshape(n, dims)[:, : 3 if has_z else 2]
        out: list[list[float]] = arr.astype(np.float64).tolist()
        return out


# -- building ------------------------------------------------------------------------


def _build(
    col: _Collected,
    source: str,
    fmt: str,
    network_id: str | None,
    kind: str | None,
    tolerance: float,
) -> Network:
    if not isinstance(tolerance, int | float) or not tolerance >= 0:
        raise IngestError(f"tolerance must be >= 0, got {tolerance!r}", source=source)
    kind = kind or col.kind or "pipeline"
    net = Network(id=network_id or kind, kind=kind, crs=col.crs, directed=False)
    net.attributes.update({"source": Path(source).name, "format": fmt})
    if col.skipped:
        net.attributes["skipped_features"] = col.skipped
    if col.geographic:
        _to_utm(col, net, source)
    taken = _check_ids(col.features, source)
    edge_type = {"power": "Line", "road": "Road"}.get(kind, "Pipe")

    # Point features first: they anchor the nodes endpoints snap to.
    snap = _Snapper(tolerance)
    node_ids: list[str] = []
    for f in col.features:
        for k, p in enumerate(f.points):
            local = f.id if len(f.points) == 1 else f"{f.id}-{k}"
            attrs = _attributes(f.props)
            ntype = _asset_type(f.props, "Node")
            is_source = ntype.lower() in _SOURCE_TYPES or attrs.get("source") is True
            node_ids.append(net.add_node(local, ntype, p[0], attrs, source=is_source))
            snap.add(p[0])
    counter = 0
    for f in col.features:
        if not f.lines:
            continue
        attrs = _attributes(f.props)
        etype = _asset_type(f.props, edge_type)
        for k, line in enumerate(f.lines):
            ends = []
            for end in (line[0], line[-1]):
                idx = snap.find(end)
                if idx is None:
                    counter += 1
                    while f"J{counter}" in taken:
                        counter += 1
                    local = f"J{counter}"
                    taken.add(local)
                    node_ids.append(net.add_node(local, "Junction", end, {}))
                    idx = snap.add(end)
                ends.append(idx)
            coords = line.copy()
            # Snapped ends take their node's plan position; each line keeps its own z.
            coords[0, :2] = snap.xy[ends[0]]
            coords[-1, :2] = snap.xy[ends[1]]
            local = f.id if len(f.lines) == 1 else f"{f.id}-{k}"
            net.add_edge(
                local,
                node_ids[ends[0]],
                node_ids[ends[1]],
                etype,
                dict(attrs),
                coords=coords.tolist(),
            )
    return net


def _check_ids(features: list[_Feature], source: str) -> set[str]:
    """Every asset id the features will get; raises on a duplicate."""
    seen: dict[str, str] = {}
    for f in features:
        names = [f.id] if len(f.points) + len(f.lines) == 1 else []
        names += [f"{f.id}-{k}" for k in range(len(f.points))] if len(f.points) > 1 else []
        names += [f"{f.id}-{k}" for k in range(len(f.lines))] if len(f.lines) > 1 else []
        if f.points and f.lines:
            raise IngestError(
                "a feature mixes points and lines (GeometryCollection); split it",
                source=source,
                where=f.where,
            )
        for n in names:
            if n in seen:
                raise IngestError(
                    f"duplicate asset id {n!r} (also {seen[n]}); choose id_property",
                    source=source,
                    where=f.where,
                )
            seen[n] = f.where
    return set(seen)


def _asset_type(props: dict[str, Any], default: str) -> str:
    for key in _TYPE_KEYS:
        v = props.get(key)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return default


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _attributes(props: dict[str, Any]) -> dict[str, Any]:
    """Properties as attributes with diameters in metres (rule in the module docstring)."""
    attrs = dict(props)
    mm = _number(attrs.get("diameter_mm"))
    d = _number(attrs.get("diameter"))
    if mm is not None:
        attrs["diameter"] = mm / 1000.0
    elif d is not None and d > 20:
        attrs["diameter_mm"] = d
        attrs["diameter"] = d / 1000.0
    elif d is not None:
        attrs["diameter"] = d
    for key in ("width", "depth", "height"):
        v = _number(attrs.get(key))
        if v is not None:
            attrs[key] = v
    return attrs


class _Snapper:
    """Greedy grid snapping: a point joins the nearest anchor within the tolerance."""

    def __init__(self, tolerance: float) -> None:
        self.tol = float(tolerance)
        self.cell = self.tol if self.tol > 0 else 1.0
        self.cells: dict[tuple[int, int], list[int]] = {}
        self.pts: list[tuple[float, float]] = []

    @property
    def xy(self) -> Coords:
        return np.asarray(self.pts, dtype=np.float64).reshape(-1, 2)

    def _key(self, x: float, y: float) -> tuple[int, int]:
        return (math.floor(x / self.cell), math.floor(y / self.cell))

    def add(self, p: Sequence[float]) -> int:
        x, y = float(p[0]), float(p[1])
        self.pts.append((x, y))
        i = len(self.pts) - 1
        self.cells.setdefault(self._key(x, y), []).append(i)
        return i

    def _near(self, x: float, y: float) -> Iterator[int]:
        cx, cy = self._key(x, y)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                yield from self.cells.get((cx + dx, cy + dy), ())

    def find(self, p: Sequence[float]) -> int | None:
        x, y = float(p[0]), float(p[1])
        best, best_d = None, self.tol * self.tol
        for i in self._near(x, y):
            px, py = self.pts[i]
            d = (px - x) ** 2 + (py - y) ** 2
            if d <= best_d:
                best, best_d = i, d
        return best


def _to_utm(col: _Collected, net: Network, source: str) -> None:
    """Reproject lon/lat features in place to the UTM zone of their bbox centre."""
    arrays = [a for f in col.features for a in (*f.lines, *f.points)]
    if not arrays:
        return
    allpts = np.concatenate(arrays)
    bad = (np.abs(allpts[:, 0]) > 180) | (np.abs(allpts[:, 1]) > 90)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        count = 0
        where = ""
        for f in col.features:
            count += sum(len(a) for a in (*f.lines, *f.points))
            if count > k:
                where = f.where
                break
        raise IngestError(
            f"coordinates {allpts[k, :2].tolist()} are not lon/lat (RFC 7946 GeoJSON is "
            "WGS84); add a 'crs' member or pass crs='EPSG:...'",
            source=source,
            where=where,
        )
    lon = (allpts[:, 0].min() + allpts[:, 0].max()) / 2
    lat = (allpts[:, 1].min() + allpts[:, 1].max()) / 2
    zone = min(60, max(1, math.floor(float(lon + 180) / 6) + 1))
    epsg = (32600 if lat >= 0 else 32700) + zone
    from pyproj import Transformer

    tr = Transformer.from_crs(4326, epsg, always_xy=True)
    x, y = tr.transform(allpts[:, 0], allpts[:, 1])
    xy = np.column_stack([x, y])
    if not np.isfinite(xy).all():
        raise IngestError(f"coordinates cannot be projected to EPSG:{epsg}", source=source)
    pos = 0
    for f in col.features:
        for a in (*f.lines, *f.points):
            a[:, :2] = xy[pos : pos + len(a)]
            pos += len(a)
    net.crs = f"EPSG:{epsg}"
    net.attributes["source_crs"] = col.crs

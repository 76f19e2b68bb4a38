"""pandapower JSON power networks (``pandapower.to_json``) read without pandapower."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twin.errors import IngestError, TwinError
from twin.network import Network, asset_id

__all__ = ["read_pandapower", "utm_epsg"]

# Elements that hang off one bus: table -> (local id prefix, node type, source?).
_BUS_ELEMENTS = {
    "load": ("load", "Load", False),
    "sgen": ("sgen", "Generator", False),
    "gen": ("gen", "Generator", False),
    "storage": ("storage", "Storage", False),
    "ext_grid": ("extgrid", "ExternalGrid", True),
}
# Columns that are topology or geometry, not attributes of the twin object.
_SKIP_COLUMNS = {"geo", "bus", "from_bus", "to_bus", "hv_bus", "lv_bus", "mv_bus"}


@dataclass
class _Frame:
    """One pandas DataFrame as pandapower writes it (orient "split")."""

    name: str
    columns: list[str]
    index: list[Any]
    data: list[list[Any]]

    def __len__(self) -> int:
        return len(self.index)

    def has(self, column: str) -> bool:
        return column in self.columns

    def rows(self, source: str) -> Iterator[tuple[Any, dict[str, Any]]]:
        """``(index, {column: value})`` per row."""
        width = len(self.columns)
        for idx, row in zip(self.index, self.data, strict=True):
            if not isinstance(row, list) or len(row) != width:
                raise IngestError(
                    f"row has {len(row) if isinstance(row, list) else 'no'} values, "
                    f"expected {width}",
                    source=source,
                    where=f"{self.name} {idx}",
                )
            yield idx, dict(zip(self.columns, row, strict=True))


def read_pandapower(path: str | Path, *, network_id: str = "power") -> Network:
    """Read a pandapower JSON network into a power :class:`~twin.network.Network`.

    Buses become ``Bus`` nodes; loads, static generators, generators, storages and external
    grids become their own nodes (``Load``, ``Generator``, ``Storage``, ``ExternalGrid``)
    joined to their bus by a zero-length ``Connection`` edge, so a feed can update each
    one. Lines (``Line``), two-winding transformers (``Transformer``), three-winding
    transformers (a ``Transformer3W`` node with a ``Winding`` edge per side) and closed
    bus-bus switches (``Switch``) are edges; line and transformer switches are listed on
    their edge under ``switches``. The topology is the one operated (pandapower's
    ``respect_switches``): an open switch is a ``Switch`` node that does not join its bus,
    so failure impact follows the radial feeders. Out-of-service elements are kept, with
    ``in_service: false``. External grids (in service) and their buses are the sources.

    WGS84 coordinates (``geo`` GeoJSON columns of pandapower 3, or ``bus_geodata`` /
    ``line_geodata`` of older files when they look like lon/lat) are projected to the UTM
    zone of the network centre, so lengths are in metres. Buses without coordinates sit
    at the mean of their placed neighbours (attribute ``position: "estimated"``); lines
    without coordinates are straight. z is 0 everywhere.

    Args:
        path: the ``.json`` file written by ``pandapower.to_json``.
        network_id: the network id (twin ids are ``net:<network_id>:bus-<index>``...).

    Returns:
        The network (kind ``power``, undirected).

    Raises:
        IngestError: unreadable file, bad JSON (with its position), not a pandapowerNet,
            a malformed table, or an element referring to a missing bus (``line 7``).
    """
    src = str(path)
    doc = _load(Path(path))
    if not isinstance(doc, dict) or doc.get("_class") != "pandapowerNet":
        raise IngestError(
            "not a pandapower network (expected a JSON object with _class 'pandapowerNet')",
            source=src,
        )
    obj = doc.get("_object")
    if isinstance(obj, str):
        obj = _decode(obj, src, "_object")
    if not isinstance(obj, dict):
        raise IngestError("_object is not a JSON object", source=src, where="_object")
    try:
        return _Builder(obj, src, network_id).build()
    except IngestError:
        raise
    except TwinError as exc:  # e.g. two elements mapped to one id: a malformed table
        raise IngestError(exc.message, source=src) from None


# -- JSON ------------------------------------------------------------------------------


def _load(p: Path) -> Any:
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise IngestError("no such file", source=str(p)) from None
    except OSError as exc:
        raise IngestError(f"cannot read file ({exc.strerror})", source=str(p)) from None
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise IngestError("not UTF-8 text", source=str(p)) from None
    except json.JSONDecodeError as exc:
        raise IngestError(
            f"JSON syntax error: {exc.msg}", source=str(p), where=f"line {exc.lineno}:{exc.colno}"
        ) from None
    except RecursionError:
        raise IngestError("JSON nested too deeply", source=str(p)) from None


def _decode(text: str, source: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(
            f"JSON syntax error inside the table: {exc.msg} (char {exc.pos})",
            source=source,
            where=where,
        ) from None
    except RecursionError:
        raise IngestError("JSON nested too deeply", source=source, where=where) from None


def _frame(raw: Any, name: str, source: str) -> _Frame | None:
    """Decode one serialized DataFrame; None when the table is absent."""
    if raw is None:
        return None
    where = f"table {name!r}"
    payload = raw
    geo_frame = False
    if isinstance(raw, dict) and "_object" in raw:
        payload = raw["_object"]
        geo_frame = raw.get("_class") == "GeoDataFrame"
    if isinstance(payload, str):
        payload = _decode(payload, source, where)
    if not isinstance(payload, dict):
        raise IngestError("table is not a serialized DataFrame", source=source, where=where)
    if geo_frame or payload.get("type") == "FeatureCollection":
        return _geo_frame(payload, name, source)
    columns, index, data = payload.get("columns"), payload.get("index"), payload.get("data")
    if columns is None and index is None and data is None:
        return None
    if not (isinstance(columns, list) and isinstance(index, list) and isinstance(data, list)):
        raise IngestError(
            "DataFrame needs 'columns', 'index' and 'data' lists (orient 'split')",
            source=source,
            where=where,
        )
    if len(index) != len(data):
        raise IngestError(
            f"{len(index)} index values but {len(data)} rows", source=source, where=where
        )
    keys = [_key(i) for i in index]
    if any(k is None for k in keys):
        raise IngestError("index values must be numbers or strings", source=source, where=where)
    if len(set(keys)) != len(keys):
        dup = next(k for k, n in Counter(keys).items() if n > 1)
        raise IngestError(f"duplicate index {dup!r}", source=source, where=where)
    return _Frame(name, [str(c) for c in columns], keys, data)


def _geo_frame(payload: dict[str, Any], name: str, source: str) -> _Frame | None:
    # geopandas writes GeoDataFrames as GeoJSON: the index is the feature id.
    feats = payload.get("features")
    if not isinstance(feats, list):
        raise IngestError("GeoDataFrame without features", source=source, where=f"table {name!r}")
    columns: list[str] = []
    index: list[Any] = []
    records: list[dict[str, Any]] = []
    for i, f in enumerate(feats):
        if not isinstance(f, dict):
            raise IngestError("feature is not an object", source=source, where=f"{name} {i}")
        props = dict(f.get("properties") or {})
        props["geo"] = f.get("geometry")
        for k in props:
            if k not in columns:
                columns.append(k)
        index.append(f.get("id", i))
        records.append(props)
    data = [[r.get(c) for c in columns] for r in records]
    return _frame({"columns": columns, "index": index, "data": data}, name, source)


def _key(value: Any) -> int | float | str | None:
    """An index or bus reference as a dict key (7, 7.0 and "7" alike); None if unusable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else (value if math.isfinite(value) else None)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value if isinstance(value, int) else None


def _clean(value: Any) -> Any:
    """A JSON-able attribute value (NaN -> None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _attributes(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _clean(v) for k, v in row.items() if k not in _SKIP_COLUMNS}


def _geojson(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def _point(value: Any) -> tuple[float, float] | None:
    g = _geojson(value)
    if g is None or g.get("type") != "Point":
        return None
    c = g.get("coordinates")
    return _xy(c)


def _xy(c: Any) -> tuple[float, float] | None:
    if not isinstance(c, list | tuple) or len(c) < 2:
        return None
    try:
        x, y = float(c[0]), float(c[1])
    except (TypeError, ValueError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


def _polyline(value: Any) -> list[tuple[float, float]] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, dict):
        if value.get("type") != "LineString":
            return None
        value = value.get("coordinates")
    if not isinstance(value, list):
        return None
    pts = [_xy(c) for c in value]
    if len(pts) < 2 or any(p is None for p in pts):
        return None
    return [p for p in pts if p is not None]


def utm_epsg(lon: float, lat: float) -> int:
    """The EPSG code of the WGS84 UTM zone holding a point (326xx north, 327xx south)."""
    zone = min(60, max(1, int((lon + 180.0) // 6.0) + 1))
    return (32600 if lat >= 0 else 32700) + zone


def _is_lonlat(pts: np.ndarray[Any, Any]) -> bool:
    return bool(
        len(pts) and np.all(np.abs(pts[:, 0]) <= 180.0) and np.all(np.abs(pts[:, 1]) <= 90.0)
    )


# -- building the network -------------------------------------------------------------


class _Builder:
    def __init__(self, obj: dict[str, Any], source: str, network_id: str) -> None:
        self.obj = obj
        self.src = source
        self.net = Network(id=network_id, kind="power", directed=False)
        self.bus_ids: dict[Any, str] = {}
        # (element table, element index) -> its switches: (switch index, bus twin id, attrs)
        self.switched: dict[tuple[str, Any], list[tuple[Any, str, dict[str, Any]]]] = {}

    def table(self, name: str) -> _Frame | None:
        return _frame(self.obj.get(name), name, self.src)

    def fail(self, problem: str, where: str) -> IngestError:
        return IngestError(problem, source=self.src, where=where)

    def bus(self, ref: Any, what: str, where: str) -> str:
        key = _key(ref)
        nid = self.bus_ids.get(key) if key is not None else None
        if nid is None:
            raise self.fail(f"{what} {ref!r} is not a bus of the network", where)
        return nid

    def build(self) -> Network:
        bus = self.table("bus")
        if bus is None:
            raise self.fail("no 'bus' table", "table 'bus'")
        lines = self.table("line")
        trafos = self.table("trafo")
        trafo3w = self.table("trafo3w")
        switches = self.table("switch")

        bus_rows = list(bus.rows(self.src))
        lonlat = self._bus_positions(bus, bus_rows)
        line_rows = list(lines.rows(self.src)) if lines is not None else []
        line_geo = self._line_geometries(lines, line_rows)

        # Project every known coordinate at once so buses and lines share one CRS.
        known = [p for p in lonlat.values()] + [p for pl in line_geo.values() for p in pl]
        project = self._projector(np.asarray(known, dtype=np.float64).reshape(-1, 2))

        keys = list(lonlat)
        xy: dict[Any, tuple[float, float]] = dict(
            zip(keys, project([lonlat[k] for k in keys]), strict=True)
        )
        for idx, _row in bus_rows:
            self.bus_ids[_key(idx)] = f"bus-{idx}"
        adjacency = self._adjacency(line_rows, trafos, trafo3w, switches)
        estimated = self._estimate(xy, [_key(i) for i, _ in bus_rows], adjacency)

        sources = self._source_buses()
        for idx, row in bus_rows:
            key = _key(idx)
            attrs = _attributes(row)
            if key in estimated:
                attrs["position"] = "estimated"
            x, y = xy[key]
            self.bus_ids[key] = self.net.add_node(
                f"bus-{idx}", "Bus", (x, y, 0.0), attrs, source=key in sources
            )

        if switches is not None:
            self._switches(switches)
        for idx, row in line_rows:
            self._line(idx, row, line_geo.get(_key(idx)), project)
        if trafos is not None:
            for idx, row in trafos.rows(self.src):
                self._trafo(idx, row)
        if trafo3w is not None:
            for idx, row in trafo3w.rows(self.src):
                self._trafo3w(idx, row)
        self._check_switched()
        for table, (prefix, ntype, is_source) in _BUS_ELEMENTS.items():
            frame = self.table(table)
            if frame is not None:
                for idx, row in frame.rows(self.src):
                    self._element(table, prefix, ntype, is_source, idx, row)
        self._net_attributes()
        return self.net

    # -- coordinates ------------------------------------------------------------------
    def _bus_positions(
        self, bus: _Frame, rows: list[tuple[Any, dict[str, Any]]]
    ) -> dict[Any, tuple[float, float]]:
        out: dict[Any, tuple[float, float]] = {}
        if bus.has("geo"):
            for idx, row in rows:
                p = _point(row.get("geo"))
                if p is not None:
                    out[_key(idx)] = p
        geodata = self.table("bus_geodata")
        if geodata is not None:
            for idx, row in geodata.rows(self.src):
                key = _key(idx)
                if key in out:
                    continue
                p = _xy([row.get("x"), row.get("y")]) or _point(row.get("geo"))
                if p is not None:
                    out[key] = p
        return out

    def _line_geometries(
        self, lines: _Frame | None, rows: list[tuple[Any, dict[str, Any]]]
    ) -> dict[Any, list[tuple[float, float]]]:
        out: dict[Any, list[tuple[float, float]]] = {}
        if lines is not None and lines.has("geo"):
            for idx, row in rows:
                pl = _polyline(row.get("geo"))
                if pl is not None:
                    out[_key(idx)] = pl
        geodata = self.table("line_geodata")
        if geodata is not None:
            for idx, row in geodata.rows(self.src):
                key = _key(idx)
                if key not in out:
                    pl = _polyline(row.get("coords")) or _polyline(row.get("geo"))
                    if pl is not None:
                        out[key] = pl
        return out

    def _projector(self, pts: np.ndarray[Any, Any]) -> _Projector:
        if not _is_lonlat(pts):
            # Planar coordinates of unknown CRS (old pandapower example grids): kept as is.
            return _Projector(None)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        epsg = utm_epsg(float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2)
        self.net.crs = f"EPSG:{epsg}"
        return _Projector(epsg)

    def _adjacency(
        self,
        line_rows: list[tuple[Any, dict[str, Any]]],
        trafos: _Frame | None,
        trafo3w: _Frame | None,
        switches: _Frame | None,
    ) -> dict[Any, set[Any]]:
        adj: dict[Any, set[Any]] = {}

        def link(a: Any, b: Any) -> None:
            a, b = _key(a), _key(b)
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)

        for _, row in line_rows:
            link(row.get("from_bus"), row.get("to_bus"))
        if trafos is not None:
            for _, row in trafos.rows(self.src):
                link(row.get("hv_bus"), row.get("lv_bus"))
        if trafo3w is not None:
            for _, row in trafo3w.rows(self.src):
                link(row.get("hv_bus"), row.get("mv_bus"))
                link(row.get("hv_bus"), row.get("lv_bus"))
        if switches is not None and switches.has("et"):
            for _, row in switches.rows(self.src):
                if row.get("et") == "b":
                    link(row.get("bus"), row.get("element"))
        return adj

    def _estimate(
        self,
        xy: dict[Any, tuple[float, float]],
        buses: list[Any],
        adj: dict[Any, set[Any]],
    ) -> set[Any]:
        """Place buses without coordinates at the mean of their placed neighbours."""
        missing = [b for b in buses if b not in xy]
        if not missing:
            return set()
        if not xy:
            self._schematic(xy, buses, adj)
            return set(buses)
        todo = set(missing)
        while todo:
            placed: dict[Any, tuple[float, float]] = {}
            for b in todo:
                near = [xy[n] for n in adj.get(b, ()) if n in xy]
                if near:
                    a = np.asarray(near).mean(axis=0)
                    placed[b] = (float(a[0]), float(a[1]))
            if not placed:
                # Islands with no placed bus at all: park them at the centre of the rest.
                c = np.asarray(list(xy.values())).mean(axis=0)
                placed = {b: (float(c[0]), float(c[1])) for b in todo}
            xy.update(placed)
            todo -= set(placed)
        return set(missing)

    def _schematic(
        self, xy: dict[Any, tuple[float, float]], buses: list[Any], adj: dict[Any, set[Any]]
    ) -> None:
        # No geodata at all: a deterministic spring layout, ~100 m between neighbours.
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(buses)
        g.add_edges_from((a, b) for a, ns in adj.items() for b in ns if a in g and b in g)
        pos = nx.spring_layout(g, seed=0, scale=100.0 * math.sqrt(max(1, len(buses))))
        for b in buses:
            xy[b] = (float(pos[b][0]), float(pos[b][1]))
        self.net.attributes["layout"] = "schematic"

    def _source_buses(self) -> set[Any]:
        ext = self.table("ext_grid")
        out: set[Any] = set()
        if ext is not None:
            for _, row in ext.rows(self.src):
                if row.get("in_service") is not False:
                    out.add(_key(row.get("bus")))
        return out

    # -- elements ---------------------------------------------------------------------
    def _line(
        self,
        idx: Any,
        row: dict[str, Any],
        geo: list[tuple[float, float]] | None,
        project: _Projector,
    ) -> None:
        where = f"line {idx}"
        u = self.bus(row.get("from_bus"), "from_bus", where)
        v = self.bus(row.get("to_bus"), "to_bus", where)
        attrs = self._with_switches("line", idx, _attributes(row))
        length_km = _clean(row.get("length_km"))
        if isinstance(length_km, int | float) and not isinstance(length_km, bool):
            attrs["length"] = float(length_km) * 1000.0
        if row.get("type") == "cs":
            attrs["underground"] = True
        coords = None
        if geo is not None:
            coords = _attach(project(geo), self._xy(u), self._xy(v))
        u, v = self._end("line", idx, u), self._end("line", idx, v)
        self.net.add_edge(f"line-{idx}", u, v, "Line", attrs, coords=coords)

    def _trafo(self, idx: Any, row: dict[str, Any]) -> None:
        where = f"trafo {idx}"
        u = self.bus(row.get("hv_bus"), "hv_bus", where)
        v = self.bus(row.get("lv_bus"), "lv_bus", where)
        attrs = self._with_switches("trafo", idx, _attributes(row))
        u, v = self._end("trafo", idx, u), self._end("trafo", idx, v)
        self.net.add_edge(f"trafo-{idx}", u, v, "Transformer", attrs)

    def _trafo3w(self, idx: Any, row: dict[str, Any]) -> None:
        where = f"trafo3w {idx}"
        ends = {
            side: self.bus(row.get(f"{side}_bus"), f"{side}_bus", where)
            for side in ("hv", "mv", "lv")
        }
        centre = self.net.node(ends["hv"])["xyz"]
        attrs = self._with_switches("trafo3w", idx, _attributes(row))
        star = self.net.add_node(f"trafo3w-{idx}", "Transformer3W", centre, attrs)
        for side, bus in ends.items():
            bus = self._end("trafo3w", idx, bus)
            self.net.add_edge(
                f"trafo3w-{idx}-{side}",
                star if side != "hv" else bus,
                bus if side != "hv" else star,
                "Winding",
                {"side": side, "in_service": _clean(row.get("in_service"))},
            )

    def _switches(self, frame: _Frame) -> None:
        """Bus-bus switches become edges; the others are kept for their element.

        The topology is the operated one (as pandapower's ``respect_switches``): a closed
        bus-bus switch is a ``Switch`` edge, an open one a ``Switch`` node hanging off its
        bus; an open line/transformer switch is a ``Switch`` node at the element's end,
        not joined to the bus, so the element stays drawn but carries nothing there.
        """
        for idx, row in frame.rows(self.src):
            where = f"switch {idx}"
            bus = self.bus(row.get("bus"), "bus", where)
            et = row.get("et")
            attrs = {k: _clean(v) for k, v in row.items() if k not in ("bus", "element")}
            attrs["bus"] = bus
            if et == "b":
                other = self.bus(row.get("element"), "element", where)
                if row.get("closed") is False:
                    node = self._switch_node(idx, bus, attrs)
                    self.net.add_edge(f"conn-switch-{idx}", bus, node, "Connection")
                else:
                    attrs["element"] = other
                    self.net.add_edge(f"switch-{idx}", bus, other, "Switch", attrs)
                continue
            prefix = {"l": "line", "t": "trafo", "t3": "trafo3w"}.get(str(et))
            if prefix is None:
                continue  # other element types (impedance, ...) are not read
            key = (prefix, _key(row.get("element")))
            self.switched.setdefault(key, []).append((idx, bus, attrs))

    def _switch_node(self, idx: Any, bus: str, attrs: dict[str, Any]) -> str:
        nid = asset_id(self.net.id, f"switch-{idx}")
        if nid not in self.net:
            self.net.add_node(f"switch-{idx}", "Switch", self.net.node(bus)["xyz"], attrs)
        return nid

    def _with_switches(self, prefix: str, idx: Any, attrs: dict[str, Any]) -> dict[str, Any]:
        sws = self.switched.get((prefix, _key(idx)))
        if sws:
            attrs["switches"] = [{"switch": f"switch-{i}", **a} for i, _, a in sws]
        return attrs

    def _end(self, prefix: str, idx: Any, bus: str) -> str:
        """The node an element end joins: its bus, or an open switch standing between."""
        for sw, at, attrs in self.switched.get((prefix, _key(idx)), ()):
            if at == bus and attrs.get("closed") is False:
                return self._switch_node(sw, bus, attrs)
        return bus

    def _check_switched(self) -> None:
        for (prefix, element), sws in self.switched.items():
            if asset_id(self.net.id, f"{prefix}-{element}") not in self.net:
                raise self.fail(f"element {element!r} is not a {prefix}", f"switch {sws[0][0]}")

    def _element(
        self, table: str, prefix: str, ntype: str, is_source: bool, idx: Any, row: dict[str, Any]
    ) -> None:
        where = f"{table} {idx}"
        bus = self.bus(row.get("bus"), "bus", where)
        attrs = _attributes(row)
        in_service = row.get("in_service") is not False
        nid = self.net.add_node(
            f"{prefix}-{idx}",
            ntype,
            self.net.node(bus)["xyz"],
            attrs,
            source=is_source and in_service,
        )
        self.net.add_edge(
            f"conn-{prefix}-{idx}", bus, nid, "Connection", {"in_service": in_service}
        )

    def _xy(self, nid: str) -> tuple[float, float]:
        x, y, _ = self.net.node(nid)["xyz"]
        return (float(x), float(y))

    def _net_attributes(self) -> None:
        for k in ("name", "version", "format_version", "f_hz", "sn_mva"):
            v = _clean(self.obj.get(k))
            if isinstance(v, str | int | float) and not isinstance(v, bool):
                self.net.attributes[k] = v
        self.net.attributes["source_format"] = "pandapower"


class _Projector:
    """WGS84 lon/lat -> UTM metres (or the identity for planar coordinates)."""

    def __init__(self, epsg: int | None) -> None:
        self.tr: Any = None
        if epsg is not None:
            from pyproj import Transformer

            self.tr = Transformer.from_crs(4326, epsg, always_xy=True)

    def __call__(self, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if self.tr is None:
            return list(pts)
        a = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        x, y = self.tr.transform(a[:, 0], a[:, 1])
        return [
            (float(px), float(py))
            for px, py in zip(np.atleast_1d(x), np.atleast_1d(y), strict=True)
        ]


def _attach(
    pts: list[tuple[float, float]], start: tuple[float, float], end: tuple[float, float]
) -> list[tuple[float, float, float]]:
    """A line polyline running from its from-bus to its to-bus.

    Geodata may be stored to-from and need not touch the bus points: reverse it when that
    fits better, then add the bus points as ends where they are apart from it.
    """

    def d(a: tuple[float, float], b: tuple[float, float]) -> float:
        return math.hypot(a[0] - b[0], a[1] - b[1])

    if d(pts[0], end) + d(pts[-1], start) < d(pts[0], start) + d(pts[-1], end):
        pts = pts[::-1]
    out = list(pts)
    if d(out[0], start) > 1e-3:
        out.insert(0, start)
    else:
        out[0] = start
    if d(out[-1], end) > 1e-3:
        out.append(end)
    else:
        out[-1] = end
    return [(x, y, 0.0) for x, y in out]

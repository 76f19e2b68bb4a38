"""EPANET 2.2 ``.inp`` water networks read into a :class:`twin.network.Network` (pure Python)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ingest.networks.georef import Georeference, apply_georef
from twin.errors import IngestError, TwinError
from twin.network import Network

__all__ = ["FLOW_UNITS", "SECTIONS", "epanet_local_id", "read_epanet"]

# EPANET 2.2 manual, "Input File Format": every section keyword the format defines.
SECTIONS = frozenset(
    {
        "TITLE",
        "JUNCTIONS",
        "RESERVOIRS",
        "TANKS",
        "PIPES",
        "PUMPS",
        "VALVES",
        "EMITTERS",
        "CURVES",
        "PATTERNS",
        "ENERGY",
        "STATUS",
        "CONTROLS",
        "RULES",
        "DEMANDS",
        "QUALITY",
        "REACTIONS",
        "SOURCES",
        "MIXING",
        "OPTIONS",
        "TIMES",
        "REPORT",
        "COORDINATES",
        "VERTICES",
        "LABELS",
        "BACKDROP",
        "TAGS",
        "LEAKAGE",
        "END",
    }
)

# Flow unit -> m3/s. US customary units put lengths/elevations in feet and diameters in
# inches; SI units use metres and millimetres (EPANET 2.2 manual, Table "Units of measurement").
FLOW_UNITS: dict[str, float] = {
    "CFS": 0.028316846592,
    "GPM": 0.003785411784 / 60,
    "MGD": 3785.411784 / 86400,
    "IMGD": 4546.09 / 86400,
    "AFD": 1233.48183754752 / 86400,
    "LPS": 0.001,
    "LPM": 0.001 / 60,
    "MLD": 1000.0 / 86400,
    "CMH": 1.0 / 3600,
    "CMD": 1.0 / 86400,
}
_US_UNITS = frozenset({"CFS", "GPM", "MGD", "IMGD", "AFD"})
_FOOT = 0.3048
_INCH = 0.0254
_HP_TO_KW = 0.745699872

_PREFIX = {
    "junction": "J",
    "reservoir": "R",
    "tank": "T",
    "pipe": "P",
    "pump": "PU",
    "valve": "V",
}
_VALVE_TYPES = frozenset({"PRV", "PSV", "PBV", "FCV", "TCV", "GPV"})
_PIPE_STATUS = frozenset({"OPEN", "CLOSED", "CV"})
_TOKEN = re.compile(r'"([^"]*)"|(\S+)')


def epanet_local_id(kind: str, raw: str) -> str:
    """The local network id of an EPANET element, e.g. ``("pipe", "10") -> "P-10"``.

    EPANET node and link ids are separate namespaces (Net1 has junction ``10`` and pipe
    ``10``), so local ids carry a type prefix.

    Args:
        kind: ``junction``, ``reservoir``, ``tank``, ``pipe``, ``pump`` or ``valve``
            (any case).
        raw: the id as written in the ``.inp`` file.

    Returns:
        ``J-``, ``R-``, ``T-``, ``P-``, ``PU-`` or ``V-`` followed by the raw id.

    Raises:
        TwinError: unknown kind.
    """
    prefix = _PREFIX.get(kind.lower())
    if prefix is None:
        raise TwinError(f"unknown EPANET element kind {kind!r} (one of {', '.join(_PREFIX)})")
    return f"{prefix}-{raw}"


@dataclass
class _Line:
    no: int
    tokens: list[str]


@dataclass
class _Link:
    kind: str
    raw: str
    local: str
    start: str
    end: str
    type: str
    attributes: dict[str, Any]
    line: int


class _Reader:
    """One parse of one file; holds the source name for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sections: dict[str, list[_Line]] = {}
        self.title: list[str] = []

    def error(self, problem: str, line: int | None = None) -> IngestError:
        return IngestError(problem, source=self.source, where=f"line {line}" if line else "")

    # -- splitting --------------------------------------------------------------
    def split(self, text: str) -> None:
        section: str | None = None
        for no, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if stripped.startswith("["):
                close = stripped.find("]")
                name = stripped[1:close].strip().upper() if close > 0 else ""
                if name not in SECTIONS:
                    raise self.error(f"unknown section {stripped[:40]!r}", no)
                if name == "END":
                    return
                section = name
                self.sections.setdefault(name, [])
                continue
            body = raw.split(";", 1)[0].strip()
            if not body:
                continue
            if section is None:
                raise self.error(f"data before any [SECTION]: {body[:40]!r}", no)
            if section == "TITLE":
                self.title.append(body)
                continue
            tokens = [
                m.group(1) if m.group(1) is not None else m.group(2) for m in _TOKEN.finditer(body)
            ]
            self.sections[section].append(_Line(no, tokens))

    def lines(self, section: str) -> Iterator[_Line]:
        yield from self.sections.get(section, [])

    # -- fields -----------------------------------------------------------------
    def field(self, line: _Line, index: int, name: str, what: str) -> str:
        if index >= len(line.tokens):
            raise self.error(f"{what}: missing {name}", line.no)
        return line.tokens[index]

    def number(self, line: _Line, index: int, name: str, what: str) -> float:
        text = self.field(line, index, name, what)
        try:
            value = float(text)
        except ValueError:
            raise self.error(f"{what}: bad number for {name}: {text!r}", line.no) from None
        if not math.isfinite(value):
            raise self.error(f"{what}: {name} is not finite: {text!r}", line.no)
        return value

    def optional_number(
        self, line: _Line, index: int, name: str, what: str, default: float
    ) -> float:
        if index >= len(line.tokens):
            return default
        return self.number(line, index, name, what)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Files saved by the EPANET GUI on Windows are often Latin-1 / cp1252.
        return data.decode("latin-1")


def read_epanet(
    path: str | Path,
    *,
    network_id: str = "water",
    georef: Georeference | None = None,
    units: str | None = None,
) -> Network:
    """Read an EPANET 2.2 ``.inp`` file as an undirected water network.

    Lengths, elevations and diameters are converted to metres (feet and inches for US
    flow units, metres and millimetres for SI). Local ids carry a type prefix (see
    :func:`epanet_local_id`); the raw id is kept in ``attributes["epanet_id"]``. EPANET
    coordinates have no CRS, so ``net.crs`` is None unless ``georef`` places the network.

    Args:
        path: the ``.inp`` file (UTF-8 or Latin-1, BOM and CRLF allowed).
        network_id: the network id (twin ids are ``net:<network_id>:<local id>``).
        georef: places the plan coordinates into a CRS (see :func:`apply_georef`).
        units: flow units overriding ``[OPTIONS] UNITS`` (``GPM``, ``LPS``...).

    Returns:
        The network; reservoirs and tanks are its sources.

    Raises:
        IngestError: unreadable file, unknown section, bad number, duplicate id, a link
            to an undefined node, or coordinates missing for only some nodes.
    """
    p = Path(path)
    reader = _Reader(str(p))
    try:
        text = _read_text(p)
    except OSError as exc:
        raise IngestError(f"cannot read file: {exc.strerror or exc}", source=str(p)) from None
    reader.split(text)
    flow_units, headloss = _options(reader, units)
    us = flow_units in _US_UNITS
    length = _FOOT if us else 1.0
    diameter = _INCH if us else 0.001

    net = Network(id=network_id, kind="water", crs=None, directed=False)
    nodes = _nodes(reader, flow_units, length)
    coords = _coordinates(reader, nodes)
    if coords and len(coords) < len(nodes):
        missing = sorted(raw for raw in nodes if raw not in coords)
        raise IngestError(
            f"{len(missing)} node(s) have no [COORDINATES] entry, e.g. {missing[0]!r}",
            source=str(p),
            where=f"line {nodes[missing[0]][3]}",
        )
    links = _links(reader, nodes, length, diameter, _HP_TO_KW if us else 1.0)
    # Sections that amend attributes run before add_node/add_edge copy the dicts.
    _demands(reader, nodes, flow_units)
    _status(reader, links)
    _tags(reader, nodes, links)
    vertices = _vertices(reader, links)
    node_ids: dict[str, str] = {}
    for raw, (local, type_, attrs, _no, z, source) in nodes.items():
        x, y = coords.get(raw, (0.0, 0.0))
        node_ids[raw] = net.add_node(local, type_, (x, y, z), attrs, source=source)
    for raw, link in links.items():
        u, v = node_ids[link.start], node_ids[link.end]
        polyline = _polyline(net.node(u)["xyz"], vertices.get(raw, []), net.node(v)["xyz"])
        try:
            net.add_edge(link.local, u, v, link.type, link.attributes, coords=polyline)
        except TwinError as exc:
            raise reader.error(f"{link.kind} {raw!r}: {exc}", link.line) from None

    net.attributes.update(
        {
            "title": reader.title[0] if reader.title else "",
            "description": " ".join(reader.title[1:]),
            "source": p.name,
            "units": flow_units,
            "unit_system": "US" if us else "SI",
            "headloss": headloss,
            "has_coordinates": bool(coords),
            "epanet": True,
        }
    )
    if georef is not None:
        apply_georef(net, georef)
    return net


def _options(reader: _Reader, units: str | None) -> tuple[str, str]:
    flow = "GPM"  # EPANET's default when [OPTIONS] has no UNITS line
    headloss = "H-W"
    for line in reader.lines("OPTIONS"):
        key = line.tokens[0].upper()
        rest = line.tokens[1:]
        if key == "FLOW" and rest and rest[0].upper() == "UNITS":
            key, rest = "UNITS", rest[1:]
        if key == "UNITS":
            if not rest or rest[0].upper() not in FLOW_UNITS:
                got = rest[0] if rest else ""
                raise reader.error(
                    f"unknown flow units {got!r} (one of {', '.join(FLOW_UNITS)})", line.no
                )
            flow = rest[0].upper()
        elif key == "HEADLOSS" and rest:
            headloss = rest[0].upper()
    if units is not None:
        if units.upper() not in FLOW_UNITS:
            raise IngestError(
                f"unknown flow units {units!r} (one of {', '.join(FLOW_UNITS)})",
                source=reader.source,
            )
        flow = units.upper()
    return flow, headloss


# raw id -> (local id, type, attributes, line, z, is source)
_Nodes = dict[str, tuple[str, str, dict[str, Any], int, float, bool]]


def _nodes(reader: _Reader, flow_units: str, length: float) -> _Nodes:
    nodes: _Nodes = {}

    def add(raw: str, kind: str, attrs: dict[str, Any], line: _Line, z: float) -> None:
        if raw in nodes:
            raise reader.error(
                f"duplicate node id {raw!r} (first defined on line {nodes[raw][3]})", line.no
            )
        attrs["epanet_id"] = raw
        local = epanet_local_id(kind, raw)
        nodes[raw] = (local, kind.title(), attrs, line.no, z, kind != "junction")

    for line in reader.lines("JUNCTIONS"):
        raw = line.tokens[0]
        what = f"junction {raw!r}"
        elev = reader.number(line, 1, "elevation", what) * length
        demand = reader.optional_number(line, 2, "demand", what, 0.0)
        pattern = line.tokens[3] if len(line.tokens) > 3 else None
        attrs = {
            "elevation": elev,
            "base_demand": demand,
            "base_demand_m3s": demand * FLOW_UNITS[flow_units],
            "pattern": pattern,
        }
        add(raw, "junction", attrs, line, elev)
    for line in reader.lines("RESERVOIRS"):
        raw = line.tokens[0]
        what = f"reservoir {raw!r}"
        head = reader.number(line, 1, "head", what) * length
        pattern = line.tokens[2] if len(line.tokens) > 2 else None
        add(raw, "reservoir", {"head": head, "pattern": pattern}, line, head)
    for line in reader.lines("TANKS"):
        raw = line.tokens[0]
        what = f"tank {raw!r}"
        elev = reader.number(line, 1, "elevation", what) * length
        attrs = {
            "elevation": elev,
            "init_level": reader.number(line, 2, "init level", what) * length,
            "min_level": reader.number(line, 3, "min level", what) * length,
            "max_level": reader.number(line, 4, "max level", what) * length,
            # Tank diameters are in feet/metres, unlike pipe diameters (inches/mm).
            "diameter": reader.number(line, 5, "diameter", what) * length,
            "min_volume": reader.optional_number(line, 6, "min volume", what, 0.0) * length**3,
            "volume_curve": line.tokens[7] if len(line.tokens) > 7 else None,
        }
        if len(line.tokens) > 8:
            attrs["overflow"] = line.tokens[8].upper() == "YES"
        add(raw, "tank", attrs, line, elev)
    return nodes


def _links(
    reader: _Reader, nodes: _Nodes, length: float, diameter: float, kw: float
) -> dict[str, _Link]:
    links: dict[str, _Link] = {}

    def add(kind: str, type_: str, line: _Line, attrs: dict[str, Any]) -> None:
        raw = line.tokens[0]
        what = f"{kind} {raw!r}"
        start = reader.field(line, 1, "start node", what)
        end = reader.field(line, 2, "end node", what)
        for end_id in (start, end):
            if end_id not in nodes:
                raise reader.error(f"{what}: node {end_id!r} is not defined", line.no)
        if start == end:
            raise reader.error(f"{what}: start and end node are both {start!r}", line.no)
        if raw in links:
            first = links[raw].line
            raise reader.error(
                f"duplicate link id {raw!r} (first defined on line {first})", line.no
            )
        attrs["epanet_id"] = raw
        links[raw] = _Link(kind, raw, epanet_local_id(kind, raw), start, end, type_, attrs, line.no)

    for line in reader.lines("PIPES"):
        what = f"pipe {line.tokens[0]!r}"
        attrs: dict[str, Any] = {
            "length": reader.number(line, 3, "length", what) * length,
            # The hydraulic length is measured, not drawn: apply_georef keeps it.
            "length_source": "file",
            "diameter": reader.number(line, 4, "diameter", what) * diameter,
            "roughness": reader.number(line, 5, "roughness", what),
            "minor_loss": 0.0,
            "status": "OPEN",
        }
        # EPANET accepts the status in place of the minor loss (old 7-token lines).
        if len(line.tokens) > 6 and line.tokens[6].upper() in _PIPE_STATUS:
            status_at = 6
        else:
            attrs["minor_loss"] = reader.optional_number(line, 6, "minor loss", what, 0.0)
            status_at = 7
        if len(line.tokens) > status_at:
            status = line.tokens[status_at].upper()
            if status not in _PIPE_STATUS:
                raise reader.error(f"{what}: bad status {line.tokens[status_at]!r}", line.no)
            attrs["status"] = status
        add("pipe", "Pipe", line, attrs)
    for line in reader.lines("PUMPS"):
        add("pump", "Pump", line, _pump(reader, line, kw))
    for line in reader.lines("VALVES"):
        what = f"valve {line.tokens[0]!r}"
        vtype = reader.field(line, 4, "type", what).upper()
        if vtype not in _VALVE_TYPES:
            raise reader.error(
                f"{what}: bad valve type {line.tokens[4]!r} "
                f"(one of {', '.join(sorted(_VALVE_TYPES))})",
                line.no,
            )
        setting: float | str
        if vtype == "GPV":
            setting = reader.field(line, 5, "setting", what)  # a head-loss curve id
        else:
            setting = reader.number(line, 5, "setting", what)
        attrs = {
            "diameter": reader.number(line, 3, "diameter", what) * diameter,
            "valve_type": vtype,
            "setting": setting,
            "minor_loss": reader.optional_number(line, 6, "minor loss", what, 0.0),
        }
        add("valve", "Valve", line, attrs)
    return links


def _pump(reader: _Reader, line: _Line, kw: float) -> dict[str, Any]:
    what = f"pump {line.tokens[0]!r}"
    attrs: dict[str, Any] = {"status": "OPEN"}
    params = line.tokens[3:]
    if len(params) % 2:
        raise reader.error(f"{what}: parameter {params[-1]!r} has no value", line.no)
    for i in range(0, len(params), 2):
        key, value = params[i].upper(), params[i + 1]
        if key == "HEAD":
            attrs["head_curve"] = value
        elif key == "POWER":
            power = reader.number(line, 3 + i + 1, "power", what)
            attrs["power"] = power  # hp for US flow units, kW for SI
            attrs["power_kw"] = power * kw
        elif key == "SPEED":
            attrs["speed"] = reader.number(line, 3 + i + 1, "speed", what)
        elif key == "PATTERN":
            attrs["pattern"] = value
        else:
            raise reader.error(
                f"{what}: unknown parameter {params[i]!r} (HEAD, POWER, SPEED, PATTERN)",
                line.no,
            )
    if "head_curve" not in attrs and "power" not in attrs:
        raise reader.error(f"{what}: needs a HEAD curve or a POWER value", line.no)
    return attrs


def _coordinates(reader: _Reader, nodes: _Nodes) -> dict[str, tuple[float, float]]:
    coords: dict[str, tuple[float, float]] = {}
    for line in reader.lines("COORDINATES"):
        raw = line.tokens[0]
        what = f"coordinates of node {raw!r}"
        if raw not in nodes:
            raise reader.error(f"{what}: node is not defined", line.no)
        if raw in coords:
            raise reader.error(f"{what}: given twice", line.no)
        coords[raw] = (reader.number(line, 1, "x", what), reader.number(line, 2, "y", what))
    return coords


def _vertices(reader: _Reader, links: dict[str, _Link]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for line in reader.lines("VERTICES"):
        raw = line.tokens[0]
        what = f"vertex of link {raw!r}"
        if raw not in links:
            raise reader.error(f"{what}: link is not defined", line.no)
        xy = (reader.number(line, 1, "x", what), reader.number(line, 2, "y", what))
        out.setdefault(raw, []).append(xy)
    return out


def _demands(reader: _Reader, nodes: _Nodes, flow_units: str) -> None:
    # EPANET 2.2: a junction listed in [DEMANDS] takes those categories instead of the
    # single demand on its [JUNCTIONS] line.
    seen: set[str] = set()
    for line in reader.lines("DEMANDS"):
        raw = line.tokens[0]
        what = f"demand of junction {raw!r}"
        if raw not in nodes or nodes[raw][1] != "Junction":
            raise reader.error(f"{what}: junction is not defined", line.no)
        attrs = nodes[raw][2]
        demand = reader.number(line, 1, "demand", what)
        if raw not in seen:
            seen.add(raw)
            attrs["demands"] = []
            attrs["base_demand"] = 0.0
            attrs["pattern"] = line.tokens[2] if len(line.tokens) > 2 else attrs["pattern"]
        attrs["demands"].append(
            {
                "base_demand": demand,
                "pattern": line.tokens[2] if len(line.tokens) > 2 else None,
                "category": " ".join(line.tokens[3:]) or None,
            }
        )
        attrs["base_demand"] += demand
        attrs["base_demand_m3s"] = attrs["base_demand"] * FLOW_UNITS[flow_units]


def _status(reader: _Reader, links: dict[str, _Link]) -> None:
    for line in reader.lines("STATUS"):
        raw = line.tokens[0]
        what = f"status of link {raw!r}"
        if raw not in links:
            raise reader.error(f"{what}: link is not defined", line.no)
        value = reader.field(line, 1, "status/setting", what)
        attrs = links[raw].attributes
        if value.upper() in ("OPEN", "CLOSED", "ACTIVE"):
            attrs["status"] = value.upper()
        else:
            attrs["initial_setting"] = reader.number(line, 1, "status/setting", what)


def _tags(reader: _Reader, nodes: _Nodes, links: dict[str, _Link]) -> None:
    for line in reader.lines("TAGS"):
        kind = line.tokens[0].upper()
        raw = reader.field(line, 1, "id", "tag")
        tag = reader.field(line, 2, "tag", f"tag of {raw!r}")
        if kind == "NODE" and raw in nodes:
            nodes[raw][2]["tag"] = tag
        elif kind == "LINK" and raw in links:
            links[raw].attributes["tag"] = tag
        else:
            raise reader.error(f"tag: no {kind.lower()} {raw!r} (NODE or LINK id)", line.no)


def _polyline(
    start: tuple[float, float, float],
    vertices: list[tuple[float, float]],
    end: tuple[float, float, float],
) -> list[tuple[float, float, float]]:
    if not vertices:
        return [start, end]
    xy = np.asarray([start[:2], *vertices, end[:2]], dtype=np.float64)
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    run = np.concatenate([[0.0], np.cumsum(steps)])
    # z follows the 2D run between the two end elevations (vertices carry no z).
    t = run / run[-1] if run[-1] > 0 else np.linspace(0.0, 1.0, len(xy))
    z = start[2] + t * (end[2] - start[2])
    mid = [(float(x), float(y), float(h)) for (x, y), h in zip(xy[1:-1], z[1:-1], strict=True)]
    return [start, *mid, end]

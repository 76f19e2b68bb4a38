"""OpenStreetMap files (.osm.pbf, .osm XML): road and pipeline networks, LoD1 buildings.

pyosmium (the ``osm`` extra) reads both encodings. Coordinates are projected from WGS84 to
the UTM zone of the data's centre, so geometry and lengths are in metres.

Nodes a file references but does not hold (extracts clipped at a bounding box, or a
dangling reference) have no location: a road or pipeline way is cut at them and keeps its
located runs of two or more nodes; a building whose outline misses a node is skipped and
counted in :attr:`OsmBuildings.skipped`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ingest.networks.pandapower import utm_epsg
from twin.errors import IngestError, MissingExtra
from twin.network import Network

__all__ = [
    "DRIVABLE",
    "OsmBuildings",
    "read_osm_buildings",
    "read_osm_networks",
]

# Highway classes a car may use (OSM wiki "Key:highway", roads and link roads).
_MAIN = ("motorway", "trunk", "primary", "secondary", "tertiary")
DRIVABLE = frozenset(
    (
        *_MAIN,
        *(f"{h}_link" for h in _MAIN),
        "unclassified",
        "residential",
        "service",
        "living_street",
    )
)
# Carriageway width (m) by class when neither ``width`` nor ``lanes`` is tagged.
_DEFAULT_WIDTH = {
    "motorway": 14.0,
    "trunk": 11.0,
    "primary": 10.0,
    "secondary": 8.0,
    "tertiary": 7.0,
    "unclassified": 6.0,
    "residential": 6.0,
    "living_street": 5.0,
    "service": 4.0,
}
_LINK_WIDTH = 5.0
LANE_WIDTH = 3.0
LEVEL_HEIGHT = 3.0
PIPE_DEPTH = 1.5
# A height tag below this is taken as a mistake (and would flatten the solid).
MIN_HEIGHT = 0.1

# substance (or the deprecated ``type`` tag) -> pipeline network id (= kind).
_SUBSTANCE_NETWORK = {
    "water": "water",
    "drinking_water": "water",
    "heat": "heat",
    "hot_water": "heat",
    "steam": "heat",
    "gas": "gas",
    "natural_gas": "gas",
    "sewage": "sewer",
    "wastewater": "sewer",
}

_NUMBER = re.compile(r"^\s*([0-9]+(?:[.,][0-9]+)?)\s*([a-zA-Z'\"]*)\s*$")
_FEET_INCHES = re.compile(r"^\s*([0-9]+)\s*'\s*(?:([0-9]+(?:\.[0-9]+)?)\s*\")?\s*$")


@dataclass(frozen=True)
class OsmBuildings:
    """LoD1 buildings read from an OSM file.

    Attributes:
        doc: the CityJSON 2.0 document (one ``Building`` per kept outline).
        skipped: building ways/relations left out (open, incomplete or degenerate outline).
        ways: buildings made from closed ways (ids ``osm-way-<id>``).
        relations: buildings made from multipolygon relations (``osm-relation-<id>``).
    """

    doc: dict[str, Any]
    skipped: int
    ways: int
    relations: int

    @property
    def count(self) -> int:
        """Number of buildings in the document."""
        return self.ways + self.relations


# -- pyosmium ------------------------------------------------------------------------


def _osmium() -> Any:
    try:
        import osmium
    except ImportError:
        raise MissingExtra("osmium", "osm") from None
    return osmium


def _input(osmium: Any, path: Path) -> Any:
    """The file for pyosmium, its format sniffed when the name does not tell it."""
    if not path.is_file():
        raise IngestError("no such file", source=str(path))
    name = path.name.lower()
    if name.endswith((".pbf", ".osm", ".osm.bz2", ".osm.gz", ".osc", ".o5m", ".opl")):
        return str(path)
    with path.open("rb") as fh:
        head = fh.read(256).lstrip()
    fmt = "osm" if head.startswith(b"<") else "pbf"
    return osmium.io.File(str(path), fmt)


def _objects(osmium: Any, processor: Any, source: str) -> Iterator[Any]:
    """Iterate a FileProcessor, turning libosmium's errors into IngestError."""
    errors = (RuntimeError, ValueError, OSError, KeyError, osmium.InvalidLocationError)
    try:
        yield from processor
    except errors as exc:
        raise IngestError(f"cannot read OSM data: {exc}", source=source) from None


# -- networks ------------------------------------------------------------------------


@dataclass
class _Way:
    id: int
    tags: dict[str, str]
    refs: list[int]
    lonlat: list[tuple[float, float] | None]


@dataclass
class _Graph:
    """Ways of one network split at shared nodes."""

    points: dict[int, tuple[float, float]] = field(default_factory=dict)
    nodes: dict[int, None] = field(default_factory=dict)  # junctions, in first-seen order
    edges: list[tuple[_Way, int, list[int]]] = field(default_factory=list)


def read_osm_networks(
    path: str | Path, *, roads: bool = True, pipelines: bool = True
) -> list[Network]:
    """Read the road network and the pipeline networks of an OSM file.

    Roads: ways whose ``highway`` is a drivable class (:data:`DRIVABLE`; not footways,
    cycleways, paths or steps), split at nodes shared with another road way (and at their
    own ends) into ``Road`` edges ``w<way id>-<k>`` between ``Junction`` nodes
    ``n<node id>``. Edge attributes: ``highway``, ``name``, ``lanes``, ``width`` (m: the
    ``width`` tag, else lanes x 3 m, else a per-class default), ``oneway``, ``maxspeed``
    (km/h when numeric), ``osm_id``. Undirected; roads have no sources.

    Pipelines: ``man_made=pipeline`` ways grouped by ``substance`` (or the older ``type``
    tag): water -> network ``water``, heat/hot_water -> ``heat``, gas -> ``gas``,
    sewage -> ``sewer``, anything else -> ``pipeline``. ``Pipe`` edges carry ``diameter``
    (m; OSM gives mm), ``location``, ``depth`` (the tag, else 1.5 m when underground),
    ``substance``, ``operator``, ``osm_id``. OSM says nothing about supply, so the sources
    are guessed: the dead ends (degree 1) of the largest-diameter pipes, with
    ``attributes["sources_guessed"] = True``.

    Args:
        path: an ``.osm.pbf`` or ``.osm`` (XML) file.
        roads: read the road network.
        pipelines: read the pipeline networks.

    Returns:
        The networks that have at least one edge: ``road`` first, then pipelines by id.

    Raises:
        IngestError: the file is missing or not readable OSM data.
        twin.errors.MissingExtra: pyosmium is not installed.
    """
    osmium = _osmium()
    p = Path(path)
    src = str(p)
    road_ways: list[_Way] = []
    pipe_ways: dict[str, list[_Way]] = {}
    keys = [k for k, on in (("highway", roads), ("man_made", pipelines)) if on]
    if not keys:
        return []
    proc = (
        osmium.FileProcessor(_input(osmium, p), osmium.osm.NODE | osmium.osm.WAY)
        .with_locations()
        .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY))
        .with_filter(osmium.filter.KeyFilter(*keys))
    )
    for o in _objects(osmium, proc, src):
        tags = o.tags
        if roads and tags.get("highway") in DRIVABLE and tags.get("area") != "yes":
            road_ways.append(_way(o))
        elif pipelines and tags.get("man_made") == "pipeline":
            w = _way(o)
            pipe_ways.setdefault(_pipe_network(w.tags), []).append(w)

    graphs: list[tuple[str, _Graph]] = []
    if road_ways:
        graphs.append(("road", _split(road_ways)))
    graphs += [(nid, _split(pipe_ways[nid])) for nid in sorted(pipe_ways)]
    graphs = [(nid, g) for nid, g in graphs if g.edges]
    if not graphs:
        return []
    epsg, project = _utm([ll for _, g in graphs for ll in g.points.values()])
    out: list[Network] = []
    for nid, g in graphs:
        net = Network(id=nid, kind=nid, crs=f"EPSG:{epsg}", directed=False)
        net.attributes["source_format"] = "osm"
        xy = dict(zip(g.points, project(list(g.points.values())), strict=True))
        ids = {ref: net.add_node(f"n{ref}", "Junction", (*xy[ref], 0.0)) for ref in g.nodes}
        for way, k, refs in g.edges:
            attrs = _road_attributes(way) if nid == "road" else _pipe_attributes(way)
            net.add_edge(
                f"w{way.id}-{k}",
                ids[refs[0]],
                ids[refs[-1]],
                "Road" if nid == "road" else "Pipe",
                attrs,
                coords=[(*xy[r], 0.0) for r in refs],
            )
        if nid != "road":
            _guess_sources(net)
        out.append(net)
    return out


def _way(o: Any) -> _Way:
    refs: list[int] = []
    lonlat: list[tuple[float, float] | None] = []
    for n in o.nodes:
        refs.append(int(n.ref))
        loc = n.location
        lonlat.append((float(loc.lon), float(loc.lat)) if loc.valid() else None)
    return _Way(int(o.id), {t.k: t.v for t in o.tags}, refs, lonlat)


def _pipe_network(tags: dict[str, str]) -> str:
    substance = (tags.get("substance") or tags.get("type") or "").strip().lower()
    return _SUBSTANCE_NETWORK.get(substance, "pipeline")


def _runs(way: _Way) -> Iterator[list[tuple[int, tuple[float, float]]]]:
    """Located stretches of a way (cut where a node has no location)."""
    run: list[tuple[int, tuple[float, float]]] = []
    for ref, ll in zip(way.refs, way.lonlat, strict=True):
        if ll is None:
            if len(run) >= 2:
                yield run
            run = []
        elif not run or run[-1][0] != ref:
            run.append((ref, ll))
    if len(run) >= 2:
        yield run


def _split(ways: Iterable[_Way]) -> _Graph:
    """Split ways into edges between ends and nodes used more than once."""
    runs = [(w, run) for w in ways for run in _runs(w)]
    uses: dict[int, int] = {}
    g = _Graph()
    for _, run in runs:
        for ref, ll in run:
            uses[ref] = uses.get(ref, 0) + 1
            g.points[ref] = ll
    k_of: dict[int, int] = {}
    for w, run in runs:
        piece = [run[0][0]]
        g.nodes[run[0][0]] = None
        for i, (ref, _ll) in enumerate(run[1:], start=1):
            piece.append(ref)
            if i == len(run) - 1 or uses[ref] > 1:
                g.nodes[ref] = None
                k = k_of.get(w.id, 0)
                k_of[w.id] = k + 1
                g.edges.append((w, k, piece))
                piece = [ref]
    return g


def _utm(
    lonlat: list[tuple[float, float]],
) -> tuple[int, Any]:
    a = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
    lo, hi = a.min(axis=0), a.max(axis=0)
    epsg = utm_epsg(float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2)
    from pyproj import Transformer

    tr = Transformer.from_crs(4326, epsg, always_xy=True)

    def project(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if not pts:
            return []
        b = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        x, y = tr.transform(b[:, 0], b[:, 1])
        return [
            (float(px), float(py))
            for px, py in zip(np.atleast_1d(x), np.atleast_1d(y), strict=True)
        ]

    return epsg, project


# -- tag values ----------------------------------------------------------------------


def _metres(value: str | None) -> float | None:
    """A length tag in metres: ``12``, ``12.5 m``, ``40 ft``, ``12'6"``; None if unparsable."""
    if value is None:
        return None
    m = _NUMBER.match(value)
    if m is not None:
        number = float(m.group(1).replace(",", "."))
        unit = m.group(2).lower()
        factor = {
            "": 1.0,
            "m": 1.0,
            "meter": 1.0,
            "meters": 1.0,
            "metre": 1.0,
            "metres": 1.0,
            "cm": 0.01,
            "mm": 0.001,
            "km": 1000.0,
            "ft": 0.3048,
            "feet": 0.3048,
            "'": 0.3048,
        }.get(unit)
        return number * factor if factor is not None else None
    fi = _FEET_INCHES.match(value)
    if fi is not None:
        return float(fi.group(1)) * 0.3048 + float(fi.group(2) or 0.0) * 0.0254
    return None


def _diameter(value: str | None) -> float | None:
    """OSM ``diameter`` in metres: plain numbers are millimetres; ``4"`` is inches."""
    if value is None:
        return None
    m = _NUMBER.match(value)
    if m is None:
        return None
    number = float(m.group(1).replace(",", "."))
    factor = {"": 0.001, "mm": 0.001, "cm": 0.01, "m": 1.0, '"': 0.0254, "in": 0.0254}.get(
        m.group(2).lower()
    )
    if factor is None or number <= 0:
        return None
    return number * factor


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        x = float(value.strip().replace(",", "."))
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _lanes(value: str | None) -> int | None:
    # "2;3" (differs along the way) -> the first value.
    x = _number(value.split(";")[0]) if value else None
    return int(x) if x is not None and x >= 1 else None


def _maxspeed(value: str | None) -> float | str | None:
    if value is None:
        return None
    v = value.strip().lower()
    mph = v.endswith("mph")
    x = _number(v.removesuffix("mph").removesuffix("km/h").strip())
    if x is None:
        return value  # "FI:urban", "walk", "signals": kept as written
    return x * 1.609344 if mph else x


def _road_attributes(way: _Way) -> dict[str, Any]:
    t = way.tags
    highway = t["highway"]
    lanes = _lanes(t.get("lanes"))
    width = _metres(t.get("width"))
    if width is None or width <= 0:
        if lanes is not None:
            width = lanes * LANE_WIDTH
        else:
            width = _DEFAULT_WIDTH.get(highway, _LINK_WIDTH)
    oneway_tag = t.get("oneway", "").lower()
    oneway = oneway_tag in ("yes", "true", "1", "-1") or t.get("junction") in (
        "roundabout",
        "circular",
    )
    attrs: dict[str, Any] = {
        "highway": highway,
        "name": t.get("name"),
        "lanes": lanes,
        "width": width,
        "oneway": oneway,
        "maxspeed": _maxspeed(t.get("maxspeed")),
        "osm_id": way.id,
    }
    if oneway_tag == "-1":
        attrs["oneway_reverse"] = True
    for key in ("bridge", "tunnel"):
        if t.get(key, "no") != "no":
            attrs[key] = True
    return attrs


def _pipe_attributes(way: _Way) -> dict[str, Any]:
    t = way.tags
    location = t.get("location")
    depth = _metres(t.get("depth"))
    if depth is None and location == "underground":
        depth = PIPE_DEPTH
    substance = t.get("substance") or t.get("type")
    return {
        "diameter": _diameter(t.get("diameter")),
        "location": location,
        "depth": depth,
        "substance": substance,
        "operator": t.get("operator"),
        "name": t.get("name"),
        "osm_id": way.id,
    }


def _guess_sources(net: Network) -> None:
    """Dead ends of the largest-diameter pipes (all pipes when none has a diameter)."""
    und = net.undirected()
    diameters = [
        float(d["attributes"]["diameter"])
        for _, _, d in net.graph.edges(data=True)
        if d["attributes"].get("diameter")
    ]
    top = max(diameters) if diameters else None
    for u, v, d in net.graph.edges(data=True):
        if top is not None and d["attributes"].get("diameter") != top:
            continue
        for end in (u, v):
            if und.degree(end) == 1:
                net.sources.add(end)
    net.attributes["sources_guessed"] = True


# -- buildings -----------------------------------------------------------------------


def read_osm_buildings(path: str | Path, *, default_height: float = 9.0) -> OsmBuildings:
    """Extrude the OSM buildings of a file to LoD1 solids in a CityJSON 2.0 document.

    One ``Building`` per closed ``building=*`` way (id ``osm-way-<id>``) and per
    ``building`` multipolygon relation (``osm-relation-<id>``, courtyards as holes; more
    than one outer ring gives a MultiSolid). Outlines are assembled and checked by
    libosmium's area assembler, projected to UTM metres and stored with a 1 mm transform;
    outer rings run counter-clockwise seen from above and walls face outwards (CityJSON
    2.0 §"Geometry objects"), with Roof/Ground/WallSurface semantics. Height: the
    ``height`` tag (``12``, ``12.5 m``, ``40 ft``), else (``building:levels`` +
    ``roof:levels``) x 3 m, else ``default_height``; attribute ``height_source`` says
    which (``height`` | ``levels`` | ``default``).

    Args:
        path: an ``.osm.pbf`` or ``.osm`` (XML) file.
        default_height: height (m) of buildings with neither height nor levels.

    Returns:
        The document and counts; outlines left out (open ways, missing nodes, fewer than
        three distinct points or no area) are counted in ``skipped``.

    Raises:
        IngestError: the file is missing or not readable OSM data; default_height <= 0.
        twin.errors.MissingExtra: pyosmium is not installed.
    """
    if not (math.isfinite(default_height) and default_height >= MIN_HEIGHT):
        raise IngestError(f"default_height must be >= {MIN_HEIGHT} m, got {default_height}")
    osmium = _osmium()
    p = Path(path)
    src = str(p)
    candidates = 0
    parts: list[tuple[str, int, dict[str, str], list[list[list[tuple[float, float]]]]]] = []
    proc = osmium.FileProcessor(_input(osmium, p)).with_areas(osmium.filter.KeyFilter("building"))
    for o in _objects(osmium, proc, src):
        if o.is_area():
            tags = {t.k: t.v for t in o.tags}
            if tags.get("building", "no") == "no":
                continue
            polys = _polygons(o)
            if polys:
                kind = "way" if o.from_way() else "relation"
                parts.append((kind, int(o.orig_id()), tags, polys))
        elif (
            o.is_way() or (o.is_relation() and o.tags.get("type") == "multipolygon")
        ) and o.tags.get("building", "no") != "no":
            candidates += 1
    if not parts:
        return OsmBuildings(_empty_doc(None, (0.0, 0.0)), candidates, 0, 0)
    epsg, project = _utm([ll for *_, polys in parts for poly in polys for r in poly for ll in r])
    xy_parts = [
        (kind, oid, tags, [[project(r) for r in poly] for poly in polys])
        for kind, oid, tags, polys in parts
    ]
    all_xy = np.asarray([pt for *_, polys in xy_parts for poly in polys for pt in poly[0]])
    origin = (float(math.floor(all_xy[:, 0].min())), float(math.floor(all_xy[:, 1].min())))
    doc = _empty_doc(epsg, origin)
    builder = _Solids(doc, origin)
    counts = {"way": 0, "relation": 0}
    for kind, oid, tags, polys in xy_parts:
        height, how = _height(tags, default_height)
        if builder.add(f"osm-{kind}-{oid}", polys, height, _building_attributes(tags, oid)):
            obj = doc["CityObjects"][f"osm-{kind}-{oid}"]
            obj["attributes"]["height"] = height
            obj["attributes"]["height_source"] = how
            counts[kind] += 1
    builder.finish()
    kept = counts["way"] + counts["relation"]
    return OsmBuildings(doc, max(0, candidates - kept), counts["way"], counts["relation"])


def _polygons(area: Any) -> list[list[list[tuple[float, float]]]]:
    """``[[outer, inner...], ...]`` lon/lat rings of an area (closing point dropped)."""
    out: list[list[list[tuple[float, float]]]] = []
    try:
        for outer in area.outer_rings():
            rings = [_ring(outer)]
            rings += [_ring(inner) for inner in area.inner_rings(outer)]
            out.append(rings)
    except (RuntimeError, ValueError):  # an invalid location inside a ring
        return []
    return out


def _ring(ring: Any) -> list[tuple[float, float]]:
    pts = [(float(n.lon), float(n.lat)) for n in ring]
    return pts[:-1] if len(pts) > 1 and pts[0] == pts[-1] else pts


def _height(tags: dict[str, str], default: float) -> tuple[float, str]:
    h = _metres(tags.get("height"))
    if h is not None and h >= MIN_HEIGHT:
        return round(h, 3), "height"
    levels = _number(tags.get("building:levels"))
    if levels is not None and levels > 0:
        roof = _number(tags.get("roof:levels"))
        total = levels + (roof if roof is not None and roof > 0 else 0.0)
        return round(max(total * LEVEL_HEIGHT, MIN_HEIGHT), 3), "levels"
    return float(default), "default"


def _building_attributes(tags: dict[str, str], oid: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {"osm_id": oid, "building": tags.get("building")}
    for key in ("name", "addr:street", "addr:housenumber"):
        if key in tags:
            attrs[key] = tags[key]
    return attrs


def _crs_uri(epsg: int) -> str:
    return f"https://www.opengis.net/def/crs/EPSG/0/{epsg}"


def _empty_doc(epsg: int | None, origin: tuple[float, float]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "CityJSON",
        "version": "2.0",
        "transform": {"scale": [0.001, 0.001, 0.001], "translate": [origin[0], origin[1], 0.0]},
        "metadata": {},
        "CityObjects": {},
        "vertices": [],
    }
    if epsg is not None:
        doc["metadata"]["referenceSystem"] = _crs_uri(epsg)
    return doc


# Degenerate-ring threshold: 0.01 m² in the document's integer (mm) units.
_MIN_AREA_MM2 = 10_000


class _Solids:
    """Writes LoD1 solids into a CityJSON document with integer (mm) vertices."""

    def __init__(self, doc: dict[str, Any], origin: tuple[float, float]) -> None:
        self.doc = doc
        self.origin = origin
        self.index: dict[tuple[int, int, int], int] = {}
        self.vertices: list[list[int]] = doc["vertices"]

    def vertex(self, x: int, y: int, z: int) -> int:
        key = (x, y, z)
        i = self.index.get(key)
        if i is None:
            i = len(self.vertices)
            self.index[key] = i
            self.vertices.append([x, y, z])
        return i

    def ring(self, pts: list[tuple[float, float]]) -> list[tuple[int, int]] | None:
        """Integer ring without repeats, or None when degenerate."""
        ox, oy = self.origin
        out: list[tuple[int, int]] = []
        for x, y in pts:
            q = (round((x - ox) * 1000.0), round((y - oy) * 1000.0))
            if not out or out[-1] != q:
                out.append(q)
        while len(out) > 1 and out[0] == out[-1]:
            out.pop()
        if len(set(out)) < 3 or abs(_area2(out)) < 2 * _MIN_AREA_MM2:
            return None
        return out

    def add(
        self,
        oid: str,
        polys: list[list[list[tuple[float, float]]]],
        height: float,
        attributes: dict[str, Any],
    ) -> bool:
        top = round(height * 1000.0)
        shells: list[list[list[list[int]]]] = []
        values: list[list[int]] = []
        for poly in polys:
            outer = self.ring(poly[0])
            if outer is None:
                continue
            # CityJSON 2.0: outer rings counter-clockwise, inner rings clockwise (from above).
            if _area2(outer) < 0:
                outer.reverse()
            inners = []
            for r in poly[1:]:
                inner = self.ring(r)
                if inner is not None:
                    if _area2(inner) > 0:
                        inner.reverse()
                    inners.append(inner)
            shell, sem = self.shell([outer, *inners], top)
            shells.append(shell)
            values.append(sem)
        if not shells:
            return False
        semantics_surfaces = [
            {"type": "RoofSurface"},
            {"type": "GroundSurface"},
            {"type": "WallSurface"},
        ]
        if len(shells) == 1:
            geom: dict[str, Any] = {
                "type": "Solid",
                "lod": "1",
                "boundaries": [shells[0]],
                "semantics": {"surfaces": semantics_surfaces, "values": [values[0]]},
            }
        else:
            geom = {
                "type": "MultiSolid",
                "lod": "1",
                "boundaries": [[s] for s in shells],
                "semantics": {"surfaces": semantics_surfaces, "values": [[v] for v in values]},
            }
        self.doc["CityObjects"][oid] = {
            "type": "Building",
            "attributes": attributes,
            "geometry": [geom],
        }
        return True

    def shell(
        self, rings: list[list[tuple[int, int]]], top: int
    ) -> tuple[list[list[list[int]]], list[int]]:
        """Roof, ground and one wall per ring edge; every face's normal points outwards."""
        roof = [[self.vertex(x, y, top) for x, y in r] for r in rings]
        ground = [[self.vertex(x, y, 0) for x, y in reversed(r)] for r in rings]
        faces: list[list[list[int]]] = [roof, ground]
        sem = [0, 1]
        for r in rings:
            for (ax, ay), (bx, by) in zip(r, r[1:] + r[:1], strict=True):
                # Walking a CCW outer ring (or a CW hole) the solid is on the left: the
                # quad a-b-b'-a' then has its normal on the right, i.e. outwards.
                faces.append(
                    [
                        [
                            self.vertex(ax, ay, 0),
                            self.vertex(bx, by, 0),
                            self.vertex(bx, by, top),
                            self.vertex(ax, ay, top),
                        ]
                    ]
                )
                sem.append(2)
        return faces, sem

    def finish(self) -> None:
        if not self.vertices:
            return
        a = np.asarray(self.vertices, dtype=np.float64) * 0.001
        lo, hi = a.min(axis=0), a.max(axis=0)
        ox, oy = self.origin
        self.doc["metadata"]["geographicalExtent"] = [
            float(lo[0] + ox),
            float(lo[1] + oy),
            float(lo[2]),
            float(hi[0] + ox),
            float(hi[1] + oy),
            float(hi[2]),
        ]


def _area2(ring: list[tuple[int, int]]) -> int:
    """Twice the signed area (shoelace; > 0 for counter-clockwise)."""
    s = 0
    for (ax, ay), (bx, by) in zip(ring, ring[1:] + ring[:1], strict=True):
        s += ax * by - bx * ay
    return s

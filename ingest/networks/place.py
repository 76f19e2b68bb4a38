"""Put a network into a city's twin: same CRS as the city, linked to its buildings, stored.

A network is stored in the CRS of the city of its scenario, so the scene draws pipes and
buildings in one frame. A network without a CRS (EPANET plan units) needs a
georeference, or ``fit=True`` to place it as a labelled stand-in on the city's area.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ingest.cityjson import parse_epsg
from ingest.crs import to_wgs84
from ingest.networks.georef import Georeference, apply_georef
from twin.errors import IngestError
from twin.network import Network, link_buildings, network_to_json
from twin.network_index import NETWORK_SOURCE_PREFIX, network_source_name
from twin.query import ObjectQuery, decode_cursor
from twin.store.base import StateStore

__all__ = ["CityFrame", "city_frame", "place_network", "reproject_network", "store_network"]

SERVED_BY_KEYS = ("served_by", "network_node")
"""Building attributes that name the serving node explicitly (a twin id)."""


@dataclass
class CityFrame:
    """What placing a network needs to know about the city of a scenario."""

    epsg: int | None = None
    bbox: tuple[float, float, float, float] | None = None
    buildings: list[tuple[str, float, float]] = field(default_factory=list)
    explicit: dict[str, str] = field(default_factory=dict)


def _source_epsg(data: bytes) -> int | None:
    head = data.split(b"\n", 1)[0] if data.lstrip().startswith(b"{") else data
    for chunk in (head, data):
        try:
            doc = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            meta = doc.get("metadata")
            if isinstance(meta, dict):
                return parse_epsg(meta.get("referenceSystem"))
            return None
    return None


def city_frame(store: StateStore, scenario: str = "base") -> CityFrame:
    """The CRS, extent and building positions of the city stored in a scenario."""
    frame = CityFrame()
    for info in store.sources(scenario):
        if info.name.startswith(NETWORK_SOURCE_PREFIX):
            continue
        data = store.get_source(info.name, scenario)
        if data is not None:
            frame.epsg = _source_epsg(data)
            if frame.epsg is not None:
                break
    lo = np.full(2, np.inf)
    hi = np.full(2, -np.inf)
    seen: set[str] = set()
    cursor = None
    while True:
        page = store.query_objects(ObjectQuery(scenario=scenario, limit=1000, cursor=cursor))
        for o in page.items:
            g = o.geometry
            if o.id.startswith("net:") or g is None or not o.type.startswith("Building"):
                continue
            lo = np.minimum(lo, g.bbox[:2])
            hi = np.maximum(hi, g.bbox[3:5])
            # A part stands for its building: the building is what is served.
            bid = o.parent if o.type == "BuildingPart" and o.parent else o.id
            for key in SERVED_BY_KEYS:
                v = o.attributes.get(key)
                if isinstance(v, str):
                    frame.explicit[bid] = v
            if bid not in seen:
                seen.add(bid)
                frame.buildings.append((bid, g.centroid[0], g.centroid[1]))
        if page.next_cursor is None:
            break
        cursor = decode_cursor(page.next_cursor)
    if np.isfinite(lo).all():
        frame.bbox = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    return frame


def reproject_network(net: Network, epsg: int) -> None:
    """Transform a network with a known CRS into EPSG:``epsg``, in place.

    Raises:
        IngestError: the network's CRS is unknown to pyproj.
    """
    from pyproj import Transformer
    from pyproj.exceptions import CRSError

    try:
        tr = Transformer.from_crs(net.crs, epsg, always_xy=True)
    except CRSError as exc:
        raise IngestError(f"cannot reproject network {net.id!r} from {net.crs}: {exc}") from None

    def move(pts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        x, y = tr.transform(pts[:, 0], pts[:, 1])
        return np.column_stack([x, y, pts[:, 2]])

    g = net.graph
    nodes = list(g.nodes)
    if nodes:
        moved = move(np.asarray([g.nodes[n]["xyz"] for n in nodes], dtype=np.float64))
        for n, p in zip(nodes, moved, strict=True):
            g.nodes[n]["xyz"] = (float(p[0]), float(p[1]), float(p[2]))
    for _u, _v, d in g.edges(data=True):
        pts = move(np.asarray(d["coords"], dtype=np.float64).reshape(-1, 3))
        d["coords"] = [(float(p[0]), float(p[1]), float(p[2])) for p in pts]
    net.attributes.setdefault("reprojected_from", net.crs)
    net.crs = f"EPSG:{epsg}"


def _net_epsg(net: Network) -> int | None:
    if not net.crs:
        return None
    return parse_epsg(net.crs) or parse_epsg(f"EPSG:{net.crs.rsplit(':', 1)[-1]}")


def place_network(
    net: Network,
    frame: CityFrame,
    *,
    georef: Georeference | None = None,
    fit: bool = False,
    margin: float = 0.1,
) -> None:
    """Bring a network into the city's CRS, in place.

    Args:
        net: the network (changed in place).
        frame: the city (see :func:`city_frame`).
        georef: an explicit georeference for plan coordinates (wins over ``fit``).
        fit: place the network, whatever its own coordinates, centred and scaled onto the
            city's extent, and label it a stand-in (``attributes.stand_in``).
        margin: share of the city's extent left free around a fitted network.

    Raises:
        IngestError: no way to place it (no CRS and neither ``georef`` nor ``fit``; a fit
            with no city to fit onto).
    """
    if georef is not None:
        apply_georef(net, georef)
    elif fit:
        if frame.bbox is None or frame.epsg is None:
            raise IngestError(
                f"network {net.id!r}: --fit needs a city with a CRS in the scenario; ingest "
                "the city first"
            )
        bbox = net.bbox()
        if bbox is None:
            raise IngestError(f"network {net.id!r} is empty")
        own = net.crs
        geo = Georeference.fit(
            (bbox[0], bbox[1], bbox[3], bbox[4]),
            frame.bbox,
            crs=f"EPSG:{frame.epsg}",
            margin=margin,
        )
        apply_georef(net, geo)
        net.attributes["stand_in"] = True
        net.attributes["placed_from_crs"] = own
    if net.crs is None:
        raise IngestError(
            f"network {net.id!r} has no CRS (plan coordinates): give a georeference "
            "(--georef 'origin=x,y,z;scale=..;rotation=..;crs=EPSG:..') or --fit to place it "
            "as a stand-in on the city's area"
        )
    epsg = _net_epsg(net)
    if frame.epsg is not None and epsg != frame.epsg:
        reproject_network(net, frame.epsg)


def store_network(
    store: StateStore,
    net: Network,
    frame: CityFrame,
    *,
    scenario: str = "base",
    link_distance: float = 150.0,
) -> int:
    """Link buildings to their serving nodes, then store the network and its assets.

    One transaction: the network document (the scene and queries read it) and one twin
    object per node and edge.

    Returns:
        The number of twin objects written.
    """
    if net.kind in ("water", "power", "heat", "gas", "sewer") and frame.buildings:
        net.links.clear()
        link_buildings(net, frame.buildings, max_distance=link_distance, explicit=frame.explicit)
    epsg = _net_epsg(net)

    def wgs(pts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        assert epsg is not None
        out = to_wgs84(pts, epsg)
        if out is None:
            raise IngestError(f"network {net.id!r}: CRS {net.crs} unknown to pyproj")
        return out

    objects = net.to_objects(wgs if epsg is not None else None)
    return store.put_objects(
        objects,
        scenario=scenario,
        source=network_source_name(net.id),
        source_data=network_to_json(net),
    )

"""Networks: list, GeoJSON, shortest path, failure impact and criticality."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from twin.errors import TwinError
from twin.network import Network, criticality, failure_impact, shortest_path
from viewer.deps import ServicesDep
from viewer.routes.common import ERRORS, JSONBody

router = APIRouter(prefix="/api/networks", tags=["networks"])

Scenario = Annotated[str, Query(max_length=100)]
_EPSG = re.compile(r"(?:EPSG:?:?|/EPSG/\d+/)(\d+)$", re.IGNORECASE)


class NetworkInfo(BaseModel):
    """One network: what it is, how big, where."""

    id: str
    kind: str
    nodes: int
    edges: int
    sources: list[str]
    buildings_served: int
    crs: str | None
    bbox: list[float] | None = Field(description="minx, miny, minz, maxx, maxy, maxz (CRS)")
    bbox_wgs84: list[float] | None
    attributes: dict[str, Any] = Field(
        description="title, source file; `stand_in`: true for a real network placed on this "
        "city's area as a stand-in (its georeference is under `georeference`)"
    )


class PathOut(BaseModel):
    """A shortest path: node ids, the edges between them, total length (metres)."""

    nodes: list[str]
    edges: list[str]
    length: float


class ImpactIn(BaseModel):
    """Assets that fail (node or edge ids)."""

    failed: list[Annotated[str, Field(max_length=512)]] = Field(min_length=1, max_length=1000)


class ImpactCounts(BaseModel):
    """Sizes of the impact."""

    nodes: int
    edges: int
    buildings: int


class ImpactOut(BaseModel):
    """What the failure cuts off from every source."""

    failed: list[str]
    nodes: list[str]
    edges: list[str]
    buildings: list[str]
    counts: ImpactCounts


class CriticalAsset(BaseModel):
    """One ranked edge."""

    id: str
    score: float
    buildings: int | None = Field(
        description="buildings cut off by this edge alone (method=buildings)"
    )


def epsg_of(crs: str | None) -> int | None:
    """The EPSG code in a CRS string (``EPSG:28992``, an OGC URL), or None."""
    if not crs:
        return None
    m = _EPSG.search(crs.strip())
    return int(m.group(1)) if m else None


def _wgs84(net: Network, pts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
    from ingest.crs import to_wgs84

    epsg = epsg_of(net.crs)
    if epsg is None or pts.size == 0:
        return None
    return to_wgs84(pts.reshape(-1, 3).astype(np.float64), epsg)


def _info(net: Network) -> dict[str, Any]:
    bbox = net.bbox()
    bw = None
    if bbox is not None:
        w = _wgs84(net, np.array([bbox[:3], bbox[3:]], dtype=np.float64))
        if w is not None:
            bw = [
                float(min(w[:, 0])),
                float(min(w[:, 1])),
                float(w[0, 2]),
                float(max(w[:, 0])),
                float(max(w[:, 1])),
                float(w[1, 2]),
            ]
    return {
        "id": net.id,
        "kind": net.kind,
        "nodes": net.n_nodes,
        "edges": net.n_edges,
        "sources": sorted(net.sources),
        "buildings_served": len(net.links),
        "crs": net.crs,
        "bbox": list(bbox) if bbox else None,
        "bbox_wgs84": bw,
        "attributes": net.attributes,
    }


@router.get("", response_model=list[NetworkInfo], responses=ERRORS, summary="Every network")
def list_networks(services: ServicesDep, scenario: Scenario = "base") -> JSONBody:
    return JSONBody([_info(n) for n in services.networks.all(scenario)])


@router.get(
    "/{network_id}",
    responses={
        200: {"content": {"application/geo+json": {}}, "description": "a FeatureCollection"},
        **ERRORS,
    },
    summary="A network as GeoJSON (WGS84 lon/lat; nodes as Points, edges as LineStrings)",
)
def read_network(network_id: str, services: ServicesDep, scenario: Scenario = "base") -> JSONBody:
    net = services.networks.get(network_id, scenario)
    nodes = list(net.graph.nodes(data=True))
    edges = list(net.graph.edges(keys=True, data=True))
    pts = np.array(
        [d["xyz"] for _, d in nodes] + [p for *_, d in edges for p in d["coords"]],
        dtype=np.float64,
    ).reshape(-1, 3)
    w = _wgs84(net, pts)
    if w is None:
        raise TwinError(f"network {network_id!r} has no known CRS: it cannot be given as GeoJSON")
    features: list[dict[str, Any]] = []
    for i, (nid, d) in enumerate(nodes):
        features.append(
            {
                "type": "Feature",
                "id": nid,
                "geometry": {"type": "Point", "coordinates": w[i].round(8).tolist()},
                "properties": {
                    "type": net.object_type(d["type"]),
                    "source": nid in net.sources,
                    **d["attributes"],
                },
            }
        )
    k = len(nodes)
    for u, v, eid, d in edges:
        n = len(d["coords"])
        features.append(
            {
                "type": "Feature",
                "id": eid,
                "geometry": {"type": "LineString", "coordinates": w[k : k + n].round(8).tolist()},
                "properties": {
                    "type": net.object_type(d["type"]),
                    "from": u,
                    "to": v,
                    **d["attributes"],
                },
            }
        )
        k += n
    return JSONBody(
        {"type": "FeatureCollection", "id": net.id, "kind": net.kind, "features": features},
        media_type="application/geo+json",
    )


@router.get(
    "/{network_id}/path",
    response_model=PathOut,
    responses=ERRORS,
    summary="Shortest path between two nodes (by length)",
)
def read_path(
    network_id: str,
    services: ServicesDep,
    start: Annotated[str, Query(alias="from", max_length=512)],
    end: Annotated[str, Query(alias="to", max_length=512)],
    scenario: Scenario = "base",
) -> JSONBody:
    p = shortest_path(services.networks.get(network_id, scenario), start, end)
    return JSONBody({"nodes": p.nodes, "edges": p.edges, "length": p.length})


@router.post(
    "/{network_id}/impact",
    response_model=ImpactOut,
    responses=ERRORS,
    summary="What if these fail: network objects and buildings cut off from every source",
)
def post_impact(
    network_id: str, body: ImpactIn, services: ServicesDep, scenario: Scenario = "base"
) -> JSONBody:
    return JSONBody(
        failure_impact(services.networks.get(network_id, scenario), body.failed).as_dict()
    )


@router.get(
    "/{network_id}/criticality",
    response_model=list[CriticalAsset],
    responses=ERRORS,
    summary="Edges ranked by the buildings their failure cuts off, or by betweenness",
)
def read_criticality(
    network_id: str,
    services: ServicesDep,
    method: Literal["buildings", "betweenness"] = "buildings",
    top: Annotated[int, Query(ge=1, le=1000)] = 20,
    scenario: Scenario = "base",
) -> JSONBody:
    ranked = criticality(services.networks.get(network_id, scenario), method=method, top=top)
    return JSONBody(
        [
            {"id": k, "score": s, "buildings": int(s) if method == "buildings" else None}
            for k, s in ranked
        ]
    )

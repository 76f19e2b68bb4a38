"""Infrastructure networks (water, power, roads, pipelines) as graphs of twin objects.

Pure: networkx and numpy only. Every node and every edge is a twin object whose id is
``net:<network>:<local id>`` (e.g. ``net:water:P-101``); the same id is the glTF feature
id of its tube/ribbon, the feed key and the comment anchor.

Graph layout (what readers in ``ingest/`` build and queries here read):

* ``Network.graph`` is a ``networkx.MultiDiGraph``; nodes are keyed by twin id, edges by
  ``(u, v, twin id)``. Node data: ``type`` (``Junction``, ``Reservoir``, ``Bus``...),
  ``xyz`` (coordinates in ``Network.crs``), ``attributes`` (dict). Edge data: ``type``
  (``Pipe``, ``Line``, ``Road``...), ``coords`` (polyline incl. both ends),
  ``attributes`` (dict; ``diameter`` and ``width`` in metres, ``length`` in metres).
* ``directed`` says whether edge direction means something (flow or travel direction).
  Undirected networks are queried through an undirected view.
* ``sources`` are the supply nodes (reservoirs, tanks, external grids, substations) that
  failure impact is measured from.
* ``links`` maps building ids to the node that serves them (relations).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import orjson

from twin.errors import NotFound, TwinError
from twin.objects import GeometrySummary, TwinObject

__all__ = [
    "KINDS",
    "Impact",
    "Network",
    "PathResult",
    "asset_id",
    "components_after",
    "criticality",
    "downstream",
    "failure_impact",
    "link_buildings",
    "neighbours",
    "network_from_json",
    "network_to_json",
    "shortest_path",
    "upstream",
]

KINDS = ("water", "power", "road", "pipeline", "heat", "gas", "sewer")
XYZ = tuple[float, float, float]
ToWgs84 = Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]
"""Maps an (n, 3) array in the network CRS to (lon, lat, h)."""

# Object types by network kind, so a water pipe and a road are told apart in every layer.
_TYPE_PREFIX = {
    "water": "Water",
    "power": "Power",
    "road": "Road",
    "pipeline": "Pipeline",
    "heat": "Heat",
    "gas": "Gas",
    "sewer": "Sewer",
}


def asset_id(network: str, local: str) -> str:
    """The twin id of a network asset: ``net:<network>:<local>``."""
    return f"net:{network}:{local}"


@dataclass
class Network:
    """One infrastructure network: a graph whose nodes and edges are twin objects."""

    id: str
    kind: str
    graph: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph)
    crs: str | None = None
    directed: bool = False
    sources: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    _edges: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    _adj: dict[str, list[tuple[str, str]]] | None = field(default=None, repr=False)
    _supplied_all: set[str] | None = field(default=None, repr=False)

    def _touch(self) -> None:
        self._adj = None
        self._supplied_all = None

    def adjacency(self) -> dict[str, list[tuple[str, str]]]:
        """node -> [(next node, edge id)] along which supply flows (both ways when
        undirected); built once and reused by every impact query."""
        if self._adj is None:
            adj: dict[str, list[tuple[str, str]]] = {n: [] for n in self.graph.nodes}
            for eid, (u, v) in self._edges.items():
                adj[u].append((v, eid))
                if not self.directed:
                    adj[v].append((u, eid))
            self._adj = adj
        return self._adj

    # -- building -----------------------------------------------------------------
    def add_node(
        self,
        local: str,
        type: str,
        xyz: Sequence[float],
        attributes: dict[str, Any] | None = None,
        *,
        source: bool = False,
    ) -> str:
        """Add a node by local id; return its twin id."""
        nid = asset_id(self.id, local)
        self.graph.add_node(
            nid,
            type=type,
            xyz=(float(xyz[0]), float(xyz[1]), float(xyz[2]) if len(xyz) > 2 else 0.0),
            attributes=dict(attributes or {}),
        )
        if source:
            self.sources.add(nid)
        self._touch()
        return nid

    def add_edge(
        self,
        local: str,
        u: str,
        v: str,
        type: str,
        attributes: dict[str, Any] | None = None,
        coords: Sequence[Sequence[float]] | None = None,
    ) -> str:
        """Add an edge between two existing node twin ids; return its twin id.

        ``coords`` is the polyline incl. both ends; default: the straight segment.

        Raises:
            TwinError: an end node is missing or the edge id is taken.
        """
        eid = asset_id(self.id, local)
        for end in (u, v):
            if end not in self.graph:
                raise TwinError(f"edge {eid}: end node {end} does not exist")
        if eid in self._edges or eid in self.graph:
            raise TwinError(f"edge {eid}: id already used")
        if coords is None:
            pts = [self.graph.nodes[u]["xyz"], self.graph.nodes[v]["xyz"]]
        else:
            pts = [(float(c[0]), float(c[1]), float(c[2]) if len(c) > 2 else 0.0) for c in coords]
        attrs = dict(attributes or {})
        if "length" not in attrs:
            attrs["length"] = polyline_length(pts)
        self.graph.add_edge(u, v, key=eid, type=type, coords=pts, attributes=attrs)
        self._edges[eid] = (u, v)
        self._touch()
        return eid

    # -- lookup -------------------------------------------------------------------
    def __contains__(self, asset: object) -> bool:
        return asset in self._edges or asset in self.graph

    def is_edge(self, asset: str) -> bool:
        """True if the id names an edge (pipe, line, road segment)."""
        return asset in self._edges

    def edge(self, asset: str) -> tuple[str, str, dict[str, Any]]:
        """``(u, v, data)`` of an edge by twin id.

        Raises:
            NotFound: no such edge.
        """
        try:
            u, v = self._edges[asset]
        except KeyError:
            raise NotFound(f"no edge {asset!r} in network {self.id!r}") from None
        data: dict[str, Any] = self.graph.edges[u, v, asset]
        return u, v, data

    def node(self, asset: str) -> dict[str, Any]:
        """A node's data by twin id.

        Raises:
            NotFound: no such node.
        """
        if asset not in self.graph:
            raise NotFound(f"no node {asset!r} in network {self.id!r}")
        data: dict[str, Any] = self.graph.nodes[asset]
        return data

    def assets(self) -> Iterator[str]:
        """Every node then every edge id."""
        yield from self.graph.nodes
        yield from self._edges

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return int(self.graph.number_of_nodes())

    @property
    def n_edges(self) -> int:
        """Number of edges."""
        return len(self._edges)

    def bbox(self) -> tuple[float, float, float, float, float, float] | None:
        """(minx, miny, minz, maxx, maxy, maxz) over nodes and edge vertices."""
        pts = self.points()
        if pts.size == 0:
            return None
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        return (
            float(lo[0]),
            float(lo[1]),
            float(lo[2]),
            float(hi[0]),
            float(hi[1]),
            float(hi[2]),
        )

    def points(self) -> np.ndarray[Any, Any]:
        """All node positions and edge vertices as an (n, 3) float array."""
        pts: list[Sequence[float]] = [d["xyz"] for _, d in self.graph.nodes(data=True)]
        for _, _, d in self.graph.edges(data=True):
            pts.extend(d["coords"])
        return np.asarray(pts, dtype=np.float64).reshape(-1, 3)

    def undirected(self) -> nx.MultiGraph:
        """The graph as an undirected view (for connectivity on undirected networks)."""
        return self.graph.to_undirected(as_view=True)

    def object_type(self, asset_type: str) -> str:
        """The twin object type of an asset type (``Pipe`` in water -> ``WaterPipe``)."""
        prefix = _TYPE_PREFIX.get(self.kind, self.kind.title())
        return asset_type if asset_type.startswith(prefix) else prefix + asset_type

    # -- twin objects -------------------------------------------------------------
    def to_objects(self, to_wgs84: ToWgs84 | None = None) -> list[TwinObject]:
        """Every node and edge as a twin object (geometry summary from coordinates)."""
        out: list[TwinObject] = []
        common = {"network": self.id, "kind": self.kind}
        for nid, d in self.graph.nodes(data=True):
            pts = np.asarray([d["xyz"]], dtype=np.float64)
            extra: dict[str, Any] = {**common, "role": "node"}
            if nid in self.sources:
                extra["source"] = True
            out.append(
                TwinObject(
                    id=nid,
                    type=self.object_type(d["type"]),
                    attributes=dict(d["attributes"]),
                    geometry=_summary(pts, "Point", 0.0, to_wgs84),
                    extra=extra,
                )
            )
        for u, v, eid, d in self.graph.edges(keys=True, data=True):
            pts = np.asarray(d["coords"], dtype=np.float64)
            attrs = d["attributes"]
            out.append(
                TwinObject(
                    id=eid,
                    type=self.object_type(d["type"]),
                    attributes=dict(attrs),
                    geometry=_summary(
                        pts,
                        "LineString",
                        float(attrs.get("diameter") or attrs.get("width") or 0.0),
                        to_wgs84,
                    ),
                    extra={**common, "role": "edge", "from": u, "to": v},
                )
            )
        return out


def polyline_length(pts: Sequence[Sequence[float]]) -> float:
    """Length of a polyline in CRS units."""
    a = np.asarray(pts, dtype=np.float64)
    if len(a) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(a, axis=0), axis=1).sum())


def _summary(
    pts: np.ndarray[Any, Any], gtype: str, height: float, to_wgs84: ToWgs84 | None
) -> GeometrySummary:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    bbox = (
        float(lo[0]),
        float(lo[1]),
        float(lo[2]),
        float(hi[0]),
        float(hi[1]),
        float(hi[2]),
    )
    c = pts.mean(axis=0)
    centroid = (float(c[0]), float(c[1]), float(c[2]))
    bw: tuple[float, float, float, float, float, float] | None = None
    cw: tuple[float, float, float] | None = None
    if to_wgs84 is not None:
        w = to_wgs84(np.vstack([lo, hi, c]))
        bw = (
            float(min(w[0, 0], w[1, 0])),
            float(min(w[0, 1], w[1, 1])),
            float(w[0, 2]),
            float(max(w[0, 0], w[1, 0])),
            float(max(w[0, 1], w[1, 1])),
            float(w[1, 2]),
        )
        cw = (float(w[2, 0]), float(w[2, 1]), float(w[2, 2]))
    return GeometrySummary(
        lod=None,
        geometry_types=(gtype,),
        bbox=bbox,
        centroid=centroid,
        height=height,
        footprint_area=0.0,
        bbox_wgs84=bw,
        centroid_wgs84=cw,
    )


# -- persistence ------------------------------------------------------------------
def network_to_json(net: Network) -> bytes:
    """Serialize a network (the stored source document of its scene and queries)."""
    doc = {
        "type": "CityTwinNetwork",
        "version": 1,
        "id": net.id,
        "kind": net.kind,
        "crs": net.crs,
        "directed": net.directed,
        "sources": sorted(net.sources),
        "links": net.links,
        "attributes": net.attributes,
        "nodes": [
            {"id": n, "type": d["type"], "xyz": list(d["xyz"]), "attributes": d["attributes"]}
            for n, d in net.graph.nodes(data=True)
        ],
        "edges": [
            {
                "id": k,
                "from": u,
                "to": v,
                "type": d["type"],
                "coords": [list(p) for p in d["coords"]],
                "attributes": d["attributes"],
            }
            for u, v, k, d in net.graph.edges(keys=True, data=True)
        ],
    }
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def network_from_json(data: bytes | str) -> Network:
    """Inverse of :func:`network_to_json`.

    Raises:
        TwinError: not a CityTwin network document.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise TwinError(f"network document is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") != "CityTwinNetwork":
        raise TwinError("not a CityTwinNetwork document")
    net = Network(
        id=doc["id"],
        kind=doc["kind"],
        crs=doc.get("crs"),
        directed=bool(doc.get("directed")),
        sources=set(doc.get("sources") or ()),
        links=dict(doc.get("links") or {}),
        attributes=dict(doc.get("attributes") or {}),
    )
    g = net.graph
    for n in doc["nodes"]:
        g.add_node(n["id"], type=n["type"], xyz=tuple(n["xyz"]), attributes=n["attributes"])
    for e in doc["edges"]:
        g.add_edge(
            e["from"],
            e["to"],
            key=e["id"],
            type=e["type"],
            coords=[tuple(p) for p in e["coords"]],
            attributes=e["attributes"],
        )
        net._edges[e["id"]] = (e["from"], e["to"])
    return net


# -- queries ----------------------------------------------------------------------
def _check(net: Network, asset: str) -> None:
    if asset not in net:
        raise NotFound(f"no asset {asset!r} in network {net.id!r}")


def neighbours(net: Network, asset: str) -> dict[str, list[str]]:
    """Adjacent assets: for a node its edges and the nodes across them; for an edge its ends.

    Raises:
        NotFound: unknown asset.
    """
    _check(net, asset)
    if net.is_edge(asset):
        u, v, _ = net.edge(asset)
        return {"nodes": [u, v], "edges": []}
    nodes: list[str] = []
    edges: list[str] = []
    for _u, v, k in net.graph.out_edges(asset, keys=True):
        edges.append(k)
        nodes.append(v)
    for u, _v, k in net.graph.in_edges(asset, keys=True):
        edges.append(k)
        nodes.append(u)
    return {"nodes": sorted(set(nodes) - {asset}), "edges": sorted(set(edges))}


@dataclass(frozen=True)
class PathResult:
    """A path through a network: node ids, the edge ids between them, total length."""

    nodes: list[str]
    edges: list[str]
    length: float


def shortest_path(net: Network, start: str, end: str, *, weight: str = "length") -> PathResult:
    """Shortest path between two nodes by edge attribute ``weight`` (default length).

    Raises:
        NotFound: unknown node, or no path.
    """
    for n in (start, end):
        if n not in net.graph:
            raise NotFound(f"no node {n!r} in network {net.id!r}")
    g = net.graph if net.directed else net.undirected()

    def w(u: str, v: str, d: dict[str, dict[str, Any]]) -> float:
        return min(float(e["attributes"].get(weight, 1.0) or 0.0) for e in d.values())

    try:
        nodes: list[str] = nx.shortest_path(g, start, end, weight=w)
    except nx.NetworkXNoPath:
        raise NotFound(f"no path from {start!r} to {end!r} in network {net.id!r}") from None
    edges: list[str] = []
    total = 0.0
    for a, b in itertools.pairwise(nodes):
        best: tuple[float, str] | None = None
        for k, d in g.get_edge_data(a, b).items():
            cand = (float(d["attributes"].get(weight, 1.0) or 0.0), k)
            best = cand if best is None or cand < best else best
        assert best is not None
        total += best[0]
        edges.append(best[1])
    return PathResult(nodes, edges, total)


def _node_of(net: Network, asset: str) -> str:
    _check(net, asset)
    return net.edge(asset)[1] if net.is_edge(asset) else asset


def downstream(net: Network, asset: str) -> set[str]:
    """Nodes reachable from an asset along edge direction (directed networks).

    On an undirected network this is the asset's connected component.
    """
    node = _node_of(net, asset)
    if net.directed:
        return set(nx.descendants(net.graph, node)) | {node}
    return set(nx.node_connected_component(net.undirected(), node))


def upstream(net: Network, asset: str) -> set[str]:
    """Nodes from which an asset is reachable along edge direction (directed networks)."""
    _check(net, asset)
    node = net.edge(asset)[0] if net.is_edge(asset) else asset
    if net.directed:
        return set(nx.ancestors(net.graph, node)) | {node}
    return set(nx.node_connected_component(net.undirected(), node))


def _without(net: Network, removed: Iterable[str]) -> nx.MultiDiGraph:
    gone = set(removed)
    for a in gone:
        _check(net, a)
    g = net.graph.copy()
    g.remove_edges_from([(*net._edges[a], a) for a in gone if a in net._edges])
    g.remove_nodes_from([a for a in gone if a in g])
    return g


def components_after(net: Network, removed: Iterable[str] = ()) -> list[set[str]]:
    """Connected components (as node sets, largest first) after removing assets.

    Raises:
        NotFound: an unknown asset id.
    """
    g = _without(net, removed)
    comps = (
        nx.weakly_connected_components(g)
        if net.directed
        else nx.connected_components(g.to_undirected(as_view=True))
    )
    return sorted((set(c) for c in comps), key=len, reverse=True)


@dataclass(frozen=True)
class Impact:
    """What a set of failed assets cuts off from every source."""

    failed: list[str]
    nodes: list[str]
    edges: list[str]
    buildings: list[str]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "failed": self.failed,
            "nodes": self.nodes,
            "edges": self.edges,
            "buildings": self.buildings,
            "counts": {
                "nodes": len(self.nodes),
                "edges": len(self.edges),
                "buildings": len(self.buildings),
            },
        }


def _supplied(net: Network, failed: set[str]) -> set[str]:
    """Nodes reachable from a working source without passing a failed node or edge."""
    adj = net.adjacency()
    seen = {s for s in net.sources if s in adj and s not in failed}
    stack = list(seen)
    while stack:
        n = stack.pop()
        for m, eid in adj[n]:
            if m not in seen and eid not in failed and m not in failed:
                seen.add(m)
                stack.append(m)
    return seen


def failure_impact(net: Network, failed: Iterable[str]) -> Impact:
    """Network objects and buildings cut off from every source when ``failed`` fail.

    A node is cut off when no path (along edge direction on a directed network) joins it
    to a source; an edge when both ends are cut off; a building when the node serving it
    is cut off or failed. Failed assets are listed apart, not as affected.

    Raises:
        NotFound: an unknown asset id.
        TwinError: the network has no source to measure from.
    """
    failed_s = set(failed)
    for a in failed_s:
        _check(net, a)
    failed_l = sorted(failed_s)
    if not net.sources:
        raise TwinError(f"network {net.id!r} has no source (reservoir, tank, substation)")
    # A plain BFS over a cached adjacency list: no graph copy per query.
    if net._supplied_all is None:
        net._supplied_all = _supplied(net, set())
    after = _supplied(net, failed_s)
    lost_set = (net._supplied_all - after) | failed_s
    cut_nodes = sorted(n for n in lost_set - failed_s if n in net.graph)
    cut_edges = sorted(
        k
        for k, (u, v) in net._edges.items()
        if k not in failed_s and u in lost_set and v in lost_set
    )
    buildings = sorted(b for b, n in net.links.items() if n in lost_set)
    return Impact(failed_l, cut_nodes, cut_edges, buildings)


def criticality(
    net: Network, *, method: str = "buildings", top: int = 20
) -> list[tuple[str, float]]:
    """Rank edges by how much their single failure matters.

    ``method="buildings"``: buildings (then nodes) cut off if the edge fails, computed for
    every edge at once from the bridge tree of the network (linear time; only bridges cut
    anything off). ``method="betweenness"``: edge betweenness centrality.

    Raises:
        TwinError: unknown method, or ``buildings`` on a network without sources.
    """
    if method == "betweenness":
        und = nx.Graph(net.undirected())
        k = min(len(und), 500) if len(und) > 500 else None
        bc = nx.edge_betweenness_centrality(und, k=k, seed=0, weight=None)
        scores: dict[str, float] = {}
        for (a, b), s in bc.items():
            for key in net.graph.get_edge_data(a, b, default={}) or {}:
                scores[key] = s
            for key in net.graph.get_edge_data(b, a, default={}) or {}:
                scores[key] = s
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked[:top]
    if method != "buildings":
        raise TwinError(f"unknown criticality method {method!r} (buildings, betweenness)")
    if not net.sources:
        raise TwinError(f"network {net.id!r} has no source (reservoir, tank, substation)")
    return _bridge_scores(net)[:top]


def _bridge_scores(net: Network) -> list[tuple[str, float]]:
    # Score = buildings cut off + nodes cut off / (n_nodes + 1): buildings rank first and
    # nodes break ties, with the integer part the building count.
    served: dict[str, int] = {}
    for n in net.links.values():
        served[n] = served.get(n, 0) + 1
    node_share = 1.0 / (net.n_nodes + 1)
    und = nx.Graph()
    und.add_nodes_from(net.graph.nodes)
    multi: dict[tuple[str, str], list[str]] = {}
    for k, (u, v) in net._edges.items():
        if u == v:
            continue
        pair = (u, v) if u <= v else (v, u)
        multi.setdefault(pair, []).append(k)
        und.add_edge(*pair)
    # A bridge doubled by a parallel edge is no bridge: nx.Graph merged the parallels.
    bridges = set()
    for a, b in nx.bridges(und):
        pair = (a, b) if a <= b else (b, a)
        if len(multi[pair]) == 1:
            bridges.add(pair)
    # Contract 2-edge-connected parts; the bridges form a forest over them.
    body = und.copy()
    body.remove_edges_from(bridges)
    comp_of: dict[str, int] = {}
    comp_w: list[float] = []
    comp_src: list[int] = []
    for i, comp in enumerate(nx.connected_components(body)):
        w = 0.0
        s = 0
        for n in comp:
            comp_of[n] = i
            w += served.get(n, 0) + node_share
            s += n in net.sources
        comp_w.append(w)
        comp_src.append(s)
    tree = nx.Graph()
    tree.add_nodes_from(range(len(comp_w)))
    for a, b in bridges:
        tree.add_edge(comp_of[a], comp_of[b], pair=(a, b))
    scores: dict[str, float] = {}
    for root_set in nx.connected_components(tree):
        root = next(iter(root_set))
        order = list(nx.dfs_preorder_nodes(tree, root))
        parent = {root: -1}
        for n in order:
            for m in tree[n]:
                if m not in parent:
                    parent[m] = n
        sub_w = {n: comp_w[n] for n in order}
        sub_s = {n: comp_src[n] for n in order}
        for n in reversed(order):
            p = parent[n]
            if p >= 0:
                sub_w[p] += sub_w[n]
                sub_s[p] += sub_s[n]
        total_w, total_s = sub_w[root], sub_s[root]
        for n in order:
            p = parent[n]
            if p < 0:
                continue
            if total_s and sub_s[n] == 0:
                cut = sub_w[n]
            elif total_s and total_s == sub_s[n]:
                cut = total_w - sub_w[n]
            else:
                cut = 0.0
            scores[multi[tree.edges[p, n]["pair"]][0]] = round(cut, 9)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def link_buildings(
    net: Network,
    buildings: Iterable[tuple[str, float, float]],
    *,
    max_distance: float = 100.0,
    explicit: dict[str, str] | None = None,
) -> dict[str, str]:
    """Link each building to the network node that serves it; store and return the links.

    Args:
        net: the network (its ``links`` are updated).
        buildings: ``(building id, x, y)`` in the network CRS.
        max_distance: nearest node farther than this -> no link.
        explicit: building id -> node id (e.g. from a ``served_by`` attribute); wins over
            the nearest node when the node exists.

    Returns:
        The new links (building id -> node twin id).
    """
    ids: list[str] = []
    xy: list[tuple[float, float]] = []
    for bid, x, y in buildings:
        ids.append(bid)
        xy.append((x, y))
    nodes = [n for n, d in net.graph.nodes(data=True) if n not in net.sources]
    links: dict[str, str] = {}
    if ids and nodes:
        npos = np.asarray([net.graph.nodes[n]["xyz"][:2] for n in nodes], dtype=np.float64)
        bpos = np.asarray(xy, dtype=np.float64)
        # Chunked brute force: fine for 1e5 buildings x 1e4 nodes, no scipy needed.
        step = max(1, 2_000_000 // max(1, len(nodes)))
        for i in range(0, len(ids), step):
            d2 = ((bpos[i : i + step, None, :] - npos[None, :, :]) ** 2).sum(axis=2)
            j = d2.argmin(axis=1)
            best = d2[np.arange(len(j)), j]
            for k in np.flatnonzero(best <= max_distance * max_distance):
                links[ids[i + int(k)]] = nodes[int(j[k])]
    for bid, nid in (explicit or {}).items():
        if nid in net.graph:
            links[bid] = nid
    net.links.update(links)
    return links

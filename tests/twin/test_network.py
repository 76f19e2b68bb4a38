"""Graph queries of twin.network on hand-made and real networks, checked independently."""

from __future__ import annotations

import random
from pathlib import Path

import networkx as nx
import pytest

from ingest.networks.epanet import read_epanet
from twin.errors import NotFound, TwinError
from twin.network import (
    Network,
    components_after,
    criticality,
    downstream,
    failure_impact,
    link_buildings,
    neighbours,
    network_from_json,
    network_to_json,
    shortest_path,
    upstream,
)

DEMO = Path(__file__).resolve().parents[2] / "viewer" / "demo"


def _ring(directed: bool = False) -> Network:
    """R1 -> J1 -> {J2 -> J3 -> J1 loop}, J2 -> J4 (a spur)."""
    n = Network("w", "water", directed=directed)
    r = n.add_node("R1", "Reservoir", (0, 0, 0), source=True)
    a = n.add_node("J1", "Junction", (10, 0, 0))
    b = n.add_node("J2", "Junction", (20, 0, 0))
    c = n.add_node("J3", "Junction", (20, 10, 0))
    d = n.add_node("J4", "Junction", (30, 0, 0))
    n.add_edge("P1", r, a, "Pipe", {"diameter": 0.3})
    n.add_edge("P2", a, b, "Pipe")
    n.add_edge("P3", b, c, "Pipe")
    n.add_edge("P4", c, a, "Pipe")
    n.add_edge("P5", b, d, "Pipe")
    n.links = {"B1": d, "B2": c}
    return n


def test_neighbours_path_and_lengths() -> None:
    n = _ring()
    assert neighbours(n, "net:w:J2") == {
        "nodes": ["net:w:J1", "net:w:J3", "net:w:J4"],
        "edges": ["net:w:P2", "net:w:P3", "net:w:P5"],
    }
    assert neighbours(n, "net:w:P5") == {"nodes": ["net:w:J2", "net:w:J4"], "edges": []}
    p = shortest_path(n, "net:w:R1", "net:w:J4")
    assert p.edges == ["net:w:P1", "net:w:P2", "net:w:P5"] and p.length == pytest.approx(30.0)
    with pytest.raises(NotFound):
        shortest_path(n, "net:w:R1", "nope")
    with pytest.raises(NotFound):
        neighbours(n, "net:w:X")


def test_failure_impact_by_hand() -> None:
    n = _ring()
    imp = failure_impact(n, ["net:w:P1"])
    assert imp.nodes == ["net:w:J1", "net:w:J2", "net:w:J3", "net:w:J4"]
    assert imp.buildings == ["B1", "B2"]
    assert failure_impact(n, ["net:w:P3"]).nodes == []  # the loop holds
    imp = failure_impact(n, ["net:w:J2"])  # a failed node cuts its spur
    assert imp.nodes == ["net:w:J4"] and imp.buildings == ["B1"]
    assert imp.edges == ["net:w:P5"]  # between the failed J2 and the cut J4: dry
    with pytest.raises(TwinError, match="no source"):
        failure_impact(Network("x", "water"), [])


def test_directed_upstream_downstream_and_impact() -> None:
    n = _ring(directed=True)
    assert downstream(n, "net:w:J2") == {"net:w:J2", "net:w:J3", "net:w:J4", "net:w:J1"}
    assert upstream(n, "net:w:J4") == {"net:w:J4", "net:w:J2", "net:w:J1", "net:w:R1", "net:w:J3"}
    # Directed: J3 -> J1 runs against supply, so cutting P2 leaves J2.. unsupplied.
    assert failure_impact(n, ["net:w:P2"]).nodes == ["net:w:J2", "net:w:J3", "net:w:J4"]
    assert failure_impact(_ring(), ["net:w:P2"]).nodes == []


def test_components_after_removal() -> None:
    n = _ring()
    comps = components_after(n, ["net:w:P1", "net:w:P5"])
    assert [len(c) for c in comps] == [3, 1, 1]


def _net3_with_buildings() -> Network:
    net = read_epanet(DEMO / "net3.inp")
    rng = random.Random(3)
    pts = net.points()
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    buildings = [
        (f"b{i}", rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])) for i in range(400)
    ]
    link_buildings(net, buildings, max_distance=float("inf"))
    return net


def test_impact_equals_networkx_components_on_a_real_network() -> None:
    net = _net3_with_buildings()
    und = nx.MultiGraph(net.undirected())
    rng = random.Random(1)
    for _ in range(60):
        failed = rng.sample(sorted(net._edges), rng.choice([1, 2, 5]))
        g = und.copy()
        g.remove_edges_from([(*net._edges[f], f) for f in failed])
        cut = set()
        for comp in nx.connected_components(g):
            if not comp & net.sources:
                cut |= comp
        imp = failure_impact(net, failed)
        assert set(imp.nodes) == cut
        assert set(imp.buildings) == {b for b, node in net.links.items() if node in cut}


def test_criticality_equals_one_impact_query_per_edge() -> None:
    net = _net3_with_buildings()
    ranked = dict(criticality(net, top=10_000))
    for e in net._edges:
        imp = failure_impact(net, [e])
        score = ranked.get(e, 0.0)
        assert int(score) == len(imp.buildings), e
        assert round((score - int(score)) * (net.n_nodes + 1)) == len(imp.nodes), e
    top = criticality(net, top=3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]
    assert len(criticality(net, method="betweenness", top=5)) == 5
    with pytest.raises(TwinError, match="unknown criticality"):
        criticality(net, method="magic")


def test_link_buildings_nearest_within_distance_and_explicit() -> None:
    n = _ring()
    n.links = {}
    got = link_buildings(
        n,
        [("near", 19.0, 9.0), ("far", 500.0, 500.0), ("ex", 0.0, 0.0)],
        max_distance=5.0,
        explicit={"ex": "net:w:J4", "bad": "net:w:nope"},
    )
    # Sources are not service points: "ex" sits on the reservoir but is linked explicitly.
    assert got == {"near": "net:w:J3", "ex": "net:w:J4"}
    assert n.links == got


def test_json_round_trip_keeps_everything() -> None:
    net = _net3_with_buildings()
    back = network_from_json(network_to_json(net))
    assert (back.id, back.kind, back.crs, back.directed) == (net.id, net.kind, net.crs, False)
    assert back.sources == net.sources and back.links == net.links
    assert dict(back.graph.nodes(data=True)) == {
        k: {**d, "xyz": tuple(d["xyz"])} for k, d in net.graph.nodes(data=True)
    }
    assert sorted(back._edges) == sorted(net._edges)
    assert failure_impact(back, ["net:water:P-101"]) == failure_impact(net, ["net:water:P-101"])
    objs = back.to_objects()
    assert len(objs) == net.n_nodes + net.n_edges
    pipe = next(o for o in objs if o.id == "net:water:P-101")
    assert pipe.type == "WaterPipe" and pipe.extra["role"] == "edge"
    with pytest.raises(TwinError):
        network_from_json(b"{}")
    with pytest.raises(TwinError):
        network_from_json(b"not json")


def test_add_edge_checks_ends_and_ids() -> None:
    n = _ring()
    with pytest.raises(TwinError, match="does not exist"):
        n.add_edge("P9", "net:w:J1", "net:w:nope", "Pipe")
    with pytest.raises(TwinError, match="already used"):
        n.add_edge("P1", "net:w:J1", "net:w:J2", "Pipe")

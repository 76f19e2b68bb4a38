"""Network benchmark: reading, failure impact, criticality and meshing on real networks.

Inputs (real files in ../shared/data/networks): EPANET Net6 (3,356 nodes, 3,892 links) and
ky4, pandapower lv_schutterwald (2,940 buses), the Helsinki OpenStreetMap extract.

Peers, in the same run:

* reading: WNTR 1.5 (``wntr.network.WaterNetworkModel``) against ``read_epanet``;
* failure impact: the usual WNTR recipe (``wn.to_graph().to_undirected()``, remove the
  failed links, ``networkx.connected_components``, keep components holding a reservoir or
  tank) against ``twin.network.failure_impact``; both must cut off the same junctions;
* criticality of every link: one (fast) impact query per link, the way one would rank with
  the recipe above, against ``twin.network.criticality`` (bridge tree, all links at once);
  both must give every link the same number of cut-off nodes.

Target (issue 4): Net6 impact query < 100 ms.

Run: ``.venv/bin/python bench/networks.py`` (``--samples N``, ``--no-results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import find_shared_data  # noqa: E402

from bench.common import write_section  # noqa: E402
from ingest.networks.epanet import read_epanet  # noqa: E402
from scene.network import network_mesh  # noqa: E402
from twin.network import Network, criticality, failure_impact  # noqa: E402


def log(msg: str) -> None:
    print(f"[networks] {msg}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    best = float("inf")
    out: Any = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def pct(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(0.95 * len(s)))]


def wntr_impact(
    graph: nx.MultiGraph, sources: set[str], failed_links: list[tuple[Any, ...]]
) -> set[str]:
    """The WNTR recipe: remove links, keep components that hold a source; return cut nodes."""
    g = graph.copy()
    g.remove_edges_from(failed_links)
    cut: set[str] = set()
    for comp in nx.connected_components(g):
        if not comp & sources:
            cut |= comp
    return cut


def bench_epanet(name: str, path: Path, samples: int, rows: list[list[str]]) -> None:
    import wntr

    log(f"{name}: reading")
    t_ours, net = timed(lambda: read_epanet(path))
    t_wntr, wn = timed(lambda: wntr.network.WaterNetworkModel(str(path)), repeat=1)
    rows.append(
        [
            f"read {name} ({net.n_nodes:,} nodes, {net.n_edges:,} links)",
            ms(t_ours),
            ms(t_wntr),
            f"{t_wntr / t_ours:.1f}x",
            "same counts"
            if (net.n_nodes, net.n_edges) == (wn.num_nodes, wn.num_links)
            else "DIFFERENT",
        ]
    )
    graph = wn.to_graph().to_undirected()
    wsources = set(wn.reservoir_name_list) | set(wn.tank_name_list)
    links = {
        lk: (wn.get_link(lk).start_node_name, wn.get_link(lk).end_node_name, lk)
        for lk in wn.link_name_list
    }
    rng = random.Random(7)
    names = sorted(links)
    ours_t: list[float] = []
    peer_t: list[float] = []
    agree = 0
    for k in range(samples):
        failed = rng.sample(names, 1 if k % 2 == 0 else 5)
        ids = [
            next(e for e in net._edges if net.edge(e)[2]["attributes"]["epanet_id"] == f)
            for f in failed
        ]
        t = time.perf_counter()
        imp = failure_impact(net, ids)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        cut = wntr_impact(graph, wsources, [links[f] for f in failed])
        peer_t.append(time.perf_counter() - t)
        ours_cut = {net.node(n)["attributes"]["epanet_id"] for n in imp.nodes}
        agree += ours_cut == cut
    (o50, o95), (p50, p95) = pct(ours_t), pct(peer_t)
    rows.append(
        [
            f"impact {name}, 1 or 5 failed links ({samples} queries)",
            f"{ms(o50)} / {ms(o95)}",
            f"{ms(p50)} / {ms(p95)}",
            f"{p50 / o50:.1f}x",
            f"{agree}/{samples} same cut-off nodes",
        ]
    )
    # Criticality of every link: all at once vs one impact query per link.
    t_crit, ranked = timed(lambda: criticality(net, top=10**9), repeat=1)
    scores = dict(ranked)
    t0 = time.perf_counter()
    naive = {e: len(failure_impact(net, [e]).nodes) for e in net._edges}
    t_naive = time.perf_counter() - t0
    same = sum(round(scores.get(e, 0.0) * (net.n_nodes + 1)) == naive[e] for e in naive)
    rows.append(
        [
            f"criticality of all {net.n_edges:,} links, {name}",
            ms(t_crit),
            f"{ms(t_naive)} (our impact query per link)",
            f"{t_naive / t_crit:.0f}x",
            f"{same}/{len(naive)} same cut-off counts",
        ]
    )
    t_mesh, mesh = timed(lambda: network_mesh(net, np.asarray(net.points().mean(axis=0))))
    rows.append(
        [f"mesh {name} (tubes + nodes, {mesh.triangles:,} triangles)", ms(t_mesh), "", "", ""]
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f} ms"


def bench_other(data: Path, rows: list[list[str]]) -> None:
    from ingest.networks.pandapower import read_pandapower

    path = data / "networks/pandapower/lv_schutterwald.json"
    t, net = timed(lambda: read_pandapower(path))
    rows.append(
        [f"read lv_schutterwald ({net.n_nodes:,} nodes, {net.n_edges:,} edges)", ms(t), "", "", ""]
    )
    trafos = [e for e in net._edges if net.edge(e)[2]["type"] == "Transformer"]
    tt = [timed(lambda e=e: failure_impact(net, [e]), repeat=3)[0] for e in trafos[:20]]
    rows.append(
        [
            f"impact lv_schutterwald, one transformer ({len(tt)} queries)",
            f"{ms(pct(tt)[0])} / {ms(pct(tt)[1])}",
            "",
            "",
            "",
        ]
    )
    try:
        from ingest.networks.osm import read_osm_networks
    except ImportError:  # pragma: no cover
        return
    pbf = data / "networks/osm/helsinki_center.osm.pbf"
    t, nets = timed(lambda: read_osm_networks(pbf), repeat=1)
    road: Network = next(n for n in nets if n.kind == "road")
    rows.append([f"read helsinki_center.osm.pbf ({len(nets)} networks)", ms(t), "", "", ""])
    t, mesh = timed(lambda: network_mesh(road, np.asarray(road.points().mean(axis=0))))
    rows.append([f"mesh Helsinki roads (ribbons, {mesh.triangles:,} triangles)", ms(t), "", "", ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    data = find_shared_data()
    if data is None:
        print("../shared/data not found", file=sys.stderr)
        return 2
    rows: list[list[str]] = []
    net6_impact_p95 = 0.0
    for name in ("Net6", "ky4"):
        bench_epanet(name, data / f"networks/wntr/{name}.inp", args.samples, rows)
        if name == "Net6":
            cell = rows[-3][1]
            net6_impact_p95 = float(cell.split(" / ")[1].split()[0].replace(",", ""))
    bench_other(data, rows)
    head = "| measurement | CityTwin | peer (WNTR 1.5 + networkx) | speed-up | check |"
    lines = [
        "## Networks (`bench/networks.py`)",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"Python {platform.python_version()}; times are best of 3 (reads, meshes) or "
        "median / p95 over the queries.",
        "",
        head,
        "|---|---|---|---|---|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| Net6 impact query < 100 ms | p95 {net6_impact_p95:,.2f} ms | "
        f"{'PASS' if net6_impact_p95 < 100 else 'FAIL'} |",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_results:
        write_section("networks", section)
        log("wrote bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The pandapower JSON reader against the real grids in shared/data and broken input.

Expected numbers come from SOURCES.md (bus/line counts) and, independently of the reader,
from the JSON itself: each table is decoded here with plain ``json``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.networks import detect_format, read_network
from ingest.networks.pandapower import read_pandapower, utm_epsg
from twin.errors import IngestError
from twin.network import Network, components_after, failure_impact, polyline_length

MV = "networks/pandapower/mv_oberrhein.json"
LV = "networks/pandapower/lv_schutterwald.json"
SB = "networks/simbench/simbench_1-MV-urban--0-sw.json"
# (file, buses, lines) as listed in shared/data/networks/SOURCES.md.
GRIDS = [(MV, 179, 181), (LV, 2940, 3000), (SB, 144, 147)]


def table(path: Path, name: str) -> dict[str, Any]:
    """One DataFrame of a pandapower file as {columns, index, data}, read with json only."""
    raw = json.loads(path.read_text())["_object"][name]
    payload = raw["_object"]
    frame: dict[str, Any] = json.loads(payload) if isinstance(payload, str) else payload
    return frame


def records(path: Path, name: str) -> dict[Any, dict[str, Any]]:
    t = table(path, name)
    return {
        i: dict(zip(t["columns"], row, strict=True))
        for i, row in zip(t["index"], t["data"], strict=True)
    }


_cache: dict[str, Network] = {}


def grid(shared_data: Path, rel: str) -> Network:
    if rel not in _cache:
        _cache[rel] = read_pandapower(shared_data / rel)
    return _cache[rel]


def of_type(net: Network, t: str) -> list[str]:
    return sorted(n for n, d in net.graph.nodes(data=True) if d["type"] == t)


def edges_of_type(net: Network, t: str) -> list[str]:
    return sorted(k for _, _, k, d in net.graph.edges(keys=True, data=True) if d["type"] == t)


def nid(local: str) -> str:
    return f"net:power:{local}"


# -- the real grids -----------------------------------------------------------------------


@pytest.mark.parametrize(("rel", "n_bus", "n_line"), GRIDS)
def test_counts_match_sources_and_tables(
    shared_data: Path, rel: str, n_bus: int, n_line: int
) -> None:
    path = shared_data / rel
    net = grid(shared_data, rel)
    buses = of_type(net, "Bus")
    lines = edges_of_type(net, "Line")
    assert len(buses) == n_bus == len(table(path, "bus")["index"])
    assert len(lines) == n_line == len(table(path, "line")["index"])
    assert buses == sorted(nid(f"bus-{i}") for i in table(path, "bus")["index"])
    assert lines == sorted(nid(f"line-{i}") for i in table(path, "line")["index"])
    trafo_idx = table(path, "trafo")["index"]
    assert edges_of_type(net, "Transformer") == sorted(nid(f"trafo-{i}") for i in trafo_idx)
    loads = table(path, "load")["index"]
    assert of_type(net, "Load") == sorted(nid(f"load-{i}") for i in loads)
    sgens = table(path, "sgen")["index"]
    assert of_type(net, "Generator") == sorted(nid(f"sgen-{i}") for i in sgens)
    ext = table(path, "ext_grid")["index"]
    assert of_type(net, "ExternalGrid") == sorted(nid(f"extgrid-{i}") for i in ext)
    # Each load, sgen and external grid hangs off its bus by one Connection edge.
    assert len(edges_of_type(net, "Connection")) >= len(loads) + len(sgens) + len(ext)
    assert net.kind == "power" and not net.directed
    # All three grids lie at 7.7-11.4 E, 48-54 N: UTM zone 32 north.
    assert net.crs == "EPSG:32632"
    assert all(d["xyz"][2] == 0.0 for _, d in net.graph.nodes(data=True))


@pytest.mark.parametrize("rel", [MV, LV, SB])
def test_elements_join_their_bus(shared_data: Path, rel: str) -> None:
    path = shared_data / rel
    net = grid(shared_data, rel)
    for name, prefix in (("load", "load"), ("sgen", "sgen"), ("ext_grid", "extgrid")):
        for i, row in records(path, name).items():
            element = nid(f"{prefix}-{i}")
            assert net.graph.has_edge(nid(f"bus-{row['bus']}"), element)
            assert net.node(element)["xyz"] == net.node(nid(f"bus-{row['bus']}"))["xyz"]
            assert (
                net.node(element)["attributes"]["p_mw" if name != "ext_grid" else "vm_pu"]
                == (row["p_mw" if name != "ext_grid" else "vm_pu"])
            )
            assert net.node(element)["attributes"]["name"] == row["name"]


@pytest.mark.parametrize("rel", [MV, LV, SB])
def test_sources_are_external_grids_and_their_buses(shared_data: Path, rel: str) -> None:
    ext = records(shared_data / rel, "ext_grid")
    expected = {nid(f"extgrid-{i}") for i in ext} | {nid(f"bus-{r['bus']}") for r in ext.values()}
    assert grid(shared_data, rel).sources == expected


@pytest.mark.parametrize("rel", [MV, LV, SB])
def test_line_and_bus_values(shared_data: Path, rel: str) -> None:
    path = shared_data / rel
    net = grid(shared_data, rel)
    lines = records(path, "line")
    for i in list(lines)[:: max(1, len(lines) // 25)]:
        row = lines[i]
        u, v, d = net.edge(nid(f"line-{i}"))
        a = d["attributes"]
        assert a["length"] == pytest.approx(row["length_km"] * 1000.0)
        assert a["std_type"] == row["std_type"]
        assert a["r_ohm_per_km"] == row["r_ohm_per_km"]
        assert a["max_i_ka"] == row["max_i_ka"]
        assert a["in_service"] is row["in_service"]
        assert a.get("underground") is (True if row["type"] == "cs" else None)
        ends = {u, v}
        # An open switch stands between a line end and its bus.
        for sw in a.get("switches", []):
            if sw["closed"] is False:
                assert nid(sw["switch"]) in ends
        for bus in (row["from_bus"], row["to_bus"]):
            b = nid(f"bus-{bus}")
            assert b in ends or any(
                s["bus"] == b and s["closed"] is False for s in a.get("switches", [])
            )
    buses = records(path, "bus")
    for i in list(buses)[:: max(1, len(buses) // 25)]:
        attrs = net.node(nid(f"bus-{i}"))["attributes"]
        assert attrs["vn_kv"] == buses[i]["vn_kv"]
        assert attrs["name"] == buses[i]["name"]
    trafos = records(path, "trafo")
    for i, row in trafos.items():
        u, v, d = net.edge(nid(f"trafo-{i}"))
        assert (u, v) == (nid(f"bus-{row['hv_bus']}"), nid(f"bus-{row['lv_bus']}"))
        for key in ("sn_mva", "vn_hv_kv", "vn_lv_kv"):
            assert d["attributes"][key] == row[key]


def test_named_values_of_mv_oberrhein(shared_data: Path) -> None:
    net = grid(shared_data, MV)
    line0 = net.edge(nid("line-0"))[2]["attributes"]
    assert line0["length"] == pytest.approx(586.3662)
    assert line0["std_type"] == "NA2XS2Y 1x185 RM/25 12/20 kV"
    assert net.node(nid("bus-0"))["attributes"]["vn_kv"] == 20.0
    trafo = net.edge(nid("trafo-114"))[2]["attributes"]
    assert trafo["sn_mva"] == 25.0 and trafo["vn_hv_kv"] == 110.0 and trafo["vn_lv_kv"] == 20.0


@pytest.mark.parametrize("rel", [MV, LV])
def test_line_geometry_lengths_are_plausible(shared_data: Path, rel: str) -> None:
    net = grid(shared_data, rel)
    ratios = []
    for _, _, d in net.graph.edges(data=True):
        if d["type"] == "Line" and d["attributes"]["length"] > 0:
            assert len(d["coords"]) >= 2
            ratios.append(polyline_length(d["coords"]) / d["attributes"]["length"])
    assert 0.5 <= statistics.median(ratios) <= 2.0


@pytest.mark.parametrize("rel", [MV, LV, SB])
def test_line_polylines_run_between_their_nodes(shared_data: Path, rel: str) -> None:
    net = grid(shared_data, rel)
    for u, v, d in net.graph.edges(data=True):
        assert tuple(d["coords"][0]) == net.node(u)["xyz"]
        assert tuple(d["coords"][-1]) == net.node(v)["xyz"]


def test_bus_positions_are_projected_lonlat(shared_data: Path) -> None:
    from pyproj import Transformer

    net = grid(shared_data, MV)
    row = records(shared_data / MV, "bus")[0]
    lon, lat = json.loads(row["geo"])["coordinates"]
    x, y = Transformer.from_crs(4326, 32632, always_xy=True).transform(lon, lat)
    assert net.node(nid("bus-0"))["xyz"] == pytest.approx((x, y, 0.0), abs=1e-6)


def test_simbench_has_straight_lines_and_bus_switches(shared_data: Path) -> None:
    net = grid(shared_data, SB)
    for k in edges_of_type(net, "Line"):
        assert len(net.edge(k)[2]["coords"]) == 2  # no line geodata in this file
    switches = records(shared_data / SB, "switch")
    bus_bus = {i: r for i, r in switches.items() if r["et"] == "b"}
    closed = {nid(f"switch-{i}") for i, r in bus_bus.items() if r["closed"]}
    assert set(edges_of_type(net, "Switch")) == closed
    opened = {nid(f"switch-{i}") for i, r in bus_bus.items() if not r["closed"]}
    assert opened <= set(of_type(net, "Switch"))
    for s in opened:
        assert net.node(s)["attributes"]["closed"] is False


def test_open_line_switches_split_mv_oberrhein(shared_data: Path) -> None:
    net = grid(shared_data, MV)
    switches = records(shared_data / MV, "switch")
    n_open = sum(1 for r in switches.values() if r["et"] == "l" and not r["closed"])
    assert len(of_type(net, "Switch")) == n_open == 6
    # The two 110/20 kV substations feed two separate radial grids.
    comps = components_after(net)
    assert len(comps) == 2
    for trafo in ("trafo-114", "trafo-142"):
        hv, lv, _ = net.edge(nid(trafo))
        assert any(hv in c and lv in c for c in comps)


# -- failure impact ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "failed", "lv_kv"),
    [(MV, ["trafo-114", "trafo-142"], 20.0), (SB, ["trafo-0", "trafo-1"], 10.0)],
)
def test_losing_the_substation_transformers_cuts_off_the_grid(
    shared_data: Path, rel: str, failed: list[str], lv_kv: float
) -> None:
    net = grid(shared_data, rel)
    impact = failure_impact(net, [nid(f) for f in failed])
    cut = {n for n in impact.nodes if net.node(n)["type"] == "Bus"}
    buses = records(shared_data / rel, "bus")
    expected = {nid(f"bus-{i}") for i, r in buses.items() if r["vn_kv"] == lv_kv}
    assert cut == expected
    loads = records(shared_data / rel, "load")
    lost_loads = {n for n in impact.nodes if net.node(n)["type"] == "Load"}
    assert lost_loads == {
        nid(f"load-{i}") for i, r in loads.items() if buses[r["bus"]]["vn_kv"] == lv_kv
    }


def test_one_lv_transformer_feeds_its_zone(shared_data: Path) -> None:
    net = grid(shared_data, LV)
    trafos = records(shared_data / LV, "trafo")
    buses = records(shared_data / LV, "bus")
    for i in list(trafos)[:3]:
        impact = failure_impact(net, [nid(f"trafo-{i}")])
        cut = {n for n in impact.nodes if net.node(n)["type"] == "Bus"}
        zone = {nid(f"bus-{b}") for b, r in buses.items() if r["zone"] == trafos[i]["name"]}
        # The zone of a transformer is its LV feeder plus its (still supplied) HV bus.
        assert cut == zone - {nid(f"bus-{trafos[i]['hv_bus']}")}
        assert len(cut) > 10


def independent_graph(path: Path) -> Any:
    """The operated bus graph from the raw tables (pandapower's respect_switches rule)."""
    import networkx as nx

    g = nx.MultiGraph()
    g.add_nodes_from(records(path, "bus"))
    open_ends = {
        (r["et"], r["element"], r["bus"])
        for r in records(path, "switch").values()
        if not r["closed"]
    }
    for i, r in records(path, "line").items():
        if ("l", i, r["from_bus"]) not in open_ends and ("l", i, r["to_bus"]) not in open_ends:
            g.add_edge(r["from_bus"], r["to_bus"], key=f"line-{i}")
    for i, r in records(path, "trafo").items():
        if ("t", i, r["hv_bus"]) not in open_ends and ("t", i, r["lv_bus"]) not in open_ends:
            g.add_edge(r["hv_bus"], r["lv_bus"], key=f"trafo-{i}")
    for r in records(path, "switch").values():
        if r["et"] == "b" and r["closed"]:
            g.add_edge(r["bus"], r["element"])
    return g


@pytest.mark.parametrize("rel", [MV, SB])
def test_failing_lines_matches_an_independent_graph(shared_data: Path, rel: str) -> None:
    import networkx as nx

    path = shared_data / rel
    net = grid(shared_data, rel)
    feeds = {r["bus"] for r in records(path, "ext_grid").values()}
    lines = list(records(path, "line"))
    checked = 0
    for i in lines[:: max(1, len(lines) // 30)]:
        g = independent_graph(path)
        if not any(k == f"line-{i}" for *_, k in g.edges(keys=True)):
            continue  # open at one end: carries nothing, cuts nothing
        before = set().union(*(nx.node_connected_component(g, b) for b in feeds))
        g.remove_edges_from([(u, v, k) for u, v, k in g.edges(keys=True) if k == f"line-{i}"])
        after = set().union(*(nx.node_connected_component(g, b) for b in feeds))
        expected = {nid(f"bus-{b}") for b in before - after}
        impact = failure_impact(net, [nid(f"line-{i}")])
        assert {n for n in impact.nodes if net.node(n)["type"] == "Bus"} == expected
        checked += 1
    assert checked >= 10


# -- registry --------------------------------------------------------------------------


def test_registry_reads_pandapower(shared_data: Path) -> None:
    path = shared_data / SB
    assert detect_format(path) == "pandapower"
    (net,) = read_network(path, network_id="grid")
    assert net.id == "grid"
    assert f"net:grid:bus-{table(path, 'bus')['index'][0]}" in net


# -- small hand-made files ---------------------------------------------------------------


def df(columns: list[str], rows: list[list[Any]], index: list[Any] | None = None) -> dict[str, Any]:
    payload = {
        "columns": columns,
        "index": index if index is not None else list(range(len(rows))),
        "data": rows,
    }
    return {
        "_module": "pandas.core.frame",
        "_class": "DataFrame",
        "_object": json.dumps(payload),
        "orient": "split",
        "dtype": "{}",
    }


def pp_net(**tables: Any) -> dict[str, Any]:
    return {"_module": "pandapower.auxiliary", "_class": "pandapowerNet", "_object": tables}


BUS_COLS = ["name", "vn_kv", "type", "zone", "in_service", "geo"]
LINE_COLS = ["name", "std_type", "from_bus", "to_bus", "length_km", "type", "in_service", "geo"]


def point(lon: float, lat: float) -> str:
    return json.dumps({"type": "Point", "coordinates": [lon, lat]})


def small(**over: Any) -> dict[str, Any]:
    tables: dict[str, Any] = {
        "bus": df(
            BUS_COLS,
            [
                ["A", 20.0, "b", None, True, point(-70.60, -33.40)],
                ["B", 20.0, "b", None, True, point(-70.59, -33.40)],
                ["C", 20.0, "b", None, True, None],
            ],
            [0, 1, 2],
        ),
        "line": df(
            LINE_COLS,
            [
                ["L0", "x", 0, 1, 0.93, "ol", True, None],
                ["L1", "x", 1, 2, 0.5, "cs", False, None],
            ],
        ),
        "ext_grid": df(["name", "bus", "vm_pu", "in_service"], [["G", 0, 1.0, True]]),
        "load": df(["name", "bus", "p_mw", "q_mvar", "in_service"], [["LD", 2, 0.1, 0.02, False]]),
    }
    tables.update(over)
    return pp_net(**tables)


def write(tmp_path: Path, doc: Any, name: str = "net.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return p


def test_small_net_southern_hemisphere_and_estimated_bus(tmp_path: Path) -> None:
    net = read_pandapower(write(tmp_path, small()))
    assert net.crs == f"EPSG:{utm_epsg(-70.6, -33.4)}" == "EPSG:32719"
    a, b, c = (net.node(nid(f"bus-{i}"))["xyz"] for i in range(3))
    # Bus C has no geodata: it sits at its only neighbour B.
    assert c == b and net.node(nid("bus-2"))["attributes"]["position"] == "estimated"
    assert "position" not in net.node(nid("bus-0"))["attributes"]
    # 0.01 degree of longitude at 33.4 S is ~929 m.
    assert math.dist(a, b) == pytest.approx(929.0, rel=0.01)
    l1 = net.edge(nid("line-1"))[2]["attributes"]
    assert l1["in_service"] is False and l1["underground"] is True and l1["length"] == 500.0
    assert net.node(nid("load-0"))["attributes"]["in_service"] is False
    assert net.edge(nid("conn-load-0"))[2]["attributes"]["in_service"] is False
    assert net.sources == {nid("bus-0"), nid("extgrid-0")}
    assert set(failure_impact(net, [nid("line-0")]).nodes) == {
        nid("bus-1"),
        nid("bus-2"),
        nid("load-0"),
    }


def test_out_of_service_ext_grid_is_no_source(tmp_path: Path) -> None:
    doc = small(ext_grid=df(["name", "bus", "in_service"], [["G", 0, False]]))
    net = read_pandapower(write(tmp_path, doc))
    assert net.sources == set()
    assert net.node(nid("extgrid-0"))["attributes"]["in_service"] is False


def test_old_geodata_tables(tmp_path: Path) -> None:
    bus = df(
        ["name", "vn_kv", "type", "zone", "in_service"],
        [["A", 0.4, "b", None, True], ["B", 0.4, "b", None, True]],
        [3, 7],
    )
    line = df(
        ["name", "std_type", "from_bus", "to_bus", "length_km", "type", "in_service"],
        [["L", "x", 3, 7, 0.2, "cs", True]],
        [5],
    )
    bus_geo = df(["x", "y"], [[7.80, 48.40], [7.802, 48.40]], [3, 7])
    line_geo = df(["coords"], [[[[7.802, 48.40], [7.801, 48.401], [7.80, 48.40]]]], [5])
    doc = pp_net(bus=bus, line=line, bus_geodata=bus_geo, line_geodata=line_geo)
    net = read_pandapower(write(tmp_path, doc))
    assert net.crs == "EPSG:32632"
    _, _, d = net.edge(nid("line-5"))
    # Stored to-from: reversed so the polyline runs from bus 3 to bus 7 over the bend.
    assert len(d["coords"]) == 3
    assert tuple(d["coords"][0]) == net.node(nid("bus-3"))["xyz"]
    assert polyline_length(d["coords"]) > math.dist(
        net.node(nid("bus-3"))["xyz"], net.node(nid("bus-7"))["xyz"]
    )


def test_planar_geodata_keeps_coordinates_without_crs(tmp_path: Path) -> None:
    bus = df(["name", "vn_kv"], [["A", 20.0], ["B", 20.0]])
    bus_geo = df(["x", "y"], [[3_420_000.0, 5_360_000.0], [3_420_500.0, 5_360_000.0]])
    line = df(["from_bus", "to_bus", "length_km"], [[0, 1, 0.5]])
    net = read_pandapower(write(tmp_path, pp_net(bus=bus, bus_geodata=bus_geo, line=line)))
    assert net.crs is None
    assert net.node(nid("bus-1"))["xyz"] == (3_420_500.0, 5_360_000.0, 0.0)


def test_no_geodata_gives_a_schematic_layout(tmp_path: Path) -> None:
    bus = df(["name", "vn_kv"], [["A", 20.0], ["B", 20.0], ["C", 20.0]])
    line = df(["from_bus", "to_bus", "length_km"], [[0, 1, 0.5], [1, 2, 0.5]])
    net = read_pandapower(write(tmp_path, pp_net(bus=bus, line=line)))
    assert net.crs is None and net.attributes["layout"] == "schematic"
    pts = {net.node(nid(f"bus-{i}"))["xyz"] for i in range(3)}
    assert len(pts) == 3


def test_trafo3w_and_trafo_switch(tmp_path: Path) -> None:
    bus = df(
        ["name", "vn_kv", "geo"],
        [["H", 110.0, point(8, 50)], ["M", 20.0, point(8, 50)], ["L", 10.0, point(8, 50)]],
    )
    t3 = df(
        ["name", "hv_bus", "mv_bus", "lv_bus", "sn_hv_mva", "in_service"],
        [["T", 0, 1, 2, 40.0, True]],
    )
    sw = df(["bus", "element", "et", "type", "closed", "name"], [[0, 0, "t3", "CB", True, "S"]])
    net = read_pandapower(write(tmp_path, pp_net(bus=bus, trafo3w=t3, switch=sw)))
    star = nid("trafo3w-0")
    assert net.node(star)["type"] == "Transformer3W"
    assert net.node(star)["attributes"]["switches"][0]["name"] == "S"
    assert {k for *_, k in net.graph.edges(keys=True)} == {
        nid("trafo3w-0-hv"),
        nid("trafo3w-0-mv"),
        nid("trafo3w-0-lv"),
    }


# -- malformed input --------------------------------------------------------------------


def test_missing_from_bus_names_the_line(tmp_path: Path) -> None:
    doc = small(
        line=df(
            LINE_COLS,
            [["L0", "x", 0, 1, 0.9, "ol", True, None], ["L7", "x", 42, 1, 0.1, "ol", True, None]],
            [0, 7],
        )
    )
    with pytest.raises(IngestError) as e:
        read_pandapower(write(tmp_path, doc))
    assert e.value.where == "line 7"
    assert "from_bus 42" in str(e.value)


def test_bad_json_reports_position(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as e:
        read_pandapower(write(tmp_path, '{\n "_class": "pandapowerNet",\n "_object": {,}\n}'))
    assert e.value.where == "line 3:14"  # the comma after "{"
    assert "JSON syntax error" in e.value.problem


@pytest.mark.parametrize(
    "doc",
    [
        [1, 2],
        {"type": "FeatureCollection", "features": []},
        {"_module": "pandapower.auxiliary", "_class": "somethingElse", "_object": {}},
        "just a string",
    ],
)
def test_not_a_pandapower_net(tmp_path: Path, doc: Any) -> None:
    with pytest.raises(IngestError, match="not a pandapower network"):
        read_pandapower(write(tmp_path, doc if not isinstance(doc, str) else json.dumps(doc)))


def test_missing_file_and_tables(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        read_pandapower(tmp_path / "nope.json")
    with pytest.raises(IngestError, match="no 'bus' table") as e:
        read_pandapower(write(tmp_path, pp_net()))
    assert e.value.where == "table 'bus'"


def test_broken_table_payloads(tmp_path: Path) -> None:
    bad = small()
    bad["_object"]["bus"]["_object"] = '{"columns": ["name"], "index": [0], "data": [['
    with pytest.raises(IngestError, match="inside the table") as e:
        read_pandapower(write(tmp_path, bad))
    assert e.value.where == "table 'bus'"
    short = small(load=df(["name", "bus", "p_mw"], [["LD", 2]]))
    with pytest.raises(IngestError, match="expected 3") as e:
        read_pandapower(write(tmp_path, short))
    assert e.value.where == "load 0"
    dup = small(bus=df(BUS_COLS, [["A", 20.0, "b", None, True, None]] * 2, [0, 0]))
    with pytest.raises(IngestError, match="duplicate index 0") as e:
        read_pandapower(write(tmp_path, dup))
    assert e.value.where == "table 'bus'"
    sw = small(switch=df(["bus", "element", "et", "closed"], [[0, 99, "l", True]]))
    with pytest.raises(IngestError, match="not a line") as e:
        read_pandapower(write(tmp_path, sw))
    assert e.value.where == "switch 0"


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=True)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    table_name=st.sampled_from(
        ["bus", "line", "load", "ext_grid", "switch", "trafo", "bus_geodata"]
    ),
    part=st.sampled_from(["whole", "columns", "index", "data", "row", "cell"]),
    value=_json,
)
def test_damaged_tables_raise_ingest_error_only(
    tmp_path: Path, table_name: str, part: str, value: Any
) -> None:
    doc = small()
    tables = doc["_object"]
    if part == "whole":
        tables[table_name] = value
    else:
        raw = tables.get(table_name) or df(["x"], [[1]])
        payload = json.loads(raw["_object"])
        if part in ("columns", "index", "data"):
            payload[part] = value
        elif payload["data"]:
            if part == "row":
                payload["data"][0] = value
            else:
                payload["data"][0][0] = value
        raw["_object"] = json.dumps(payload)
        tables[table_name] = raw
    try:
        net = read_pandapower(write(tmp_path, doc))
    except IngestError as exc:
        assert exc.source and str(exc)
    else:
        assert isinstance(net, Network)


def test_counter_sanity(shared_data: Path) -> None:
    # Every edge and node type the reader makes on the real grids is one we document.
    kinds: Counter[str] = Counter()
    for rel in (MV, LV, SB):
        net = grid(shared_data, rel)
        kinds.update(d["type"] for _, d in net.graph.nodes(data=True))
        kinds.update(d["type"] for *_, d in net.graph.edges(data=True))
    assert set(kinds) <= {
        "Bus",
        "Load",
        "Generator",
        "ExternalGrid",
        "Switch",
        "Line",
        "Transformer",
        "Connection",
    }

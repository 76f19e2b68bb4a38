"""Tests for ingest.networks.epanet on the real WNTR/EPANET networks and on malformed input."""

from __future__ import annotations

import tempfile
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.networks import read_network
from ingest.networks.epanet import epanet_local_id, read_epanet
from ingest.networks.georef import Georeference
from twin.errors import IngestError, TwinError
from twin.network import Network, failure_impact

FT = 0.3048
INCH = 0.0254

# Fixed cross-check: the counts recorded in ../shared/data/networks/SOURCES.md.
SOURCES_MD_COUNTS = {
    "Net1": (11, 13),
    "Net3": (97, 119),
    "Net6": (3356, 3892),
    "ky4": (964, 1158),
    "ky10": (935, 1061),
}

MINI = """\
[TITLE]
mini network
[JUNCTIONS]
;ID Elev Demand Pattern
 J1 10 1
 J2 20 2 pat
[RESERVOIRS]
 R1 100
[PIPES]
 P1 R1 J1 1000 300 100
 P2 J1 J2 500 200 100 0 Open
[COORDINATES]
 J1 0 0
 J2 100 0
 R1 -100 0
[VERTICES]
 P2 50 50
[OPTIONS]
 Units LPS
[END]
"""
# Line numbers in MINI that the error tests point at.
LINE_J2 = 6
LINE_P1 = 10
LINE_P2 = 11


def _wntr(shared_data: Path, name: str) -> Path:
    return shared_data / "networks" / "wntr" / f"{name}.inp"


def _count_data_lines(path: Path) -> tuple[int, int]:
    """Nodes and links by counting data lines per section (independent of the reader)."""
    node_sections = {"[JUNCTIONS]", "[RESERVOIRS]", "[TANKS]"}
    link_sections = {"[PIPES]", "[PUMPS]", "[VALVES]"}
    nodes = links = 0
    section = ""
    for line in path.read_text(encoding="latin-1").splitlines():
        text = line.split(";")[0].strip()
        if text.startswith("["):
            section = text.upper()
            continue
        if not text:
            continue
        nodes += section in node_sections
        links += section in link_sections
    return nodes, links


def _write(tmp_path: Path, text: str, name: str = "net.inp") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- real files -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SOURCES_MD_COUNTS))
def test_real_files_counts(shared_data: Path, name: str) -> None:
    path = _wntr(shared_data, name)
    net = read_epanet(path)
    assert (net.n_nodes, net.n_edges) == SOURCES_MD_COUNTS[name]
    assert (net.n_nodes, net.n_edges) == _count_data_lines(path)
    assert net.kind == "water" and net.directed is False and net.crs is None
    assert net.attributes["epanet"] is True
    assert net.attributes["source"] == f"{name}.inp"
    assert net.attributes["units"] == "GPM"
    # Every edge end is a node of the graph and every node has a type-prefixed id.
    for eid in list(net.assets())[net.n_nodes :]:
        u, v, data = net.edge(eid)
        assert u in net.graph and v in net.graph
        assert data["coords"][0] == net.node(u)["xyz"]
        assert data["coords"][-1] == net.node(v)["xyz"]
    for nid, data in net.graph.nodes(data=True):
        local = nid.split(":", 2)[2]
        assert local == epanet_local_id(data["type"], data["attributes"]["epanet_id"])


@pytest.mark.parametrize("name", sorted(SOURCES_MD_COUNTS))
def test_real_files_match_wntr(shared_data: Path, name: str) -> None:
    wntr = pytest.importorskip("wntr")
    path = _wntr(shared_data, name)
    wn = wntr.network.WaterNetworkModel(str(path))
    net = read_epanet(path)
    assert (net.n_nodes, net.n_edges) == (wn.num_nodes, wn.num_links)
    sources = 0
    for raw, node in wn.nodes():
        kind = node.node_type.lower()
        data = net.node(f"net:water:{epanet_local_id(kind, raw)}")
        z = node.base_head if kind == "reservoir" else node.elevation
        assert data["xyz"] == pytest.approx((*node.coordinates, z))
        if kind == "junction":
            assert data["attributes"]["base_demand_m3s"] == pytest.approx(node.base_demand)
        else:
            sources += 1
    assert len(net.sources) == sources
    for raw, link in wn.links():
        kind = link.link_type.lower()
        u, v, data = net.edge(f"net:water:{epanet_local_id(kind, raw)}")
        assert net.node(u)["attributes"]["epanet_id"] == link.start_node_name
        assert net.node(v)["attributes"]["epanet_id"] == link.end_node_name
        if kind == "pipe":
            assert data["attributes"]["length"] == pytest.approx(link.length)
            assert data["attributes"]["diameter"] == pytest.approx(link.diameter)
            assert len(data["coords"]) == len(link.vertices) + 2


def test_net1_values(shared_data: Path) -> None:
    net = read_epanet(_wntr(shared_data, "Net1"))
    assert net.attributes["title"] == "EPANET Example Network 1"
    assert net.attributes["unit_system"] == "US"
    # Junction "10" and pipe "10" share the raw id; the prefixes keep them apart.
    assert net.node("net:water:J-10")["attributes"]["epanet_id"] == "10"
    u, v, pipe = net.edge("net:water:P-10")
    assert (u, v) == ("net:water:J-10", "net:water:J-11")
    assert pipe["type"] == "Pipe"
    assert pipe["attributes"]["length"] == pytest.approx(10530 * FT)
    assert pipe["attributes"]["diameter"] == pytest.approx(18 * INCH)
    assert pipe["attributes"]["roughness"] == 100.0
    assert pipe["attributes"]["status"] == "OPEN"
    res = net.node("net:water:R-9")
    assert res["type"] == "Reservoir"
    assert res["attributes"]["head"] == pytest.approx(800 * FT)
    assert res["xyz"] == pytest.approx((10.0, 70.0, 800 * FT))
    tank = net.node("net:water:T-2")
    assert tank["attributes"]["elevation"] == pytest.approx(850 * FT)
    assert tank["attributes"]["diameter"] == pytest.approx(50.5 * FT)  # feet, not inches
    assert tank["attributes"]["max_level"] == pytest.approx(150 * FT)
    junction = net.node("net:water:J-22")["attributes"]
    assert junction["elevation"] == pytest.approx(695 * FT)
    assert junction["base_demand"] == 200.0
    pu, pv, pump = net.edge("net:water:PU-9")
    assert (pu, pv) == ("net:water:R-9", "net:water:J-10")
    assert pump["attributes"]["head_curve"] == "1"
    assert net.sources == {"net:water:R-9", "net:water:T-2"}
    assert nx.is_connected(nx.Graph(net.undirected()))


def test_net3_status_and_ky4_vertices(shared_data: Path) -> None:
    net3 = read_epanet(_wntr(shared_data, "Net3"))
    assert net3.edge("net:water:PU-10")[2]["attributes"]["status"] == "CLOSED"
    assert net3.node("net:water:R-River")["attributes"]["head"] == pytest.approx(220 * FT)
    ky4 = read_epanet(_wntr(shared_data, "ky4"))
    _, _, p1 = ky4.edge("net:water:P-P-1")
    # P-1 has vertices in [VERTICES]; the first one is listed at 4971363.50, 3905596.24.
    assert len(p1["coords"]) > 2
    assert p1["coords"][1][:2] == (4971363.50, 3905596.24)
    zs = [c[2] for c in p1["coords"]]
    assert min(zs[0], zs[-1]) <= min(zs) and max(zs) <= max(zs[0], zs[-1])
    pump = ky4.edge("net:water:PU-~@Pump-1")[2]["attributes"]
    assert pump["power"] == 150.0
    assert pump["power_kw"] == pytest.approx(150 * 0.745699872)
    assert pump["status"] == "CLOSED"


def test_net6_valves(shared_data: Path) -> None:
    net = read_epanet(_wntr(shared_data, "Net6"))
    valve = net.edge("net:water:V-VALVE-3890")[2]["attributes"]
    assert valve["valve_type"] == "PRV"
    assert valve["diameter"] == pytest.approx(6 * INCH)
    assert valve["setting"] == 50.0


def test_read_network_dispatches_inp(shared_data: Path) -> None:
    nets = read_network(_wntr(shared_data, "Net1"), network_id="net1")
    assert len(nets) == 1
    net = nets[0]
    assert net.id == "net1" and net.attributes["epanet"] is True
    assert (net.n_nodes, net.n_edges) == (11, 13)
    assert "net:net1:P-10" in net


def _cut_off(net: Network, failed: set[str]) -> set[str]:
    """Nodes with no path to a source once ``failed`` edges are gone (independent of twin)."""
    g = nx.MultiGraph()
    g.add_nodes_from(net.graph.nodes)
    for u, v, key in net.graph.edges(keys=True):
        if key not in failed:
            g.add_edge(u, v, key=key)
    fed: set[str] = set()
    for s in net.sources:
        fed |= nx.node_connected_component(g, s)
    return set(net.graph.nodes) - fed


def test_net6_failure_impact(shared_data: Path) -> None:
    net = read_epanet(_wntr(shared_data, "Net6"))
    reservoir = "net:water:R-RESERVOIR-3323"
    # The reservoir feeds JUNCTION-0 through five parallel pumps; LINK-0 is the pipe on.
    _, outlet, _ = net.edge("net:water:P-LINK-0")
    assert outlet == "net:water:J-JUNCTION-1"
    assert {net.edge(f"net:water:PU-PUMP-38{i}")[0] for i in range(30, 35)} == {reservoir}
    impact = failure_impact(net, ["net:water:P-LINK-0"])
    # 32 tanks keep the rest fed and the reservoir still feeds JUNCTION-0: nothing is lost.
    assert impact.nodes == [] == sorted(_cut_off(net, {"net:water:P-LINK-0"}))
    # A bridge deeper in the network does cut a district off.
    impact = failure_impact(net, ["net:water:P-LINK-1525"])
    expected = _cut_off(net, {"net:water:P-LINK-1525"})
    assert len(expected) > 10
    assert set(impact.nodes) == expected


def test_georef_places_net1(shared_data: Path) -> None:
    plain = read_epanet(_wntr(shared_data, "Net1"))
    bbox = plain.bbox()
    assert bbox is not None
    geo = Georeference.fit(
        (bbox[0], bbox[1], bbox[3], bbox[4]), (84000, 446000, 85000, 447000), crs="EPSG:28992"
    )
    net = read_epanet(_wntr(shared_data, "Net1"), georef=geo)
    placed = net.bbox()
    assert placed is not None
    assert net.crs == "EPSG:28992" and net.attributes["placed"] is True
    assert placed[0] >= 84000 and placed[3] <= 85000
    assert placed[1] >= 446000 and placed[4] <= 447000
    attrs = net.edge("net:water:P-10")[2]["attributes"]
    assert attrs["length"] == pytest.approx(10530 * FT)  # measured in the file: kept
    assert attrs["diameter"] == pytest.approx(18 * INCH)


# -- small files ------------------------------------------------------------------
def test_mini_si_units_and_vertices(tmp_path: Path) -> None:
    net = read_epanet(_write(tmp_path, MINI), network_id="mini")
    assert net.attributes["units"] == "LPS" and net.attributes["unit_system"] == "SI"
    p1 = net.edge("net:mini:P-P1")[2]["attributes"]
    assert p1["length"] == 1000.0 and p1["diameter"] == pytest.approx(0.3)
    _, _, p2 = net.edge("net:mini:P-P2")
    assert p2["coords"] == [(0.0, 0.0, 10.0), (50.0, 50.0, 15.0), (100.0, 0.0, 20.0)]
    j2 = net.node("net:mini:J-J2")["attributes"]
    assert j2["pattern"] == "pat"
    assert j2["base_demand_m3s"] == pytest.approx(0.002)
    assert net.sources == {"net:mini:R-R1"}
    assert net.attributes["title"] == "mini network"


def test_units_override(tmp_path: Path) -> None:
    net = read_epanet(_write(tmp_path, MINI), units="gpm")
    p1 = net.edge("net:water:P-P1")[2]["attributes"]
    assert p1["length"] == pytest.approx(1000 * FT)
    assert p1["diameter"] == pytest.approx(300 * INCH)
    with pytest.raises(IngestError, match="flow units"):
        read_epanet(_write(tmp_path, MINI), units="furlongs")


def test_bom_crlf_latin1(tmp_path: Path) -> None:
    text = MINI.replace("mini network", "Caf\u00e9 r\u00e9seau").replace("\n", "\r\n")
    path = tmp_path / "latin.inp"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("latin-1"))
    net = read_epanet(path)
    assert net.attributes["title"] == "Caf\u00e9 r\u00e9seau"
    assert net.n_nodes == 3 and net.n_edges == 2


def test_demands_section_replaces_junction_demand(tmp_path: Path) -> None:
    text = MINI.replace("[END]", "[DEMANDS]\n J1 5 p1 domestic\n J1 3\n[END]")
    attrs = read_epanet(_write(tmp_path, text)).node("net:water:J-J1")["attributes"]
    assert attrs["base_demand"] == 8.0
    assert attrs["demands"] == [
        {"base_demand": 5.0, "pattern": "p1", "category": "domestic"},
        {"base_demand": 3.0, "pattern": None, "category": None},
    ]


def test_tags_status_and_end(tmp_path: Path) -> None:
    text = MINI.replace(
        "[END]", "[TAGS]\n NODE J1 zoneA\n LINK P1 main\n[STATUS]\n P2 Closed\n[END]\ngarbage"
    )
    net = read_epanet(_write(tmp_path, text))
    assert net.node("net:water:J-J1")["attributes"]["tag"] == "zoneA"
    assert net.edge("net:water:P-P1")[2]["attributes"]["tag"] == "main"
    assert net.edge("net:water:P-P2")[2]["attributes"]["status"] == "CLOSED"


def test_no_coordinates_at_all(tmp_path: Path) -> None:
    start, end = MINI.index("[COORDINATES]"), MINI.index("[OPTIONS]")
    net = read_epanet(_write(tmp_path, MINI[:start] + MINI[end:]))
    assert net.attributes["has_coordinates"] is False
    assert net.node("net:water:J-J2")["xyz"] == (0.0, 0.0, 20.0)


# -- malformed input ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("old", "new", "line", "words"),
    [
        ("[OPTIONS]", "[OPTIONZ]", 18, ["unknown section", "OPTIONZ"]),
        (" P1 R1 J1 1000", " P1 R1 JX 1000", LINE_P1, ["'JX'", "not defined"]),
        (" P2 J1 J2 500 200", " P2 J1 J2 500 abc", LINE_P2, ["diameter", "'abc'"]),
        (" J2 20 2 pat", " J2 nan 2 pat", LINE_J2, ["elevation"]),
        (" J2 20 2 pat", " J1 20 2 pat", LINE_J2, ["duplicate node id", "'J1'"]),
        (" P2 J1 J2 500", " P1 J1 J2 500", LINE_P2, ["duplicate link id", "'P1'"]),
        (" R1 100", " J2 100", 8, ["duplicate node id"]),
        (" J2 100 0\n", "", LINE_J2, ["no [COORDINATES]", "'J2'"]),
        (" P1 R1 J1 1000 300 100", " P1 R1 J1 1000", LINE_P1, ["missing diameter"]),
        (" P1 R1 J1 1000 300 100", " P1 J1 J1 1000 300 100", LINE_P1, ["start and end"]),
        (" P2 J1 J2 500 200 100 0 Open", " P2 J1 J2 500 200 100 0 Shut", LINE_P2, ["status"]),
        (" Units LPS", " Units FOO", 19, ["flow units"]),
        (" P2 50 50", " P9 50 50", 17, ["'P9'", "not defined"]),
        (" R1 -100 0", " R9 -100 0", 15, ["'R9'", "not defined"]),
        ("[TITLE]", "stray\n[TITLE]", 1, ["before any"]),
    ],
)
def test_malformed_input(tmp_path: Path, old: str, new: str, line: int, words: list[str]) -> None:
    assert old in MINI
    path = _write(tmp_path, MINI.replace(old, new, 1))
    with pytest.raises(IngestError) as err:
        read_epanet(path)
    assert err.value.where == f"line {line}"
    assert err.value.source == str(path)
    message = str(err.value)
    assert f"line {line}" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ("[PUMPS]\n PU1 R1 J2 HEAD\n", ["no value"]),
        ("[PUMPS]\n PU1 R1 J2 FLOW 3\n", ["unknown parameter"]),
        ("[PUMPS]\n PU1 R1 J2\n", ["HEAD curve or a POWER"]),
        ("[VALVES]\n V1 J1 J2 100 XYZ 5\n", ["valve type"]),
        ("[VALVES]\n V1 J1 J2 100 PRV x\n", ["setting"]),
        ("[DEMANDS]\n R1 5\n", ["junction is not defined"]),
        ("[STATUS]\n P7 Closed\n", ["link is not defined"]),
        ("[TAGS]\n NODE P1 a\n", ["tag"]),
    ],
)
def test_malformed_sections(tmp_path: Path, section: str, words: list[str]) -> None:
    path = _write(tmp_path, MINI.replace("[END]", section + "[END]"))
    with pytest.raises(IngestError) as err:
        read_epanet(path)
    assert err.value.where == "line 21"
    for word in words:
        assert word in str(err.value)


def test_valves_gpv_and_pump_power(tmp_path: Path) -> None:
    extra = "[PUMPS]\n PU1 R1 J2 POWER 7.5 SPEED 1.2\n[VALVES]\n V1 J1 J2 150 gpv curve7\n"
    net = read_epanet(_write(tmp_path, MINI.replace("[END]", extra + "[END]")))
    pump = net.edge("net:water:PU-PU1")[2]["attributes"]
    assert (pump["power"], pump["power_kw"], pump["speed"]) == (7.5, 7.5, 1.2)
    valve = net.edge("net:water:V-V1")[2]["attributes"]
    assert valve["valve_type"] == "GPV" and valve["setting"] == "curve7"
    assert valve["diameter"] == pytest.approx(0.15)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="cannot read"):
        read_epanet(tmp_path / "absent.inp")


def test_epanet_local_id() -> None:
    assert epanet_local_id("pipe", "10") == "P-10"
    assert epanet_local_id("Junction", "10") == "J-10"
    assert epanet_local_id("PUMP", "9") == "PU-9"
    assert epanet_local_id("valve", "v") == "V-v"
    assert epanet_local_id("tank", "2") == "T-2"
    assert epanet_local_id("reservoir", "9") == "R-9"
    with pytest.raises(TwinError, match="unknown EPANET element kind"):
        epanet_local_id("curve", "1")


# -- property test: mutated Net1 lines ----------------------------------------------
_NOISE = st.one_of(
    st.text(alphabet=st.sampled_from(list('[];\t "-.eE0123456789abcJRPTVxyz')), max_size=30),
    st.sampled_from(["nan", "1e999", "[END]", "[PIPES]", "[FOO]", "\u00e9", "10 11 12"]),
)


@st.composite
def _mutation(draw: st.DrawFn, n_lines: int) -> tuple[str, int, str]:
    op = draw(st.sampled_from(["replace", "delete", "duplicate", "token", "insert"]))
    index = draw(st.integers(0, n_lines - 1))
    return op, index, draw(_NOISE)


@pytest.fixture(scope="module")
def net1_lines(shared_data: Path) -> list[str]:
    return _wntr(shared_data, "Net1").read_text().splitlines()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_net1_only_raises_ingest_error(net1_lines: list[str], data: st.DataObject) -> None:
    lines = list(net1_lines)
    for _ in range(data.draw(st.integers(1, 3))):
        op, i, noise = data.draw(_mutation(len(lines)))
        if op == "replace":
            lines[i] = noise
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "insert":
            lines.insert(i, noise)
        else:
            tokens = lines[i].split()
            if tokens:
                tokens[data.draw(st.integers(0, len(tokens) - 1))] = noise
            lines[i] = " ".join(tokens)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutant.inp"
        path.write_text("\n".join(lines), encoding="latin-1", errors="replace")
        try:
            net = read_epanet(path)
        except IngestError as exc:
            assert exc.source == str(path)
            return
    assert net.n_nodes <= 12 and net.n_edges <= 14
    for eid in list(net.assets())[net.n_nodes :]:
        u, v, _ = net.edge(eid)
        assert u in net.graph and v in net.graph

"""Simulation-backed demo feeds: wntr/pandapower runs, their ids, and the shipped recordings."""

from __future__ import annotations

import gzip
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ingest.networks.epanet import read_epanet
from ingest.networks.pandapower import read_pandapower
from sync.simulate import (
    DEFAULT_START,
    M_HEAD_TO_BAR,
    POWER_FILE,
    WATER_FILE,
    record,
    select_profile,
    simulate_power,
    simulate_water,
)
from twin.errors import MissingExtra
from twin.network import Network

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "viewer" / "demo"
NET3 = DEMO / "net3.inp"
OBERRHEIN = DEMO / "mv_oberrhein.json"
FEEDS = DEMO / "feeds"


@pytest.fixture(scope="module")
def water_net() -> Network:
    return read_epanet(NET3, network_id="water")


@pytest.fixture(scope="module")
def power_net() -> Network:
    return read_pandapower(OBERRHEIN, network_id="power")


@pytest.fixture(scope="module")
def water_2h() -> list[dict[str, Any]]:
    pytest.importorskip("wntr")
    return list(simulate_water(NET3, hours=2, step_s=300))


@pytest.fixture(scope="module")
def profiles_dir(shared_data: Path) -> Path:
    return shared_data / "networks" / "simbench"


@pytest.fixture(scope="module")
def power_2steps(profiles_dir: Path) -> list[dict[str, Any]]:
    pytest.importorskip("pandapower")
    return list(simulate_power(OBERRHEIN, profiles_dir=profiles_dir, hours=0.5, step_s=900))


def _read_feed(path: Path) -> list[list[dict[str, Any]]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# -- water -----------------------------------------------------------------------------------
def test_water_ids_exist_in_the_read_network(
    water_2h: list[dict[str, Any]], water_net: Network
) -> None:
    ids = {r["id"] for r in water_2h}
    assert ids <= set(water_net.assets())
    # Every junction, reservoir, tank, pipe and pump of Net3 reports.
    assert len(ids) == 92 + 2 + 3 + 117 + 2


def test_water_steps_and_records(water_2h: list[dict[str, Any]]) -> None:
    times = sorted({r["time"] for r in water_2h})
    assert times == [DEFAULT_START + 300 * i for i in range(24)]
    per_key = Counter((r["id"], r["property"]) for r in water_2h)
    assert set(per_key.values()) == {24}  # one record per asset and property per step
    props = {r["property"] for r in water_2h}
    assert props == {"pressure", "head", "level", "flow", "velocity", "status"}
    statuses = {r["value"] for r in water_2h if r["property"] == "status"}
    assert statuses <= {"open", "closed"}
    assert statuses


def test_water_pressures_are_plausible(water_2h: list[dict[str, Any]]) -> None:
    pressures = [r["value"] for r in water_2h if r["property"] == "pressure"]
    assert all(r["unit"] == "bar" for r in water_2h if r["property"] == "pressure")
    inside = [p for p in pressures if 0 < p < 20]
    assert len(inside) >= 0.95 * len(pressures)
    # Net3 is a US-units network of ~40-90 m (60-130 psi) service pressures.
    median = sorted(pressures)[len(pressures) // 2]
    assert 2 < median < 9


def test_water_tank_levels_stay_within_limits(
    water_2h: list[dict[str, Any]], water_net: Network
) -> None:
    levels = [r for r in water_2h if r["property"] == "level"]
    assert {r["id"] for r in levels} == {"net:water:T-1", "net:water:T-2", "net:water:T-3"}
    for r in levels:
        node = water_net.node(r["id"])["attributes"]
        assert node["min_level"] - 1e-3 <= r["value"] <= node["max_level"] + 1e-3, r


def test_water_pressures_match_wntrs_own_solver(water_2h: list[dict[str, Any]]) -> None:
    # Independent solver: wntr's Python WNTRSimulator on the same network at t = 0,
    # against our records from the EPANET engine converted m -> bar.
    wntr = pytest.importorskip("wntr")
    wn = wntr.network.WaterNetworkModel(str(NET3))
    wn.options.time.duration = 0
    wn.options.quality.parameter = "NONE"
    head_m = wntr.sim.WNTRSimulator(wn).run_sim().node["pressure"].iloc[0]
    ours = {
        r["id"]: r["value"]
        for r in water_2h
        if r["property"] == "pressure" and r["time"] == DEFAULT_START
    }
    assert len(ours) == 92
    for name in wn.junction_name_list:
        expected = float(head_m[name]) * M_HEAD_TO_BAR
        assert ours[f"net:water:J-{name}"] == pytest.approx(expected, abs=0.05), name


def test_water_mass_balance_at_junctions(
    water_2h: list[dict[str, Any]], water_net: Network, tmp_path: Path
) -> None:
    # Continuity (EPANET 2.2 manual, "Hydraulic Simulation Model"): at each junction the
    # pipe flows in minus out equal its demand; the demand comes from the same engine run.
    wntr = pytest.importorskip("wntr")
    wn = wntr.network.WaterNetworkModel(str(NET3))
    wn.options.time.duration = 0
    wn.options.quality.parameter = "NONE"
    demand = wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(tmp_path / "run"))
    demand_ls = demand.node["demand"].iloc[0] * 1000.0
    flows = {
        r["id"]: r["value"]
        for r in water_2h
        if r["property"] == "flow" and r["time"] == DEFAULT_START
    }
    balance: dict[str, float] = {}
    for eid, q in flows.items():
        u, v, _ = water_net.edge(eid)
        balance[v] = balance.get(v, 0.0) + q
        balance[u] = balance.get(u, 0.0) - q
    checked = 0
    for name in wn.junction_name_list:
        jid = f"net:water:J-{name}"
        expected = float(demand_ls[name])
        # Flows carry 5 significant digits: allow that rounding on each joining link.
        assert balance[jid] == pytest.approx(expected, abs=0.1), name
        checked += expected > 1.0
    assert checked > 10  # the check covers junctions that really draw water


# -- power -----------------------------------------------------------------------------------
def test_power_ids_exist_in_the_read_network(
    power_2steps: list[dict[str, Any]], power_net: Network
) -> None:
    ids = {r["id"] for r in power_2steps}
    assert ids <= set(power_net.assets())
    kinds = Counter(i.split(":")[2].rsplit("-", 1)[0] for i in ids)
    assert kinds == {"bus": 179, "line": 181, "trafo": 2, "load": 147, "sgen": 153}


def test_power_two_steps_are_physical(power_2steps: list[dict[str, Any]]) -> None:
    assert sorted({r["time"] for r in power_2steps}) == [DEFAULT_START, DEFAULT_START + 900]
    loading = [r["value"] for r in power_2steps if r["property"] == "loading_percent"]
    assert loading and all(v >= 0 for v in loading)
    assert all(r["value"] >= 0 for r in power_2steps if r["property"] == "i_ka")
    vm = [r["value"] for r in power_2steps if r["property"] == "vm_pu"]
    assert all(0.9 < v < 1.1 for v in vm)
    # The slack buses hold the external grids' set point (vm_pu 1.0 in mv_oberrhein).
    pp = pytest.importorskip("pandapower")
    ext = pp.from_json(str(OBERRHEIN)).ext_grid
    assert len(ext) == 2
    for bus, setpoint in zip(ext["bus"], ext["vm_pu"], strict=True):
        got = [r["value"] for r in power_2steps if r["id"] == f"net:power:bus-{bus}"]
        assert got == pytest.approx([setpoint, setpoint], abs=1e-4)


def test_power_loads_follow_the_profiles(
    power_2steps: list[dict[str, Any]], profiles_dir: Path
) -> None:
    import pandas as pd

    df = pd.read_csv(profiles_dir / "simbench_1-MV-urban--0-sw_profiles_load_year2016.csv.gz")
    row = df.index[df["time"] == "01.06.2016 00:00"][0]
    names = [c[:-6] for c in df.columns if c.endswith("_pload")]
    # load 0 of mv_oberrhein: an MV/LV station of 0.25 MW.
    profile = select_profile(names, "MV/LV Station", 0, kind="load")
    assert profile.startswith("lv_")
    got = next(r["value"] for r in power_2steps if r["id"] == "net:power:load-0")
    # Values carry at most 4 decimals (0.1 kW).
    assert got == pytest.approx(0.25 * df.at[row, f"{profile}_pload"], abs=5e-5)


def test_select_profile_is_deterministic() -> None:
    cols = ["BL-H", "G0-A", "lv_rural3", "lv_urban6"]
    assert select_profile(cols, "MV/LV Station", 3, kind="load") == "lv_urban6"
    assert select_profile(cols, "MV Load", 2, kind="load") == "BL-H"
    assert select_profile(["Hydro3", "lv_a"], "PV", 7, kind="sgen") == "lv_a"
    assert select_profile(["Hydro3", "lv_a"], "Hydro", 7, kind="sgen") == "Hydro3"
    assert select_profile(["Hydro3", "lv_a"], "WP", 1, kind="sgen") == "lv_a"


# -- recording -------------------------------------------------------------------------------
def test_record_batches_by_time_atomically(tmp_path: Path) -> None:
    recs = [
        {"id": "a", "property": "p", "value": 1.0, "time": 10},
        {"id": "b", "property": "p", "value": 2.0, "time": 10},
        {"id": "a", "property": "p", "value": 3.0, "time": 20},
    ]
    gz = tmp_path / "x.jsonl.gz"
    assert record(recs, gz) == 3
    assert _read_feed(gz) == [recs[:2], recs[2:]]
    assert not (tmp_path / "x.jsonl.gz.part").exists()
    plain = tmp_path / "x.jsonl"
    record(iter(recs), plain, batch_by_time=False)
    assert [json.loads(line) for line in plain.read_text().splitlines()] == recs
    # Same records -> same bytes (gzip header without timestamp).
    again = tmp_path / "y.jsonl.gz"
    record(recs, again)
    assert again.read_bytes() == gz.read_bytes()


def test_record_leaves_no_file_when_the_source_fails(tmp_path: Path) -> None:
    def broken() -> Any:
        yield {"id": "a", "property": "p", "value": 1, "time": 1}
        raise RuntimeError("simulation died")

    out = tmp_path / "z.jsonl.gz"
    with pytest.raises(RuntimeError):
        record(broken(), out)
    assert list(tmp_path.iterdir()) == []


# -- the shipped recordings ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "network", "steps"), [(WATER_FILE, "water", 288), (POWER_FILE, "power", 96)]
)
def test_shipped_feeds_are_valid(
    name: str, network: str, steps: int, water_net: Network, power_net: Network
) -> None:
    path = FEEDS / name
    assert path.stat().st_size < 1_500_000
    lines = _read_feed(path)
    assert len(lines) == steps
    known = set((water_net if network == "water" else power_net).assets())
    last = None
    for batch in lines:
        assert isinstance(batch, list) and batch
        times = {r["time"] for r in batch}
        assert len(times) == 1  # one message = one time step
        (t,) = times
        assert last is None or t > last
        last = t
        for r in batch:
            assert {"id", "property", "value", "time"} <= r.keys()
            assert r["id"] in known, r["id"]
            assert isinstance(r["value"], int | float | str)
    assert lines[0][0]["time"] == DEFAULT_START


@pytest.mark.parametrize("module", ["wntr", "pandapower"])
def test_missing_extra_names_the_simulation_extra(
    module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    # Raised on the call, before any iteration.
    with pytest.raises(MissingExtra) as err:
        if module == "wntr":
            simulate_water(NET3)
        else:
            simulate_power(OBERRHEIN, profiles_dir=tmp_path)
    assert (err.value.module, err.value.extra) == (module, "simulation")
    assert "citytwin[simulation]" in str(err.value)


def test_power_skips_and_counts_non_converged_steps(profiles_dir: Path, tmp_path: Path) -> None:
    pp = pytest.importorskip("pandapower")
    net = pp.from_json(str(OBERRHEIN))
    net.load["p_mw"] *= 100  # ~6 GW on a 40 MVA grid: Newton-Raphson cannot converge
    heavy = tmp_path / "heavy.json"
    pp.to_json(net, str(heavy))
    skipped: list[float] = []
    run = simulate_power(heavy, profiles_dir=profiles_dir, hours=0.5, skipped=skipped)
    records = []
    with pytest.raises(StopIteration) as done:
        while True:
            records.append(next(run))
    assert records == []
    assert done.value.value == 2  # the generator's return value: steps skipped
    assert skipped == [DEFAULT_START, DEFAULT_START + 900]

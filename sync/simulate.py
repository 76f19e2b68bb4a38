"""Simulation-backed demo feeds: WNTR/EPANET and pandapower runs recorded as replay files."""

from __future__ import annotations

import argparse
import gzip
import importlib
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from ingest.networks.epanet import epanet_local_id
from twin.errors import IngestError, MissingExtra
from twin.network import asset_id

__all__ = [
    "DEFAULT_START",
    "M_HEAD_TO_BAR",
    "POWER_FILE",
    "WATER_FILE",
    "main",
    "record",
    "select_profile",
    "simulate_power",
    "simulate_water",
]

log = logging.getLogger(__name__)

#: 2026-06-01T00:00:00Z: a fixed epoch so regenerated files are byte-identical.
DEFAULT_START = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
#: Metres of water head -> bar (standard gravity, water at 1000 kg/m3).
M_HEAD_TO_BAR = 0.0980665

# Where the demo keeps its inputs and its recorded feeds (relative to the project root).
_ROOT = Path(__file__).resolve().parent.parent
_DEMO = _ROOT / "viewer" / "demo"
_PROFILES = Path("networks") / "simbench"
_LOAD_PROFILES = "simbench_1-MV-urban--0-sw_profiles_load_year2016.csv.gz"
_RENEWABLE_PROFILES = "simbench_1-MV-urban--0-sw_profiles_renewables_year2016.csv.gz"
#: The recorded demo feeds' file names in ``viewer/demo/feeds/``.
WATER_FILE = "delft_water_net3.jsonl.gz"
POWER_FILE = "delft_power_oberrhein.jsonl.gz"

# SimBench profiles are a 2016 year at 15-minute resolution (35136 rows).
_PROFILE_YEAR = 2016
_PROFILE_STEP_S = 900

# wntr.network.LinkStatus values as EpanetSimulator/WNTRSimulator report them.
_LINK_STATUS = {0: "closed", 1: "open", 2: "active", 3: "cv"}


def _require(module: str) -> ModuleType:
    """Import an optional dependency of the ``simulation`` extra, or fail naming it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(module, "simulation") from None


def _num(x: float) -> float:
    """At most 5 significant digits and 4 decimals: enough for a viewer, compresses well."""
    v = round(float(f"{x:.5g}"), 4)
    return 0.0 if v == 0 else v  # no "-0.0" in the files


def _obs(id_: str, prop: str, value: Any, time: float, unit: str | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": id_, "property": prop, "value": value, "time": time}
    if unit is not None:
        rec["unit"] = unit  # UCUM codes (bar, m, L/s, m/s, %, kA, MW)
    return rec


def _time(start: float, t: float) -> float | int:
    v = start + t
    return int(v) if float(v).is_integer() else v


# -- water ---------------------------------------------------------------------------------
def simulate_water(
    inp_path: str | Path,
    *,
    hours: float = 24,
    step_s: int = 300,
    network_id: str = "water",
    start: float = DEFAULT_START,
) -> Iterator[dict[str, Any]]:
    """Run an extended-period hydraulic simulation of an EPANET network and yield its states.

    The EPANET 2.2 engine shipped in wntr runs the model (``EpanetSimulator``); where its
    binary library cannot load, wntr's own ``WNTRSimulator`` does (same demand-driven
    hydraulics, slower). Water quality is switched off: the feeds carry hydraulics only.

    Records, one per asset and property per step, in time order:

    - junctions: ``pressure`` (bar, from metres of head x 0.0980665);
    - reservoirs: ``head`` (m); tanks: ``level`` (m above the tank bottom);
    - pipes: ``flow`` (L/s, signed along the pipe's start->end) and ``velocity`` (m/s);
    - pumps and valves: ``flow`` (L/s) and ``status`` (``open``/``closed``/``active``).

    Args:
        inp_path: the EPANET ``.inp`` file.
        hours: simulated duration; steps run from 0 up to, not including, ``hours``.
        step_s: hydraulic and report time step, seconds.
        network_id: the twin network id; ids are ``net:<network_id>:`` plus
            :func:`ingest.networks.epanet.epanet_local_id`, as ``read_epanet`` stores them.
        start: epoch seconds (UTC) of simulation time 0.

    Returns:
        An iterator of ``{"id", "property", "value", "time"[, "unit"]}`` dicts.

    Raises:
        MissingExtra: wntr is not installed.
        IngestError: the ``.inp`` file cannot be read by wntr.
    """
    wntr = _require("wntr")
    duration = round(hours * 3600)
    step = int(step_s)
    try:
        wn = wntr.network.WaterNetworkModel(str(inp_path))
    except Exception as exc:  # wntr raises bare ENxxx errors, KeyError, ValueError...
        raise IngestError(f"wntr cannot read it: {exc}", source=str(inp_path)) from None
    opts = wn.options
    opts.time.duration = duration
    opts.time.hydraulic_timestep = step
    opts.time.report_timestep = step
    opts.time.report_start = 0
    # EPANET still takes extra intermediate steps where a pattern period, control or tank
    # filling/emptying falls between two hydraulic steps; only report times are returned.
    opts.quality.parameter = "NONE"
    results = _run_wntr(wntr, wn)

    nodes, links = results.node, results.link
    times = [int(t) for t in nodes["pressure"].index if 0 <= int(t) < duration]
    kinds: list[tuple[str, str, str, str, float, str | None]] = []
    # (wntr result frame, column, twin id, property, factor, unit)
    for name in wn.junction_name_list:
        tid = asset_id(network_id, epanet_local_id("junction", name))
        kinds.append(("node:pressure", name, tid, "pressure", M_HEAD_TO_BAR, "bar"))
    for name in wn.reservoir_name_list:
        tid = asset_id(network_id, epanet_local_id("reservoir", name))
        kinds.append(("node:head", name, tid, "head", 1.0, "m"))
    for name in wn.tank_name_list:
        # A tank's pressure is its water level above the tank bottom (head - elevation).
        tid = asset_id(network_id, epanet_local_id("tank", name))
        kinds.append(("node:pressure", name, tid, "level", 1.0, "m"))
    for name in wn.pipe_name_list:
        tid = asset_id(network_id, epanet_local_id("pipe", name))
        kinds.append(("link:flowrate", name, tid, "flow", 1000.0, "L/s"))
        kinds.append(("link:velocity", name, tid, "velocity", 1.0, "m/s"))
    for kind, names in (("pump", wn.pump_name_list), ("valve", wn.valve_name_list)):
        for name in names:
            tid = asset_id(network_id, epanet_local_id(kind, name))
            kinds.append(("link:flowrate", name, tid, "flow", 1000.0, "L/s"))
            kinds.append(("link:status", name, tid, "status", 1.0, None))

    # Pull each column once as a plain list: indexing DataFrames per value is slow.
    series: list[list[float]] = []
    for frame, name, *_ in kinds:
        table, key = frame.split(":")
        df = (nodes if table == "node" else links)[key]
        series.append([float(v) for v in df[name].reindex(times).to_numpy()])
    columns = [(tid, prop, factor, unit) for _f, _n, tid, prop, factor, unit in kinds]
    return _water_records(columns, series, times, start)


def _water_records(
    columns: list[tuple[str, str, float, str | None]],
    series: list[list[float]],
    times: list[int],
    start: float,
) -> Iterator[dict[str, Any]]:
    for i, t in enumerate(times):
        when = _time(start, t)
        for (tid, prop, factor, unit), values in zip(columns, series, strict=True):
            v = values[i]
            if math.isnan(v):
                continue
            if prop == "status":
                yield _obs(tid, prop, _LINK_STATUS.get(int(v), str(int(v))), when)
            else:
                yield _obs(tid, prop, _num(v * factor), when, unit)


def _run_wntr(wntr: ModuleType, wn: Any) -> Any:
    """EPANET engine in a scratch folder (it writes .inp/.rpt/.bin), else WNTRSimulator."""
    try:
        wntr.epanet.toolkit.ENepanet()  # loads the bundled EPANET 2.2 shared library
    except (OSError, NotImplementedError) as exc:
        log.warning("EPANET library unavailable (%s); using WNTRSimulator", exc)
        return wntr.sim.WNTRSimulator(wn).run_sim()
    with tempfile.TemporaryDirectory(prefix="twin-epanet-") as tmp:
        return wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(Path(tmp) / "run"))


# -- power ---------------------------------------------------------------------------------
def select_profile(columns: Sequence[str], element_type: str, index: int, *, kind: str) -> str:
    """The SimBench profile name a pandapower load or sgen follows, chosen deterministically.

    Loads: ``MV/LV Station`` loads take the aggregated low-voltage grid profiles
    (``lv_*``), other loads the commercial/agricultural/household ones; sgens of type PV
    take the ``lv_*`` renewables (PV-shaped) columns, hydro ones ``Hydro*``; anything else
    takes all columns. Within its group an element takes ``group[index % len(group)]``.

    Args:
        columns: profile names without their ``_pload``/``_qload`` suffix, in file order.
        element_type: the element's ``type`` column (``MV/LV Station``, ``PV``...).
        index: the element's pandapower index.
        kind: ``load`` or ``sgen``.

    Returns:
        One of ``columns``.

    Raises:
        IngestError: ``columns`` is empty.
    """
    if not columns:
        raise IngestError("no profile columns", source="SimBench profiles")
    lv = [c for c in columns if c.startswith("lv_")]
    t = element_type.lower()
    group: list[str]
    if kind == "load":
        # An MV/LV station feeds a whole low-voltage grid: follow an aggregated LV profile.
        group = lv if "lv" in t else [c for c in columns if not c.startswith("lv_")]
    elif "pv" in t:
        group = lv
    elif "hydro" in t or "water" in t:
        group = [c for c in columns if c.lower().startswith("hydro")]
    else:
        group = []
    group = group or list(columns)
    return group[index % len(group)]


def _profiles(path: Path, pd: ModuleType) -> Any:
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise IngestError(f"cannot read profiles: {exc}", source=str(path)) from None
    if "time" not in df.columns:
        raise IngestError("no 'time' column", source=str(path))
    return df


def _profile_row(df: Any, start: float, source: Path) -> int:
    """Row of the profile year at the same month, day and clock time as ``start`` (UTC)."""
    d = datetime.fromtimestamp(start, UTC)
    if (d.month, d.day) == (2, 29):
        d = d.replace(day=28)
    key = d.replace(year=_PROFILE_YEAR).strftime("%d.%m.%Y %H:%M")
    rows = df.index[df["time"] == key]
    if len(rows) == 0:
        raise IngestError(f"no profile row at {key!r}", source=str(source))
    return int(rows[0])


def simulate_power(
    net_path: str | Path,
    *,
    profiles_dir: str | Path,
    hours: float = 24,
    step_s: int = 900,
    network_id: str = "power",
    start: float = DEFAULT_START,
    skipped: list[float] | None = None,
) -> Generator[dict[str, Any], None, int]:
    """Run a quasi-static pandapower time series under SimBench profiles and yield results.

    Every load's ``p_mw``/``q_mvar`` is multiplied by a relative SimBench load profile
    (``<name>_pload``/``<name>_qload``) and every sgen's ``p_mw`` by a renewables profile,
    chosen by :func:`select_profile`; the grid's own ``scaling`` factors (mv_oberrhein's
    worst-case 0.6 for loads, 0 for sgens) are replaced by 1 so the profiles alone set
    the level. The profile row is the 2016 row at the month/day/clock time of ``start``.
    One Newton-Raphson power flow (``pandapower.runpp``) runs per step.

    Records per step: ``line`` ``loading_percent`` (%) and ``i_ka`` (kA), ``bus``
    ``vm_pu``, ``trafo`` ``loading_percent``, ``load`` and ``sgen`` ``p_mw`` (MW). NaN
    results (de-energised elements) are left out. A step whose power flow does not
    converge is skipped whole (no records), logged, and counted.

    Args:
        net_path: a pandapower JSON grid (``pandapower.from_json``).
        profiles_dir: folder holding the SimBench ``*_profiles_load_year2016.csv.gz`` and
            ``*_profiles_renewables_year2016.csv.gz`` files.
        hours: simulated duration; steps run from 0 up to, not including, ``hours``.
        step_s: time step, seconds; the profile is sampled at its 15-minute row at or
            before each step.
        network_id: the twin network id (ids as ``read_pandapower`` makes them:
            ``net:<id>:bus-<index>``, ``line-``, ``trafo-``, ``load-``, ``sgen-``).
        start: epoch seconds (UTC) of step 0.
        skipped: if given, the simulation times of non-converged steps are appended.

    Returns:
        A generator of ``{"id", "property", "value", "time"[, "unit"]}`` dicts whose
        return value is the number of skipped (non-converged) steps.

    Raises:
        MissingExtra: pandapower (or pandas) is not installed.
        IngestError: the grid or a profile file cannot be read, or has no row for
            ``start``'s date.
    """
    pp = _require("pandapower")
    pd = _require("pandas")
    np = _require("numpy")
    folder = Path(profiles_dir)
    try:
        net = pp.from_json(str(net_path))
    except Exception as exc:  # pandapower raises UserWarning, JSONDecodeError, KeyError...
        raise IngestError(f"pandapower cannot read it: {exc}", source=str(net_path)) from None
    load_path = _find(folder, "_profiles_load_year2016.csv.gz", _LOAD_PROFILES)
    ren_path = _find(folder, "_profiles_renewables_year2016.csv.gz", _RENEWABLE_PROFILES)
    loads_df = _profiles(load_path, pd)
    ren_df = _profiles(ren_path, pd)
    row0 = _profile_row(loads_df, start, load_path)
    ren_row0 = _profile_row(ren_df, start, ren_path)

    names = [c[: -len("_pload")] for c in loads_df.columns if c.endswith("_pload")]
    names = [n for n in names if f"{n}_qload" in loads_df.columns]
    ren_names = [c for c in ren_df.columns if c != "time"]

    load_idx = [int(i) for i in net.load.index]
    load_prof = [
        select_profile(names, str(net.load.at[i, "type"]), i, kind="load") for i in load_idx
    ]
    p_prof = loads_df[[f"{n}_pload" for n in load_prof]].to_numpy(dtype=float)
    q_prof = loads_df[[f"{n}_qload" for n in load_prof]].to_numpy(dtype=float)
    base_p = net.load["p_mw"].to_numpy(dtype=float).copy()
    base_q = net.load["q_mvar"].to_numpy(dtype=float).copy()
    sgen_idx = [int(i) for i in net.sgen.index]
    sgen_prof = [
        select_profile(ren_names, str(net.sgen.at[i, "type"]), i, kind="sgen") for i in sgen_idx
    ]
    g_prof = ren_df[sgen_prof].to_numpy(dtype=float) if sgen_idx else np.zeros((len(ren_df), 0))
    base_g = net.sgen["p_mw"].to_numpy(dtype=float).copy()
    net.load["scaling"] = 1.0
    net.sgen["scaling"] = 1.0

    return _power_steps(
        pp,
        net,
        network_id,
        start,
        hours * 3600,
        step_s,
        _Profiles(row0, ren_row0, p_prof, q_prof, g_prof, base_p, base_q, base_g),
        skipped,
    )


@dataclass(frozen=True)
class _Profiles:
    """Start rows and per-element profile matrices (rows = 15-minute steps of 2016)."""

    row0: int
    ren_row0: int
    p: Any
    q: Any
    g: Any
    base_p: Any
    base_q: Any
    base_g: Any


def _power_steps(
    pp: ModuleType,
    net: Any,
    network_id: str,
    start: float,
    duration: float,
    step_s: int,
    prof: _Profiles,
    skipped: list[float] | None,
) -> Generator[dict[str, Any], None, int]:
    n_rows, n_ren = len(prof.p), len(prof.g)
    has_sgen = prof.g.shape[1] > 0
    lost = 0
    t = 0
    while t < duration:
        off = int(t // _PROFILE_STEP_S)
        r, rr = (prof.row0 + off) % n_rows, (prof.ren_row0 + off) % n_ren
        net.load["p_mw"] = prof.base_p * prof.p[r]
        net.load["q_mvar"] = prof.base_q * prof.q[r]
        if has_sgen:
            net.sgen["p_mw"] = prof.base_g * prof.g[rr]
        when = _time(start, t)
        t += step_s
        try:
            pp.runpp(net, numba=False)
        except pp.LoadflowNotConverged:
            lost += 1
            if skipped is not None:
                skipped.append(when)
            log.warning("power flow did not converge at %s; step skipped", when)
            continue
        yield from _power_records(net, network_id, when)
    return lost


def _find(folder: Path, suffix: str, default: str) -> Path:
    """The SimBench profile file in ``folder``: the demo's grid's name, else any match."""
    p = folder / default
    if p.is_file():
        return p
    found = sorted(folder.glob(f"*{suffix}"))
    if not found:
        raise IngestError(f"no '*{suffix}' profile file", source=str(folder))
    return found[0]


def _power_records(net: Any, network_id: str, when: float) -> Iterator[dict[str, Any]]:
    tables: list[tuple[Any, str, list[tuple[str, str | None]]]] = [
        (net.res_line, "line", [("loading_percent", "%"), ("i_ka", "kA")]),
        (net.res_bus, "bus", [("vm_pu", None)]),
        (net.res_trafo, "trafo", [("loading_percent", "%")]),
        (net.res_load, "load", [("p_mw", "MW")]),
        (net.res_sgen, "sgen", [("p_mw", "MW")]),
    ]
    for frame, prefix, props in tables:
        columns = [(prop, unit, frame[prop].to_numpy(dtype=float)) for prop, unit in props]
        for k, idx in enumerate(frame.index):
            tid = asset_id(network_id, f"{prefix}-{int(idx)}")
            for prop, unit, values in columns:
                v = float(values[k])
                if not math.isnan(v):
                    yield _obs(tid, prop, _num(v), when, unit)


# -- recording -----------------------------------------------------------------------------
def record(
    observations: Iterable[dict[str, Any]], path: str | Path, *, batch_by_time: bool = True
) -> int:
    """Write observations to a JSON Lines file, gzip-compressed if the name ends in ``.gz``.

    With ``batch_by_time`` each line is a JSON array of the consecutive records sharing
    one ``time`` (one replay message = one batch); otherwise each line is one record. The
    file is written to ``<path>.part`` and renamed over ``path`` only when complete, so a
    reader never sees half a file. Gzip output has a zero mtime and no file name in its
    header, so the same records give byte-identical files.

    Args:
        observations: dicts with at least ``time``, in time order.
        path: the output file.
        batch_by_time: one line per time step (True) or per record (False).

    Returns:
        The number of records written.
    """
    out = Path(path)
    part = out.with_name(out.name + ".part")
    n = 0
    try:
        with ExitStack() as stack:
            f: io.BufferedIOBase = stack.enter_context(open(part, "wb"))
            if out.name.endswith(".gz"):
                f = stack.enter_context(
                    gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9)
                )
            batch: list[dict[str, Any]] = []
            for rec in observations:
                n += 1
                if not batch_by_time:
                    f.write(_dumps(rec))
                    continue
                if batch and rec.get("time") != batch[0].get("time"):
                    f.write(_dumps(batch))
                    batch = []
                batch.append(rec)
            if batch:
                f.write(_dumps(batch))
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return n


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode()


# -- command line --------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the demo's recorded feeds: ``python -m sync.simulate --out DIR``.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code (0).
    """
    ap = argparse.ArgumentParser(prog="python -m sync.simulate", description=main.__doc__)
    ap.add_argument("--out", type=Path, default=_DEMO / "feeds", help="output folder")
    ap.add_argument("--water", type=Path, default=_DEMO / "net3.inp", help="EPANET .inp")
    ap.add_argument("--power", type=Path, default=_DEMO / "mv_oberrhein.json")
    ap.add_argument("--profiles", type=Path, default=None, help="SimBench profiles folder")
    ap.add_argument("--water-hours", type=float, default=24)
    ap.add_argument("--water-step", type=int, default=300)
    ap.add_argument("--power-hours", type=float, default=24)
    ap.add_argument("--power-step", type=int, default=900)
    ap.add_argument("--only", choices=("water", "power"), default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # pandapower logs optional-import notes (plotly, numba) at INFO on import.
    logging.getLogger("pandapower").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "water"):
        target = args.out / WATER_FILE
        n = record(
            simulate_water(args.water, hours=args.water_hours, step_s=args.water_step), target
        )
        log.info("%s: %d records, %d bytes", target, n, target.stat().st_size)
    if args.only in (None, "power"):
        profiles = args.profiles or _default_profiles()
        target = args.out / POWER_FILE
        skipped: list[float] = []
        run = simulate_power(
            args.power,
            profiles_dir=profiles,
            hours=args.power_hours,
            step_s=args.power_step,
            skipped=skipped,
        )
        n = record(run, target)
        log.info(
            "%s: %d records, %d bytes, %d non-converged step(s) skipped",
            target,
            n,
            target.stat().st_size,
            len(skipped),
        )
    return 0


def _default_profiles() -> Path:
    """../shared/data/networks/simbench beside the project, or $TWIN_SHARED_DATA's."""
    env = os.environ.get("TWIN_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [p / "shared" / "data" for p in (_ROOT.parent, *_ROOT.parents)]
    for c in candidates:
        if (c / _PROFILES).is_dir():
            return c / _PROFILES
    raise IngestError("SimBench profiles not found: pass --profiles", source="shared/data")


if __name__ == "__main__":
    raise SystemExit(main())

"""3D Tiles benchmark (issue 8): ``twin tiles`` on 100k and 1M real buildings, with baselines.

What it does:

* Inputs: real buildings of the shared data named by issue 8, copied on a grid by
  ``bench/tile_city.py`` (real geometry moved by one grid step; nothing invented), one
  CityJSONSeq per source in ``bench/work/`` (reused when current): Delfshaven
  (``real/delfshaven_3-20``, EPSG:28992), Den Haag (``legacy/denhaag_01_v08``, CityJSON
  0.8, upgraded to 2.0 with ``ingest.upgrade`` (cjio) and given EPSG:28992, which the 0.8
  file does not declare: its coordinates are RD New) and Zurich
  (``real/zurich_subset_lod2``, EPSG:2056, Buildings with BuildingParts). Every source
  gets the same number of copies, enough for ``--sizes`` buildings (``type ==
  "Building"``); each stays in its own CRS at its real place (the tiler meets them in
  ECEF). ``--sources`` picks a subset.
* ``twin tiles FILE... -o DIR`` as a subprocess (``--workers``/``--dask`` passed only when
  ``twin tiles --help`` lists them): wall time, buildings/s, CPU seconds (``os.wait4``
  rusage: the process and the children it waited for), peak RSS of the whole process
  tree (psutil every 0.2 s: the sum of the RSS of the process and all its descendants;
  shared pages count in each process, so this is an upper bound; the PSS sum is shown
  too), tiles, depth, bytes and bytes/building.
* Validity: ``tileset.json`` (and any external tileset or subtree) against the official
  3D Tiles 1.1 JSON schemas in ``../shared/data/schemas/3d-tiles-1.1`` (jsonschema +
  referencing, as tests/scene/test_tiles.py); tile GLBs with the Khronos glTF-Validator,
  all of them in one node process (a small script this file writes to bench/work/), or,
  from ``--sample-from`` buildings (1M) on, a deterministic sample of ``--validate-max``
  (200): the root, a quarter leaves, the rest drawn with a fixed seed (the table says so).
* Single-GLB export: ``twin export FILE -o OUT.glb --no-check`` of the same files (summed
  over the files), up to ``--export-max`` buildings; above that the bytes/building of the
  smaller city are used (grid copies: the same buildings) and the table says so.
* Baselines: py3dtiles 12.1.1 (pip, in its own venv under bench/work/). ``py3dtiles
  convert`` reads point clouds only (.las/.laz/.xyz/.ply vertices); ``py3dtiles export``
  tiles WKB MultiPolygonZ geometries from PostGIS or a folder (the pg2b3dm way), so the
  benchmark writes one WKB per building (its surfaces in ECEF around a centre, y up, as
  py3dtiles' own PostGIS query does) from the Delfshaven copies (``--py3dtiles-buildings``)
  and runs ``twin tiles`` on the same file for the comparison. pg2b3dm itself is .NET +
  PostGIS: run only when ``dotnet`` and ``pg2b3dm`` are on PATH (otherwise stated).
  3DCityDB v5's published import rate (~500 buildings/s, 33 min for 1M) is the anchor.
* Viewer: ``twin serve`` with ``TWIN_TILESET=DIR`` (the prebuilt tileset served as the base
  tileset at /api/tiles/base/...) and the viewer in tiles mode (``/?tiles=1``) in headless
  Chromium: ``citytwin.timings.firstFrame - navigationStart`` over ``--loads`` cold loads.
  Skipped, with a note, while the server or the viewer lacks either.

Targets (PASS/FAIL): 1M buildings in < 10 min on 2 cores, peak RSS < 4 GB, 0 validator
errors, bytes/building <= the single-GLB export, first frame of the 1M tileset < 3 s.

Run: ``.venv/bin/python bench/tiles.py`` (100k and 1M; the 1M run takes many minutes of
every core), ``--sizes 100000``, ``--quick`` (10k), ``--no-viewer``, ``--no-py3dtiles``.
The table is printed and written to bench/RESULTS.md between the ``tiles`` markers (other
sections are kept); raw numbers go to bench/work/tiles.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / "work"
VENV = ROOT / ".venv" / "bin"
RESULTS = BENCH / "RESULTS.md"
SECTION = "tiles"
HOST = "127.0.0.1"
MIB = 1 << 20
GIB = 1 << 30
SEED = 20261108
POLL_S = 0.2

# Targets (issue 8, "Benchmark").
TARGET_BUILDINGS = 1_000_000
TARGET_WALL_S = 600.0
TARGET_RSS = 4 * GIB
TARGET_FIRST_FRAME_S = 3.0
CITYDB_BPS = 500.0  # 3DCityDB v5 import, published: 33 min for 1M buildings

PY3DTILES_VERSION = "12.1.1"
PY3DTILES_VENV = WORK / "py3dtiles-venv"
PY3DTILES_MAX_POINTS = 255  # its per-feature indices are uint8 (wkb_utils.triangle_indices)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# One node process validates every GLB named in a list file; one JSON line per file.
VALIDATE_MJS = """// Written by bench/tiles.py: the Khronos glTF-Validator on many GLBs at once.
// Usage: node validate_glbs.mjs PROJECT_ROOT LIST_FILE  (LIST_FILE: one path per line)
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const [root, listFile] = process.argv.slice(2);
const validator = createRequire(path.join(root, "package.json"))("gltf-validator");
const files = (await readFile(listFile, "utf8")).split("\\n").filter((f) => f.length > 0);
for (const file of files) {
  let out;
  try {
    const report = await validator.validateBytes(new Uint8Array(await readFile(file)), {
      uri: path.basename(file),
      maxIssues: 500,
      externalResourceFunction: (uri) =>
        readFile(path.resolve(path.dirname(file), decodeURIComponent(uri))).then(
          (b) => new Uint8Array(b),
        ),
    });
    const errors = {};
    const warnings = {};
    for (const m of report.issues.messages) {
      if (m.severity === 0) errors[m.code] = (errors[m.code] || 0) + 1;
      if (m.severity === 1) warnings[m.code] = (warnings[m.code] || 0) + 1;
    }
    out = { file, errors: report.issues.numErrors, warnings: report.issues.numWarnings,
            errorCodes: errors, warningCodes: warnings };
  } catch (e) {
    out = { file, errors: 1, warnings: 0, errorCodes: { VALIDATOR_FAILED: 1 },
            warningCodes: {}, fatal: String(e) };
  }
  console.log(JSON.stringify(out));
}
"""

# Resolves when citytwin.ready has (in-page clock) or failed (as bench/viewer.py).
_READY = """() => {
  const c = window.citytwin;
  if (!c || !c.ready) return false;
  if (!c.__bench) {
    c.__bench = true;
    c.ready.then(() => { c.__benchReady = performance.now(); },
                 (e) => { c.__benchError = String(e && e.stack || e); });
  }
  return c.__benchReady !== undefined || c.__benchError !== undefined;
}"""


def log(msg: str) -> None:
    """Progress to stderr (the section goes to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def _bench_module(name: str) -> ModuleType:
    """A sibling script (common, tile_city) without leaving bench/ on sys.path.

    bench/ has a ``viewer.py``; left on the path it would shadow the ``viewer`` package.
    """
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def twin_exe() -> str:
    """The project's ``twin`` script."""
    exe = VENV / "twin"
    return str(exe) if exe.exists() else (shutil.which("twin") or "twin")


def python_exe() -> str:
    """The project's interpreter."""
    exe = VENV / "python"
    return str(exe) if exe.exists() else sys.executable


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Source:
    """One real district of the shared data."""

    name: str
    rel: str  # below shared/data/cityjson
    label: str
    crs: str | None = None  # referenceSystem to set when the file declares none
    upgrade: bool = False  # pre-1.0: upgrade to 2.0 first (tile_city reads 1.0+)


SOURCES = {
    s.name: s
    for s in (
        Source("delfshaven", "real/delfshaven_3-20.city.json", "Delfshaven (Rotterdam)"),
        Source(
            "denhaag",
            "legacy/denhaag_01_v08.json",
            "Den Haag tile 01",
            crs="https://www.opengis.net/def/crs/EPSG/0/28992",
            upgrade=True,
        ),
        Source("zurich", "real/zurich_subset_lod2.city.json", "Zurich LoD2 subset"),
    )
}
DEFAULT_SOURCES = ("delfshaven", "denhaag", "zurich")


@dataclass
class CityFile:
    """One generated CityJSONSeq: ``copies`` grid copies of one source."""

    source: str
    path: Path
    copies: int
    buildings: int
    objects: int
    features: int
    crs: str
    reused: bool = False
    seconds: float = 0.0
    dropped: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


@dataclass
class City:
    """The files of one benchmark city (tiled together)."""

    label: str
    target: int
    files: list[CityFile]

    @property
    def buildings(self) -> int:
        return sum(f.buildings for f in self.files)

    @property
    def objects(self) -> int:
        return sum(f.objects for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files]


def find_data() -> Path:
    """The shared data folder ($TWIN_SHARED_DATA or ../shared/data), as the tests find it."""
    from tests.conftest import find_shared_data

    data = find_shared_data()
    if data is None:
        raise SystemExit("tiles bench: ../shared/data not found (set TWIN_SHARED_DATA)")
    return Path(data)


def _fresh(out: Path, stamp: Path, deps: Sequence[Path]) -> bool:
    return (
        out.exists()
        and stamp.exists()
        and out.stat().st_mtime <= stamp.stat().st_mtime
        and stamp.stat().st_mtime >= max(p.stat().st_mtime for p in deps)
    )


def source_file(src: Source, data: Path, work: Path) -> Path:
    """The source as CityJSON 1.0+ with a CRS (upgraded into ``work`` when needed)."""
    path = data / "cityjson" / src.rel
    if not path.is_file():
        raise SystemExit(f"tiles bench: {path} not found")
    if not src.upgrade and src.crs is None:
        return path
    out = work / f"{src.name}_v2.city.json"
    if out.exists() and out.stat().st_mtime >= path.stat().st_mtime:
        return out
    from ingest.upgrade import upgrade_cityjson

    log(f"upgrading {path.name} to CityJSON 2.0 -> {out.relative_to(work.parent)}")
    work.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    upgrade_cityjson(path, tmp)
    doc = orjson.loads(tmp.read_bytes())
    meta = doc.setdefault("metadata", {})
    if src.crs and not meta.get("referenceSystem"):
        meta["referenceSystem"] = src.crs
    tmp.write_bytes(orjson.dumps(doc))
    os.replace(tmp, out)
    return out


def buildings_per_copy(path: Path) -> int:
    """Buildings (``type == "Building"``) in a CityJSON document."""
    doc = orjson.loads(path.read_bytes())
    return sum(1 for o in (doc.get("CityObjects") or {}).values() if o.get("type") == "Building")


def copies_for(target: int, per_copy: Sequence[int]) -> int:
    """Copies of every source so that together they hold at least ``target`` buildings."""
    return max(1, math.ceil(target / max(1, sum(per_copy))))


def tiled_file(src: Source, path: Path, copies: int, work: Path) -> CityFile:
    """Write (or reuse, if current) ``copies`` grid copies of ``path`` into ``work``.

    The file name and stamp match bench/ingest.py's, so both benchmarks share the files.
    """
    tile_city = _bench_module("tile_city")
    out = work / f"{src.name}_x{copies}.city.jsonl"
    stamp = out.with_suffix(".stats.json")
    reused = _fresh(out, stamp, [path, Path(str(tile_city.__file__))])
    info: dict[str, Any] = {}
    if reused:
        info = json.loads(stamp.read_text())
        reused = "buildings" in info and "features" in info
    if not reused:
        log(f"generating {out.name} ({copies} copies of {path.name}) ...")
        t0 = time.perf_counter()
        stats = tile_city.tile(path, out, copies)
        info = {
            "buildings": stats.buildings,
            "objects": stats.objects,
            "features": stats.features,
            "dropped": stats.dropped,
            "seconds": time.perf_counter() - t0,
        }
        stamp.write_text(json.dumps(info))
    with out.open("rb") as fh:
        header = orjson.loads(fh.readline())
    crs = str((header.get("metadata") or {}).get("referenceSystem") or "none")
    return CityFile(
        src.name,
        out,
        copies,
        int(info["buildings"]),
        int(info["objects"]),
        int(info["features"]),
        crs.rsplit("/", 1)[-1] if crs.startswith("http") else crs,
        reused=reused,
        seconds=float(info.get("seconds", 0.0)),
        dropped=list(info.get("dropped", [])),
    )


def build_city(
    target: int, sources: Sequence[str], data: Path, work: Path = WORK, label: str = ""
) -> City:
    """Grid copies of the named sources, together at least ``target`` buildings."""
    work.mkdir(parents=True, exist_ok=True)
    srcs = [SOURCES[s] for s in sources]
    paths = [source_file(s, data, work) for s in srcs]
    copies = copies_for(target, [buildings_per_copy(p) for p in paths])
    files = [tiled_file(s, p, copies, work) for s, p in zip(srcs, paths, strict=True)]
    city = City(label or f"{_short(target)} city", target, files)
    return city


def _short(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


# --------------------------------------------------------------------------- running


@dataclass
class Proc:
    """One finished subprocess with its process-tree memory."""

    status: str
    wall_s: float
    cpu_s: float
    rss_peak: int  # bytes: max over samples of the tree's RSS sum (and ru_maxrss)
    pss_peak: int | None
    processes: int  # most processes seen at once in the tree
    exit: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _tree_memory(root: psutil.Process, with_pss: bool) -> tuple[int, int | None, int]:
    """(RSS sum, PSS sum or None, process count) of ``root`` and all its descendants."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, None, 0
    rss = 0
    pss: int | None = 0 if with_pss else None
    for p in procs:
        try:
            if with_pss:
                info = p.memory_full_info()
                rss += int(info.rss)
                pss = (pss or 0) + int(getattr(info, "pss", 0))
            else:
                rss += int(p.memory_info().rss)
        except psutil.Error:
            continue
    return rss, pss, len(procs)


def _classify(code: int, stderr: str, timed_out: bool, timeout: float) -> str:
    if timed_out:
        return f"timeout ({timeout:g} s)"
    if code == 0:
        return "ok"
    if code < 0:
        try:
            return f"failed (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"failed (signal {-code})"
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    return f"failed (exit {code}: {lines[-1][:200] if lines else 'no message'})"


def run_tree(
    cmd: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    interval: float = POLL_S,
) -> Proc:
    """Run ``cmd`` in its own session, sampling the whole process tree's memory.

    Every ``interval`` s the RSS (and PSS, from /proc/PID/smaps_rollup) of the process and
    all its descendants are summed; the peak of those sums is the tree's peak. The child is
    reaped with ``os.wait4`` for its CPU time (it and the children it waited for). On
    timeout the process group (and only it) is killed.
    """
    with_pss = Path("/proc/self/smaps_rollup").exists()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        ps = psutil.Process(p.pid)
        rss_peak, pss_peak, nprocs = 0, 0 if with_pss else None, 1
        timed_out = False
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            rss, pss, n = _tree_memory(ps, with_pss)
            rss_peak = max(rss_peak, rss)
            if pss is not None and pss_peak is not None:
                pss_peak = max(pss_peak, pss)
            nprocs = max(nprocs, n)
            if time.perf_counter() - t0 > timeout and not timed_out:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            time.sleep(interval)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        p.returncode = code  # reaped by wait4; keep Popen from polling a reused pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # stragglers of a failed run
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    rss_peak = max(rss_peak, usage.ru_maxrss * 1024)
    return Proc(
        _classify(code, stderr, timed_out, timeout),
        wall,
        usage.ru_utime + usage.ru_stime,
        rss_peak,
        pss_peak,
        nprocs,
        code,
        stdout,
        stderr,
    )


def tiler_flags() -> set[str]:
    """The options ``twin tiles --help`` lists (so the bench runs against old and new)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    try:
        out = subprocess.run(
            [twin_exe(), "tiles", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=ROOT,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", out))


# --------------------------------------------------------------------------- tilesets


@dataclass
class TilesetInfo:
    """What a tileset folder holds."""

    tiles: int = 0  # tile nodes (explicit) or content files (implicit)
    contents: int = 0  # GLB files
    leaves: int = 0
    depth: int = 0
    bytes: int = 0  # every file in the folder
    leaf_bytes: int = 0
    implicit: bool = False
    json_docs: list[Path] = field(default_factory=list)  # tileset.json + external tilesets
    subtrees: list[Path] = field(default_factory=list)
    glbs: list[Path] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)
    leaf_glbs: list[Path] = field(default_factory=list)


def _content_uris(tile: dict[str, Any]) -> list[str]:
    uris = []
    for c in [tile.get("content"), *(tile.get("contents") or [])]:
        if isinstance(c, dict) and isinstance(c.get("uri") or c.get("url"), str):
            uris.append(str(c.get("uri") or c.get("url")))
    return uris


def inspect_tileset(out: Path) -> TilesetInfo:
    """Walk ``out/tileset.json`` (external tilesets too) and list the folder's files."""
    info = TilesetInfo()
    files = [p for p in out.rglob("*") if p.is_file()]
    info.bytes = sum(p.stat().st_size for p in files)
    info.glbs = sorted(p for p in files if p.suffix == ".glb")
    info.contents = len(info.glbs)
    info.subtrees = sorted(p for p in files if p.suffix == ".subtree")
    leaf_set: set[Path] = set()

    def walk(doc_path: Path, depth0: int) -> None:
        info.json_docs.append(doc_path)
        doc = orjson.loads(doc_path.read_bytes())
        stack: list[tuple[dict[str, Any], int]] = [(doc["root"], depth0)]
        while stack:
            tile, depth = stack.pop()
            info.tiles += 1
            info.depth = max(info.depth, depth)
            implicit = tile.get("implicitTiling")
            if isinstance(implicit, dict):
                info.implicit = True
                levels = int(implicit.get("availableLevels", 1))
                info.depth = max(info.depth, depth + levels - 1)
            children = tile.get("children") or []
            for uri in _content_uris(tile):
                if implicit:  # a template: the root is level 0 (§ Implicit tiling)
                    for key in ("level", "x", "y", "z"):
                        uri = uri.replace("{" + key + "}", "0")
                target = (doc_path.parent / uri).resolve()
                if uri.endswith(".json") and target.is_file() and target != doc_path:
                    walk(target, depth)
                elif target.suffix == ".glb" and target.is_file():
                    if doc_path.name == "tileset.json" and depth == depth0 == 0:
                        info.roots.append(target)
                    if not children and not implicit:
                        leaf_set.add(target)
            if not children and not implicit:
                info.leaves += 1
            stack.extend((c, depth + 1) for c in children)

    walk(out / "tileset.json", 0)
    if info.implicit:
        info.tiles = max(info.tiles, info.contents)
    info.leaf_glbs = sorted(leaf_set)
    info.leaf_bytes = sum(p.stat().st_size for p in info.leaf_glbs)
    return info


def schema_validator(schemas: Path, name: str) -> Any:
    """A Draft 2020-12 validator for one 3D Tiles 1.1 schema, its $refs resolved by file."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    by_name = {p.name: json.loads(p.read_text()) for p in schemas.rglob("*.schema.json")}
    if name not in by_name:
        raise FileNotFoundError(f"{name} not in {schemas}")

    def retrieve(uri: str) -> Resource:
        # The schemas' $ids and $refs are bare or ./relative file names.
        return Resource.from_contents(by_name[uri.rsplit("/", 1)[-1]])

    registry: Registry = Registry(retrieve=retrieve)  # type: ignore[call-arg]
    return Draft202012Validator(by_name[name], registry=registry)


def _subtree_json(path: Path) -> Any:
    """The JSON part of a subtree file (3D Tiles 1.1 § Subtree binary format) or a .json."""
    data = path.read_bytes()
    if data[:4] != b"subt":
        return orjson.loads(data)
    json_len = struct.unpack_from("<Q", data, 8)[0]
    return orjson.loads(data[24 : 24 + json_len])


def validate_schemas(info: TilesetInfo, schemas: Path) -> tuple[int, int, list[str]]:
    """Tileset JSONs (and subtrees) against the 3D Tiles 1.1 schemas.

    Returns:
        (documents checked, errors, up to five kinds of error: the message with its
        count and the path of its first occurrence).
    """
    tileset_v = schema_validator(schemas, "tileset.schema.json")
    subtree_v = schema_validator(schemas, "subtree.schema.json") if info.subtrees else None
    checked, errors = 0, 0
    kinds: dict[str, tuple[int, str]] = {}
    jobs: list[tuple[Path, Any, Any]] = [
        (d, tileset_v, orjson.loads(d.read_bytes())) for d in info.json_docs
    ]
    jobs += [(s, subtree_v, _subtree_json(s)) for s in info.subtrees]
    for path, validator, doc in jobs:
        for e in validator.iter_errors(doc):
            errors += 1
            n, where = kinds.get(e.message[:160], (0, f"{path.name} {list(e.path)[:8]}"))
            kinds[e.message[:160]] = (n + 1, where)
        checked += 1
    first = [f"{msg} (x{n}; first at {where})" for msg, (n, where) in list(kinds.items())[:5]]
    return checked, errors, first


@dataclass
class Validation:
    """The glTF-Validator over a set of GLBs."""

    files: int = 0
    of: int = 0
    how: str = ""
    errors: int = 0
    warnings: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    warning_codes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    status: str = "ok"


def pick_sample(info: TilesetInfo, limit: int, seed: int = SEED) -> tuple[list[Path], str]:
    """All GLBs, or above ``limit`` a deterministic sample: roots, leaves, then the rest."""
    glbs = info.glbs
    if len(glbs) <= limit:
        return list(glbs), f"all {len(glbs):,}"
    rng = random.Random(seed)
    chosen: list[Path] = list(dict.fromkeys(info.roots))[: max(1, limit // 10)]
    leaves = [p for p in info.leaf_glbs if p not in chosen]
    n_leaves = min(len(leaves), max(0, limit // 4))
    chosen += rng.sample(leaves, n_leaves)
    rest = sorted(set(glbs) - set(chosen))
    chosen += rng.sample(rest, min(len(rest), max(0, limit - len(chosen))))
    return sorted(chosen), (
        f"sample of {len(chosen):,} of {len(glbs):,} (root {len(info.roots[:1])}, "
        f"{n_leaves} leaves, seed {seed})"
    )


def validator_available() -> str | None:
    """None when node and node_modules/gltf-validator are there, else why not."""
    if shutil.which("node") is None:
        return "node not installed"
    if not (ROOT / "node_modules" / "gltf-validator").is_dir():
        return "node_modules/gltf-validator missing (make setup)"
    return None


def validate_glbs(files: Sequence[Path], timeout: float, work: Path = WORK) -> Validation:
    """Run the Khronos glTF-Validator on ``files`` in one node process."""
    v = Validation(files=len(files), of=len(files))
    missing = validator_available()
    if missing:
        v.status = f"not run: {missing}"
        return v
    if not files:
        v.status = "no GLB"
        return v
    work.mkdir(parents=True, exist_ok=True)
    script = work / "validate_glbs.mjs"
    if not script.exists() or script.read_text() != VALIDATE_MJS:
        script.write_text(VALIDATE_MJS)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=work, delete=False) as fh:
        fh.write("\n".join(str(Path(f).resolve()) for f in files) + "\n")
        listing = Path(fh.name)
    try:
        p = run_tree(["node", str(script), str(ROOT), str(listing)], timeout=timeout)
    finally:
        listing.unlink(missing_ok=True)
    v.seconds = p.wall_s
    seen = 0
    for line in p.stdout.splitlines():
        if not line.startswith("{"):
            continue
        rep = json.loads(line)
        seen += 1
        v.errors += int(rep["errors"])
        v.warnings += int(rep["warnings"])
        for key, target in (("errorCodes", v.error_codes), ("warningCodes", v.warning_codes)):
            for code, n in rep.get(key, {}).items():
                target[code] = target.get(code, 0) + int(n)
    if seen != len(files):
        v.status = f"validator {p.status}: {seen} of {len(files)} reports"
    return v


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One measured (or stated) run."""

    run: str
    input: str
    buildings: int
    status: str = "not run"
    wall_s: float | None = None
    cpu_s: float | None = None
    rss: int | None = None
    pss: int | None = None
    processes: int | None = None
    tiles: int | None = None
    leaves: int | None = None
    depth: int | None = None
    bytes: int | None = None
    leaf_bytes: int | None = None
    schema: str = "n/a"
    schema_errors: int | None = None
    validated: str = "n/a"
    val_errors: int | None = None
    val_warnings: int | None = None
    val_codes: dict[str, int] = field(default_factory=dict)
    output: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def bps(self) -> float | None:
        return self.buildings / self.wall_s if self.wall_s and self.buildings else None

    @property
    def bytes_per_building(self) -> float | None:
        return self.bytes / self.buildings if self.bytes and self.buildings else None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _proc_into(row: Row, p: Proc) -> None:
    row.status = p.status
    row.wall_s, row.cpu_s, row.rss, row.pss = p.wall_s, p.cpu_s, p.rss_peak, p.pss_peak
    row.processes = p.processes


def run_tiler(
    city: City,
    out: Path,
    *,
    flags: set[str],
    workers: int | None,
    dask: str | None,
    max_features: int | None,
    timeout: float,
    schemas: Path | None,
    validate_max: int,
    validate_timeout: float,
    run: str = "twin tiles",
) -> Row:
    """``twin tiles`` on the city into ``out`` (emptied first), measured and validated."""
    row = Row(run, city.label, city.buildings, output=str(out))
    cmd = [twin_exe(), "tiles", *map(str, city.paths), "-o", str(out)]
    if workers and "--workers" in flags:
        cmd += ["--workers", str(workers)]
    elif workers and workers > 1:
        row.notes.append("`--workers` not offered by this `twin tiles`; ran with its default")
    if dask:
        if "--dask" not in flags:
            row.status = "not run: this `twin tiles` has no --dask"
            return row
        cmd += ["--dask", dask]
        row.notes.append(f"on the Dask cluster {dask}: its workers' memory is not in the RSS")
    if max_features:
        cmd += ["--max-features", str(max_features)]
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"  {' '.join(Path(c).name if c.startswith('/') else c for c in cmd)}")
    p = run_tree(cmd, timeout=timeout)
    _proc_into(row, p)
    log(
        f"    {p.status}: {p.wall_s:.1f} s wall, {p.cpu_s:.1f} s CPU, tree peak RSS "
        f"{p.rss_peak / MIB:,.0f} MiB ({p.processes} processes)"
    )
    if not p.ok or not (out / "tileset.json").is_file():
        if p.ok:
            row.status = "failed (no tileset.json written)"
        return row
    fill_tileset(row, out, schemas, validate_max, validate_timeout)
    return row


def fill_tileset(
    row: Row, out: Path, schemas: Path | None, validate_max: int, validate_timeout: float
) -> TilesetInfo:
    """Counts, bytes, schema check and glTF validation of a written tileset."""
    info = inspect_tileset(out)
    row.tiles, row.leaves, row.depth = info.contents, info.leaves, info.depth
    row.bytes, row.leaf_bytes = info.bytes, info.leaf_bytes
    if info.implicit:
        row.notes.append("implicit tiling: depth from availableLevels, tiles = GLB files")
    if schemas is not None and schemas.is_dir():
        checked, errors, first = validate_schemas(info, schemas)
        row.schema_errors = errors
        row.schema = f"{errors} errors ({checked} docs)" if errors else f"valid ({checked} docs)"
        row.notes += [f"schema: {m}" for m in first]
    else:
        row.schema = "not run (schemas missing)"
    files, how = pick_sample(info, validate_max)
    log(f"    validating {how} tile GLBs ...")
    v = validate_glbs(files, validate_timeout)
    row.validated = how if v.status == "ok" else f"{how}; {v.status}"
    if v.status == "ok" or v.files:
        row.val_errors, row.val_warnings = v.errors, v.warnings
        row.val_codes = {**v.error_codes}
        if v.warning_codes:
            row.notes.append(
                "validator warnings: "
                + ", ".join(f"{c} x{n}" for c, n in sorted(v.warning_codes.items()))
            )
    log(f"    {row.validated}: {v.errors} errors, {v.warnings} warnings in {v.seconds:.1f} s")
    return info


def run_export(
    city: City, out_dir: Path, timeout: float, validate_timeout: float, keep: bool
) -> Row:
    """``twin export`` of each file of the city to one GLB; times and bytes summed."""
    row = Row("twin export (single GLB per file)", city.label, city.buildings)
    out_dir.mkdir(parents=True, exist_ok=True)
    walls: list[float] = []
    cpus: list[float] = []
    rss: list[int] = []
    pss: list[int] = []
    total = 0
    glbs = []
    for f in city.files:
        glb = out_dir / f"{f.path.name.split('.')[0]}.glb"
        glb.unlink(missing_ok=True)
        cmd = [twin_exe(), "export", str(f.path), "-o", str(glb), "--no-check"]
        log(f"  twin export {f.path.name}")
        p = run_tree(cmd, timeout=timeout)
        if not p.ok:
            row.status = f"{f.path.name}: {p.status}"
            return row
        walls.append(p.wall_s)
        cpus.append(p.cpu_s)
        rss.append(p.rss_peak)
        if p.pss_peak is not None:
            pss.append(p.pss_peak)
        total += glb.stat().st_size
        glbs.append(glb)
    row.status = "ok"
    row.wall_s, row.cpu_s, row.rss = sum(walls), sum(cpus), max(rss)
    row.pss = max(pss) if pss else None
    row.bytes, row.tiles = total, len(glbs)
    row.validated = f"all {len(glbs)}"
    v = validate_glbs(glbs, validate_timeout)
    if v.status != "ok":
        row.validated += f"; {v.status}"
    row.val_errors, row.val_warnings, row.val_codes = v.errors, v.warnings, v.error_codes
    if len(glbs) > 1:
        row.notes.append(
            f"{len(glbs)} files exported one after the other (`twin export` takes one "
            "file): wall and CPU summed, RSS the largest"
        )
    if not keep:
        for g in glbs:
            g.unlink(missing_ok=True)
    return row


# --------------------------------------------------------------------------- baselines


def py3dtiles_exe(install: bool) -> tuple[Path | None, str]:
    """py3dtiles in its own venv under bench/work (installed with pip when ``install``)."""
    exe = PY3DTILES_VENV / "bin" / "py3dtiles"
    if exe.exists():
        return exe, ""
    if not install:
        return None, "not installed (run without --no-install-peer to pip-install it)"
    log(f"installing py3dtiles {PY3DTILES_VERSION} into {PY3DTILES_VENV.relative_to(ROOT)} ...")
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(PY3DTILES_VENV)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        subprocess.run(
            [
                str(PY3DTILES_VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                f"py3dtiles=={PY3DTILES_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        tail = getattr(exc, "stderr", b"") or b""
        return None, f"pip install py3dtiles failed: {tail.decode(errors='replace')[-200:]}"
    return (exe, "") if exe.exists() else (None, "py3dtiles script missing after install")


@dataclass
class WkbInput:
    """The WKB folder written for ``py3dtiles export -d``."""

    folder: Path
    offset: tuple[float, float, float]
    written: int = 0
    skipped: int = 0  # features with more distinct points than py3dtiles' uint8 indices hold
    buildings: int = 0
    seconds: float = 0.0


def _ecef_centre(seq: Path) -> tuple[int, tuple[float, float, float]]:
    """EPSG and the ECEF centre of a tile_city CityJSONSeq (from its header's extent)."""
    import numpy as np
    from pyproj import Transformer

    from ingest.cityjson import parse_epsg

    with seq.open("rb") as fh:
        header = orjson.loads(fh.readline())
    meta = header.get("metadata") or {}
    epsg = parse_epsg(meta.get("referenceSystem"))
    ext = meta.get("geographicalExtent")
    if epsg is None or not isinstance(ext, list) or len(ext) != 6:
        raise ValueError(f"{seq.name}: header has no referenceSystem/geographicalExtent")
    tr = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4978", always_xy=True)
    x, y, z = tr.transform((ext[0] + ext[3]) / 2, (ext[1] + ext[4]) / 2, (ext[2] + ext[5]) / 2)
    # float32-exact: py3dtiles stores the root transform as float32.
    c = np.asarray([x, y, z], dtype=np.float32).astype(np.float64)
    return epsg, (float(c[0]), float(c[1]), float(c[2]))


def write_wkbs(seq: Path, folder: Path) -> WkbInput:
    """One WKB MultiPolygonZ per CityObject with surfaces, as ``py3dtiles export -d`` reads.

    Coordinates are ECEF minus a float32-exact centre, rotated to y up ((x, y, z) ->
    (x, z, -y), py3dtiles' own ``ST_RotateX(-pi/2)``); the centre is the tileset's root
    translation (``-o``). Features with more than 255 distinct points are left out:
    py3dtiles 12.1.1 indexes each feature's vertices with uint8 and aborts the whole export
    (OverflowError) on the first larger one.
    """
    import numpy as np
    from pyproj import Transformer

    from ingest.cityjson import iter_cityjson

    t0 = time.perf_counter()
    epsg, centre = _ecef_centre(seq)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    res = WkbInput(folder, centre)
    tr = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4978", always_xy=True)
    c = np.asarray(centre)
    for model in iter_cityjson(seq, wgs84=False):
        v = model.vertices
        if not len(v) or not model.feature_ids:
            continue
        x, y, z = tr.transform(v[:, 0], v[:, 1], v[:, 2])
        e = np.column_stack([x, y, z]) - c
        local = np.column_stack([e[:, 0], e[:, 2], -e[:, 1]]).astype(np.float64)
        order = np.argsort(model.surf_feature, kind="stable")
        bounds = np.searchsorted(model.surf_feature[order], np.arange(len(model.feature_ids) + 1))
        sr, ro, rv = model.surface_rings, model.ring_offsets, model.ring_vertices
        kinds = {oid: model.twin[oid].type for oid in model.feature_ids if oid in model.twin}
        for f, oid in enumerate(model.feature_ids):
            surfs = order[bounds[f] : bounds[f + 1]]
            if not len(surfs):
                continue
            rings = [(int(sr[s]), int(sr[s + 1])) for s in surfs]
            idx = np.concatenate([rv[ro[a] : ro[b]] for a, b in rings])
            if len(np.unique(local[idx].astype(np.float32), axis=0)) > PY3DTILES_MAX_POINTS:
                res.skipped += 1
                continue
            parts = [struct.pack("<BII", 1, 1006, len(rings))]  # MultiPolygonZ
            for a, b in rings:
                parts.append(struct.pack("<BII", 1, 1003, b - a))  # PolygonZ
                for r in range(a, b):
                    ring = rv[ro[r] : ro[r + 1]]
                    parts.append(struct.pack("<I", len(ring) + 1))
                    parts.append(local[np.append(ring, ring[0])].tobytes())
            (folder / f"{res.written:08d}.wkb").write_bytes(b"".join(parts))
            res.written += 1
            res.buildings += kinds.get(oid) == "Building"
    res.seconds = time.perf_counter() - t0
    return res


def b3dm_glb(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """The GLB inside a b3dm (3D Tiles 1.0 § Batched 3D Model) and its feature table."""
    magic, _, _, ftj, ftb, btj, btb = struct.unpack_from("<4sIIIIII", data)
    if magic != b"b3dm":
        raise ValueError("not a b3dm")
    ft = orjson.loads(data[28 : 28 + ftj]) if ftj else {}
    return data[28 + ftj + ftb + btj + btb :], ft


def run_py3dtiles(
    exe: Path,
    seq: CityFile,
    out: Path,
    timeout: float,
    schemas: Path | None,
    validate_max: int,
    validate_timeout: float,
) -> Row:
    """``py3dtiles export -d WKBS`` on the buildings of ``seq`` (see ``write_wkbs``)."""
    label = f"{seq.source} x{seq.copies}"
    row = Row(f"py3dtiles {PY3DTILES_VERSION} export (WKB)", label, 0, output=str(out))
    log(f"  py3dtiles: writing WKBs of {seq.path.name} ...")
    wkb = write_wkbs(seq.path, WORK / f"py3dtiles_wkb_{seq.source}_x{seq.copies}")
    row.buildings = wkb.buildings
    row.notes.append(
        f"input: {wkb.written:,} WKB MultiPolygonZ (one per building, ECEF around a centre), "
        f"written in {wkb.seconds:.1f} s (not in the time); {wkb.skipped:,} buildings with "
        f"> {PY3DTILES_MAX_POINTS} distinct points left out: py3dtiles indexes a feature's "
        "vertices with uint8 and aborts the whole export (OverflowError) on the first one"
    )
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(exe), "export", "-d", str(wkb.folder), "-o", *map(str, wkb.offset)]
    cmd += ["-s", str(out)]
    log(f"  py3dtiles export -d {wkb.folder.name} ({wkb.written:,} WKBs)")
    try:
        p = run_tree(cmd, timeout=timeout, cwd=WORK)
    finally:
        shutil.rmtree(wkb.folder, ignore_errors=True)  # thousands of small files
    _proc_into(row, p)
    log(f"    {p.status}: {p.wall_s:.1f} s, peak RSS {p.rss_peak / MIB:,.0f} MiB")
    if not p.ok or not (out / "tileset.json").is_file():
        return row
    doc = orjson.loads((out / "tileset.json").read_bytes())
    info = inspect_tileset(out)
    b3dms = sorted(out.rglob("*.b3dm"))
    row.tiles, row.depth, row.bytes = len(b3dms), info.depth, info.bytes
    row.leaves = info.leaves
    if schemas is not None and schemas.is_dir():
        checked, errors, first = validate_schemas(info, schemas)
        row.schema_errors = errors
        row.schema = f"{errors} errors ({checked} docs)" if errors else f"valid ({checked} docs)"
        row.notes += [f"schema: {m}" for m in first]
    glb_dir = out / "_glb"  # the GLBs inside the b3dms, for the glTF-Validator
    glb_dir.mkdir(exist_ok=True)
    no_batch = 0
    for b in b3dms:
        glb, ft = b3dm_glb(b.read_bytes())
        no_batch += "BATCH_LENGTH" not in ft
        (glb_dir / f"{b.stem}.glb").write_bytes(glb)
    row.bytes = info.bytes  # b3dm + tileset.json, before the extracted copies
    sample = TilesetInfo(glbs=sorted(glb_dir.glob("*.glb")))
    files, how = pick_sample(sample, validate_max)
    v = validate_glbs(files, validate_timeout)
    row.validated = f"{how} (GLBs inside the b3dms)" + ("" if v.status == "ok" else v.status)
    row.val_errors, row.val_warnings, row.val_codes = v.errors, v.warnings, v.error_codes
    shutil.rmtree(glb_dir, ignore_errors=True)
    row.notes.append(
        f"3D Tiles {doc.get('asset', {}).get('version')} b3dm (not 1.1 glTF content: "
        "`export` ignores --spec-version); no object ids in folder mode (no batch table)"
        + (
            f"; {no_batch} of {len(b3dms)} b3dm feature tables lack the required BATCH_LENGTH"
            if no_batch
            else ""
        )
    )
    return row


def pg2b3dm_row(city_label: str, buildings: int) -> Row:
    """pg2b3dm (.NET + PostGIS): stated as not runnable unless both are here."""
    row = Row("pg2b3dm", city_label, buildings)
    dotnet, pg2 = shutil.which("dotnet"), shutil.which("pg2b3dm")
    if dotnet and pg2:
        row.status = "not run: found, but this benchmark has no PostGIS loader for it yet"
    else:
        missing = " and ".join(n for n, w in (("`dotnet`", dotnet), ("`pg2b3dm`", pg2)) if not w)
        row.status = "not runnable here"
        row.notes.append(
            f"pg2b3dm is a .NET tool reading PostGIS; {missing} not on PATH, and the .NET "
            "SDK is not in the package registries this machine reaches. The pg2b3dm-like "
            "path that runs here is `py3dtiles export` (PostGIS/WKB geometries -> b3dm)"
        )
    return row


def citydb_row() -> Row:
    """The anchor: 3DCityDB v5's published import rate (not run here)."""
    row = Row("3DCityDB v5 import (published)", "1M buildings", TARGET_BUILDINGS)
    row.status = "published figure"
    row.wall_s = TARGET_BUILDINGS / CITYDB_BPS
    row.notes.append(
        f"3DCityDB v5 imports ~{CITYDB_BPS:.0f} buildings/s (33 min for 1M), into the "
        "database only, before any tiling: the anchor of issue 8"
    )
    return row


# --------------------------------------------------------------------------- viewer


@dataclass
class ViewerResult:
    """First frames of the viewer in tiles mode on a prebuilt tileset."""

    tileset: str = ""
    buildings: int = 0
    status: str = "not run"
    first_frames: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    tile_requests: list[int] = field(default_factory=list)
    busy_before: list[float] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    chromium: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def first_frame(self) -> float | None:
        return statistics.median(self.first_frames) if self.first_frames else None


def tileset_setting() -> bool:
    """Whether viewer.settings.Settings has ``tileset`` (TWIN_TILESET)."""
    code = "from viewer.settings import Settings; print('tileset' in Settings.model_fields)"
    try:
        out = subprocess.run(
            [python_exe(), "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.strip() == "True"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def serve_tileset(tileset: Path, log_path: Path, timeout: float = 90.0) -> Iterator[str]:
    """``twin serve`` on an empty in-memory store with ``TWIN_TILESET=tileset``."""
    port = _free_port()
    env = {**os.environ, "TWIN_TILESET": str(tileset)}
    cmd = [twin_exe(), "serve", "--db", "memory://", "--host", HOST, "--port", str(port)]
    base = f"http://{HOST}:{port}"
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"twin serve exited with {proc.returncode}")
            with contextlib.suppress(OSError):
                if _get(base + "/api/healthz", 2.0)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"twin serve not ready after {timeout:.0f} s")
            time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def viewer_first_frame(
    tileset: Path, buildings: int, loads: int, timeout_s: float, label: str
) -> ViewerResult:
    """Open ``/?tiles=1`` on the served prebuilt tileset ``loads`` times, cold each time."""
    res = ViewerResult(tileset=label, buildings=buildings)
    if not tileset_setting():
        res.status = "skipped: viewer.settings has no `tileset` (TWIN_TILESET) yet"
        return res
    if not Path(CHROMIUM).exists():
        res.status = f"skipped: {CHROMIUM} not installed"
        return res
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import Request, sync_playwright
    except ImportError:
        res.status = "skipped: playwright not installed"
        return res
    disk = orjson.loads((tileset / "tileset.json").read_bytes())
    try:
        with serve_tileset(tileset, WORK / "tiles_viewer_server.log") as base:
            status, body = _get(base + "/api/tiles/base/tileset.json", 120.0)
            if status != 200:
                res.status = f"skipped: /api/tiles/base/tileset.json answered {status}"
                return res
            served = orjson.loads(body)
            if served.get("root", {}).get("boundingVolume") != disk["root"].get("boundingVolume"):
                res.status = "skipped: the server did not serve the prebuilt tileset"
                return res
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                res.chromium = browser.version
                try:
                    for i in range(loads):
                        res.busy_before.append(psutil.cpu_percent(interval=1.0) / 100)
                        ctx = browser.new_context(
                            viewport={"width": 1280, "height": 720}, device_scale_factor=1
                        )
                        page = ctx.new_page()
                        requests: list[str] = []

                        def on_request(req: Request, sink: list[str] = requests) -> None:
                            if "/api/tiles/" in req.url:
                                sink.append(req.url)

                        page.on("request", on_request)
                        page.on(
                            "console",
                            lambda m: (
                                res.console_errors.append(m.text) if m.type == "error" else None
                            ),
                        )
                        t0 = time.perf_counter()
                        try:
                            page.goto(
                                base + "/?tiles=1", wait_until="commit", timeout=timeout_s * 1e3
                            )
                            page.wait_for_function(_READY, timeout=timeout_s * 1e3)
                            wall = time.perf_counter() - t0
                            info = page.evaluate(
                                "() => ({t: window.citytwin.timings, "
                                "e: window.citytwin.__benchError || null})"
                            )
                        except PlaywrightError as exc:
                            res.status = f"failed: {str(exc).splitlines()[0][:200]}"
                            return res
                        finally:
                            n_req = len(requests)
                            ctx.close()
                        if info["e"]:
                            res.status = f"failed: citytwin.ready rejected: {info['e'][:200]}"
                            return res
                        t = info["t"] or {}
                        if "firstFrame" not in t:
                            res.status = "failed: no citytwin.timings.firstFrame"
                            return res
                        if n_req == 0:
                            res.status = "skipped: the viewer requested no tile (no tiles mode?)"
                            return res
                        ff = (float(t["firstFrame"]) - float(t.get("navigationStart") or 0)) / 1e3
                        res.first_frames.append(ff)
                        res.walls.append(wall)
                        res.tile_requests.append(n_req)
                        log(f"    load {i + 1}: first frame {ff:.2f} s, {n_req} tile requests")
                finally:
                    with contextlib.suppress(PlaywrightError):
                        browser.close()
    except RuntimeError as exc:
        res.status = f"failed: {exc}"
        return res
    res.status = "ok"
    return res


# --------------------------------------------------------------------------- report


def _fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _mib(x: int | None) -> str:
    return "n/a" if x is None else f"{x / MIB:,.0f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def machine() -> str:
    """CPU model, CPU count, RAM and Python version."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = f", {psutil.virtual_memory().total / GIB:.0f} GiB RAM"
    return f"{cpu}, {os.cpu_count()} CPUs{mem}; Python {platform.python_version()}"


@dataclass
class Report:
    """Everything the RESULTS.md section says."""

    args: argparse.Namespace
    flags: set[str]
    cities: list[City] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    viewer: ViewerResult | None = None
    notes: list[str] = field(default_factory=list)
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wall_s: float = 0.0

    def tiler_rows(self) -> list[Row]:
        return [r for r in self.rows if r.run == "twin tiles"]

    def inputs_table(self) -> list[str]:
        out = [
            "| city | file | source | CRS | copies | buildings | CityObjects | MB | generated |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in self.cities:
            for f in c.files:
                gen = "reused" if f.reused else f"{f.seconds:.0f} s"
                out.append(
                    f"| {c.label} | bench/work/{f.path.name} | {SOURCES[f.source].label} "
                    f"| {f.crs} | {f.copies:,} | {f.buildings:,} | {f.objects:,} "
                    f"| {f.bytes / 1e6:,.0f} | {gen} |"
                )
            out.append(
                f"| **{c.label}** | {len(c.files)} files | | | | **{c.buildings:,}** "
                f"| {c.objects:,} | {c.bytes / 1e6:,.0f} | |"
            )
        return out

    def results_table(self) -> list[str]:
        out = [
            "| run | input | buildings | status | wall s | bldg/s | CPU s | peak RSS tree MiB "
            "| peak PSS MiB | tiles | depth | MB | B/bldg | leaf B/bldg | schema "
            "| GLBs validated | validator err/warn |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            val = (
                "n/a"
                if r.val_errors is None
                else f"{r.val_errors:,}/{r.val_warnings or 0:,}"
                + (
                    " (" + ", ".join(f"{c} x{n:,}" for c, n in sorted(r.val_codes.items())) + ")"
                    if r.val_codes
                    else ""
                )
            )
            leaf_bpb = r.leaf_bytes / r.buildings if r.leaf_bytes and r.buildings else None
            out.append(
                f"| {r.run} | {r.input} | {r.buildings:,} | {r.status} | {_fmt(r.wall_s)} "
                f"| {_fmt(r.bps, 0)} | {_fmt(r.cpu_s)} | {_mib(r.rss)} | {_mib(r.pss)} "
                f"| {r.tiles if r.tiles is not None else 'n/a'} "
                f"| {r.depth if r.depth is not None else 'n/a'} "
                f"| {_fmt(r.bytes / 1e6 if r.bytes else None)} | {_fmt(r.bytes_per_building, 0)} "
                f"| {_fmt(leaf_bpb, 0)} | {r.schema} | {r.validated} | {val} |"
            )
        return out

    def _export_bpb(self, city: City) -> tuple[float | None, str]:
        """The single-GLB bytes/building for ``city``: measured, or from a smaller city."""
        for r in self.rows:
            if r.run.startswith("twin export") and r.input == city.label and r.ok:
                return r.bytes_per_building, "measured"
        done = [
            r
            for r in self.rows
            if r.run.startswith("twin export") and r.ok and r.bytes_per_building
        ]
        if done:
            r = max(done, key=lambda x: x.buildings)
            return r.bytes_per_building, f"from the {r.input} export (same buildings, copied)"
        return None, "no export measured"

    def targets_table(self) -> list[str]:
        out = ["| target | measured | verdict |", "|---|---|---|"]
        tiles = [r for r in self.tiler_rows() if r.ok]
        big = [r for r in tiles if r.buildings >= TARGET_BUILDINGS]
        largest = max(tiles, key=lambda r: r.buildings) if tiles else None
        if big:
            r = big[0]
            assert r.wall_s is not None
            out.append(
                f"| {TARGET_BUILDINGS:,} buildings in < {TARGET_WALL_S / 60:.0f} min on "
                f"{os.cpu_count()} cores | {r.wall_s:,.0f} s ({r.buildings:,} buildings, "
                f"{_fmt(r.bps, 0)}/s) | {_verdict(r.wall_s < TARGET_WALL_S)} |"
            )
        elif largest is not None and largest.wall_s:
            scale = TARGET_BUILDINGS / largest.buildings
            cores = os.cpu_count() or 1
            cpu = (
                f"; its CPU time {largest.cpu_s:,.0f} s x {scale:.1f} / {cores} cores = "
                f"{largest.cpu_s * scale / cores:,.0f} s at best (perfect use of every core)"
                if largest.cpu_s
                else ""
            )
            out.append(
                f"| {TARGET_BUILDINGS:,} buildings in < {TARGET_WALL_S / 60:.0f} min | not run "
                f"at 1M; linear projections from the {largest.input}: wall "
                f"{largest.wall_s:,.0f} s x {scale:.1f} = {largest.wall_s * scale:,.0f} s{cpu} "
                "| n/a |"
            )
        rss_rows = big or ([largest] if largest else [])
        for r in rss_rows:
            assert r.rss is not None
            out.append(
                f"| peak RSS < {TARGET_RSS / GIB:.0f} GB ({r.input}) | {r.rss / GIB:.2f} GiB "
                f"tree RSS sum, PSS {_mib(r.pss)} MiB | "
                f"{_verdict(r.rss < TARGET_RSS) if r.buildings >= TARGET_BUILDINGS else 'n/a'} |"
            )
        checked = [r for r in tiles if r.val_errors is not None]
        if checked:
            errs = sum(r.val_errors or 0 for r in checked)
            schema_errs = sum(r.schema_errors or 0 for r in tiles)
            out.append(
                f"| 0 validator errors (`twin tiles`) | {errs} glTF-Validator errors over "
                f"{len(checked)} tilesets ({'; '.join(r.validated for r in checked)}); "
                f"{schema_errs} schema errors | {_verdict(errs == 0 and schema_errs == 0)} |"
            )
        for r in tiles:
            if r.run != "twin tiles" or r.bytes_per_building is None:
                continue
            ref, how = self._export_bpb(next(c for c in self.cities if c.label == r.input))
            if ref is None:
                continue
            out.append(
                f"| bytes/building <= single-GLB export ({r.input}) | "
                f"{r.bytes_per_building:,.0f} vs {ref:,.0f} ({how}) | "
                f"{_verdict(r.bytes_per_building <= ref)} |"
            )
        for r in tiles:
            if r.bps:
                out.append(
                    f"| vs 3DCityDB v5 import ({CITYDB_BPS:.0f} bldg/s, {r.input}) "
                    f"| {r.bps / CITYDB_BPS:,.1f}x | info |"
                )
        v = self.viewer
        if v is not None:
            ff = v.first_frame
            ok = None if ff is None else ff < TARGET_FIRST_FRAME_S
            if ok is not None and v.buildings < TARGET_BUILDINGS:
                ok = None  # the target is about the 1M tileset
            meas = (
                f"{ff:.2f} s median of {len(v.first_frames)} ({v.tileset})"
                if ff is not None
                else v.status
            )
            out.append(
                f"| viewer first frame of the {_short(TARGET_BUILDINGS)} tileset "
                f"< {TARGET_FIRST_FRAME_S:g} s | {meas} | {_verdict(ok)} |"
            )
        return out

    def viewer_lines(self) -> list[str]:
        v = self.viewer
        if v is None:
            return ["not run (`--no-viewer`)"]
        if not v.first_frames:
            return [f"{v.tileset}: {v.status}"]
        return [
            "| tileset | buildings | first frame s (median, range) | ready wall s | tile "
            "requests until ready | CPUs busy before | Chromium |",
            "|---|---|---|---|---|---|---|",
            f"| {v.tileset} | {v.buildings:,} | {v.first_frame:.2f} "
            f"({min(v.first_frames):.2f}-{max(v.first_frames):.2f}) "
            f"| {statistics.median(v.walls):.2f} | {statistics.median(v.tile_requests):.0f} "
            f"| {max(v.busy_before):.0%} | {v.chromium} |",
        ]

    def section(self) -> str:
        a = self.args
        ls, le = self.load_start, os.getloadavg()
        flags = ", ".join(
            f"{f} {'yes' if f in self.flags else 'no'}" for f in ("--workers", "--dask", "--3tz")
        )
        out = [
            "## Tiles: 3D Tiles 1.1 of 100k-1M real buildings (`bench/tiles.py`)",
            "",
            f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            f"- commit: {_bench_module('common').commit()}",
            f"- machine: {machine()}",
            f"- `twin tiles` options found in its --help: {flags}; ran with "
            + (f"--workers {a.workers}" if "--workers" in self.flags else "its defaults")
            + (f", --dask {a.dask}" if a.dask else "")
            + (f", --max-features {a.max_features}" if a.max_features else ""),
            f"- load average (1/5/15 min) at the start: {ls[0]:.1f} / {ls[1]:.1f} / "
            f"{ls[2]:.1f}, at the end: {le[0]:.1f} / {le[1]:.1f} / {le[2]:.1f}",
            f"- sizes: {', '.join(f'{s:,}' for s in a.sizes)}; {self.wall_s / 60:.0f} min",
            "",
            "Generated by `.venv/bin/python bench/tiles.py"
            + (" --quick" if a.quick else f" --sizes {' '.join(map(str, a.sizes))}")
            + "`. Every run is a subprocess (the CLI as a user runs it). *wall s*: its wall "
            "time incl. interpreter start; *bldg/s* from it; *CPU s*: user+sys of the process "
            "and the children it waited for (`os.wait4`); *peak RSS tree*: the largest sum of "
            f"RSS over the process and all its descendants, sampled every {POLL_S:g} s with "
            "psutil (pages shared between processes count in each: an upper bound), *PSS* "
            "the same with proportional set sizes; *tiles*: GLB tile files; *MB* and "
            "*B/bldg*: every file of the tileset folder; *leaf B/bldg*: the leaf tiles only "
            "(full geometry; parents add simplified blocks). *schema*: tileset.json (and "
            "external tilesets/subtrees) against the 3D Tiles 1.1 JSON schemas; *validator*: "
            "Khronos glTF-Validator on the GLBs named (codes are errors).",
            "",
            "### Inputs",
            "",
            "Grid copies of real districts by `bench/tile_city.py` (nothing invented; "
            "appearance dropped). Every source gets the same number of copies and stays in "
            "its own CRS at its own place: the Dutch districts side by side in RD New, "
            "Zurich in LV95 (its 49 buildings are spread over 9 x 10 km, so its copies are "
            "sparse). Den Haag is CityJSON 0.8: upgraded to 2.0 with cjio "
            "(`ingest.upgrade`) and given EPSG:28992, which the file does not declare.",
            "",
            *self.inputs_table(),
            "",
            "### Results",
            "",
            *self.results_table(),
            "",
            "### Targets",
            "",
            *self.targets_table(),
            "",
            "### Viewer first frame (tiles mode, prebuilt tileset)",
            "",
            "`twin serve --db memory://` with `TWIN_TILESET=DIR` serving the largest tileset "
            "as the base tileset; headless Chromium (SwiftShader, 1280x720) opens "
            "`/?tiles=1` cold (new context) each time; first frame = "
            "`citytwin.timings.firstFrame - navigationStart`.",
            "",
            *self.viewer_lines(),
        ]
        notes = list(self.notes)
        if ls[0] > 1.0:
            notes.insert(
                0,
                f"the machine was not idle (1-min load {ls[0]:.1f} at the start on "
                f"{os.cpu_count()} CPUs): other processes shared the CPUs, so wall times and "
                "rates are pessimistic; CPU s is much less affected",
            )
        for r in self.rows:
            notes += [f"{r.run} / {r.input}: {n}" for n in r.notes]
        if self.viewer is not None:
            notes += [f"viewer: {n}" for n in self.viewer.notes]
            if self.viewer.console_errors:
                notes.append(
                    f"viewer: {len(self.viewer.console_errors)} console errors, first: "
                    f"{self.viewer.console_errors[0][:200]}"
                )
        if notes:
            out += ["", "### Notes", "", *(f"- {n}" for n in notes)]
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="buildings (100k 1M)")
    p.add_argument("--quick", action="store_true", help="a 10k city, 2k for py3dtiles, 1 load")
    p.add_argument(
        "--sources",
        default=",".join(DEFAULT_SOURCES),
        help=f"comma-separated districts to copy ({', '.join(SOURCES)})",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tiler workers")
    p.add_argument("--dask", default=None, help="tcp://host:8786: tile on a Dask cluster")
    p.add_argument("--max-features", type=int, default=None, help="pass to `twin tiles`")
    p.add_argument("--timeout", type=float, default=3600.0, help="per run (s)")
    p.add_argument(
        "--validate-max", type=int, default=200, help="GLBs sampled at --sample-from and up"
    )
    p.add_argument(
        "--sample-from",
        type=int,
        default=TARGET_BUILDINGS,
        help="city size from which tile GLBs are sampled instead of all validated (1M)",
    )
    p.add_argument("--export-max", type=int, default=200_000, help="largest single-GLB export")
    p.add_argument(
        "--py3dtiles-buildings", type=int, default=None, help="py3dtiles input size (10,000)"
    )
    p.add_argument("--no-py3dtiles", action="store_true", help="skip the py3dtiles baseline")
    p.add_argument("--no-install-peer", action="store_true", help="do not pip-install py3dtiles")
    p.add_argument("--no-viewer", action="store_true", help="skip the viewer first frame")
    p.add_argument("--loads", type=int, default=None, help="viewer cold loads (3; median)")
    p.add_argument("--viewer-timeout", type=float, default=180.0, help="per load (s)")
    p.add_argument("--keep", action="store_true", help="keep the exported single GLBs")
    p.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    a = p.parse_args(argv)
    a.sizes = a.sizes or ([10_000] if a.quick else [100_000, TARGET_BUILDINGS])
    a.py3dtiles_buildings = a.py3dtiles_buildings or (2_000 if a.quick else 10_000)
    a.loads = a.loads or (1 if a.quick else 3)
    a.sources = [s.strip() for s in a.sources.split(",") if s.strip()]
    unknown = [s for s in a.sources if s not in SOURCES]
    if unknown or not a.sources:
        p.error(f"--sources: unknown {unknown}; choose from {', '.join(SOURCES)}")
    if min(a.sizes) < 1 or a.workers < 1 or a.validate_max < 1:
        p.error("need positive --sizes, --workers and --validate-max")
    return a


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Build the inputs, run everything, print and record the section."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    t_start = time.perf_counter()
    data = find_data()
    schemas = data / "schemas" / "3d-tiles-1.1"
    flags = tiler_flags()
    report = Report(args, flags, load_start=os.getloadavg())
    if not schemas.is_dir():
        report.notes.append(f"{schemas} missing: no schema check")
    sizes = sorted(set(args.sizes))
    common_kw: dict[str, Any] = {
        "flags": flags,
        "workers": args.workers,
        "dask": args.dask,
        "max_features": args.max_features,
        "timeout": args.timeout,
        "schemas": schemas,
        "validate_max": args.validate_max,
        "validate_timeout": max(600.0, args.timeout),
    }
    largest: tuple[City, Path] | None = None
    for size in sizes:
        city = build_city(size, args.sources, data)
        report.cities.append(city)
        log(f"{city.label}: {city.buildings:,} buildings in {len(city.files)} files")
        out = WORK / "tiles_out" / f"city_{size}"
        every = size < args.sample_from
        kw = {**common_kw, "validate_max": sys.maxsize if every else args.validate_max}
        row = run_tiler(city, out, **kw)
        report.rows.append(row)
        if row.ok:
            largest = (city, out)
        if size <= args.export_max:
            report.rows.append(
                run_export(
                    city, WORK / "tiles_export", args.timeout, max(600.0, args.timeout), args.keep
                )
            )
        else:
            skipped = Row("twin export (single GLB per file)", city.label, city.buildings)
            skipped.status = f"not run (> --export-max {args.export_max:,})"
            skipped.notes.append(
                "the bytes/building target uses the largest export run here: grid copies "
                "repeat the same buildings, so it does not change with the size"
            )
            report.rows.append(skipped)
        report.rows.append(pg2b3dm_row(city.label, city.buildings))
    if not args.no_py3dtiles:
        exe, why = py3dtiles_exe(not args.no_install_peer)
        seq_city = build_city(args.py3dtiles_buildings, ["delfshaven"], data)
        seq = seq_city.files[0]
        seq_city.label = f"delfshaven x{seq.copies}"
        report.cities.append(seq_city)
        if exe is None:
            r = Row(f"py3dtiles {PY3DTILES_VERSION}", seq_city.label, seq.buildings)
            r.status = f"not run: {why}"
            report.rows.append(r)
        else:
            report.rows.append(
                run_py3dtiles(
                    exe,
                    seq,
                    WORK / "tiles_out" / "py3dtiles",
                    args.timeout,
                    schemas,
                    sys.maxsize,
                    max(600.0, args.timeout),
                )
            )
            kw = {**common_kw, "validate_max": sys.maxsize}
            ours = run_tiler(seq_city, WORK / "tiles_out" / "py3dtiles_input", **kw)
            ours.run = "twin tiles (py3dtiles' input)"
            report.rows.append(ours)
        report.notes.append(
            f"py3dtiles {PY3DTILES_VERSION}: `py3dtiles convert` takes point clouds only "
            "(.las/.laz/.xyz/.ply vertices) and cannot tile meshes; `py3dtiles export` tiles "
            "WKB geometries from a folder or PostGIS (the pg2b3dm way), so it runs on WKBs "
            "of the Delfshaven copies, with `twin tiles` on the same CityJSONSeq next to it"
        )
    report.rows.append(citydb_row())
    if not args.no_viewer:
        if largest is None:
            report.viewer = ViewerResult(status="not run: no tileset was written")
        else:
            city, out = largest
            log(f"viewer: first frame of {city.label} in tiles mode")
            report.viewer = viewer_first_frame(
                out, city.buildings, args.loads, args.viewer_timeout, city.label
            )
            log(f"  {report.viewer.status}")
    report.wall_s = time.perf_counter() - t_start
    section = report.section()
    print(section)
    raw = {
        "rows": [asdict(r) for r in report.rows],
        "viewer": asdict(report.viewer) if report.viewer else None,
        "cities": [
            {"label": c.label, "buildings": c.buildings, "files": [str(f.path) for f in c.files]}
            for c in report.cities
        ],
    }
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "tiles.json").write_text(json.dumps(raw, indent=1, default=str))
    if not args.no_results:
        _bench_module("common").write_section(SECTION, section)
        log(f"wrote bench/RESULTS.md (<!-- {SECTION}:start --> ... <!-- {SECTION}:end -->)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ingest benchmark: CityJSON -> GLB with ours (twin) and the peer (cjio 0.10.1) in one run.

What it measures, per (run, input), each run in its own subprocess with a timeout and an
address-space cap (RLIMIT_AS), so a run that blows up is recorded as 'timeout' or
'failed (MemoryError)' instead of killing the benchmark:

* ``twin export IN -o OUT --no-check``: the CLI as a user runs it.
* ``API stream``: ``write_glb_stream(iter_cityjson(IN), OUT)``, the code path the CLI uses.
* ``API load+write``: ``write_glb(load_cityjson(IN), OUT)``, the whole-model API.
* ``cjio export glb``: cjio's own CLI entry point (``cli()``, as the ``cjio`` script
  calls it) in a wrapper that notes when its imports are done. cjio 0.10.1 needs the
  ``triangle`` module for any glb export (``--sloppy`` does not change that); the
  benchmark installs it with ``pip --no-deps --target bench/work/peer-site`` (outside
  the project venv) unless ``--no-install-peer`` is given.

Columns: whole-process seconds (subprocess wall time incl. interpreter start and
imports; median of ``--repeat`` runs for runs under 5 s), in-process seconds (the timed
work after the imports, inside the same fresh subprocess), buildings/s (whole-process),
peak RSS of the run's process tree (``os.wait4`` rusage of that one child), GLB bytes per
building, triangles (from the GLB's accessors), Khronos glTF-Validator errors/warnings
(``node tests/gltf_validate.mjs``), and in-process time over a bare ``orjson.loads`` of
the same file (every line for ``.jsonl``; file read included, results discarded).
Also ``twin --help`` start-up (median of 5).

Inputs: real Delfshaven (853 buildings), the Den Haag CityJSON 0.8 tile, and grid copies
of the real Delfshaven buildings written by ``bench/tile_city.py`` to ``bench/work/``
(CityJSONSeq; ``--mid-copies`` for scaling, ``--copies`` for the >= 100k-building city).
cjio only runs on the two real files.

Run: ``.venv/bin/python bench/ingest.py`` (full, ~10 min; cjio on Delfshaven alone takes
~2.5 min), ``--quick`` (Delfshaven + Den Haag, no cjio), ``--no-cjio``, ``--copies N``.
The table is printed and written to bench/RESULTS.md between the ``ingest`` markers
(other sections of that file are kept); raw numbers go to bench/work/ingest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import write_section

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / "work"
OUT = WORK / "out"
RESULTS = BENCH / "RESULTS.md"
PEER_SITE = WORK / "peer-site"
VALIDATOR = ROOT / "tests" / "gltf_validate.mjs"
GIB = 1 << 30

# Targets (printed next to the numbers).
SPEEDUP_TARGET = 200.0  # cjio whole-process / twin export whole-process on Delfshaven
PARSE_RATIO_TARGET = 5.0  # in-process / bare orjson parse
HELP_TARGET_S = 0.5  # twin --help
RSS_BUDGET_MIB = 2048.0  # peak RSS at >= 100k buildings ("bounded memory"); --rss-budget-mib

# Worker snippets, run with the project's interpreter via ``python -c``. Each prints one
# line "BENCH {json}" after its imports and timed work.
OURS_WORKER = """
import json, sys, time
from pathlib import Path
mode, src, out = sys.argv[1:4]
from ingest.cityjson import load_cityjson
from scene.gltf import write_glb
if mode == "stream":
    from ingest.cityjson import iter_cityjson
    from scene.gltf import write_glb_stream
t0 = time.perf_counter()
if mode == "stream":
    stats = write_glb_stream(iter_cityjson(src), out, name=Path(src).name)
    t_load = None
else:
    model = load_cityjson(src)
    t_load = time.perf_counter() - t0
    stats = write_glb(model, out)
t = time.perf_counter() - t0
print("BENCH " + json.dumps({"seconds": t, "load_seconds": t_load, "features": stats.features,
      "triangles": stats.triangles, "bytes": stats.bytes}), flush=True)
"""

PARSE_WORKER = """
import json, statistics, sys, time
from pathlib import Path
import orjson
src, repeat = sys.argv[1], int(sys.argv[2])
seq = src.endswith((".jsonl", ".cjseq"))
times = []
for _ in range(repeat):
    t0 = time.perf_counter()
    if seq:
        with open(src, "rb") as fh:
            for line in fh:
                if line.strip():
                    orjson.loads(line)
    else:
        orjson.loads(Path(src).read_bytes())
    times.append(time.perf_counter() - t0)
print("BENCH " + json.dumps({"seconds": statistics.median(times)}), flush=True)
"""

CJIO_WORKER = """
import json, sys, time
t0 = time.perf_counter()
from cjio.cjio import cli
t1 = time.perf_counter()
code = 0
try:
    cli.main(args=sys.argv[1:], prog_name="cjio")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
t2 = time.perf_counter()
print("BENCH " + json.dumps({"import_seconds": t1 - t0, "seconds": t2 - t1, "exit": code}),
      file=sys.stderr, flush=True)
sys.exit(code)
"""


# --------------------------------------------------------------------------- running


@dataclass
class Proc:
    """One finished subprocess."""

    status: str  # "ok", "timeout (N s)", "failed (...)"
    wall: float
    rss_mib: float
    exit: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def bench(self) -> dict[str, Any]:
        """The worker's "BENCH {json}" line (from stdout or stderr), or {}."""
        for line in (self.stdout + "\n" + self.stderr).splitlines():
            if line.startswith("BENCH "):
                try:
                    data = json.loads(line[6:])
                except json.JSONDecodeError:
                    return {}
                return data if isinstance(data, dict) else {}
        return {}


def _classify(code: int, stderr: str, timed_out: bool, timeout: float) -> str:
    if timed_out:
        return f"timeout ({timeout:g} s)"
    if code == 0:
        return "ok"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "failed (MemoryError)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"failed (killed by {name})"
    last = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("BENCH")]
    tail = last[-1][:160] if last else "no message"
    return f"failed (exit {code}: {tail})"


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    mem_cap: int | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    """Run ``cmd`` in its own session; wall time and peak RSS of exactly this run.

    Peak RSS comes from ``os.wait4`` on this child (its own rusage, which includes the
    descendants it waited for), so runs never mix. ``mem_cap`` is set as RLIMIT_AS in the
    child. On timeout the child's process group (and only it) is killed.
    """

    def limit() -> None:
        if mem_cap:
            resource.setrlimit(resource.RLIMIT_AS, (mem_cap, mem_cap))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=ROOT,
            env=env,
            preexec_fn=limit,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        p.returncode = code  # reaped by wait4; keep Popen from polling a reused pid
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    status_s = _classify(code, stderr, timed_out.is_set(), timeout)
    return Proc(status_s, wall, usage.ru_maxrss / 1024, code, stdout, stderr)


def python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def twin_exe() -> str:
    venv = ROOT / ".venv" / "bin" / "twin"
    return str(venv) if venv.exists() else (shutil.which("twin") or "twin")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- inputs


@dataclass
class Case:
    """One input file."""

    key: str
    path: Path
    buildings: int
    objects: int
    peer: bool = False
    note: str = ""
    parse_s: float | None = None
    parse_status: str = ""

    @property
    def mb(self) -> float:
        return self.path.stat().st_size / 1e6 if self.path.exists() else 0.0


def find_data() -> Path:
    """The shared CityJSON folder ($TWIN_SHARED_DATA or ../shared/data upwards)."""
    env = os.environ.get("TWIN_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [p / "shared" / "data" for p in (ROOT.parent, *ROOT.parents)]
    for c in candidates:
        if (c / "cityjson").is_dir():
            return c / "cityjson"
    raise SystemExit("bench: ../shared/data/cityjson not found (set TWIN_SHARED_DATA)")


def count_objects(path: Path) -> tuple[int, int]:
    """(Buildings, all CityObjects) of a CityJSON document."""
    import orjson

    doc = orjson.loads(path.read_bytes())
    cos = doc.get("CityObjects") or {}
    return sum(1 for o in cos.values() if o.get("type") == "Building"), len(cos)


def real_case(key: str, path: Path, peer: bool, note: str = "") -> Case:
    buildings, objects = count_objects(path)
    return Case(key, path, buildings, objects, peer=peer, note=note)


def tiled_case(source: Path, copies: int) -> Case:
    """Write (or reuse, if current) ``copies`` grid copies of ``source`` into bench/work."""
    sys.path.insert(0, str(BENCH))
    try:
        import tile_city
    finally:
        sys.path.pop(0)
    out = WORK / f"delfshaven_x{copies}.city.jsonl"
    stamp = out.with_suffix(".stats.json")
    generator = Path(tile_city.__file__)
    fresh = (
        out.exists()
        and stamp.exists()
        and stamp.stat().st_mtime >= max(source.stat().st_mtime, generator.stat().st_mtime)
        and out.stat().st_mtime <= stamp.stat().st_mtime
    )
    if fresh:
        info = json.loads(stamp.read_text())
    else:
        log(f"generating {out.relative_to(ROOT)} ({copies} copies of {source.name}) ...")
        t0 = time.perf_counter()
        stats = tile_city.tile(source, out, copies)
        info = {
            "buildings": stats.buildings,
            "objects": stats.objects,
            "features": stats.features,
            "dropped": stats.dropped,
            "seconds": time.perf_counter() - t0,
        }
        stamp.write_text(json.dumps(info))
    note = f"{copies} grid copies of real Delfshaven, CityJSONSeq" + "".join(
        f"; {d}" for d in info.get("dropped", [])
    )
    return Case(f"delfshaven x{copies}", out, info["buildings"], info["objects"], note=note)


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One (run, input) measurement."""

    run: str
    case: str
    buildings: int
    status: str = "not run"
    whole_s: float | None = None
    inproc_s: float | None = None
    rss_mib: float | None = None
    glb_bytes: int | None = None
    triangles: int | None = None
    val_errors: int | None = None
    val_warnings: int | None = None
    val_codes: list[str] = field(default_factory=list)
    parse_ratio: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bps(self) -> float | None:
        return self.buildings / self.whole_s if self.whole_s else None

    @property
    def bytes_per_building(self) -> float | None:
        return self.glb_bytes / self.buildings if self.glb_bytes and self.buildings else None


def glb_triangles(path: Path) -> int | None:
    """Triangles in a GLB: index (or position) counts of its triangle primitives / 3."""
    try:
        with path.open("rb") as fh:
            magic, _, _ = struct.unpack("<III", fh.read(12))
            length, kind = struct.unpack("<II", fh.read(8))
            if magic != 0x46546C67 or kind != 0x4E4F534A:
                return None
            gltf = json.loads(fh.read(length))
    except (OSError, struct.error, ValueError):
        return None
    acc = gltf.get("accessors", [])
    total = 0
    for mesh in gltf.get("meshes", []):
        for prim in mesh.get("primitives", []):
            if prim.get("mode", 4) != 4:
                continue
            idx = prim.get("indices")
            if idx is None:
                idx = prim.get("attributes", {}).get("POSITION")
            if idx is not None and idx < len(acc):
                total += int(acc[idx].get("count", 0)) // 3
    return total


def validate(path: Path, timeout: float) -> tuple[int | None, int | None, list[str], str]:
    """(errors, warnings, error codes, status) from the Khronos glTF-Validator."""
    if shutil.which("node") is None or not (ROOT / "node_modules" / "gltf-validator").is_dir():
        return None, None, [], "validator unavailable (node / node_modules missing)"
    p = run(["node", str(VALIDATOR), str(path)], timeout=timeout)
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            rep = json.loads(line)
            codes = sorted({m["code"] for m in rep.get("messages", []) if m.get("severity") == 0})
            return int(rep["errors"]), int(rep["warnings"]), codes, "ok"
    return None, None, [], f"validator {p.status}"


def fill_glb(row: Row, glb: Path, args: argparse.Namespace) -> None:
    if not glb.exists():
        return
    row.glb_bytes = glb.stat().st_size
    row.triangles = glb_triangles(glb)
    if not args.no_validate:
        e, w, codes, st = validate(glb, args.timeout)
        row.val_errors, row.val_warnings, row.val_codes = e, w, codes
        if st != "ok":
            row.notes.append(st)
    if row.glb_bytes > 50e6 and not args.keep_glb:
        glb.unlink()


def repeated(
    make: Callable[[], Proc], repeat: int, fast_s: float = 5.0
) -> tuple[Proc, list[float], list[float]]:
    """Run once; repeat ``repeat`` times in all when fast and ok. (last, walls, in-proc)."""
    p = make()
    walls, inner = [p.wall], [float(p.bench()["seconds"])] if "seconds" in p.bench() else []
    while p.ok and p.wall < fast_s and len(walls) < repeat:
        p = make()
        if not p.ok:
            break
        walls.append(p.wall)
        if "seconds" in p.bench():
            inner.append(float(p.bench()["seconds"]))
    return p, walls, inner


def measure_twin_cli(case: Case, args: argparse.Namespace) -> Row:
    row = Row("twin export", case.key, case.buildings)
    glb = OUT / f"twin-cli-{case.path.stem}.glb"
    glb.unlink(missing_ok=True)
    cmd = [twin_exe(), "export", str(case.path), "-o", str(glb), "--no-check"]
    p, walls, _ = repeated(
        lambda: run(cmd, timeout=args.timeout, mem_cap=args.mem_cap), args.repeat
    )
    row.status = p.status
    row.rss_mib = p.rss_mib
    if p.ok:
        row.whole_s = statistics.median(walls)
        fill_glb(row, glb, args)
    else:
        row.notes.append(p.stderr.strip()[-300:])
    return row


def measure_twin_api(case: Case, mode: str, args: argparse.Namespace) -> Row:
    name = "API stream" if mode == "stream" else "API load+write"
    row = Row(name, case.key, case.buildings)
    glb = OUT / f"twin-{mode}-{case.path.stem}.glb"
    glb.unlink(missing_ok=True)
    cmd = [python(), "-c", OURS_WORKER, mode, str(case.path), str(glb)]
    p, walls, inner = repeated(
        lambda: run(cmd, timeout=args.timeout, mem_cap=args.mem_cap), args.repeat
    )
    row.status = p.status
    row.rss_mib = p.rss_mib
    if p.ok and inner:
        row.whole_s = statistics.median(walls)
        row.inproc_s = statistics.median(inner)
        if case.parse_s:
            row.parse_ratio = row.inproc_s / case.parse_s
        fill_glb(row, glb, args)
    elif p.ok:
        row.status = "failed (no timing line)"
    else:
        if "ImportError" in p.stderr and mode == "stream":
            row.status = "n/a (no streaming API)"
        row.notes.append(p.stderr.strip()[-300:])
    return row


def measure_parse(case: Case, args: argparse.Namespace) -> None:
    cmd = [python(), "-c", PARSE_WORKER, str(case.path), "3"]
    p = run(cmd, timeout=args.timeout, mem_cap=args.mem_cap)
    case.parse_status = p.status
    if p.ok and "seconds" in p.bench():
        case.parse_s = float(p.bench()["seconds"])


def peer_env(args: argparse.Namespace, notes: list[str]) -> dict[str, str]:
    """Environment for cjio: PYTHONPATH with the 'triangle' module if we have to add it."""
    env = dict(os.environ)
    check = [python(), "-c", "import triangle"]
    if run(check, timeout=60, env=env).ok:
        return env
    env["PYTHONPATH"] = os.pathsep.join([str(PEER_SITE), *filter(None, [env.get("PYTHONPATH")])])
    if run(check, timeout=60, env=env).ok:
        notes.append(
            "cjio 0.10.1 aborts any glb export without the 'triangle' module (not a project "
            f"dependency); it was taken from {PEER_SITE.relative_to(ROOT)}"
        )
        return env
    if args.no_install_peer:
        notes.append("cjio: Python module 'triangle' missing; not installed (--no-install-peer)")
        return env
    log("cjio 0.10.1 needs the 'triangle' module for glb export; installing it into bench/work")
    pip = [python(), "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(PEER_SITE)]
    p = run([*pip, "triangle"], timeout=600)
    if p.ok and run(check, timeout=60, env=env).ok:
        notes.append(
            "cjio 0.10.1 aborts glb export without the 'triangle' module (not a project "
            f"dependency); installed it with pip --no-deps --target {PEER_SITE.relative_to(ROOT)}"
        )
    else:
        notes.append(f"cjio: installing 'triangle' failed: {p.status}")
    return env


def measure_cjio(case: Case, env: dict[str, str], args: argparse.Namespace) -> Row:
    row = Row("cjio export glb", case.key, case.buildings)
    glb = OUT / f"cjio-{case.path.stem}.glb"
    glb.unlink(missing_ok=True)
    cmd = [python(), "-c", CJIO_WORKER, str(case.path), "export", "glb", str(glb)]
    log(f"  cjio on {case.key} (slow) ...")
    p = run(cmd, timeout=args.timeout, mem_cap=args.mem_cap, env=env)
    row.status = p.status
    row.rss_mib = p.rss_mib
    b = p.bench()
    alerts = [
        ln.strip()
        for ln in (p.stdout + "\n" + p.stderr).splitlines()
        if "not the latest version" in ln or "Failed to triangulate" in ln
    ]
    if any("not the latest" in a for a in alerts):
        row.notes.append("cjio: '" + alerts[0] + "' (exported anyway)")
    n_fail = sum("Failed to triangulate" in a for a in alerts)
    if n_fail:
        row.notes.append(f"cjio: {n_fail} 'Failed to triangulate face' messages")
    if p.ok and glb.exists():
        row.whole_s = p.wall
        row.inproc_s = float(b["seconds"]) if "seconds" in b else None
        fill_glb(row, glb, args)
    elif p.ok:
        row.status = "failed (no GLB written)"
    if not p.ok:
        row.notes.append(p.stderr.strip()[-300:])
    return row


def measure_help() -> tuple[float | None, str]:
    walls = []
    for _ in range(5):
        p = run([twin_exe(), "--help"], timeout=60)
        if not p.ok:
            return None, p.status
        walls.append(p.wall)
    return statistics.median(walls), "ok"


# --------------------------------------------------------------------------- reporting


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _int(v: int | float | None) -> str:
    return "n/a" if v is None else f"{round(v):,}"


HEAD = [
    "run",
    "input",
    "buildings",
    "status",
    "whole s",
    "in-proc s",
    "bldg/s",
    "peak RSS MiB",
    "GLB B/bldg",
    "triangles",
    "validator err/warn",
    "in-proc / parse",
]


def row_cells(r: Row) -> list[str]:
    val = "n/a" if r.val_errors is None else f"{r.val_errors}/{r.val_warnings}"
    return [
        r.run,
        r.case,
        f"{r.buildings:,}",
        r.status if len(r.status) < 60 else r.status[:57] + "...",
        _f(r.whole_s),
        _f(r.inproc_s),
        _int(r.bps),
        _int(r.rss_mib),
        _int(r.bytes_per_building),
        _int(r.triangles),
        val,
        _f(r.parse_ratio, "{:.1f}x"),
    ]


def text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def md_table(head: list[str], rows: list[list[str]]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def targets(
    rows: list[Row], cases: list[Case], help_s: float | None, args: argparse.Namespace
) -> list[list[str]]:
    """[target, value, verdict] rows."""
    out: list[list[str]] = []

    def get(run_name: str, key: str) -> Row | None:
        return next((r for r in rows if r.run == run_name and r.case == key), None)

    ours = [r for r in rows if not r.run.startswith("cjio")]
    cj, tw = get("cjio export glb", "delfshaven"), get("twin export", "delfshaven")
    if cj is None:
        out.append(
            [f">= {SPEEDUP_TARGET:g}x cjio (Delfshaven, whole-process)", "cjio not run", "-"]
        )
    elif cj.whole_s and tw and tw.whole_s:
        ratio = cj.whole_s / tw.whole_s
        out.append(
            [
                f">= {SPEEDUP_TARGET:g}x cjio (Delfshaven, whole-process)",
                f"{ratio:.0f}x ({cj.whole_s:.1f} s / {tw.whole_s:.2f} s)",
                "PASS" if ratio >= SPEEDUP_TARGET else "FAIL",
            ]
        )
    else:
        out.append(
            [
                f">= {SPEEDUP_TARGET:g}x cjio (Delfshaven, whole-process)",
                f"cjio: {cj.status}; twin: {tw.status if tw else 'not run'}",
                "n/a",
            ]
        )
    stream = get("API stream", "delfshaven")
    if cj is not None and cj.inproc_s and stream is not None and stream.inproc_s:
        # The same comparison without interpreter start-up and imports on either side.
        ratio = cj.inproc_s / stream.inproc_s
        out.append(
            [
                f">= {SPEEDUP_TARGET:g}x cjio (Delfshaven, in-process: read + triangulate + write)",
                f"{ratio:.0f}x ({cj.inproc_s:.1f} s / {stream.inproc_s:.2f} s)",
                "PASS" if ratio >= SPEEDUP_TARGET else "FAIL",
            ]
        )
    checked = [r for r in ours if r.val_errors is not None]
    worst = max((r.val_errors or 0 for r in checked), default=None)
    missing = [f"{r.run}/{r.case}" for r in ours if r.status == "ok" and r.val_errors is None]
    out.append(
        [
            "0 validator errors (our GLBs)",
            f"max {worst} errors over {len(checked)} GLBs"
            + (f"; not validated: {', '.join(missing)}" if missing else ""),
            "n/a" if worst is None else ("PASS" if worst == 0 and not missing else "FAIL"),
        ]
    )
    all_ratios = [r for r in ours if r.parse_ratio is not None]
    groups = (
        ("real files (Delfshaven, Den Haag)", [r for r in all_ratios if " x" not in r.case]),
        ("tiled CityJSONSeq cities", [r for r in all_ratios if " x" in r.case]),
    )
    for label, ratios in groups:
        if not ratios:
            continue
        detail = ", ".join(f"{r.run} {r.case} {r.parse_ratio:.1f}x" for r in ratios)
        ok = all((r.parse_ratio or 0) <= PARSE_RATIO_TARGET for r in ratios)
        out.append(
            [
                f"in-process <= {PARSE_RATIO_TARGET:g}x bare orjson parse, {label}",
                detail,
                "PASS" if ok else "FAIL",
            ]
        )
    out.append(
        [
            f"`twin --help` < {HELP_TARGET_S:g} s (median of 5)",
            _f(help_s, "{:.3f} s"),
            "n/a" if help_s is None else ("PASS" if help_s < HELP_TARGET_S else "FAIL"),
        ]
    )
    budget = args.rss_budget_mib
    for c in (c for c in cases if c.buildings >= 100_000):
        runs = [r for r in ours if r.case == c.key]
        vals = ", ".join(
            f"{r.run}: {_int(r.rss_mib)} MiB ({r.status.split(' (')[0]})" for r in runs
        )
        # Judged on the streaming paths; the whole-model API is reported for comparison.
        streaming = [r for r in runs if r.run in ("twin export", "API stream")]
        good = all(r.status == "ok" and (r.rss_mib or 0) <= budget for r in streaming)
        out.append(
            [
                f"{c.buildings:,} buildings in bounded memory (twin export and API stream ok, "
                f"peak RSS <= {budget:g} MiB)",
                vals,
                "PASS" if streaming and good else "FAIL",
            ]
        )
    return out


def environment() -> list[str]:
    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    cpu = "?"
    mem = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
                break
    except OSError:
        pass
    cj = (
        subprocess.run(
            [python(), "-c", "import cjio; print(cjio.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        or "not installed"
    )
    dirty = (
        " (+ uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    )
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    return [
        f"date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"commit: {git('rev-parse', '--short', 'HEAD')}{dirty}",
        f"machine: {cpu}, {os.cpu_count()} CPUs, {mem} RAM; Python {platform.python_version()}",
        f"cjio {cj}",
        f"load average at the end (1/5/15 min): {load}; the timings are only as quiet as "
        "the machine was",
    ]


def write_results(section: str) -> None:
    write_section("ingest", section)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="CityJSON -> GLB benchmark: twin against cjio 0.10.1 (see module docstring)."
    )
    ap.add_argument("--quick", action="store_true", help="Delfshaven + Den Haag only, no cjio")
    ap.add_argument("--no-cjio", action="store_true", help="skip the peer (cjio)")
    ap.add_argument("--copies", type=int, default=118, help="copies for the big city (118)")
    ap.add_argument("--mid-copies", type=int, default=10, help="mid-size copies; 0 skips (10)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run (900)")
    ap.add_argument("--mem-cap-gib", type=float, default=12.0, help="RLIMIT_AS per run (12)")
    ap.add_argument("--repeat", type=int, default=3, help="runs for fast cases; median (3)")
    ap.add_argument(
        "--rss-budget-mib",
        type=float,
        default=RSS_BUDGET_MIB,
        help=f"peak-RSS budget for the >= 100k city ({RSS_BUDGET_MIB:g})",
    )
    ap.add_argument("--no-validate", action="store_true", help="skip the glTF-Validator")
    ap.add_argument(
        "--no-install-peer",
        action="store_true",
        help="do not pip-install 'triangle' for cjio into bench/work/peer-site",
    )
    ap.add_argument("--keep-glb", action="store_true", help="keep GLBs over 50 MB")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    args = ap.parse_args(argv)
    args.mem_cap = int(args.mem_cap_gib * GIB) if args.mem_cap_gib > 0 else None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = find_data()
    OUT.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    notes: list[str] = []
    delf = data / "real" / "delfshaven_3-20.city.json"
    cases = [
        real_case("delfshaven", delf, peer=True, note="real, CityJSON 2.0"),
        real_case(
            "denhaag v0.8",
            data / "legacy" / "denhaag_01_v08.json",
            peer=True,
            note="real, CityJSON 0.8 (+BuildingParts, TINRelief)",
        ),
    ]
    if not args.quick:
        sizes = [n for n in (args.mid_copies, args.copies) if n > 0]
        for n in dict.fromkeys(sizes):
            cases.append(tiled_case(delf, n))
    with_cjio = not (args.quick or args.no_cjio)

    log("twin --help ...")
    help_s, help_status = measure_help()
    if help_status != "ok":
        notes.append(f"`twin --help` {help_status}")

    rows: list[Row] = []
    for case in cases:
        log(f"{case.key}: {case.buildings:,} buildings, {case.mb:.1f} MB")
        measure_parse(case, args)
        if case.parse_status != "ok":
            notes.append(f"bare parse of {case.key}: {case.parse_status}")
        measures: list[Callable[[Case], Row]] = [
            lambda c: measure_twin_cli(c, args),
            lambda c: measure_twin_api(c, "stream", args),
            lambda c: measure_twin_api(c, "load", args),
        ]
        for measure in measures:
            row = measure(case)
            log(
                f"  {row.run}: {row.status}, whole {_f(row.whole_s)} s, "
                f"in-proc {_f(row.inproc_s)} s, RSS {_int(row.rss_mib)} MiB"
            )
            rows.append(row)
    if with_cjio:
        env = peer_env(args, notes)
        for case in cases:
            if case.peer:
                row = measure_cjio(case, env, args)
                log(f"  {row.run}: {row.status}, whole {_f(row.whole_s)} s")
                rows.append(row)

    for r in rows:
        for n in r.notes:
            if n:
                notes.append(f"{r.run} / {r.case}: {' '.join(n.split())}")
        if r.val_errors:
            notes.append(
                f"{r.run} / {r.case}: validator error codes: {', '.join(r.val_codes) or '?'}"
            )

    input_head = ["input", "file", "MB", "CityObjects", "buildings", "bare parse s", "note"]
    input_rows = [
        [
            c.key,
            str(c.path.relative_to(ROOT) if c.path.is_relative_to(ROOT) else c.path.name),
            f"{c.mb:.1f}",
            f"{c.objects:,}",
            f"{c.buildings:,}",
            _f(c.parse_s, "{:.3f}") if c.parse_status == "ok" else c.parse_status,
            c.note,
        ]
        for c in cases
    ]
    result_rows = [row_cells(r) for r in rows]
    target_head = ["target", "measured", "verdict"]
    target_rows = targets(rows, cases, help_s, args)
    mode = "quick" if args.quick else ("no cjio" if args.no_cjio else "full")
    env_lines = environment()
    elapsed = time.perf_counter() - t_start

    print()
    print(text_table(input_head, input_rows))
    print()
    print(text_table(HEAD, result_rows))
    print()
    print(text_table(target_head, target_rows))
    if notes:
        print("\nnotes:")
        for n in notes:
            print(f"- {n}")
    print(f"\n{'; '.join(env_lines)}; mode {mode}; {elapsed:.0f} s")

    raw = {
        "env": env_lines,
        "mode": mode,
        "twin_help_s": help_s,
        "cases": [{**asdict(c), "path": str(c.path)} for c in cases],
        "rows": [asdict(r) for r in rows],
        "notes": notes,
    }
    (WORK / "ingest.json").write_text(json.dumps(raw, indent=1))

    if not args.no_results:
        section = "\n\n".join(
            [
                "## Ingest: CityJSON -> GLB (`bench/ingest.py`)",
                "\n".join(f"- {line}" for line in [*env_lines, f"mode: {mode}, {elapsed:.0f} s"]),
                "Generated by `.venv/bin/python bench/ingest.py`; every run is a fresh subprocess "
                f"(timeout {args.timeout:g} s, RLIMIT_AS {args.mem_cap_gib:g} GiB). "
                "*whole s*: wall time incl. interpreter start and imports; *in-proc s*: the "
                "timed work after imports; *bldg/s* from whole s; *in-proc / parse*: in-proc "
                "over a bare `orjson.loads` of the same file. `twin export` runs with "
                "`--no-check`; see the module docstring for each run.",
                "### Inputs\n\n" + md_table(input_head, input_rows),
                "### Results\n\n" + md_table(HEAD, result_rows),
                "### Targets\n\n" + md_table(target_head, target_rows),
                "### Notes\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "",
            ]
        )
        write_results(section)
        log(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

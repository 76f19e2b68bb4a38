"""API load benchmark: twin serve routes vs a bare FastAPI route under wrk, same uvicorn setup.

What it does:

* Builds a fresh SQLite store in bench/work/: the real Delfshaven district (853 buildings,
  ``load_cityjson``) copied on a grid to >= ``--objects`` TwinObjects. Each copy ``k`` gets
  ids ``<id>-t<k>`` and its geometry summary shifted by one grid step (district extent +
  100 m) in the source CRS, and by the same step in degrees in WGS84 (local degrees per
  metre fitted on the real buildings' own bbox pairs). Attributes, heights and footprints
  are the real ones; nothing is invented. Objects go in with ``SqliteStore.put_objects``
  (batches of 10,000). Then ``--history`` points (default 1,000,000) via ``apply_updates``
  in batches of 10,000: one object with a dense 24-hour ``pressure`` series at 1 s (86,400
  points), the rest as 100-point 24-hour ``pressure`` and ``flow`` series on other objects.
* Starts two servers on 127.0.0.1, one uvicorn worker each, log level warning, the same
  uvicorn from the same venv: ``twin serve --db sqlite:///...`` and
  ``python -m uvicorn bench.bare_app:app`` (one route returning a constant JSON).
* Checks every route once (status and content), then loads each with ``wrk`` (a Lua
  script cycles through the paths: 20,000 random object ids for object reads), after a
  1 s warm-up: ``--connections`` (default 32) connections for ``--duration`` s, then
  1 connection for up to 3 s (latency without queueing). The bare route is measured
  before and after the twin routes; "vs bare" uses the mean of the two.
* Routes: ``GET /api/objects/{id}``; ``GET /api/objects?type=Building&where=geom.height>10
  &limit=100``; ``GET /api/objects/{id}/history`` over the dense object's 24 hours with
  ``every=5m`` (288 buckets of 300 points) and raw with ``limit=10000``.

Targets: object reads >= 70% of the bare route's req/s, p99 < 20 ms at 1 worker.
Anchors (published, other hardware and other work per request, so context only):
Eclipse Ditto ~2,800 reads/s per instance; FIWARE Orion-LD ~7,700 req/s on 2 CPUs.

Without ``wrk`` on PATH (``apt-get install -y wrk``) it falls back to an async httpx
loop, bounded in time and in requests; that client shares the CPUs and is much slower
than wrk, so its numbers are a floor, and the section says so.

Run: ``.venv/bin/python bench/api.py`` (``--objects N``, ``--duration S``, ``--quick`` =
10k objects, 100k history points, 3 s; ``--reuse-db`` keeps a store built by an earlier
run with the same sizes; ``--no-results``). The tables are printed and written to
bench/RESULTS.md between the ``api`` markers (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
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
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import commit, tiled, write_section  # noqa: E402

from ingest.cityjson import load_cityjson  # noqa: E402
from twin.objects import TwinObject  # noqa: E402
from twin.state import StateUpdate  # noqa: E402
from twin.store.sqlite import SqliteStore  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
START, END = "<!-- api:start -->", "<!-- api:end -->"
WORK = ROOT / "bench" / "work"
SOURCE = Path("/work/shared/data/cityjson/real/delfshaven_3-20.city.json")
VENV = ROOT / ".venv" / "bin"
HOST = "127.0.0.1"

PUT_BATCH = 10_000
UPDATE_BATCH = 10_000
DAY = 86_400.0
T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp()
DENSE_POINTS = 86_400  # 24 h at 1 s
SPARSE_POINTS = 100  # per sparse series, spread over the same 24 h
SPARSE_PROPS = ("pressure", "flow")
READ_IDS = 20_000  # object ids the object-read script cycles through
SEED = 20261102

READ_RATIO = 0.70  # object reads vs bare route, req/s
P99_MS = 20.0
ANCHORS = (
    ("Eclipse Ditto, reads per instance", 2_800.0),
    ("FIWARE Orion-LD, 2 CPUs", 7_700.0),
)
HTTPX_MAX_REQUESTS = 200_000
WRK_TIMEOUT = 30.0  # s; one worker serializes, so 32 queued slow requests take a while


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the store -------------------------------------------------------------------------


def copies_for(n_source: int, n_objects: int) -> int:
    return max(1, math.ceil(n_objects / n_source))


def tiled_ids(objs: list[TwinObject], copies: int) -> list[str]:
    return [f"{o.id}-t{k}" for k in range(copies) for o in objs]


def _pressure(t: float, phase: float, rng: random.Random) -> float:
    return round(3.0 + 0.4 * math.sin(2 * math.pi * (t - T0) / DAY + phase) + rng.gauss(0, 0.02), 3)


def _flow(t: float, phase: float, rng: random.Random) -> float:
    return round(12.0 + 5.0 * math.sin(2 * math.pi * (t - T0) / DAY + phase) + rng.gauss(0, 0.3), 2)


def history_points(
    dense_id: str, others: list[str], total: int, rng: random.Random
) -> Iterator[StateUpdate]:
    """``total`` points: the dense 1 s pressure series first, then 100-point series."""
    dense = min(DENSE_POINTS, total)
    for i in range(dense):
        t = T0 + i
        yield StateUpdate(dense_id, "pressure", _pressure(t, 0.0, rng), t, "bench")
    left = total - dense
    step = DAY / SPARSE_POINTS
    for oid in others:
        phase = rng.uniform(0, 2 * math.pi)
        offset = rng.uniform(0, step)
        for prop in SPARSE_PROPS:
            fn = _pressure if prop == "pressure" else _flow
            for j in range(SPARSE_POINTS):
                if left <= 0:
                    return
                t = T0 + offset + j * step
                yield StateUpdate(oid, prop, fn(t, phase, rng), t, "bench")
                left -= 1


@dataclass
class Store:
    """The benchmark store and what the routes need to know about it."""

    path: Path
    objects: int
    history: int
    dense_id: str
    ids: list[str]
    put_s: float = math.nan
    history_s: float = math.nan
    reused: bool = False


def build_store(n_objects: int, n_history: int, reuse: bool) -> Store:
    log(f"reading {SOURCE.name}")
    source = list(load_cityjson(SOURCE).twin)
    copies = copies_for(len(source), n_objects)
    ids = tiled_ids(source, copies)
    dense_id = ids[0]
    path = WORK / f"api_{n_objects}_{n_history}.db"
    sidecar = path.with_suffix(".json")
    if reuse and path.exists() and sidecar.exists():
        info = json.loads(sidecar.read_text())
        if info.get("objects") == len(ids) and info.get("history") == n_history:
            log(f"reusing {path} ({len(ids):,} objects, {n_history:,} history points)")
            return Store(
                path, len(ids), n_history, dense_id, ids, info["put_s"], info["history_s"], True
            )
    WORK.mkdir(parents=True, exist_ok=True)
    for p in (path, sidecar, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    store = SqliteStore(f"sqlite:///{path}")
    try:
        log(f"put_objects: {copies} copies x {len(source)} = {len(ids):,} objects -> {path}")
        t0 = time.perf_counter()
        batch: list[TwinObject] = []
        for obj in tiled(source, copies):
            batch.append(obj)
            if len(batch) == PUT_BATCH:
                store.put_objects(batch, source="delfshaven_3-20.city.json (tiled)")
                batch = []
        if batch:
            store.put_objects(batch, source="delfshaven_3-20.city.json (tiled)")
        put_s = time.perf_counter() - t0
        count = store.count()
        if count != len(ids):
            raise RuntimeError(f"store holds {count:,} objects, expected {len(ids):,}")
        log(f"  {put_s:.1f} s ({len(ids) / put_s:,.0f} objects/s)")

        rng = random.Random(SEED)
        per_object = SPARSE_POINTS * len(SPARSE_PROPS)
        n_others = math.ceil(max(0, n_history - DENSE_POINTS) / per_object)
        others = rng.sample(ids[1:], min(n_others, len(ids) - 1))
        log(f"apply_updates: {n_history:,} history points in batches of {UPDATE_BATCH:,}")
        t0 = time.perf_counter()
        stored = 0
        updates: list[StateUpdate] = []
        for u in history_points(dense_id, others, n_history, rng):
            updates.append(u)
            if len(updates) == UPDATE_BATCH:
                stored += store.apply_updates(updates).stored
                updates = []
        if updates:
            stored += store.apply_updates(updates).stored
        history_s = time.perf_counter() - t0
        rows = store.stats()["history"]
        if stored != n_history or rows != n_history:
            raise RuntimeError(f"stored {stored:,} / {rows:,} history rows, expected {n_history:,}")
        log(f"  {history_s:.1f} s ({n_history / history_s:,.0f} points/s)")
    finally:
        store.close()
    sidecar.write_text(
        json.dumps(
            {"objects": len(ids), "history": n_history, "put_s": put_s, "history_s": history_s}
        )
    )
    return Store(path, len(ids), n_history, dense_id, ids, put_s, history_s)


# -- servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the server gets SIGTERM if this benchmark dies without cleaning up."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def get(url: str, timeout: float = 30.0) -> tuple[int, bytes, float]:
    """One GET: status, body, seconds."""
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read()
            status = int(r.status)
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return status, body, time.perf_counter() - t0


@dataclass
class Server:
    """A server process on 127.0.0.1 (started, polled until ready, stopped)."""

    name: str
    cmd: list[str]
    ready_path: str
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    peak_rss_mib: float = math.nan

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        self.port = free_port()
        cmd = [c.replace("{port}", str(self.port)) for c in self.cmd]
        log(f"starting {self.name}: {' '.join(cmd)}")
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                status, _, _ = get(self.base + self.ready_path, timeout=2.0)
                if status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s: {self.log_tail()}")

    def drain(self, timeout: float = 60.0) -> float:
        """Wait until requests left over from a finished run are done; returns seconds.

        wrk closes its connections at the end, but the one worker still answers what it
        had already read: the next run would otherwise start behind that backlog.
        """
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with contextlib.suppress(OSError):
                status, _, secs = get(self.base + self.ready_path, timeout=timeout)
                if status == 200 and secs < 0.05:
                    break
            time.sleep(0.05)
        return time.monotonic() - t0

    def log_tail(self, n: int = 600) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:].strip() or "(no output)"
        except OSError:
            return "(no log)"

    def read_peak_rss(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_mib = int(line.split()[1]) / 1024

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop in 15 s; killing it")
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- load ------------------------------------------------------------------------------


@dataclass
class Load:
    """One load run."""

    tool: str
    connections: int
    seconds: float
    requests: int = 0
    rps: float = math.nan
    p50: float = math.nan  # ms
    p90: float = math.nan
    p99: float = math.nan
    max_ms: float = math.nan
    non2xx: int = 0
    socket_errors: int = 0
    error: str | None = None


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_LUA = """-- written by bench/api.py: cycle through the paths, each thread from its own offset
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local n = #paths
local threads = 0
function setup(thread)
  thread:set("offset", threads)
  threads = threads + 1
end
function init(args)
  i = ((offset or 0) * 7919) %% n
end
function request()
  i = i %% n + 1
  return wrk.format(nil, paths[i])
end
"""


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        return math.nan
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str, load: Load) -> Load:
    """Fill ``load`` from wrk's ``--latency`` report."""
    for pct, attr in (("50", "p50"), ("90", "p90"), ("99", "p99")):
        m = re.search(rf"^\s*{pct}%\s+(\S+)", out, re.M)
        if m:
            setattr(load, attr, _ms(m.group(1)))
    m = re.search(r"^\s*Latency\s+\S+\s+\S+\s+(\S+)", out, re.M)
    if m:
        load.max_ms = _ms(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if m:
        load.requests = int(m.group(1))
        load.seconds = _ms(m.group(2) + m.group(3)) / 1e3
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        load.rps = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        load.non2xx = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        load.socket_errors = sum(int(x) for x in m.groups())
    if math.isnan(load.rps):
        load.error = "could not parse wrk output: " + " ".join(out.split())[:200]
    return load


def run_wrk(base: str, paths_file: Path, threads: int, conns: int, seconds: float) -> Load:
    lua = paths_file.with_suffix(".lua")
    lua.write_text(_LUA % paths_file)
    load = Load("wrk", conns, seconds)
    cmd = [
        "wrk",
        f"-t{min(threads, conns)}",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        f"{WRK_TIMEOUT:.0f}s",
        "-s",
        str(lua),
        base,
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    except subprocess.TimeoutExpired:
        load.error = "wrk did not finish in time"
        return load
    if r.returncode != 0:
        load.error = f"wrk exit {r.returncode}: {(r.stderr or r.stdout).strip()[:200]}"
        return load
    return parse_wrk(r.stdout, load)


def run_httpx(base: str, paths: list[str], conns: int, seconds: float) -> Load:
    """Fallback load: ``conns`` async clients until ``seconds`` or a request cap."""
    import httpx

    load = Load("httpx", conns, seconds)
    lat: list[float] = []
    counts = {"non2xx": 0, "errors": 0}

    async def main() -> float:
        deadline = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
        timeout = httpx.Timeout(WRK_TIMEOUT)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:

            async def worker(w: int) -> None:
                i = w * 7919
                while time.perf_counter() < deadline and len(lat) < HTTPX_MAX_REQUESTS:
                    path = paths[i % len(paths)]
                    i += 1
                    t0 = time.perf_counter()
                    try:
                        r = await client.get(path)
                    except httpx.HTTPError:
                        counts["errors"] += 1
                        continue
                    lat.append((time.perf_counter() - t0) * 1e3)
                    if r.status_code >= 400:
                        counts["non2xx"] += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(conns)))
            return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    load.seconds, load.requests = elapsed, len(lat)
    load.non2xx, load.socket_errors = counts["non2xx"], counts["errors"]
    if lat:
        lat.sort()
        load.rps = len(lat) / elapsed
        for q, attr in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
            setattr(load, attr, lat[min(len(lat) - 1, round(q * (len(lat) - 1)))])
        load.max_ms = lat[-1]
    else:
        load.error = "no request succeeded"
    return load


# -- routes ----------------------------------------------------------------------------


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _object_path(oid: str) -> str:
    return "/api/objects/" + urllib.parse.quote(oid, safe="")


@dataclass
class Route:
    """A route under load: the paths wrk cycles through and a check of one answer."""

    name: str
    server: str  # "bare" or "twin"
    paths: list[str]
    check: Callable[[Any], str | None]
    row: str = ""  # label in the table (defaults to name)


@dataclass
class Row:
    """One route's numbers."""

    route: Route
    label: str
    loaded: Load | None = None
    single: Load | None = None
    body_bytes: int = 0
    first_ms: float = math.nan
    problem: str | None = None


def _check_bare(doc: Any) -> str | None:
    return None if doc == {"status": "ok"} else f"unexpected body {str(doc)[:80]}"


def _check_object(doc: Any) -> str | None:
    if not isinstance(doc, dict) or doc.get("type") != "Building" or not doc.get("geometry"):
        return f"unexpected object {str(doc)[:80]}"
    return None


def _check_list(doc: Any) -> str | None:
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list) or len(items) != 100:
        return f"expected 100 items, got {len(items) if isinstance(items, list) else items!r}"
    bad = [i["id"] for i in items if i["type"] != "Building" or not i["geometry"]["height"] > 10]
    if bad:
        return f"{len(bad)} items fail type=Building/geom.height>10, e.g. {bad[0]}"
    if not doc.get("next_cursor"):
        return "no next_cursor on a full page"
    return None


def _check_buckets(doc: Any) -> str | None:
    buckets = doc.get("buckets") if isinstance(doc, dict) else None
    if not isinstance(buckets, list) or len(buckets) != 288:
        n = len(buckets) if isinstance(buckets, list) else buckets
        return f"expected 288 buckets of 5 min, got {n}"
    counts = {b["count"] for b in buckets}
    if counts != {300}:
        return f"expected 300 points per bucket, got counts {sorted(counts)[:5]}"
    if buckets[0]["start"] != T0:
        return f"first bucket starts at {buckets[0]['start']}, expected {T0}"
    return None


def _check_raw(doc: Any) -> str | None:
    points = doc.get("points") if isinstance(doc, dict) else None
    if not isinstance(points, list) or len(points) != 10_000:
        n = len(points) if isinstance(points, list) else points
        return f"expected 10,000 points, got {n}"
    times = [p["time"] for p in points]
    if times[0] != T0 or times != sorted(times):
        return "points not in time order from the window start"
    return None


def make_routes(store: Store) -> list[Route]:
    rng = random.Random(SEED + 1)
    ids = rng.sample(store.ids, min(READ_IDS, len(store.ids)))
    window = f"property=pressure&since={_iso(T0)}&until={_iso(T0 + DAY)}"
    hist = _object_path(store.dense_id) + "/history?" + window
    return [
        Route("bare route (before)", "bare", ["/bare"], _check_bare),
        Route(
            "object read",
            "twin",
            [_object_path(i) for i in ids],
            _check_object,
            f"`GET /api/objects/{{id}}` ({len(ids):,} random ids)",
        ),
        Route(
            "filtered list",
            "twin",
            [
                "/api/objects?type=Building&where="
                + urllib.parse.quote("geom.height>10")
                + "&limit=100"
            ],
            _check_list,
            "`GET /api/objects?type=Building&where=geom.height>10&limit=100`",
        ),
        Route(
            "history 24 h, every=5m",
            "twin",
            [hist + "&every=5m"],
            _check_buckets,
            "`GET /api/objects/{id}/history` 24 h `every=5m` (288 buckets)",
        ),
        Route(
            "history 24 h, raw",
            "twin",
            [hist + "&limit=10000"],
            _check_raw,
            "`GET /api/objects/{id}/history` 24 h raw `limit=10000`",
        ),
        Route("bare route (after)", "bare", ["/bare"], _check_bare),
    ]


def check_route(base: str, route: Route) -> tuple[int, float, str | None]:
    """GET the route's first path once: body size, ms, and a problem if any."""
    try:
        status, body, secs = get(base + route.paths[0])
    except OSError as exc:
        return 0, math.nan, f"request failed: {exc}"
    if status != 200:
        return len(body), secs * 1e3, f"HTTP {status}: {body[:160].decode(errors='replace')}"
    try:
        doc = json.loads(body)
    except ValueError:
        return len(body), secs * 1e3, "body is not JSON"
    return len(body), secs * 1e3, route.check(doc)


# -- report ----------------------------------------------------------------------------


def _fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    return f"{cpu}, {os.cpu_count()} CPUs{mem}; Python {platform.python_version()}"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("uvicorn", "fastapi", "starlette", "uvloop", "httptools"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} not installed")
    return ", ".join(out)


def wrk_version() -> str:
    if not shutil.which("wrk"):
        return "wrk not found"
    r = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (r.stdout or r.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


@dataclass
class Report:
    """Everything the section says."""

    args: argparse.Namespace
    store: Store
    rows: list[Row]
    servers: dict[str, Server]
    tool: str
    wall_s: float
    notes: list[str] = field(default_factory=list)

    def bare_rps(self) -> float:
        rates = [
            r.loaded.rps
            for r in self.rows
            if r.route.server == "bare" and r.loaded and not math.isnan(r.loaded.rps)
        ]
        return statistics.fmean(rates) if rates else math.nan

    def results_table(self) -> list[str]:
        bare = self.bare_rps()
        c = self.args.connections
        lines = [
            f"| route | req/s ({c} conns) | vs bare | p50 ms | p90 ms | p99 ms | max ms "
            f"| p99 < {P99_MS:.0f} ms | p50 / p99 ms (1 conn) | body bytes | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            ld, one = r.loaded, r.single
            if ld is None or ld.error:
                why = ld.error if ld else (r.problem or "not run")
                lines.append(f"| {r.label} | failed: {why} |" + " |" * 9)
                continue
            ratio = "100%" if r.route.server == "bare" else f"{ld.rps / bare:.0%}"
            if math.isnan(bare):
                ratio = "n/a"
            single = f"{_fmt(one.p50, 2)} / {_fmt(one.p99, 2)}" if one and not one.error else "n/a"
            errors = ld.non2xx + ld.socket_errors
            err = "0" if not errors else f"{ld.non2xx:,} non-2xx, {ld.socket_errors:,} socket"
            p99_ok = "" if r.route.server == "bare" else _verdict(ld.p99 < P99_MS)
            lines.append(
                f"| {r.label} | {ld.rps:,.0f} | {ratio} | {_fmt(ld.p50, 2)} | {_fmt(ld.p90, 2)} "
                f"| {_fmt(ld.p99, 2)} | {_fmt(ld.max_ms)} | {p99_ok} | {single} "
                f"| {r.body_bytes:,} | {err} |"
            )
        return lines

    def targets_table(self) -> list[str]:
        bare = self.bare_rps()
        read = next((r for r in self.rows if r.route.name == "object read"), None)
        ld = read.loaded if read else None
        lines = ["| target | measured | verdict |", "|---|---|---|"]
        if ld is None or ld.error or math.isnan(bare):
            lines.append("| object reads | not measured | FAIL |")
            return lines
        ratio = ld.rps / bare
        lines.append(
            f"| object reads >= {READ_RATIO:.0%} of the bare route's req/s | {ratio:.0%} "
            f"({ld.rps:,.0f} / {bare:,.0f}) | {_verdict(ratio >= READ_RATIO)} |"
        )
        lines.append(
            f"| object reads p99 < {P99_MS:.0f} ms at 1 worker ({self.args.connections} conns) "
            f"| {_fmt(ld.p99, 2)} ms | {_verdict(ld.p99 < P99_MS)} |"
        )
        one = read.single if read else None
        if one is not None and not one.error:
            lines.append(
                f"| object reads p99 < {P99_MS:.0f} ms at 1 worker (1 conn, no queueing) "
                f"| {_fmt(one.p99, 2)} ms | {_verdict(one.p99 < P99_MS)} |"
            )
        for r in self.rows:
            if r.route.server != "twin" or r is read:
                continue
            if r.loaded and not r.loaded.error:
                lines.append(
                    f"| {r.route.name}: p99 < {P99_MS:.0f} ms ({self.args.connections} conns) "
                    f"| {_fmt(r.loaded.p99, 2)} ms | {_verdict(r.loaded.p99 < P99_MS)} |"
                )
        problems = [r for r in self.rows if r.problem]
        lines.append(
            f"| every route answers 200 with the expected content | "
            f"{len(self.rows) - len(problems)}/{len(self.rows)} | {_verdict(not problems)} |"
        )
        errors = sum(r.loaded.non2xx + r.loaded.socket_errors for r in self.rows if r.loaded)
        lines.append(f"| no errors under load | {errors:,} | {_verdict(errors == 0)} |")
        return lines

    def anchors_table(self) -> list[str]:
        read = next((r for r in self.rows if r.route.name == "object read"), None)
        rps = read.loaded.rps if read and read.loaded and not read.loaded.error else math.nan
        lines = [
            "| anchor (published) | their req/s | our object reads | ratio |",
            "|---|---|---|---|",
        ]
        for name, value in ANCHORS:
            lines.append(f"| {name} | ~{value:,.0f} | {_fmt(rps, 0)} | {_fmt(rps / value, 2)}x |")
        return lines

    def section(self) -> str:
        a, s = self.args, self.store
        load = os.getloadavg()
        twin = self.servers["twin"]
        bare = self.servers["bare"]
        mode = "quick" if a.quick else "full"
        build = (
            f"reused from an earlier run (built in {s.put_s:.1f} s + {s.history_s:.1f} s)"
            if s.reused
            else f"put_objects {s.put_s:.1f} s ({s.objects / s.put_s:,.0f} objects/s), "
            f"apply_updates {s.history_s:.1f} s ({s.history / s.history_s:,.0f} points/s)"
        )
        out = [
            "## API load: twin serve vs bare FastAPI (`bench/api.py`)",
            "",
            f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            f"- commit: {commit()}",
            f"- machine: {machine()}",
            f"- {versions()}; load generator: {self.tool} ({wrk_version()})",
            f"- load average at the end (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f}; client and server share the machine",
            f"- mode: {mode}, {self.wall_s:.0f} s",
            f"- store: SQLite, {s.objects:,} objects (Delfshaven x "
            f"{math.ceil(s.objects / 853)} grid copies), {s.history:,} history points; {build}",
            f"- servers: 1 uvicorn worker each on {HOST}, log level warning; peak RSS twin "
            f"{_fmt(twin.peak_rss_mib, 0)} MiB, bare {_fmt(bare.peak_rss_mib, 0)} MiB",
            "",
            "Generated by `.venv/bin/python bench/api.py"
            + (" --quick" if a.quick else "")
            + "`. Each row: 1 s warm-up, then "
            f"`wrk -t{a.threads} -c{a.connections} -d{a.duration:g}s --latency` (a Lua script "
            "cycles through the paths), then 1 connection for "
            f"{min(3.0, a.duration):g} s (latency without queueing). *vs bare*: req/s over "
            "the mean of the two bare runs. *body bytes*: one answer, uncompressed (wrk sends "
            "no Accept-Encoding). History rows read the one object with a dense 1 s series.",
            "",
            "### Results",
            "",
            *self.results_table(),
            "",
            "### Targets",
            "",
            *self.targets_table(),
            "",
            "### Anchors",
            "",
            "Published single-instance figures of other twin platforms, measured on other "
            "hardware with other payloads: context, not a verdict.",
            "",
            *self.anchors_table(),
        ]
        notes = list(self.notes)
        bare_p99 = [r.loaded.p99 for r in self.rows if r.route.server == "bare" and r.loaded]
        if bare_p99:
            notes.append(
                f"one worker answers one request at a time, so at {a.connections} connections "
                f"latency is about connections / rate (Little's law): even the bare route's p99 "
                f"is {' / '.join(_fmt(x, 1) for x in bare_p99)} ms; the 1-connection columns "
                "show the service time itself"
            )
        for r in self.rows:
            if r.problem:
                notes.append(f"{r.route.name}: check failed: {r.problem}")
        if notes:
            out += ["", "### Notes", "", *(f"- {n}" for n in notes)]
        return "\n".join(out) + "\n"


def write_results(section: str) -> None:
    write_section("api", section)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--objects", type=int, default=100_000, help="objects in the store (>=)")
    p.add_argument("--history", type=int, default=None, help="history points (1,000,000)")
    p.add_argument("--duration", type=float, default=None, help="seconds per loaded run (10)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--quick", action="store_true", help="10k objects, 100k points, 3 s")
    p.add_argument("--reuse-db", action="store_true", help="keep a store built earlier")
    p.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    a = p.parse_args(argv)
    if a.quick:
        a.objects = 10_000 if a.objects == 100_000 else a.objects
        a.history = 100_000 if a.history is None else a.history
        a.duration = 3.0 if a.duration is None else a.duration
    a.history = 1_000_000 if a.history is None else a.history
    a.duration = 10.0 if a.duration is None else a.duration
    if a.objects < 1 or a.history < DENSE_POINTS or a.duration <= 0 or a.connections < 1:
        p.error(f"need --objects >= 1, --history >= {DENSE_POINTS:,}, positive duration/conns")
    return a


def load_once(
    report: Report, server: Server, route: Route, paths_file: Path, conns: int, seconds: float
) -> Load:
    if report.tool == "wrk":
        load = run_wrk(server.base, paths_file, report.args.threads, conns, seconds)
    else:
        load = run_httpx(server.base, route.paths, conns, seconds)
    server.drain()
    return load


def measure(report: Report) -> None:
    a = report.args
    paths_dir = WORK / "api_paths"
    paths_dir.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(report.rows):
        route = row.route
        server = report.servers[route.server]
        row.body_bytes, row.first_ms, row.problem = check_route(server.base, route)
        paths_file = paths_dir / f"route{i}.txt"
        paths_file.write_text("\n".join(route.paths) + "\n")
        log(f"{route.name}: {row.body_bytes:,} bytes in {row.first_ms:.1f} ms")

        # Warm-up, the loaded run, then one connection (latency without queueing).
        load_once(report, server, route, paths_file, a.connections, 1.0)
        row.loaded = load_once(report, server, route, paths_file, a.connections, a.duration)
        row.single = load_once(report, server, route, paths_file, 1, min(3.0, a.duration))
        ld = row.loaded
        log(
            f"  {ld.rps:,.0f} req/s, p50 {ld.p50:.2f} ms, p99 {ld.p99:.2f} ms, "
            f"{ld.non2xx} non-2xx, {ld.socket_errors} socket errors"
            + (f" ({ld.error})" if ld.error else "")
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    t_start = time.perf_counter()
    store = build_store(args.objects, args.history, args.reuse_db)
    tool = "wrk" if shutil.which("wrk") else "httpx"
    notes: list[str] = []
    if tool == "httpx":
        notes.append(
            "wrk not found (apt-get install -y wrk): async httpx loop instead, capped at "
            f"{HTTPX_MAX_REQUESTS:,} requests; the Python client shares the CPUs, so these "
            "rates are a floor, not comparable with wrk runs"
        )
    servers = {
        "bare": Server(
            "bare FastAPI",
            [
                str(VENV / "python"),
                "-m",
                "uvicorn",
                "bench.bare_app:app",
                "--host",
                HOST,
                "--port",
                "{port}",
                "--workers",
                "1",
                "--log-level",
                "warning",
            ],
            "/bare",
            WORK / "api_bare.log",
        ),
        "twin": Server(
            "twin serve",
            [
                str(VENV / "twin"),
                "serve",
                "--db",
                f"sqlite:///{store.path}",
                "--host",
                HOST,
                "--port",
                "{port}",
            ],
            "/api/healthz",
            WORK / "api_twin.log",
        ),
    }
    routes = make_routes(store)
    rows = [Row(r, r.row or r.name) for r in routes]
    report = Report(args, store, rows, servers, tool, 0.0, notes)
    with running(servers["bare"]), running(servers["twin"]):
        measure(report)
        for s in servers.values():
            s.read_peak_rss()
    for s in servers.values():
        tail = s.log_tail(2000)
        if "Traceback" in tail or "ERROR" in tail:
            notes.append(f"{s.name} log ({s.log_path.name}) shows errors: {tail[-300:]}")
    report.wall_s = time.perf_counter() - t_start
    section = report.section()
    print(section)
    if not args.no_results:
        write_results(section)
        log(f"wrote {RESULTS.relative_to(ROOT)} ({START} ... {END})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

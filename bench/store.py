"""Store benchmark: bulk put, state updates and read latency of memory, SQLite and PostgreSQL.

What it measures, per store (each on an empty store: a temporary SQLite file, a
throwaway PostgreSQL schema that is dropped at the end):

* ``put_objects``: objects/s for one call with the whole city (one transaction), then
  for the same call again (an idempotent re-put of unchanged objects). The city is the
  real Delfshaven district (853 buildings, ``load_cityjson``) copied on a grid to
  >= 100k objects: each copy gets ids ``<id>-<k>`` and its bboxes shifted by the grid
  offset (source CRS in metres; WGS84 by the local degrees-per-metre fitted on the
  real buildings' own bbox pairs). Attributes and geometry summaries are the real ones,
  nothing is invented. Serialization in Python is included: it is what a caller waits.
* ``apply_updates``: updates/s in batches of 1,000 (pressure numbers and status strings
  on random buildings, event times increasing, a few late and duplicate messages).
* latency of ``get_object`` (random ids) and of a filtered ``query_objects`` page
  (``geom.height>=15``, ``state.pressure<2.5``, a bbox around one tile, 100 per page):
  median and 95th percentile.

Anchor: 3DCityDB v5 imports about 500 buildings/s (its published figure for the
CityGML/CityJSON importer into PostgreSQL); the target here is >= 20,000 objects/s into
SQLite. The comparison is loose: 3DCityDB stores full geometry, these stores hold the
summary (bbox, height, footprint) and the source document beside it.

Run: ``.venv/bin/python bench/store.py`` (``--copies N``, ``--pg-url URL`` or env
``TWIN_TEST_PG_URL``, ``--no-postgres``, ``--no-results``). The table is printed and
written to bench/RESULTS.md between the ``store`` markers (other sections are kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import tiled, write_section  # noqa: E402

from ingest.cityjson import load_cityjson  # noqa: E402
from twin.objects import TwinObject  # noqa: E402
from twin.query import ObjectQuery, parse_where  # noqa: E402
from twin.state import StateUpdate  # noqa: E402
from twin.store import MemoryStore, StateStore  # noqa: E402
from twin.store.sqlite import SqliteStore  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
SOURCE = Path("/work/shared/data/cityjson/real/delfshaven_3-20.city.json")
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
ANCHOR = 500.0  # 3DCityDB v5 import, buildings/s
TARGET = 20_000.0
BATCH = 1_000


@dataclass
class Row:
    """One store's numbers."""

    store: str
    put: float = math.nan  # objects/s
    reput: float = math.nan
    updates: float = math.nan  # updates/s
    get_ms: tuple[float, float] = (math.nan, math.nan)  # median, p95
    query_ms: tuple[float, float] = (math.nan, math.nan)
    page: int = 0
    notes: list[str] = field(default_factory=list)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tile(objs: list[TwinObject], copies: int) -> list[TwinObject]:
    """Grid copies of real objects: new ids, shifted bboxes, everything else as read."""
    return list(tiled(objs, copies, suffix="-"))


def make_updates(ids: list[str], n: int, rng: random.Random) -> list[StateUpdate]:
    """Feed-like updates: mostly in order, ~2% late, ~1% repeated messages."""
    out: list[StateUpdate] = []
    t = 1_800_000_000.0
    for i in range(n):
        t += 0.01
        oid = rng.choice(ids)
        when = t - rng.uniform(60, 600) if rng.random() < 0.02 else t
        if rng.random() < 0.7:
            u = StateUpdate(oid, "pressure", round(rng.uniform(0.5, 4.0), 3), when, "bench")
        else:
            status = rng.choice(["ok", "ok", "ok", "alarm", "maintenance"])
            u = StateUpdate(oid, "status", status, when, "bench", msg_id=f"s{i}")
        out.append(u)
        if rng.random() < 0.01:
            out.append(u)  # a redelivered message
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples) * 1000, p95 * 1000


def sample(fn: Callable[[], Any], n: int, budget: float = 10.0) -> list[float]:
    """Up to ``n`` timings of ``fn`` (fewer, but at least 20, past ``budget`` seconds)."""
    out: list[float] = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        if len(out) >= 20 and t0 - start > budget:
            break
    return out


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_store(
    name: str, store: StateStore, city: list[TwinObject], updates: list[StateUpdate]
) -> Row:
    row = Row(name)
    n = len(city)
    log(f"{name}: put_objects {n:,}")
    secs = timed(lambda: store.put_objects(city, source="delfshaven_tiled"))
    assert store.count() == n, (store.count(), n)
    row.put = n / secs
    log(f"{name}: re-put {n:,}")
    row.reput = n / timed(lambda: store.put_objects(city, source="delfshaven_tiled"))
    log(f"{name}: apply_updates {len(updates):,} in batches of {BATCH:,}")
    t0 = time.perf_counter()
    for i in range(0, len(updates), BATCH):
        store.apply_updates(updates[i : i + BATCH])
    row.updates = len(updates) / (time.perf_counter() - t0)
    rng = random.Random(3)
    ids = [o.id for o in city]
    row.get_ms = percentiles(sample(lambda: store.get_object(rng.choice(ids)), 2_000))
    # One tile of the grid (the first copy's extent), tall buildings under low pressure.
    first = [o.geometry.bbox_wgs84 for o in city[:853] if o.geometry and o.geometry.bbox_wgs84]
    bbox = (
        min(b[0] for b in first),
        min(b[1] for b in first),
        max(b[3] for b in first),
        max(b[4] for b in first),
    )
    q = ObjectQuery(
        conditions=parse_where("geom.height>=15,state.pressure<2.5"), bbox=bbox, limit=100
    )
    row.page = len(store.query_objects(q).items)
    row.query_ms = percentiles(sample(lambda: store.query_objects(q), 200))
    return row


def fmt_rate(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:,.0f}"


def table(rows: list[Row], n_objects: int, n_updates: int) -> str:
    lines = [
        f"| store | put_objects, objects/s | x 3DCityDB (~{ANCHOR:.0f}/s) | re-put, objects/s "
        f"| apply_updates, updates/s (batches of {BATCH:,}) | get_object ms (median / p95) "
        "| filtered page ms (median / p95) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if math.isnan(r.put):
            lines.append(f"| {r.store} | not run: {'; '.join(r.notes)} | | | | | |")
            continue
        lines.append(
            f"| {r.store} | {fmt_rate(r.put)} | {r.put / ANCHOR:,.0f}x | {fmt_rate(r.reput)} "
            f"| {fmt_rate(r.updates)} | {r.get_ms[0]:.3f} / {r.get_ms[1]:.3f} "
            f"| {r.query_ms[0]:.2f} / {r.query_ms[1]:.2f} ({r.page} objects) |"
        )
    sqlite = next((r for r in rows if r.store.startswith("SqliteStore")), None)
    verdict = ""
    if sqlite is not None:
        ok = sqlite.put >= TARGET
        verdict = (
            f"Target >= {TARGET:,.0f} objects/s into SQLite: "
            f"{'met' if ok else 'NOT met'} ({fmt_rate(sqlite.put)} objects/s)."
        )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return "\n".join(
        [
            "## Stores (bench/store.py)",
            "",
            f"Real Delfshaven (853 buildings) copied on a grid to {n_objects:,} objects; "
            f"{n_updates:,} state updates. One put_objects call = one transaction.",
            "",
            *lines,
            "",
            verdict,
            "",
            f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}; PostgreSQL on the "
            f"same machine. Load average at the end: {load}.",
            "Anchor: 3DCityDB v5 imports ~500 buildings/s (full geometry, so a loose "
            "comparison: these stores keep the summary and the source document).",
            *[f"{r.store}: {n}." for r in rows if not math.isnan(r.put) for n in r.notes],
        ]
    )


def write_results(section: str) -> None:
    write_section("store", section)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Store benchmark (see module docstring).")
    ap.add_argument("--copies", type=int, default=118, help="grid copies (118 -> 100,654)")
    ap.add_argument("--updates", type=int, default=100_000)
    ap.add_argument(
        "--pg-url", default=os.environ.get("TWIN_TEST_PG_URL", DEFAULT_PG), help="PostgreSQL"
    )
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    args = ap.parse_args(argv)

    log(f"reading {SOURCE}")
    real = list(load_cityjson(SOURCE).twin)
    city = tile(real, args.copies)
    updates = make_updates([o.id for o in city], args.updates, random.Random(11))
    log(f"{len(city):,} objects, {len(updates):,} updates")
    rows: list[Row] = []
    if not args.no_memory:
        rows.append(run_store("MemoryStore", MemoryStore(), city, updates))
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            rows.append(run_store("SqliteStore (file, WAL)", store, city, updates))
        finally:
            store.close()
    if not args.no_postgres:
        rows.append(run_postgres(args.pg_url, city, updates))
    section = table(rows, len(city), len(updates))
    print(section)
    if not args.no_results:
        write_results(section)
        log(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def run_postgres(url: str, city: list[TwinObject], updates: list[StateUpdate]) -> Row:
    from twin.errors import TwinError
    from twin.store.postgres import PostgresStore

    schema = f"twin_bench_{os.getpid()}"
    full = f"{url}{'&' if '?' in url else '?'}schema={schema}"
    try:
        store = PostgresStore(full)
    except TwinError as exc:
        log(f"PostgreSQL skipped: {exc}")
        row = Row("PostgresStore")
        row.notes.append(str(exc))
        return row
    try:
        name = "PostgresStore (pg_trgm)" if store.trigram else "PostgresStore"
        row = run_store(name, store, city, updates)
        import psycopg

        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            buffers = conn.execute("SHOW shared_buffers").fetchone()
        row.notes.append(
            f"PostgreSQL {version[0] if version else '?'} with shared_buffers "
            f"{buffers[0] if buffers else '?'} (as installed, not tuned)"
        )
        return row
    finally:
        store.close()
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    sys.exit(main())

"""SQLite StateStore: the embedded default (one file, WAL mode).

Every query is one SQL statement using an index: objects by (scenario, id) and
(scenario, type); bbox through R*Tree tables (WGS84 and source CRS); free text through
an FTS5 trigram index (substring search); state filters through (property, num); history
by (object, property, time). Writes are one ``BEGIN IMMEDIATE`` transaction each, so a
killed process leaves the store as it was before the interrupted write (WAL rollback).
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from functools import reduce
from itertools import chain
from operator import add, attrgetter
from pathlib import Path
from typing import Any, cast

import orjson

from twin.alerts import Alert
from twin.errors import TwinError
from twin.objects import TwinObject
from twin.query import Condition, ObjectQuery, encode_cursor
from twin.state import (
    ApplyResult,
    AuditEntry,
    DeadLetter,
    HistoryBucket,
    HistoryPoint,
    StateUpdate,
    StateValue,
)
from twin.store.base import Page, SourceInfo, searchable_text, sort_value

__all__ = ["SqliteStore"]

SCHEMA_VERSION = 2
CHECKPOINT_EVERY_S = 0.25
_NOWHERE = 3.0e38

# One 4-D R*Tree holds both boxes (WGS84 and source CRS): one index to maintain, not
# two; a query constrains two of the four dimensions. Objects without a WGS84 box get a
# far-away one (_NOWHERE) that no query reaches.
_BOX_DDL = """CREATE VIRTUAL TABLE IF NOT EXISTS objects_box USING rtree (
    rid, wminx, wmaxx, wminy, wmaxy, sminx, smaxx, sminy, smaxy
);"""
# Trigram index without positions (detail=none): about half the insert cost of the full
# index; substring search runs as `text LIKE '%q%'`, which FTS5 serves from trigrams,
# rechecked exactly with instr().
_FTS_DDL = """CREATE VIRTUAL TABLE IF NOT EXISTS objects_fts USING fts5 (
    text, tokenize = 'trigram', detail = 'none'
);"""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    rid INTEGER PRIMARY KEY,
    scenario TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    parent TEXT,
    height REAL,
    footprint REAL,
    lod TEXT,
    attributes TEXT NOT NULL,
    doc BLOB NOT NULL,
    source TEXT,
    wminx REAL, wminy REAL, wmaxx REAL, wmaxy REAL,
    sminx REAL, sminy REAL, smaxx REAL, smaxy REAL,
    UNIQUE (scenario, id)
);
CREATE INDEX IF NOT EXISTS objects_type ON objects (scenario, type, id);
CREATE INDEX IF NOT EXISTS objects_parent ON objects (scenario, parent);
CREATE INDEX IF NOT EXISTS objects_height ON objects (scenario, height, id);
CREATE INDEX IF NOT EXISTS objects_footprint ON objects (scenario, footprint, id);
{_BOX_DDL}
{_FTS_DDL}
CREATE TABLE IF NOT EXISTS state (
    object_id TEXT NOT NULL,
    property TEXT NOT NULL,
    value TEXT NOT NULL,
    num REAL,
    t REAL NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    quality TEXT,
    PRIMARY KEY (object_id, property)
) WITHOUT ROWID;
-- No (property, value) indexes: state filters run as correlated lookups on the key from
-- each candidate object, and every extra index would be rewritten by every update.
DROP INDEX IF EXISTS state_prop_num;
DROP INDEX IF EXISTS state_prop_value;
CREATE TABLE IF NOT EXISTS history (
    object_id TEXT NOT NULL,
    property TEXT NOT NULL,
    t REAL NOT NULL,
    value TEXT NOT NULL,
    num REAL,
    source TEXT NOT NULL DEFAULT '',
    quality TEXT,
    msg_id TEXT,
    PRIMARY KEY (object_id, property, t)
) WITHOUT ROWID;
-- Per-minute aggregates of history, kept in the same transaction as the points: a
-- bucketed query (every = whole minutes) reads 1,440 rows for a day, not 86,400 points.
CREATE TABLE IF NOT EXISTS history_1m (
    object_id TEXT NOT NULL,
    property TEXT NOT NULL,
    minute INTEGER NOT NULL,
    n INTEGER NOT NULL,
    n_num INTEGER NOT NULL,
    total REAL NOT NULL,
    lo REAL,
    hi REAL,
    PRIMARY KEY (object_id, property, minute)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS history_msg ON history (msg_id) WHERE msg_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS history_t ON history (t);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    object_ids TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_t ON audit (t);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    feed TEXT NOT NULL,
    t REAL NOT NULL,
    reason TEXT NOT NULL,
    payload TEXT NOT NULL,
    entity TEXT,
    property TEXT
);
CREATE INDEX IF NOT EXISTS rejected_feed_t ON rejected (feed, t);
CREATE INDEX IF NOT EXISTS rejected_t ON rejected (t);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    object_id TEXT NOT NULL,
    updated REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state, updated);
CREATE TABLE IF NOT EXISTS sources (
    scenario TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    added REAL NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (scenario, name)
);
"""

_SORT_SQL = {"id": "o.id", "type": "o.type", "height": "o.height", "footprint": "o.footprint"}


def _path_from_url(url: str) -> str:
    if url in ("sqlite://", "sqlite:///:memory:", "sqlite://:memory:"):
        return ":memory:"
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :]
    raise TwinError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/twin.db)")


def _json_path(name: str) -> str:
    return '$."' + name.replace('"', "") + '"'


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@contextmanager
def write_tx(
    db: sqlite3.Connection, lock: threading.RLock, url: str
) -> Iterator[sqlite3.Connection]:
    """One write transaction on a shared connection: all of it lands or none of it.

    Raises:
        TwinError: the write cannot start or fails (the transaction is rolled back).
    """
    with lock:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise TwinError(f"store {url!r}: cannot start a write ({exc})") from None
        try:
            yield db
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise TwinError(f"store {url!r}: write failed ({exc})") from None
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")


class SqliteStore:
    """StateStore on one SQLite file (``sqlite:///twin.db``).

    One connection guarded by a lock: SQLite serializes writers anyway, and the
    queries here take microseconds, so a lock is cheaper than a pool.
    """

    def __init__(self, url: str = "sqlite:///twin.db") -> None:
        self.url = url
        path = _path_from_url(url)
        if path != ":memory:":
            parent = Path(path).expanduser().resolve().parent
            if not parent.is_dir():
                raise TwinError(f"cannot open store {url!r}: folder {parent} does not exist")
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.create_function("py_lower", 1, _py_lower, deterministic=True)
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a committed transaction survives a killed process (it is in
            # the WAL file); only an OS crash could lose the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA temp_store=MEMORY")
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB: bulk loads touch many pages
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            self._migrate()
            has_stats = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
            ).fetchone()
            n_objects = int(self._db.execute("SELECT count(*) FROM objects").fetchone()[0])
            if not has_stats and n_objects:
                self._db.execute("ANALYZE")  # a store filled before statistics existed
            # Objects written since statistics were last refreshed (see put_objects).
            self._analyzed_at = n_objects
            self._written_since = 0
        except sqlite3.DatabaseError as exc:
            raise TwinError(f"cannot open store {url!r}: {exc}") from None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if path != ":memory:":
            # Checkpoints (copying the WAL into the database, with an fsync) run on their
            # own connection and thread, so a commit never waits for one. Durability is
            # unchanged: a committed transaction is in the WAL either way.
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(path,), name="sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _migrate(self) -> None:
        """Bring a store written by an older version to this schema (one transaction)."""
        (version,) = self._db.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
        ).fetchone()
        if int(version) >= SCHEMA_VERSION:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # v1 -> v2: two 2-D R*Trees became one 4-D tree; the trigram index lost its
            # positions. Both are rebuilt from the objects table.
            db.execute("DROP TABLE IF EXISTS objects_wgs")
            db.execute("DROP TABLE IF EXISTS objects_src")
            db.execute("DROP TABLE IF EXISTS objects_fts")
            db.execute(_BOX_DDL)
            db.execute(_FTS_DDL)
            db.execute(
                "INSERT INTO objects_box SELECT rid, "
                f"COALESCE(wminx, {_NOWHERE}), COALESCE(wmaxx, {_NOWHERE}), "
                f"COALESCE(wminy, {_NOWHERE}), COALESCE(wmaxy, {_NOWHERE}), "
                f"COALESCE(sminx, {_NOWHERE}), COALESCE(smaxx, {_NOWHERE}), "
                f"COALESCE(sminy, {_NOWHERE}), COALESCE(smaxy, {_NOWHERE}) "
                "FROM objects WHERE wminx IS NOT NULL OR sminx IS NOT NULL"
            )
            texts = [
                (rid, searchable_text(_object((attrs, doc))).lower())
                for rid, attrs, doc in db.execute("SELECT rid, attributes, doc FROM objects")
            ]
            db.executemany("INSERT INTO objects_fts (rowid, text) VALUES (?, ?)", texts)
            db.execute("DELETE FROM history_1m")
            db.execute(
                f"INSERT INTO history_1m {_ROLLUP_SELECT} GROUP BY object_id, property, minute"
            )
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _checkpoint_loop(self, path: str) -> None:
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA busy_timeout=1000")
        except sqlite3.Error:
            return
        try:
            while not self._stop.wait(CHECKPOINT_EVERY_S):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    continue  # busy or closing: the next round catches up
        finally:
            db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_tx(self._db, self._lock, self.url)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- objects -----------------------------------------------------------------------

    def put_objects(
        self,
        objects: Iterable[TwinObject],
        *,
        scenario: str = "base",
        source: str = "",
        source_data: bytes | None = None,
    ) -> int:
        # A repeated id in one batch: the later object wins (as in MemoryStore).
        batch = {o.id: o for o in objects}
        for o in batch.values():
            o.scenario = scenario
        if not batch and source_data is None:
            return 0
        with self._tx() as db:
            if source_data is not None:
                db.execute(
                    "INSERT INTO sources (scenario, name, sha256, size, added, data) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scenario, name) DO UPDATE SET "
                    "sha256 = excluded.sha256, size = excluded.size, data = excluded.data",
                    (
                        scenario,
                        source,
                        hashlib.sha256(source_data).hexdigest(),
                        len(source_data),
                        time.time(),
                        zlib.compress(source_data, 6),
                    ),
                )
            if not batch:
                return 0
            self._write_objects(db, scenario, source, batch)
        self._written_since += len(batch)
        if self._written_since >= max(1000, self._analyzed_at):
            # Fresh statistics after bulk loads, so the planner picks the ordered index;
            # refreshed when the table has (about) doubled, so a load in many batches
            # costs O(n) in ANALYZE, not O(n^2).
            with self._lock:
                self._db.execute("ANALYZE")
            self._analyzed_at += self._written_since
            self._written_since = 0
        return len(batch)

    def _write_objects(
        self, db: sqlite3.Connection, scenario: str, source: str, batch: dict[str, TwinObject]
    ) -> None:
        """Replace the changed objects of a batch; unchanged ones are not rewritten."""
        docs = {oid: _json_pair(o) for oid, o in batch.items()}
        (n_rows,) = db.execute("SELECT count(*) FROM objects").fetchone()
        stale: list[int] = []
        if n_rows:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS batch (id TEXT PRIMARY KEY)")
            db.execute("DELETE FROM temp.batch")
            db.executemany("INSERT INTO temp.batch (id) VALUES (?)", ((k,) for k in batch))
            for rid, oid, attrs, doc, src in db.execute(
                "SELECT o.rid, o.id, o.attributes, o.doc, o.source FROM objects o "
                "WHERE o.scenario = ? AND o.id IN (SELECT id FROM temp.batch)",
                (scenario,),
            ):
                if (attrs, bytes(doc)) == docs[oid] and src == source:
                    del docs[oid]  # an idempotent re-put: nothing to write
                else:
                    stale.append(rid)
        if stale:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS stale (rid INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM temp.stale")
            db.executemany("INSERT INTO temp.stale (rid) VALUES (?)", ((r,) for r in stale))
            for table, key in (
                ("objects_box", "rid"),
                ("objects_fts", "rowid"),
                ("objects", "rid"),
            ):
                db.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT rid FROM temp.stale)")
        if not docs:
            return
        # Ids in order: the (scenario, id) index and the table grow at their right edge.
        (next_rid,) = db.execute("SELECT COALESCE(max(rid), 0) + 1 FROM objects").fetchone()
        rows = []
        boxes = []
        texts = []
        rid_of: dict[str, int] = {}
        for rid, oid in enumerate(sorted(docs), start=next_rid):
            o = batch[oid]
            g = o.geometry
            wb = g.bbox_wgs84 if g else None
            sb = g.bbox if g else None
            rows.append(
                (
                    rid,
                    scenario,
                    oid,
                    o.type,
                    o.parent,
                    g.height if g else None,
                    g.footprint_area if g else None,
                    g.lod if g else None,
                    *docs[oid],
                    source,
                    *((wb[0], wb[1], wb[3], wb[4]) if wb else (None,) * 4),
                    *((sb[0], sb[1], sb[3], sb[4]) if sb else (None,) * 4),
                )
            )
            rid_of[oid] = rid
            texts.append((rid, searchable_text(o).lower()))
        # Boxes in the caller's order (a file's objects come roughly tile by tile), not
        # id order: R*Tree inserts are cheaper when neighbours arrive together.
        for oid in docs:
            g = batch[oid].geometry
            if g is None:
                continue
            wb, sb = g.bbox_wgs84, g.bbox
            w = (wb[0], wb[3], wb[1], wb[4]) if wb else (_NOWHERE,) * 4
            boxes.append((rid_of[oid], *w, sb[0], sb[3], sb[1], sb[4]))
        db.executemany(
            "INSERT INTO objects (rid, scenario, id, type, parent, height, footprint, lod, "
            "attributes, doc, source, wminx, wminy, wmaxx, wmaxy, sminx, sminy, smaxx, smaxy) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany("INSERT INTO objects_box VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", boxes)
        db.executemany("INSERT INTO objects_fts (rowid, text) VALUES (?, ?)", texts)

    def get_object(self, object_id: str, scenario: str = "base") -> TwinObject | None:
        rows = self._read(
            "SELECT attributes, doc FROM objects WHERE scenario = ? AND id = ?",
            (scenario, object_id),
        )
        return _object(rows[0]) if rows else None

    def query_objects(self, query: ObjectQuery) -> Page:
        sql, params = self._compile(query)
        rows = self._read(sql, params)
        items = [_object(r) for r in rows[: query.limit]]
        nxt = None
        if len(rows) > query.limit and items:
            last = items[-1]
            nxt = encode_cursor(sort_value(last, query.sort), last.id)
        return Page(items=items, next_cursor=nxt)

    def _compile(self, q: ObjectQuery) -> tuple[str, list[Any]]:
        """One SELECT for the whole query (filters, bbox, text, keyset page)."""
        joins: list[str] = []
        where = ["o.scenario = ?"]
        params: list[Any] = [q.scenario]
        if q.bbox is not None:
            p = "w" if q.bbox_crs == "wgs84" else "s"
            joins.append(
                f"JOIN objects_box r ON r.rid = o.rid AND r.{p}maxx >= ? AND r.{p}minx <= ? "
                f"AND r.{p}maxy >= ? AND r.{p}miny <= ?"
            )
            minx, miny, maxx, maxy = q.bbox
            params = [minx, maxx, miny, maxy, *params]
            # The R*Tree stores float32 boxes rounded outward: recheck exactly.
            where.append(f"o.{p}maxx >= ? AND o.{p}minx <= ? AND o.{p}maxy >= ? AND o.{p}miny <= ?")
            params += [minx, maxx, miny, maxy]
        if q.types:
            where.append(f"o.type IN ({','.join('?' * len(q.types))})")
            params += list(q.types)
        if q.ids:
            where.append(f"o.id IN ({','.join('?' * len(q.ids))})")
            params += list(q.ids)
        if q.text:
            # The FTS text is stored lower-cased by Python (SQLite's lower() is ASCII).
            # LIKE '%q%' is answered from the trigram index (3+ characters); its own
            # wildcards (% and _ in the user's text) only widen that candidate set, and
            # instr() keeps exact substring matches.
            # Shorter needles scan (FTS5 answers a 2-character non-ASCII LIKE wrongly).
            needle = q.text.lower()
            if len(needle) >= 3:
                where.append(
                    "o.rid IN (SELECT rowid FROM objects_fts WHERE text LIKE ? AND instr(text, ?))"
                )
                params += [f"%{needle}%", needle]
            else:
                where.append("o.rid IN (SELECT rowid FROM objects_fts WHERE instr(text, ?))")
                params.append(needle)
        for c in q.conditions:
            clause, cparams = _condition_sql(c)
            where.append(clause)
            params += cparams
        sort = _SORT_SQL.get(q.sort, "o.id")
        op = "<" if q.descending else ">"
        if q.sort in ("id", "type"):
            # Never NULL: a plain key the (scenario, id) / (scenario, type, id) indexes
            # serve in order, so a page stops after `limit` rows instead of sorting all.
            key = [sort] if q.sort == "id" else [sort, "o.id"]
            if q.cursor is not None:
                cv, cid = q.cursor
                if q.sort == "id":
                    where.append(f"o.id {op} ?")
                    params.append(cid)
                else:
                    where.append(f"({sort}, o.id) {op} (?, ?)")
                    params += [cv, cid]
        else:
            key = [f"({sort} IS NULL)", f"COALESCE({sort}, 0)", "o.id"]
            if q.cursor is not None:
                cv, cid = q.cursor
                where.append(f"(({sort} IS NULL), COALESCE({sort}, 0), o.id) {op} (?, ?, ?)")
                params += [cv is None, cv if cv is not None else 0, cid]
        direction = "DESC" if q.descending else "ASC"
        order = ", ".join(f"{part} {direction}" for part in key)
        sql = (
            f"SELECT o.attributes, o.doc FROM objects o {' '.join(joins)} "
            f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
        )
        params.append(q.limit + 1)
        return sql, params

    def sources(self, scenario: str = "base") -> list[SourceInfo]:
        rows = self._read(
            "SELECT name, sha256, size, added FROM sources WHERE scenario = ? ORDER BY added, name",
            (scenario,),
        )
        return [SourceInfo(n, h, int(z), float(a)) for n, h, z, a in rows]

    def get_source(self, name: str, scenario: str = "base") -> bytes | None:
        rows = self._read(
            "SELECT data FROM sources WHERE scenario = ? AND name = ?", (scenario, name)
        )
        return zlib.decompress(rows[0][0]) if rows else None

    def count(self, scenario: str = "base") -> int:
        return int(self._read("SELECT count(*) FROM objects WHERE scenario = ?", (scenario,))[0][0])

    def counts_by_type(self, scenario: str = "base") -> dict[str, int]:
        rows = self._read(
            "SELECT type, count(*) FROM objects WHERE scenario = ? GROUP BY type "
            "ORDER BY count(*) DESC, type",
            (scenario,),
        )
        return {t: int(n) for t, n in rows}

    # -- state -------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[StateUpdate]) -> ApplyResult:
        res = ApplyResult()
        if not updates:
            return res
        points = list(map(_POINT, updates))
        pairs = list(set(map(_PAIR, updates)))
        msg_ids = set(map(_MSG_ID, updates))
        msg_ids.discard(None)
        rollup: dict[tuple[str, str, int], list[float | None]] = {}
        with self._tx() as db:
            # Set-based: three keyed lookups for the whole batch (existing points, message
            # ids, current latest times), then the per-row decisions in Python, exactly as
            # a row-by-row apply would make them, then bulk writes.
            seen_points = set(
                _lookup(
                    db,
                    "SELECT h.object_id, h.property, h.t FROM u CROSS JOIN history h "
                    "ON h.object_id = u.c1 AND h.property = u.c2 AND h.t = u.c3",
                    points,
                    3,
                )
            )
            seen_msgs = (
                {
                    r[0]
                    for r in _lookup(
                        db,
                        "SELECT h.msg_id FROM u CROSS JOIN history h ON h.msg_id = u.c1",
                        [(m,) for m in msg_ids],
                        1,
                    )
                }
                if msg_ids
                else set()
            )
            current: dict[tuple[str, str], float] = {
                (o, p): t
                for o, p, t in _lookup(
                    db,
                    "SELECT s.object_id, s.property, s.t FROM u CROSS JOIN state s "
                    "ON s.object_id = u.c1 AND s.property = u.c2",
                    pairs,
                    2,
                )
            }
            rows = []
            newest: dict[tuple[str, str], tuple[StateUpdate, str, float | None]] = {}
            latest = res.latest
            late = duplicates = 0
            dumps = orjson.dumps
            floor = math.floor
            for u, point in zip(updates, points, strict=True):
                msg_id = u.msg_id
                if point in seen_points or (msg_id is not None and msg_id in seen_msgs):
                    duplicates += 1
                    continue
                seen_points.add(point)
                if msg_id is not None:
                    seen_msgs.add(msg_id)
                v = u.value
                value = dumps(v).decode()
                num = float(v) if type(v) is float or type(v) is int else _num(v)
                o, p, t = point
                rows.append((o, p, t, value, num, u.source, u.quality, msg_id))
                # Per-minute rollup: the batch's values per minute, aggregated below.
                minute = (o, p, floor(t / 60))
                nums = rollup.get(minute)
                if nums is None:
                    rollup[minute] = [num]
                else:
                    nums.append(num)
                key = (o, p)
                cur = current.get(key)
                if cur is None or t > cur:
                    current[key] = t
                    newest[key] = (u, value, num)
                    latest.append(u)
                else:
                    late += 1
            res.stored = len(rows)
            res.duplicates = duplicates
            res.late = late
            db.executemany(
                "INSERT INTO history (object_id, property, t, value, num, source, quality, "
                "msg_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.executemany(
                "INSERT INTO state (object_id, property, value, num, t, source, quality) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (object_id, property) DO UPDATE SET value = excluded.value, "
                "num = excluded.num, t = excluded.t, source = excluded.source, "
                "quality = excluded.quality WHERE excluded.t > state.t",
                [
                    (u.object_id, u.property, value, num, u.time, u.source, u.quality)
                    for u, value, num in newest.values()
                ],
            )
            _write_rollup(db, rollup)
        return res

    def latest(self, object_id: str) -> dict[str, StateValue]:
        rows = self._read(
            "SELECT property, value, t, source, quality FROM state WHERE object_id = ? "
            "ORDER BY property",
            (object_id,),
        )
        return {p: StateValue(orjson.loads(v), t, s, q) for p, v, t, s, q in rows}

    def history(
        self,
        object_id: str,
        prop: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[HistoryPoint]:
        rows = self._read(
            "SELECT t, value, source, quality FROM history WHERE object_id = ? AND property = ? "
            "AND t >= ? AND t < ? ORDER BY t LIMIT ?",
            (object_id, prop, _lo(since), _hi(until), limit),
        )
        return [HistoryPoint(t, orjson.loads(v), s, q) for t, v, s, q in rows]

    def history_buckets(
        self,
        object_id: str,
        prop: str,
        every: float,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[HistoryBucket]:
        if not every > 0:
            raise TwinError("bucket width must be positive")
        lo, hi = _lo(since), _hi(until)
        if every % 60 or every < 60:
            rows = self._read(
                "SELECT floor(t / ?) * ? AS b, count(*), count(num), sum(num), min(num), max(num) "
                "FROM history WHERE object_id = ? AND property = ? AND t >= ? AND t < ? "
                "GROUP BY b ORDER BY b LIMIT ?",
                (every, every, object_id, prop, lo, hi, limit),
            )
        else:
            # Whole minutes from the rollup; the partial minutes at either end of the
            # window from the raw points. Buckets of whole minutes add up exactly.
            m_lo = math.ceil(lo / 60) if math.isfinite(lo) else -(2**62)
            m_hi = math.floor(hi / 60) if math.isfinite(hi) else 2**62
            # Each raw part is one index range on (object_id, property, t).
            raw = (
                "SELECT floor(t / ?) * ?, 1, num IS NOT NULL, COALESCE(num, 0), num, num "
                "FROM history WHERE object_id = ? AND property = ? AND t >= ? AND t < ?"
            )
            rows = self._read(
                "SELECT b, sum(n), sum(n_num), sum(total), min(lo), max(hi) FROM ("
                " SELECT floor(minute * 60 / ?) * ? AS b, n, n_num, total, lo, hi"
                " FROM history_1m WHERE object_id = ? AND property = ?"
                " AND minute >= ? AND minute < ?"
                f" UNION ALL {raw} UNION ALL {raw}"
                ") GROUP BY b ORDER BY b LIMIT ?",
                (
                    every,
                    every,
                    object_id,
                    prop,
                    m_lo,
                    m_hi,
                    # the partial minute(s) before the first whole one, and after the last
                    *(every, every, object_id, prop, lo, min(hi, m_lo * 60.0)),
                    *(every, every, object_id, prop, max(lo, m_hi * 60.0), hi),
                    limit,
                ),
            )
        return [
            HistoryBucket(float(b), int(n), lo_, (total / n_num) if n_num else None, hi_)
            for b, n, n_num, total, lo_, hi_ in rows
        ]

    def prune_history(self, before: float) -> int:
        with self._tx() as db:
            n = int(db.execute("DELETE FROM history WHERE t < ?", (before,)).rowcount)
            # Whole minutes go; the minute holding `before` is recomputed from what is left.
            cut = math.floor(before / 60)
            db.execute("DELETE FROM history_1m WHERE minute <= ?", (cut,))
            db.execute(
                f"INSERT INTO history_1m {_ROLLUP_SELECT} WHERE t >= ? AND t < ? "
                "GROUP BY object_id, property, minute",
                (cut * 60.0, (cut + 1) * 60.0),
            )
            return n

    # -- dead letters, alerts ------------------------------------------------------------

    def append_rejected(self, records: Sequence[DeadLetter]) -> None:
        if not records:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO rejected (feed, t, reason, payload, entity, property) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(r.feed, r.time, r.reason, r.payload, r.entity, r.property) for r in records],
            )

    def list_rejected(
        self, feed: str | None = None, *, limit: int = 100, before: float | None = None
    ) -> list[DeadLetter]:
        rows = self._read(
            "SELECT feed, reason, payload, t, entity, property FROM rejected "
            "WHERE (? IS NULL OR feed = ?) AND t < ? ORDER BY t DESC, seq DESC LIMIT ?",
            (feed, feed, _hi(before), limit),
        )
        return [DeadLetter(*r) for r in rows]

    def put_alert(self, alert: Alert) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO alerts (id, seq, state, object_id, updated, doc) VALUES "
                "(?, (SELECT COALESCE(max(seq), 0) + 1 FROM alerts), ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, state = excluded.state, "
                "updated = excluded.updated, doc = excluded.doc",
                (
                    alert.id,
                    alert.state,
                    alert.object_id,
                    alert.updated,
                    orjson.dumps(alert.as_dict()).decode(),
                ),
            )

    def get_alert(self, alert_id: str) -> Alert | None:
        rows = self._read("SELECT doc FROM alerts WHERE id = ?", (alert_id,))
        return Alert.from_dict(orjson.loads(rows[0][0])) if rows else None

    def list_alerts(
        self, *, state: str | None = None, object_id: str | None = None, limit: int = 100
    ) -> list[Alert]:
        rows = self._read(
            "SELECT doc FROM alerts WHERE (? IS NULL OR state = ?) AND "
            "(? IS NULL OR object_id = ?) ORDER BY updated DESC, seq DESC LIMIT ?",
            (state, state, object_id, object_id, limit),
        )
        return [Alert.from_dict(orjson.loads(r[0])) for r in rows]

    # -- audit ---------------------------------------------------------------------------

    def append_audit(self, entry: AuditEntry) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO audit (t, actor, role, action, object_ids, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entry.time,
                    entry.actor,
                    entry.role,
                    entry.action,
                    orjson.dumps(list(entry.object_ids)).decode(),
                    entry.detail,
                ),
            )

    def list_audit(self, *, limit: int = 100, before: float | None = None) -> list[AuditEntry]:
        rows = self._read(
            "SELECT t, actor, role, action, object_ids, detail FROM audit WHERE t < ? "
            "ORDER BY t DESC, seq DESC LIMIT ?",
            (_hi(before), limit),
        )
        return [
            AuditEntry(t, a, r, act, tuple(orjson.loads(ids)), d) for t, a, r, act, ids, d in rows
        ]

    def stats(self) -> dict[str, int]:
        out = {}
        for table in ("objects", "state", "history", "audit"):
            out[table] = int(self._read(f"SELECT count(*) FROM {table}")[0][0])
        return out

    def close(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(5.0)
            self._checkpointer = None
        with self._lock:
            with suppress(sqlite3.Error):
                # Leave a compact file: the WAL folded in and truncated.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


def _json_pair(o: TwinObject) -> tuple[str, bytes]:
    """The attributes and the whole object as JSON, or a TwinError naming the object."""
    try:
        d = o.as_dict()
        attrs = orjson.dumps(d.pop("attributes"), option=orjson.OPT_NON_STR_KEYS).decode()
        return attrs, orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise TwinError(f"object {o.id!r} cannot be stored: {exc}") from None


_ROLLUP_SELECT = (
    "SELECT object_id, property, CAST(floor(t / 60) AS INTEGER) AS minute, count(*), "
    "count(num), COALESCE(sum(num), 0), min(num), max(num) FROM history"
)


_POINT = attrgetter("object_id", "property", "time")
_PAIR = attrgetter("object_id", "property")
_MSG_ID = attrgetter("msg_id")
_LOOKUP_ROWS = 256  # x 3 columns stays under SQLite's historic 999-parameter limit


def _lookup(
    db: sqlite3.Connection, select: str, keys: Sequence[tuple[Any, ...]], width: int
) -> Iterator[Any]:
    """Rows of ``WITH u(c1..cN) AS (VALUES <keys>) <select>``, in chunks of keys.

    One statement per chunk instead of a temporary table filled row by row. A short chunk
    is padded to a power of two by repeating its last key (the callers collect the rows
    into sets and dicts, so repeats change nothing), which keeps the statements few and
    cached. The VALUES columns have no affinity: comparing them with a table column
    applies that column's affinity, as inserting into a typed table would.
    """
    names = ", ".join(f"c{i}" for i in range(1, width + 1))
    row = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(keys), _LOOKUP_ROWS):
        chunk = list(keys[start : start + _LOOKUP_ROWS])
        size = 1 << (len(chunk) - 1).bit_length()
        chunk.extend(chunk[-1:] * (size - len(chunk)))
        values = ", ".join([row] * size)
        yield from db.execute(
            f"WITH u({names}) AS (VALUES {values}) {select}", list(chain.from_iterable(chunk))
        )


def _write_rollup(
    db: sqlite3.Connection, rollup: dict[tuple[str, str, int], list[float | None]]
) -> None:
    """Add a batch's per-minute values (None for a non-number) to ``history_1m``."""
    rows = []
    for key, values in rollup.items():
        nums = [x for x in values if x is not None] if None in values else cast(list[float], values)
        # The sum in value order from 0.0, as adding one point at a time would give it.
        total = reduce(add, nums, 0.0)
        lo = min(nums) if nums else None
        hi = max(nums) if nums else None
        rows.append((*key, len(values), len(nums), total, lo, hi))
    db.executemany(
        "INSERT INTO history_1m (object_id, property, minute, n, n_num, total, lo, hi) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (object_id, property, minute) DO UPDATE "
        "SET n = n + excluded.n, n_num = n_num + excluded.n_num, "
        "total = total + excluded.total, "
        "lo = min(COALESCE(lo, excluded.lo), COALESCE(excluded.lo, lo)), "
        "hi = max(COALESCE(hi, excluded.hi), COALESCE(excluded.hi, hi))",
        rows,
    )


def _object(row: Sequence[Any]) -> TwinObject:
    """A stored row ``(attributes, doc)`` back to an object (the doc omits attributes)."""
    d = orjson.loads(row[1])
    if "attributes" not in d:
        d["attributes"] = orjson.loads(row[0])
    return TwinObject.from_dict(d)


def _py_lower(value: Any) -> Any:
    """Unicode lower-casing for SQL (SQLite's lower() folds ASCII only)."""
    return value.lower() if isinstance(value, str) else value


def _lo(v: float | None) -> float:
    return float("-inf") if v is None else v


def _hi(v: float | None) -> float:
    return float("inf") if v is None else v


def _condition_sql(c: Condition) -> tuple[str, list[Any]]:
    """SQL for one condition, with exactly the semantics of :func:`twin.query.compare`."""
    op = "<>" if c.op == "!=" else c.op
    if c.scope == "attr":
        path = _json_path(c.name)
        jt = "json_type(o.attributes, ?)"
        jx = "json_extract(o.attributes, ?)"
        if c.op == "~":
            return (
                f"({jt} = 'text' AND instr(py_lower({jx}), ?) > 0)",
                [path, path, str(c.value).lower()],
            )
        # `x IS NOT 1` negates NULL-safely: a missing attribute matches `!=`.
        if c.numeric:
            base = f"({jt} IN ('integer', 'real') AND {jx} {'=' if op == '<>' else op} ?)"
            params = [path, path, c.value]
            return (f"{base} IS NOT 1", params) if op == "<>" else (base, params)
        base = f"({jt} = 'text' AND {jx} = ?)"
        params = [path, path, c.value]
        return (f"{base} IS NOT 1", params) if op == "<>" else (base, params)
    if c.scope == "state":
        sub = "SELECT 1 FROM state s WHERE s.object_id = o.id AND s.property = ?"
        if c.op == "~":
            return (
                f"EXISTS ({sub} AND json_type(s.value) = 'text' "
                "AND instr(py_lower(json_extract(s.value, '$')), ?) > 0)",
                [c.name, str(c.value).lower()],
            )
        if c.numeric:
            cmp = "=" if op == "<>" else op
            base = f"EXISTS ({sub} AND s.num {cmp} ?)"
        else:
            base = f"EXISTS ({sub} AND s.num IS NULL AND s.value = ?)"
        value = c.value if c.numeric else orjson.dumps(c.value).decode()
        return (f"NOT {base}", [c.name, value]) if op == "<>" else (base, [c.name, value])
    col = {"height": "o.height", "footprint": "o.footprint", "lod": "o.lod"}[c.name]
    if c.name == "lod":
        if c.op == "~":
            return f"instr(py_lower(COALESCE({col}, '')), ?) > 0", [str(c.value).lower()]
        value = str(c.value if not c.numeric else _lod_text(float(c.value)))
        base = f"({col} IS NOT NULL AND {col} = ?)"
        return (f"NOT {base}", [value]) if op == "<>" else (base, [value])
    if c.op == "~" or not c.numeric:
        return ("1 = 0", []) if c.op != "!=" else ("1 = 1", [])
    base = f"({col} IS NOT NULL AND {col} {'=' if op == '<>' else op} ?)"
    return (f"NOT {base}", [c.value]) if op == "<>" else (base, [c.value])


def _lod_text(v: float) -> str:
    return str(int(v)) if v.is_integer() else str(v)

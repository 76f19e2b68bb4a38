"""PostgreSQL StateStore (psycopg 3): the scale-out store, same semantics as MemoryStore.

Every query is one SQL statement: objects by (scenario, id) and (scenario, type); bbox
through GiST indexes on ``box(point(minx, miny), point(maxx, maxy))`` (built-in
geometric types, no PostGIS) with ``&&`` plus an exact recheck; free text through a
pg_trgm GIN index on a lower-cased search column (plain ``LIKE`` scan when the extension
is not available); attribute filters on JSONB with ``jsonb_typeof``; state filters
through (property, num) and (property, str). Bulk writes ``COPY`` into a temporary
table and apply it with one set-based statement; every write is one transaction.

URL: ``postgresql://user@host:5432/db?schema=citytwin`` (``schema`` is ours and is
removed before the URL goes to libpq; everything else is passed through).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from twin.alerts import Alert
from twin.errors import MissingExtra, TwinError
from twin.objects import TwinObject
from twin.query import Condition, ObjectQuery, QueryError, encode_cursor
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

try:
    import psycopg
    from psycopg.types.json import set_json_loads
except ImportError:  # pragma: no cover - the extra is not installed
    psycopg = None  # type: ignore[assignment]

__all__ = ["PostgresStore"]

SCHEMA_VERSION = 1
DEFAULT_SCHEMA = "citytwin"
# One key for every CityTwin schema set-up: two processes opening the same (new)
# database serialize their CREATE ... IF NOT EXISTS, which is not race-free by itself.
_INIT_LOCK = 7_215_408_851

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_OBJECT_COLUMNS = (
    "scenario, id, type, parent, height, footprint, lod, attributes, doc, source, search, "
    "wminx, wminy, wmaxx, wmaxy, sminx, sminy, smaxx, smaxy"
)

# COLLATE "C" on the text keys: Python (MemoryStore) orders strings by code point and
# UTF-8 byte order is code point order; a linguistic collation would page differently.
_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.objects (
    scenario text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    type text COLLATE "C" NOT NULL,
    parent text COLLATE "C",
    height double precision,
    footprint double precision,
    lod text COLLATE "C",
    attributes jsonb NOT NULL,
    doc json NOT NULL,
    source text NOT NULL DEFAULT '',
    search text COLLATE "C" NOT NULL,
    wminx double precision, wminy double precision,
    wmaxx double precision, wmaxy double precision,
    sminx double precision, sminy double precision,
    smaxx double precision, smaxy double precision,
    PRIMARY KEY (scenario, id)
);
CREATE INDEX IF NOT EXISTS objects_type ON {s}.objects (scenario, type, id);
-- The sort keys exactly as ORDER BY and the keyset cursor spell them (NULLs last).
CREATE INDEX IF NOT EXISTS objects_height
    ON {s}.objects (scenario, (height IS NULL), (COALESCE(height, 0)), id);
CREATE INDEX IF NOT EXISTS objects_footprint
    ON {s}.objects (scenario, (footprint IS NULL), (COALESCE(footprint, 0)), id);
CREATE INDEX IF NOT EXISTS objects_wgs ON {s}.objects
    USING gist (box(point(wminx, wminy), point(wmaxx, wmaxy)));
CREATE INDEX IF NOT EXISTS objects_src ON {s}.objects
    USING gist (box(point(sminx, sminy), point(smaxx, smaxy)));
CREATE INDEX IF NOT EXISTS objects_attributes ON {s}.objects USING gin (attributes jsonb_path_ops);
CREATE TABLE IF NOT EXISTS {s}.state (
    object_id text COLLATE "C" NOT NULL,
    property text COLLATE "C" NOT NULL,
    value text NOT NULL,
    num double precision,
    str text COLLATE "C",
    t double precision NOT NULL,
    source text NOT NULL DEFAULT '',
    quality text,
    PRIMARY KEY (object_id, property)
);
CREATE INDEX IF NOT EXISTS state_prop_num ON {s}.state (property, num);
CREATE INDEX IF NOT EXISTS state_prop_str ON {s}.state (property, str);
CREATE TABLE IF NOT EXISTS {s}.history (
    object_id text COLLATE "C" NOT NULL,
    property text COLLATE "C" NOT NULL,
    t double precision NOT NULL,
    value text NOT NULL,
    num double precision,
    source text NOT NULL DEFAULT '',
    quality text,
    msg_id text,
    PRIMARY KEY (object_id, property, t)
);
CREATE UNIQUE INDEX IF NOT EXISTS history_msg ON {s}.history (msg_id) WHERE msg_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS history_t ON {s}.history (t);
CREATE TABLE IF NOT EXISTS {s}.audit (
    seq bigserial PRIMARY KEY,
    t double precision NOT NULL,
    actor text NOT NULL,
    role text NOT NULL,
    action text NOT NULL,
    object_ids text[] NOT NULL,
    detail text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_t ON {s}.audit (t, seq);
CREATE TABLE IF NOT EXISTS {s}.rejected (
    seq bigserial PRIMARY KEY,
    feed text NOT NULL,
    t double precision NOT NULL,
    reason text NOT NULL,
    payload text NOT NULL,
    entity text,
    property text
);
CREATE INDEX IF NOT EXISTS rejected_feed_t ON {s}.rejected (feed, t);
CREATE INDEX IF NOT EXISTS rejected_t ON {s}.rejected (t);
CREATE SEQUENCE IF NOT EXISTS {s}.alerts_seq;
CREATE TABLE IF NOT EXISTS {s}.alerts (
    id text PRIMARY KEY,
    seq bigint NOT NULL,
    state text NOT NULL,
    object_id text NOT NULL,
    updated double precision NOT NULL,
    doc jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_state ON {s}.alerts (state, updated);
CREATE TABLE IF NOT EXISTS {s}.sources (
    scenario text NOT NULL,
    name text NOT NULL,
    sha256 text NOT NULL,
    size bigint NOT NULL,
    added double precision NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (scenario, name)
);
"""

# Per-connection scratch tables; ON COMMIT DELETE ROWS empties them after every write.
_TEMP_PUT = """
CREATE TEMP TABLE IF NOT EXISTS twin_put (
    scenario text, id text, type text, parent text, height double precision,
    footprint double precision, lod text, attributes jsonb, doc json, source text,
    search text, wminx double precision, wminy double precision, wmaxx double precision,
    wmaxy double precision, sminx double precision, sminy double precision,
    smaxx double precision, smaxy double precision
) ON COMMIT DELETE ROWS
"""

_TEMP_UPDATES = """
CREATE TEMP TABLE IF NOT EXISTS twin_updates (
    seq integer, object_id text, property text, t double precision, value text,
    num double precision, source text, quality text, msg_id text
) ON COMMIT DELETE ROWS
"""

_OBJECT_ASSIGN = ", ".join(f"{c} = excluded.{c}" for c in _OBJECT_COLUMNS.split(", ")[2:])

_SORT_SQL = {"id": "o.id", "type": "o.type", "height": "o.height", "footprint": "o.footprint"}
_NUMERIC_SORTS = frozenset({"height", "footprint"})


def _split_url(url: str) -> tuple[str, str, str]:
    """Split a store URL into (libpq conninfo, schema name, URL safe to print)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise TwinError(f"not a PostgreSQL URL: {url!r} (expected postgresql://user@host/db)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    rest: list[tuple[str, str]] = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            rest.append((key, value))
    if not _SCHEMA_NAME.match(schema):
        raise TwinError(
            f"bad schema name {schema!r} in store URL: use lower-case letters, digits and _"
        )
    if not any(k == "connect_timeout" for k, _ in rest):
        # Fail in seconds, not after the OS TCP timeout, when the server is unreachable.
        rest.append(("connect_timeout", "5"))
    # Built by hand: urlunsplit drops the empty host of postgresql:///db (a socket).
    conninfo = f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(rest)}"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    safe = f"{parts.scheme}://{netloc}{parts.path}"
    return conninfo, schema, safe


def _one_line(exc: BaseException) -> str:
    """libpq messages span lines (``DETAIL``, ``HINT``, tabs); a TwinError is one line."""
    return " ".join(str(exc).split())


def _object_row(o: TwinObject, scenario: str, source: str) -> tuple[Any, ...]:
    """The ``twin_put`` row of one object (columns as ``_OBJECT_COLUMNS``)."""
    doc = o.as_dict()
    doc["scenario"] = scenario  # not set on the caller's object
    try:
        doc_json = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS).decode()
        attrs_json = orjson.dumps(o.attributes, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise TwinError(f"cannot store object {o.id!r}: {exc}") from None
    g = o.geometry
    wb = g.bbox_wgs84 if g else None
    sb = g.bbox if g else None
    return (
        scenario,
        o.id,
        o.type,
        o.parent,
        g.height if g else None,
        g.footprint_area if g else None,
        g.lod if g else None,
        attrs_json,
        doc_json,
        source,
        # Lower-cased here, not in SQL, so matching is exactly MemoryStore's
        # `text.lower() in searchable_text(o).lower()` (Python and libc case maps differ).
        searchable_text(o).lower(),
        *((wb[0], wb[1], wb[3], wb[4]) if wb else (None,) * 4),
        *((sb[0], sb[1], sb[3], sb[4]) if sb else (None,) * 4),
    )


def _like_pattern(text: str) -> str:
    """A ``LIKE`` pattern for substring ``text`` (backslash is LIKE's default escape)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class PostgresStore:
    """StateStore on PostgreSQL (``postgresql://user@host:5432/db?schema=citytwin``).

    One connection guarded by a lock, like :class:`twin.store.sqlite.SqliteStore`:
    each call is one short transaction, and a broken connection is reopened on the next
    call. Open several stores (one per worker) for parallel writers.

    Attributes:
        url: the URL the store was opened with.
        schema: the PostgreSQL schema holding the tables.
        trigram: True when free text uses the pg_trgm GIN index.
    """

    def __init__(self, url: str = "postgresql://127.0.0.1:5432/citytwin") -> None:
        """Connect and create the schema (idempotent).

        Args:
            url: ``postgresql://`` URL; the query option ``schema`` chooses the schema.

        Raises:
            MissingExtra: psycopg is not installed.
            TwinError: bad URL, unreachable server, or a schema that cannot be created.
        """
        if psycopg is None:  # pragma: no cover - depends on the environment
            raise MissingExtra("psycopg", "postgres")
        self.url = url
        self._conninfo, self.schema, self._safe_url = _split_url(url)
        self._s = f'"{self.schema}"'
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self.trigram = False
        with self._lock:
            self._conn = self._connect()
            try:
                self._create_schema()
            except BaseException:
                self._conn.close()
                raise

    # -- connection and transactions --------------------------------------------------

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        # Autocommit at the driver level, explicit BEGIN ... COMMIT (conn.transaction())
        # around every write: each write is still exactly one transaction, and a read
        # is one statement and one round trip instead of three (BEGIN, SELECT, COMMIT).
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise TwinError(
                f"cannot connect to PostgreSQL at {self._safe_url}: {_one_line(exc)}"
            ) from None
        # Decode json columns (doc) with orjson: several times faster than json.loads.
        set_json_loads(orjson.loads, conn)
        try:
            # IF NOT EXISTS on the scratch tables reports a NOTICE on every write.
            conn.execute("SET client_min_messages TO warning")
        except psycopg.Error as exc:
            conn.close()
            raise TwinError(
                f"cannot connect to PostgreSQL at {self._safe_url}: {_one_line(exc)}"
            ) from None
        return conn

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None and not conn.closed:
                conn.close()
            conn = self._conn = self._connect()
        return conn

    @contextlib.contextmanager
    def _tx(self, what: str) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """One transaction: commit at the end, roll back on any error.

        Driver errors become :class:`TwinError` naming ``what`` was being done.
        """
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                raise TwinError(f"PostgreSQL error while {what}: {_one_line(exc)}") from exc

    def _read(self, sql: str, params: Sequence[Any] = (), what: str = "reading") -> list[Any]:
        """One SELECT outside a transaction (it sees one snapshot on its own)."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, params)
                    return cur.fetchall()
            except psycopg.Error as exc:
                raise TwinError(f"PostgreSQL error while {what}: {_one_line(exc)}") from exc

    def _create_schema(self) -> None:
        s = self._s
        with self._tx(f"creating schema {self.schema!r}") as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK,))
            cur.execute(_SCHEMA.format(s=s))
            cur.execute(
                f"INSERT INTO {s}.meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO NOTHING",
                (str(SCHEMA_VERSION),),
            )
            ns = self._trgm_schema(cur)
            if ns is None:
                try:
                    with cur.connection.transaction():  # a savepoint: failure is expected
                        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                except psycopg.Error:
                    pass  # not installed or not allowed: free text scans (same result)
                ns = self._trgm_schema(cur)
            if ns is not None:
                cur.execute(
                    f"CREATE INDEX IF NOT EXISTS objects_search ON {s}.objects "
                    f'USING gin (search "{ns}".gin_trgm_ops)'
                )
                self.trigram = True

    @staticmethod
    def _trgm_schema(cur: psycopg.Cursor[tuple[Any, ...]]) -> str | None:
        cur.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'pg_trgm'"
        )
        row = cur.fetchone()
        return str(row[0]) if row else None

    # -- objects -----------------------------------------------------------------------

    def put_objects(
        self,
        objects: Iterable[TwinObject],
        *,
        scenario: str = "base",
        source: str = "",
        source_data: bytes | None = None,
    ) -> int:
        """Insert or replace objects in one transaction; return how many were written.

        The whole batch is serialized first (an unserializable object fails before any
        write), ``COPY``-ed into a scratch table and applied with one
        ``INSERT ... ON CONFLICT (scenario, id) DO UPDATE``. Server-side index upkeep
        dominates the cost (the pg_trgm GIN index most), not the transfer.

        Raises:
            TwinError: an object cannot be serialized, or the database refused the batch
                (nothing of it is stored).
        """
        batch = {o.id: o for o in objects}  # a repeated id: the later object wins
        rows = [_object_row(o, scenario, source) for o in batch.values()]
        if not rows and source_data is None:
            return 0
        s = self._s
        with self._tx(f"storing {len(rows)} objects") as cur:
            if source_data is not None:
                cur.execute(
                    f"INSERT INTO {s}.sources (scenario, name, sha256, size, added, data) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (scenario, name) DO UPDATE "
                    "SET sha256 = excluded.sha256, size = excluded.size, data = excluded.data",
                    (
                        scenario,
                        source,
                        hashlib.sha256(source_data).hexdigest(),
                        len(source_data),
                        time.time(),
                        zlib.compress(source_data, 6),
                    ),
                )
            if rows:
                self._write_objects(cur, rows)
        return len(rows)

    def _write_objects(
        self, cur: psycopg.Cursor[tuple[Any, ...]], rows: list[tuple[Any, ...]]
    ) -> None:
        cur.execute(_TEMP_PUT)
        with cur.copy(f"COPY pg_temp.twin_put ({_OBJECT_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        # Unchanged rows are not rewritten: a re-put of the same city is cheap.
        cur.execute(
            f"INSERT INTO {self._s}.objects AS o ({_OBJECT_COLUMNS}) "
            f"SELECT {_OBJECT_COLUMNS} FROM pg_temp.twin_put "
            f"ON CONFLICT (scenario, id) DO UPDATE SET {_OBJECT_ASSIGN} "
            "WHERE o.doc::text IS DISTINCT FROM excluded.doc::text "
            "OR o.source IS DISTINCT FROM excluded.source"
        )

    def sources(self, scenario: str = "base") -> list[SourceInfo]:
        """The source documents of a scenario, in the order they were first added."""
        rows = self._read(
            f"SELECT name, sha256, size, added FROM {self._s}.sources WHERE scenario = %s "
            "ORDER BY added, name",
            (scenario,),
        )
        return [SourceInfo(n, h, int(z), float(a)) for n, h, z, a in rows]

    def get_source(self, name: str, scenario: str = "base") -> bytes | None:
        """One source document's bytes, or None."""
        rows = self._read(
            f"SELECT data FROM {self._s}.sources WHERE scenario = %s AND name = %s",
            (scenario, name),
        )
        return zlib.decompress(rows[0][0]) if rows else None

    def get_object(self, object_id: str, scenario: str = "base") -> TwinObject | None:
        """One object, or None."""
        rows = self._read(
            f"SELECT doc FROM {self._s}.objects WHERE scenario = %s AND id = %s",
            (scenario, object_id),
        )
        return TwinObject.from_dict(rows[0][0]) if rows else None

    def query_objects(self, query: ObjectQuery) -> Page:
        """A page of objects matching the query (one SQL statement, keyset pagination).

        Raises:
            QueryError: the cursor does not fit the sort field.
            TwinError: the database failed.
        """
        sql, params = self._compile(query)
        rows = self._read(sql, params, "querying objects")
        items = [TwinObject.from_dict(r[0]) for r in rows[: query.limit]]
        nxt = None
        if len(rows) > query.limit and items:
            last = items[-1]
            nxt = encode_cursor(sort_value(last, query.sort), last.id)
        return Page(items=items, next_cursor=nxt)

    def _compile(self, q: ObjectQuery) -> tuple[str, list[Any]]:
        """One SELECT for the whole query (filters, bbox, text, keyset page)."""
        where = ["o.scenario = %s"]
        params: list[Any] = [q.scenario]
        if q.types:
            where.append("o.type = ANY(%s)")
            params.append(list(q.types))
        if q.ids:
            where.append("o.id = ANY(%s)")
            params.append(list(q.ids))
        if q.bbox is not None:
            p = "w" if q.bbox_crs == "wgs84" else "s"
            minx, miny, maxx, maxy = q.bbox
            # `&&` finds candidates through the GiST index, but the geometric operators
            # compare with a tolerance of 1e-6 (EPSILON in geo_decls.h): ~0.1 m in
            # degrees. The exact recheck makes the result MemoryStore's closed overlap.
            where.append(
                f"box(point(o.{p}minx, o.{p}miny), point(o.{p}maxx, o.{p}maxy)) "
                "&& box(point(%s, %s), point(%s, %s)) "
                f"AND o.{p}maxx >= %s AND o.{p}minx <= %s AND o.{p}maxy >= %s AND o.{p}miny <= %s"
            )
            params += [minx, miny, maxx, maxy, minx, maxx, miny, maxy]
        if q.text:
            needle = q.text.lower()
            if len(needle) >= 3:
                where.append("o.search LIKE %s")  # pg_trgm GIN serves LIKE '%...%'
                params.append(_like_pattern(needle))
            else:
                # Too short for a trigram: a scan either way; strpos needs no escaping.
                where.append("strpos(o.search, %s) > 0")
                params.append(needle)
        for c in q.conditions:
            clause, cparams = self._condition_sql(c)
            where.append(clause)
            params += cparams
        sort = _SORT_SQL.get(q.sort, "o.id")
        numeric = q.sort in _NUMERIC_SORTS
        key = [f"({sort} IS NULL)", f"COALESCE({sort}, 0)", "o.id"] if numeric else [sort, "o.id"]
        if q.cursor is not None:
            cv, cid = q.cursor
            op = "<" if q.descending else ">"
            if numeric:
                if cv is not None and (isinstance(cv, bool) or not isinstance(cv, int | float)):
                    raise QueryError("invalid cursor for this sort", str(cv)[:40])
                where.append(f"(({sort} IS NULL), COALESCE({sort}, 0), o.id) {op} (%s, %s, %s)")
                params += [cv is None, float(cv) if cv is not None else 0.0, cid]
            else:
                if not isinstance(cv, str):
                    raise QueryError("invalid cursor for this sort", str(cv)[:40])
                where.append(f"({sort}, o.id) {op} (%s, %s)")
                params += [cv, cid]
        direction = "DESC" if q.descending else "ASC"
        order = ", ".join(f"{part} {direction}" for part in key)
        sql = (
            f"SELECT o.doc FROM {self._s}.objects o WHERE {' AND '.join(where)} "
            f"ORDER BY {order} LIMIT %s"
        )
        params.append(q.limit + 1)
        return sql, params

    def _condition_sql(self, c: Condition) -> tuple[str, list[Any]]:
        """SQL for one condition, with exactly the semantics of :func:`twin.query.compare`.

        Every clause is TRUE or FALSE, never NULL, so that ``!=`` is ``NOT (=)``: a
        missing value matches only ``!=``.
        """
        op = "<>" if c.op == "!=" else c.op
        cmp = "=" if c.op == "!=" else op
        negate = c.op == "!="
        value_is_text = isinstance(c.value, str)
        if c.scope == "attr":
            if c.op == "~":
                # ->> on a JSON string is its unescaped text; CASE guards the cast order.
                return (
                    "COALESCE(jsonb_typeof(o.attributes -> %s) = 'string' "
                    "AND strpos(lower(o.attributes ->> %s), lower(%s)) > 0, false)",
                    [c.name, c.name, str(c.value)],
                )
            if c.numeric:
                base = (
                    "COALESCE(CASE WHEN jsonb_typeof(o.attributes -> %s) = 'number' "
                    f"THEN (o.attributes -> %s)::double precision END {cmp} %s, false)"
                )
                params: list[Any] = [c.name, c.name, c.value]
            elif value_is_text:
                # Containment matches a JSON string equal to the value, never a number,
                # an array holding it or null; and the GIN jsonb_path_ops index serves it.
                base = "o.attributes @> jsonb_build_object(%s::text, %s::text)"
                params = [c.name, c.value]
            else:
                base, params = "false", []
            return (f"NOT ({base})", params) if negate else (base, params)
        if c.scope == "state":
            sub = f"SELECT 1 FROM {self._s}.state s WHERE s.object_id = o.id AND s.property = %s"
            if c.op == "~":
                return (
                    f"EXISTS ({sub} AND strpos(lower(s.str), lower(%s)) > 0)",
                    [c.name, str(c.value)],
                )
            if c.numeric:
                base = f"EXISTS ({sub} AND s.num {cmp} %s)"
            elif value_is_text:
                base = f"EXISTS ({sub} AND s.str = %s)"
            else:
                return ("true", []) if negate else ("false", [])
            return (f"NOT {base}", [c.name, c.value]) if negate else (base, [c.name, c.value])
        if c.name == "lod":
            # LoD labels are text: a numeric condition never equals one (compare()).
            if c.op == "~":
                return "COALESCE(strpos(lower(o.lod), lower(%s)) > 0, false)", [str(c.value)]
            if not value_is_text:
                return ("true", []) if negate else ("false", [])
            base = "COALESCE(o.lod = %s, false)"
            return (f"NOT {base}", [c.value]) if negate else (base, [c.value])
        col = "o.height" if c.name == "height" else "o.footprint"
        if c.op == "~" or not c.numeric:
            return ("true", []) if negate else ("false", [])
        base = f"COALESCE({col} {cmp} %s, false)"
        return (f"NOT {base}", [c.value]) if negate else (base, [c.value])

    def count(self, scenario: str = "base") -> int:
        """Number of objects in a scenario."""
        rows = self._read(
            f"SELECT count(*) FROM {self._s}.objects WHERE scenario = %s", (scenario,)
        )
        return int(rows[0][0])

    def counts_by_type(self, scenario: str = "base") -> dict[str, int]:
        """Number of objects per type, most common first."""
        rows = self._read(
            f"SELECT type, count(*) FROM {self._s}.objects WHERE scenario = %s GROUP BY type "
            "ORDER BY count(*) DESC, type",
            (scenario,),
        )
        return {t: int(n) for t, n in rows}

    # -- state -------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[StateUpdate]) -> ApplyResult:
        """Append to history and advance the latest state, set-based, in one transaction.

        The batch is ``COPY``-ed into a scratch table; one statement inserts it into
        history in batch order (``ON CONFLICT DO NOTHING`` against the primary key and
        the message-id index, so a duplicate inside the batch loses to its first copy,
        as in MemoryStore), upserts the newest stored row per (object, property) into
        state, and returns the stored rows with the state time from before the batch.
        The late/latest split is then replayed in batch order in Python. (With several
        writers on the same property at once, the split is judged against the state at
        the start of the statement; the stored state itself is always the newest.)

        Raises:
            TwinError: the database refused the batch (nothing of it is stored).
        """
        res = ApplyResult()
        if not updates:
            return res
        s = self._s
        first: dict[tuple[str, str, float, str | None], int] = {}
        for i, u in enumerate(updates):
            first.setdefault((u.object_id, u.property, u.time, u.msg_id), i)
        with self._tx(f"applying {len(updates)} state updates") as cur:
            cur.execute(_TEMP_UPDATES)
            with cur.copy(
                "COPY pg_temp.twin_updates "
                "(seq, object_id, property, t, value, num, source, quality, msg_id) FROM STDIN"
            ) as copy:
                for i, u in enumerate(updates):
                    copy.write_row(
                        (
                            i,
                            u.object_id,
                            u.property,
                            u.time,
                            orjson.dumps(u.value).decode(),
                            u.number,
                            u.source,
                            u.quality,
                            u.msg_id,
                        )
                    )
            # All parts of one statement see the snapshot from before it, so the final
            # SELECT reads the state each stored row had to beat. (A scalar subquery, not
            # a join: a join is planned as a hash over the whole state table per batch.)
            cur.execute(
                f"""
                WITH ins AS (
                    INSERT INTO {s}.history
                        (object_id, property, t, value, num, source, quality, msg_id)
                    SELECT object_id, property, t, value, num, source, quality, msg_id
                    FROM pg_temp.twin_updates ORDER BY seq
                    ON CONFLICT DO NOTHING
                    RETURNING object_id, property, t, value, num, source, quality, msg_id
                ), top AS (
                    SELECT DISTINCT ON (object_id, property) *
                    FROM ins ORDER BY object_id, property, t DESC
                ), up AS (
                    INSERT INTO {s}.state AS st
                        (object_id, property, value, num, str, t, source, quality)
                    SELECT object_id, property, value, num,
                        CASE WHEN json_typeof(value::json) = 'string'
                            THEN value::json #>> '{{}}' END,
                        t, source, quality
                    FROM top
                    ON CONFLICT (object_id, property) DO UPDATE SET
                        value = excluded.value, num = excluded.num, str = excluded.str,
                        t = excluded.t, source = excluded.source, quality = excluded.quality
                    WHERE excluded.t > st.t
                )
                SELECT i.object_id, i.property, i.t, i.msg_id,
                    (SELECT p.t FROM {s}.state p
                     WHERE p.object_id = i.object_id AND p.property = i.property)
                FROM ins i
                """
            )
            returned = cur.fetchall()
        stored: set[int] = set()
        newest: dict[tuple[str, str], float] = {}
        for oid, prop, t, msg, prev in returned:
            stored.add(first[(oid, prop, t, msg)])
            if prev is not None:
                newest[(oid, prop)] = prev
        for i, u in enumerate(updates):
            if i not in stored:
                res.duplicates += 1
                continue
            res.stored += 1
            cur_t = newest.get((u.object_id, u.property))
            if cur_t is None or u.time > cur_t:
                newest[(u.object_id, u.property)] = u.time
                res.latest.append(u)
            else:
                res.late += 1
        return res

    def latest(self, object_id: str) -> dict[str, StateValue]:
        """The latest value of every property of an object."""
        rows = self._read(
            f"SELECT property, value, t, source, quality FROM {self._s}.state "
            "WHERE object_id = %s ORDER BY property",
            (object_id,),
        )
        return {p: StateValue(orjson.loads(v), t, src, q) for p, v, t, src, q in rows}

    def _time_range(self, since: float | None, until: float | None) -> tuple[str, list[float]]:
        sql, params = "", []
        if since is not None:
            sql += " AND t >= %s"
            params.append(since)
        if until is not None:
            sql += " AND t < %s"
            params.append(until)
        return sql, params

    def history(
        self,
        object_id: str,
        prop: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[HistoryPoint]:
        """Raw history points in time order, ``since <= t < until``."""
        rng, rparams = self._time_range(since, until)
        rows = self._read(
            f"SELECT t, value, source, quality FROM {self._s}.history "
            f"WHERE object_id = %s AND property = %s{rng} ORDER BY t LIMIT %s",
            (object_id, prop, *rparams, limit),
        )
        return [HistoryPoint(t, orjson.loads(v), src, q) for t, v, src, q in rows]

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
        """History downsampled server-side into buckets ``floor(t / every) * every``.

        Raises:
            TwinError: ``every`` is not positive.
        """
        if not every > 0:
            raise TwinError("bucket width must be positive")
        rng, rparams = self._time_range(since, until)
        rows = self._read(
            "SELECT floor(t / %s::float8) * %s::float8 AS b, count(*), min(num), avg(num), "
            f"max(num) FROM {self._s}.history WHERE object_id = %s AND property = %s{rng} "
            "GROUP BY b ORDER BY b LIMIT %s",
            (every, every, object_id, prop, *rparams, limit),
        )
        return [HistoryBucket(float(b), int(n), lo, mean, hi) for b, n, lo, mean, hi in rows]

    def prune_history(self, before: float) -> int:
        """Delete history older than ``before`` (retention); return rows deleted."""
        with self._tx("pruning history") as cur:
            cur.execute(f"DELETE FROM {self._s}.history WHERE t < %s", (before,))
            return int(cur.rowcount)

    # -- dead letters, alerts ------------------------------------------------------------

    def append_rejected(self, records: Sequence[DeadLetter]) -> None:
        """Store dead-letter records."""
        if not records:
            return
        with self._tx("storing dead letters") as cur:
            cur.executemany(
                f"INSERT INTO {self._s}.rejected (feed, t, reason, payload, entity, property) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [(r.feed, r.time, r.reason, r.payload, r.entity, r.property) for r in records],
            )

    def list_rejected(
        self, feed: str | None = None, *, limit: int = 100, before: float | None = None
    ) -> list[DeadLetter]:
        """Newest dead letters first."""
        rows = self._read(
            f"SELECT feed, reason, payload, t, entity, property FROM {self._s}.rejected "
            "WHERE (%s::text IS NULL OR feed = %s) AND t < %s ORDER BY t DESC, seq DESC "
            "LIMIT %s",
            (feed, feed, before if before is not None else float("inf"), limit),
        )
        return [DeadLetter(*r) for r in rows]

    def put_alert(self, alert: Alert) -> None:
        """Insert or replace an alert."""
        with self._tx("storing an alert") as cur:
            cur.execute(
                f"INSERT INTO {self._s}.alerts (id, seq, state, object_id, updated, doc) "
                f"VALUES (%s, nextval('{self.schema}.alerts_seq'), %s, %s, %s, %s::jsonb) "
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
        """One alert, or None."""
        rows = self._read(f"SELECT doc FROM {self._s}.alerts WHERE id = %s", (alert_id,))
        return Alert.from_dict(rows[0][0]) if rows else None

    def list_alerts(
        self, *, state: str | None = None, object_id: str | None = None, limit: int = 100
    ) -> list[Alert]:
        """Alerts, most recently changed first."""
        rows = self._read(
            f"SELECT doc FROM {self._s}.alerts WHERE (%s::text IS NULL OR state = %s) AND "
            "(%s::text IS NULL OR object_id = %s) ORDER BY updated DESC, seq DESC LIMIT %s",
            (state, state, object_id, object_id, limit),
        )
        return [Alert.from_dict(r[0]) for r in rows]

    # -- audit ---------------------------------------------------------------------------

    def append_audit(self, entry: AuditEntry) -> None:
        """Append one entry to the audit log."""
        with self._tx("appending to the audit log") as cur:
            cur.execute(
                f"INSERT INTO {self._s}.audit (t, actor, role, action, object_ids, detail) "
                "VALUES (%s, %s, %s, %s, %s::text[], %s)",
                (
                    entry.time,
                    entry.actor,
                    entry.role,
                    entry.action,
                    list(entry.object_ids),
                    entry.detail,
                ),
            )

    def list_audit(self, *, limit: int = 100, before: float | None = None) -> list[AuditEntry]:
        """Newest audit entries first (equal times: the later appended first)."""
        cond, params = ("WHERE t < %s", [before]) if before is not None else ("", [])
        rows = self._read(
            f"SELECT t, actor, role, action, object_ids, detail FROM {self._s}.audit {cond} "
            "ORDER BY t DESC, seq DESC LIMIT %s",
            (*params, limit),
        )
        return [AuditEntry(t, a, r, act, tuple(ids), d) for t, a, r, act, ids, d in rows]

    def stats(self) -> dict[str, int]:
        """Row counts: objects, state, history, audit."""
        s = self._s
        row = self._read(
            f"SELECT (SELECT count(*) FROM {s}.objects), (SELECT count(*) FROM {s}.state), "
            f"(SELECT count(*) FROM {s}.history), (SELECT count(*) FROM {s}.audit)"
        )[0]
        return dict(zip(("objects", "state", "history", "audit"), map(int, row), strict=True))

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()

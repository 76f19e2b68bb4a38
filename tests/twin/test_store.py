"""The StateStore contract, one suite over every store (memory, SQLite, PostgreSQL).

MemoryStore is the reference: besides hand-checked cases, random queries over a real
city (Zurich LoD2) with random live state must give exactly its pages on the SQL stores.
PostgreSQL runs against ``$TWIN_TEST_PG_URL`` (default the local server) in a throwaway
schema per test run; when the server is unreachable the tests skip (fail in CI).
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from twin.errors import TwinError
from twin.objects import GeometrySummary, TwinObject
from twin.query import Condition, ObjectQuery, decode_cursor, parse_where
from twin.state import ApplyResult, AuditEntry, HistoryBucket, HistoryPoint, StateUpdate
from twin.store import MemoryStore, StateStore, open_store
from twin.store.base import searchable_text, sort_value
from twin.store.sqlite import SqliteStore

PG_TABLES = ("objects", "state", "history", "audit", "sources")
ZURICH = "real/zurich_subset_lod2.city.json"

# --------------------------------------------------------------------------- fixtures


def _pg_truncate(url: str) -> None:
    import psycopg

    from twin.store.postgres import _split_url

    conninfo, schema, _ = _split_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = ", ".join(f'"{schema}".{t}' for t in PG_TABLES)
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY")


def _open(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(f"sqlite:///{tmp_path / 'twin.db'}")
    url = request.getfixturevalue("pg_url")
    _pg_truncate(url)
    return open_store(url)


STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SQL_STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """Every store, empty."""
    s = _open(request.param, request, tmp_path)
    yield s
    s.close()


@pytest.fixture(params=SQL_STORES)
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """The SQL stores, empty (compared against a MemoryStore reference)."""
    s = _open(request.param, request, tmp_path)
    yield s
    s.close()


@pytest.fixture(scope="module")
def zurich_objects(cityjson_dir: Path) -> list[TwinObject]:
    from ingest.cityjson import load_cityjson

    return list(load_cityjson(cityjson_dir / ZURICH).twin)


def fresh(objs: list[TwinObject]) -> list[TwinObject]:
    """Deep copies (a store may set ``scenario`` on what it is given)."""
    return [TwinObject.from_dict(o.as_dict()) for o in objs]


# --------------------------------------------------------------------------- a small city


def _geom(
    lod: str | None,
    src: tuple[float, float, float, float, float, float],
    wgs: tuple[float, float, float, float, float, float] | None,
    height: float,
    footprint: float,
) -> GeometrySummary:
    def mid(b: tuple[float, ...]) -> tuple[float, float, float]:
        return ((b[0] + b[3]) / 2, (b[1] + b[4]) / 2, (b[2] + b[5]) / 2)

    return GeometrySummary(
        lod=lod,
        geometry_types=("MultiSurface", "Solid"),
        bbox=src,
        centroid=mid(src),
        height=height,
        footprint_area=footprint,
        bbox_wgs84=wgs,
        centroid_wgs84=mid(wgs) if wgs else None,
    )


def small_city() -> list[TwinObject]:
    """Eight objects whose query answers are worked out by hand in the tests below."""
    return [
        TwinObject(
            "b1",
            "Building",
            children=["p1"],
            attributes={
                "yearOfConstruction": 1985,
                "function": "residential",
                "name": "Oude Kerk",
                "storeys": 3,
            },
            geometry=_geom(
                "2", (100, 100, 0, 110, 120, 30), (4.400, 51.900, 0, 4.401, 51.901, 30), 30, 200
            ),
        ),
        TwinObject(
            "b2",
            "Building",
            attributes={"yearOfConstruction": 2001, "function": "office", "name": "Nieuwe Toren"},
            geometry=_geom(
                "2.2", (200, 200, 0, 220, 210, 80), (4.402, 51.902, 0, 4.403, 51.903, 80), 80, 50
            ),
        ),
        TwinObject(
            "b3",
            "Building",
            attributes={"yearOfConstruction": "1990", "function": "Residential"},
            geometry=_geom(
                "1", (300, 100, 0, 310, 110, 10), (4.404, 51.900, 0, 4.405, 51.901, 10), 10, 100
            ),
        ),
        TwinObject(
            "p1",
            "BuildingPart",
            parents=["b1"],
            attributes={"yearOfConstruction": True, "function": None},
            geometry=_geom(
                "2", (100, 100, 0, 105, 105, 10), (4.400, 51.900, 0, 4.4005, 51.9005, 10), 10, 25
            ),
        ),
        TwinObject("r1", "Road", attributes={"name": "Mathenesserweg"}),
        TwinObject(
            "t1",
            "SolitaryVegetationObject",
            attributes={"name": "ZÜRICH Linde", "yearOfConstruction": [1990]},
            geometry=_geom("1", (400, 400, 0, 401, 401, 5), None, 5, 1),
        ),
        TwinObject(
            "w1",
            "WaterBody",
            attributes={"name": "50%_off \\ haven"},
            geometry=_geom(
                None, (500, 0, 0, 600, 50, 0), (4.41, 51.89, 0, 4.42, 51.895, 0), 0.0, 5000
            ),
            extra={"address": "Maasboulevard 5"},
        ),
        # Upper case sorts before lower case by code point (a linguistic collation would
        # not); '+' (an Extension type, CityJSON 2.0 §7) before letters.
        TwinObject("Z9", "+NoiseBarrier"),
    ]


ALL = ["Z9", "b1", "b2", "b3", "p1", "r1", "t1", "w1"]


def small_state() -> list[StateUpdate]:
    return [
        StateUpdate("b1", "pressure", 2.0, 100.0),
        StateUpdate("b2", "pressure", 3.5, 100.0),
        StateUpdate("b3", "pressure", "high", 100.0),
        StateUpdate("p1", "pressure", 2, 100.0),
        StateUpdate("t1", "pressure", True, 100.0),
        StateUpdate("b1", "status", "ok", 100.0),
        StateUpdate("p1", "status", "alarm", 100.0),
        StateUpdate("b2", "status", "Alarm state", 100.0),
        StateUpdate("b3", "status", True, 100.0),
        StateUpdate("w1", "status", 'say "hi"\tnow', 100.0),
    ]


@pytest.fixture
def city(store: StateStore) -> StateStore:
    store.put_objects(small_city())
    store.apply_updates(small_state())
    return store


def ids(store: StateStore, **kw: Any) -> list[str]:
    """All ids matching a query (sorted by id, one big page)."""
    page = store.query_objects(ObjectQuery(limit=1000, **kw))
    assert page.next_cursor is None
    return [o.id for o in page.items]


def where(store: StateStore, text: str) -> list[str]:
    return ids(store, conditions=parse_where(text))


# --------------------------------------------------------------------------- objects


def test_put_get_round_trip_every_field(store: StateStore) -> None:
    objs = small_city()
    assert store.put_objects(fresh(objs)) == len(objs)
    for o in objs:
        got = store.get_object(o.id)
        assert got is not None
        assert got.as_dict() == o.as_dict()
        assert got == o
    got = store.get_object("t1")
    assert got is not None and got.geometry is not None
    assert got.geometry.bbox_wgs84 is None and got.geometry.bbox == (400, 400, 0, 401, 401, 5)
    assert got.geometry.geometry_types == ("MultiSurface", "Solid")
    assert got.attributes["name"] == "ZÜRICH Linde"
    assert store.get_object("nope") is None
    assert store.count() == len(objs)


def test_real_city_round_trip(store: StateStore, zurich_objects: list[TwinObject]) -> None:
    assert store.put_objects(fresh(zurich_objects)) == 210
    assert store.count() == 210
    for o in zurich_objects:
        assert store.get_object(o.id) == o


def test_scenarios_are_separate(store: StateStore) -> None:
    store.put_objects(small_city())
    plan = TwinObject("b1", "Building", attributes={"function": "museum"})
    assert store.put_objects([plan], scenario="plan") == 1
    base = store.get_object("b1")
    assert base is not None and base.attributes["function"] == "residential"
    other = store.get_object("b1", scenario="plan")
    assert other is not None
    assert other.attributes == {"function": "museum"} and other.scenario == "plan"
    assert store.count() == 8 and store.count("plan") == 1
    assert store.get_object("b2", scenario="plan") is None
    assert ids(store, scenario="plan") == ["b1"]
    assert store.counts_by_type("plan") == {"Building": 1}


def test_reput_is_idempotent_and_replaces(store: StateStore) -> None:
    store.put_objects(small_city())
    before = store.counts_by_type()
    assert store.put_objects(small_city()) == 8
    assert store.count() == 8 and store.counts_by_type() == before
    changed = small_city()[0]
    changed.attributes["function"] = "museum"
    changed.geometry = None
    assert store.put_objects([changed]) == 1
    got = store.get_object("b1")
    assert got is not None and got.attributes["function"] == "museum" and got.geometry is None
    assert store.count() == 8
    # Indexes follow the replacement: no longer found by its old bbox or height.
    assert "b1" not in ids(store, bbox=(4.3, 51.8, 4.5, 52.0))
    assert "b1" not in where(store, "geom.height>=30")
    assert "b1" in where(store, "function=museum")


def test_repeated_id_in_one_batch_later_wins(store: StateStore) -> None:
    a = TwinObject("x", "Building", attributes={"v": 1})
    b = TwinObject("x", "Building", attributes={"v": 2})
    assert store.put_objects([a, b]) == 1
    got = store.get_object("x")
    assert got is not None and got.attributes == {"v": 2}
    assert store.count() == 1


def test_counts_by_type_most_common_first(
    store: StateStore, zurich_objects: list[TwinObject]
) -> None:
    store.put_objects(fresh(zurich_objects))
    counts = store.counts_by_type()
    assert counts == {"BuildingPart": 161, "Building": 49}
    assert list(counts) == ["BuildingPart", "Building"]
    assert store.counts_by_type("other") == {}


def test_sources_stored_with_objects(store: StateStore) -> None:
    data = b'{"type": "CityJSON"}' * 100
    store.put_objects(small_city()[:2], source="a.city.json", source_data=data)
    store.put_objects([], source="b.city.json", source_data=b"second")
    first = store.sources()
    assert [s.name for s in first] == ["a.city.json", "b.city.json"]
    assert first[0].size == len(data) and len(first[0].sha256) == 64
    assert store.get_source("a.city.json") == data
    assert store.get_source("missing") is None
    assert store.sources("plan") == []
    # Replacing a source keeps when it was first added (and so the order).
    store.put_objects([], source="a.city.json", source_data=b"new")
    again = store.sources()
    assert [s.name for s in again] == ["a.city.json", "b.city.json"]
    assert again[0].added == first[0].added and again[0].size == 3
    assert store.get_source("a.city.json") == b"new"


# --------------------------------------------------------------------------- all or nothing


def _snapshot(store: StateStore) -> tuple[Any, ...]:
    objs = sorted((o.as_dict() for o in store.query_objects(ObjectQuery(limit=1000)).items),
                  key=lambda d: str(d["id"]))  # fmt: skip
    return (
        objs,
        store.stats(),
        [(s.name, s.sha256) for s in store.sources()],
        store.latest("b1"),
        store.history("b1", "pressure"),
    )


def test_failing_iterable_leaves_store_unchanged(store: StateStore) -> None:
    store.put_objects(small_city())
    before = _snapshot(store)

    def objects() -> Iterator[TwinObject]:
        changed = small_city()[0]
        changed.attributes["function"] = "museum"
        yield changed
        yield TwinObject("new", "Building")
        raise RuntimeError("reader failed mid-file")

    with pytest.raises(RuntimeError):
        store.put_objects(objects(), source="s", source_data=b"data")
    assert _snapshot(store) == before


def test_unserializable_attributes_leave_store_unchanged(sql_store: StateStore) -> None:
    sql_store.put_objects(small_city())
    before = _snapshot(sql_store)
    changed = small_city()[0]
    changed.attributes["function"] = "museum"
    bad = TwinObject("bad", "Building", attributes={"when": object()})
    with pytest.raises((TwinError, TypeError)):
        sql_store.put_objects([changed, bad], source="s", source_data=b"data")
    assert _snapshot(sql_store) == before


class _FailAfter:
    """Proxy for a DB-API connection/cursor: runs the first statement containing
    ``marker``, then raises, so the failure lands mid-transaction after real writes."""

    def __init__(self, inner: Any, marker: str, exc: Callable[[], BaseException]) -> None:
        self._inner = inner
        self._marker = marker
        self._exc = exc
        self.fired = False

    def _check(self, sql: Any) -> None:
        if not self.fired and self._marker in str(sql):
            self.fired = True
            raise self._exc()

    def execute(self, sql: Any, *args: Any, **kw: Any) -> Any:
        out = self._inner.execute(sql, *args, **kw)
        self._check(sql)
        return out

    def executemany(self, sql: Any, *args: Any, **kw: Any) -> Any:
        out = self._inner.executemany(sql, *args, **kw)
        self._check(sql)
        return out

    def cursor(self, *args: Any, **kw: Any) -> Any:
        return _FailAfterCursor(self, self._inner.cursor(*args, **kw))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _FailAfterCursor:
    def __init__(self, owner: _FailAfter, cur: Any) -> None:
        self._owner = owner
        self._cur = cur

    def __enter__(self) -> _FailAfterCursor:
        self._cur.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._cur.__exit__(*exc)

    def execute(self, sql: Any, *args: Any, **kw: Any) -> Any:
        out = self._cur.execute(sql, *args, **kw)
        self._owner._check(sql)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def _inject(monkeypatch: pytest.MonkeyPatch, store: StateStore, sqlite_marker: str,
            pg_marker: str) -> _FailAfter:  # fmt: skip
    if isinstance(store, SqliteStore):
        proxy = _FailAfter(store._db, sqlite_marker, lambda: sqlite3.OperationalError("injected"))
        monkeypatch.setattr(store, "_db", proxy)
        return proxy
    import psycopg

    conn = store._connection()  # type: ignore[attr-defined]
    proxy = _FailAfter(conn, pg_marker, lambda: psycopg.OperationalError("injected"))
    monkeypatch.setattr(store, "_conn", proxy)
    monkeypatch.setattr(store, "_connection", lambda: proxy)
    return proxy


def test_failure_mid_put_rolls_back(sql_store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    sql_store.put_objects(small_city(), source="s", source_data=b"old")
    before = _snapshot(sql_store)
    # The last statement of the write: sources, objects and indexes were all touched.
    proxy = _inject(monkeypatch, sql_store, "INSERT INTO objects_fts", ".objects AS o")
    changed = small_city()
    changed[0].attributes["function"] = "museum"
    changed.append(TwinObject("new", "Building"))
    with pytest.raises((TwinError, sqlite3.Error)):
        sql_store.put_objects(changed, source="s", source_data=b"new data")
    assert proxy.fired
    monkeypatch.undo()
    assert _snapshot(sql_store) == before
    assert sql_store.get_source("s") == b"old"
    assert ids(sql_store, text="museum") == []


def test_failure_mid_apply_rolls_back(
    sql_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql_store.put_objects(small_city())
    sql_store.apply_updates([StateUpdate("b1", "pressure", 1.0, 10.0)])
    before = _snapshot(sql_store)
    proxy = _inject(monkeypatch, sql_store, "INSERT INTO state", "WITH ins AS")
    batch = [StateUpdate("b1", "pressure", float(i), 20.0 + i, msg_id=f"m{i}") for i in range(5)]
    with pytest.raises((TwinError, sqlite3.Error)):
        sql_store.apply_updates(batch)
    assert proxy.fired
    monkeypatch.undo()
    assert _snapshot(sql_store) == before
    # The message ids of the rolled-back batch were not taken: the batch applies now.
    assert sql_store.apply_updates(batch).stored == 5


@pytest.mark.postgres
def test_postgres_refused_row_rolls_back_and_is_a_twin_error(pg_url: str) -> None:
    """A row PostgreSQL refuses (NUL in JSONB text) fails the whole batch, cleanly."""
    _pg_truncate(pg_url)
    store = open_store(pg_url)
    try:
        store.put_objects(small_city(), source="s", source_data=b"old")
        before = _snapshot(store)
        bad = TwinObject("bad", "Building", attributes={"name": "a\x00b"})
        with pytest.raises(TwinError, match="PostgreSQL error while storing"):
            store.put_objects([*small_city(), bad], source="s", source_data=b"new")
        assert _snapshot(store) == before
        with pytest.raises(TwinError):
            store.apply_updates(
                [StateUpdate("b1", "pressure", 1.0, 1.0), StateUpdate("b\x00", "p", 1.0, 1.0)]
            )
        assert _snapshot(store) == before
        assert store.count() == 8  # the connection is usable after the errors
    finally:
        store.close()


# --------------------------------------------------------------------------- queries


def test_filter_by_type_and_id(city: StateStore) -> None:
    assert ids(city, types=("Building",)) == ["b1", "b2", "b3"]
    assert ids(city, types=("Road", "+NoiseBarrier")) == ["Z9", "r1"]
    assert ids(city, ids=("b1", "r1", "zz")) == ["b1", "r1"]
    assert ids(city, ids=("b1", "r1"), types=("Road",)) == ["r1"]
    assert ids(city, scenario="none") == []
    assert ids(city) == ALL


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yearOfConstruction>1990", ["b2"]),  # "1990" (string), true, [1990] never numbers
        ("yearOfConstruction>=1985", ["b1", "b2"]),
        ("yearOfConstruction<2000", ["b1"]),
        ("yearOfConstruction=1990", []),
        ('yearOfConstruction="1990"', ["b3"]),
        ("yearOfConstruction!=1985", [i for i in ALL if i != "b1"]),  # missing matches !=
        ("storeys<=3", ["b1"]),
        ("storeys=3.0", ["b1"]),
        ("function=residential", ["b1"]),  # string equality is case-sensitive
        ("function!=residential", [i for i in ALL if i != "b1"]),  # null, missing too
        ("function~RESID", ["b1", "b3"]),  # contains is case-insensitive
        ('name~"oude k"', ["b1"]),
        ("attr.name~weg", ["r1"]),
        ("name~%_", ["w1"]),  # LIKE wildcards are literal
        ("yearOfConstruction~199", ["b3"]),  # ~ matches strings only
        ("function>=1,storeys>1", []),
        ("function~res,yearOfConstruction<1990", ["b1"]),
        ("missing!=x", ALL),
        ("missing=x", []),
    ],
)
def test_attribute_filters(
    city: StateStore, text: str, expected: list[str], request: pytest.FixtureRequest
) -> None:
    assert where(city, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("state.pressure<2.5", ["b1", "p1"]),  # 2.0 and 2 (int); "high" and true are not
        ("state.pressure>=2", ["b1", "b2", "p1"]),
        ("state.pressure=2", ["b1", "p1"]),
        ("state.pressure!=2", [i for i in ALL if i not in ("b1", "p1")]),
        ("state.pressure=high", ["b3"]),
        ("state.status=alarm", ["p1"]),
        ("state.status~ALARM", ["b2", "p1"]),
        ("state.status!=ok", [i for i in ALL if i != "b1"]),
        ("state.missing!=1", ALL),
        ("state.missing=1", []),
        ("state.pressure>1,state.status=ok", ["b1"]),
        ("state.pressure>1,function=residential", ["b1"]),
    ],
)
def test_state_filters(city: StateStore, text: str, expected: list[str]) -> None:
    assert where(city, text) == expected


def test_state_filter_follows_latest_value(city: StateStore) -> None:
    city.apply_updates([StateUpdate("b2", "pressure", 1.0, 200.0)])
    city.apply_updates([StateUpdate("b1", "pressure", 9.0, 50.0)])  # late: history only
    assert where(city, "state.pressure<2.5") == ["b1", "b2", "p1"]
    city.apply_updates([StateUpdate("b1", "pressure", "off", 300.0)])
    assert where(city, "state.pressure<2.5") == ["b2", "p1"]
    assert where(city, "state.pressure=off") == ["b1"]


def test_state_contains_on_quotes_and_tabs(
    city: StateStore, request: pytest.FixtureRequest
) -> None:
    """``~`` looks in the value, not in its JSON encoding (quotes, escapes)."""
    cond = (Condition("state", "status", "~", 'y "hi"\tn'),)
    assert ids(city, conditions=cond) == ["w1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("geom.height>=30", ["b1", "b2"]),
        ("geom.height<20", ["b3", "p1", "t1", "w1"]),  # no geometry: no height
        ("geom.height!=10", ["Z9", "b1", "b2", "r1", "t1", "w1"]),
        ("geom.height=10", ["b3", "p1"]),
        ("geom.height=abc", []),
        ("geom.height!=abc", ALL),
        ("geom.footprint>100", ["b1", "w1"]),
        ("geom.footprint<=25", ["p1", "t1"]),
        ("geom.lod=2", ["b1", "p1"]),
        ("geom.lod=2.2", ["b2"]),
        ("geom.lod~2", ["b1", "b2", "p1"]),
        ("geom.lod!=2", ["Z9", "b2", "b3", "r1", "t1", "w1"]),
    ],
)
def test_geometry_filters(city: StateStore, text: str, expected: list[str]) -> None:
    assert where(city, text) == expected


def test_bbox_wgs84_and_source(city: StateStore) -> None:
    # Closed boxes: p1 touches the query box at a corner and counts.
    assert ids(city, bbox=(4.4005, 51.9005, 4.4021, 51.9025)) == ["b1", "b2", "p1"]
    assert ids(city, bbox=(4.3, 51.0, 4.5, 52.0)) == ["b1", "b2", "b3", "p1", "w1"]  # not t1
    assert ids(city, bbox=(0.0, 0.0, 1.0, 1.0)) == []
    src = {"bbox_crs": "source"}
    assert ids(city, bbox=(105, 105, 300, 200), **src) == ["b1", "b2", "b3", "p1"]
    assert ids(city, bbox=(400.5, 400.5, 400.6, 400.6), **src) == ["t1"]  # inside
    assert ids(city, bbox=(0, 0, 1000, 1000), **src) == ["b1", "b2", "b3", "p1", "t1", "w1"]
    assert ids(city, bbox=(0, 0, 1000, 1000), types=("Building",), **src) == ["b1", "b2", "b3"]


def test_bbox_near_miss_is_a_miss(city: StateStore, request: pytest.FixtureRequest) -> None:
    """A box starting one float step past b1's east edge does not overlap it."""
    east = math.nextafter(4.401, 5.0)
    assert ids(city, bbox=(east, 51.8, 4.4015, 52.0)) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kerk", ["b1"]),
        ("OUDE", ["b1"]),
        ("toren", ["b2"]),
        ("maasb", ["w1"]),  # the address in `extra`
        ("b", ["b1", "b2", "b3", "w1"]),  # one letter: ids b*, "Maasboulevard"
        ("1", ["b1", "p1", "r1", "t1", "w1"]),
        ("ou", ["b1", "w1"]),
        ("%_", ["w1"]),
        ("0%_o", ["w1"]),
        ("_", ["w1"]),
        ("\\ h", ["w1"]),
        ("züri", ["t1"]),
        ("xyz", []),
    ],
)
def test_free_text(city: StateStore, text: str, expected: list[str]) -> None:
    assert ids(city, text=text) == expected


@pytest.mark.parametrize("text", ["ü", "zü", "züRI"])
def test_free_text_non_ascii_case(
    city: StateStore, text: str, request: pytest.FixtureRequest
) -> None:
    """Case-insensitive means Python's str.lower, also beyond ASCII ("ZÜRICH")."""
    assert ids(city, text=text) == ["t1"]


def test_attribute_contains_non_ascii_case(
    city: StateStore, request: pytest.FixtureRequest
) -> None:
    assert where(city, "name~zürich") == ["t1"]


SORTS = {
    ("id", False): ALL,
    ("type", False): ["Z9", "b1", "b2", "b3", "p1", "r1", "t1", "w1"],
    ("height", False): ["w1", "t1", "b3", "p1", "b1", "b2", "Z9", "r1"],  # NULLs last
    ("footprint", False): ["t1", "p1", "b2", "b3", "b1", "w1", "Z9", "r1"],
}


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("sort", ["id", "type", "height", "footprint"])
def test_sort_with_nulls(city: StateStore, sort: str, descending: bool) -> None:
    expected = SORTS[(sort, False)]
    if descending:
        expected = expected[::-1]  # the whole key reversed: NULLs first
    page = city.query_objects(ObjectQuery(sort=sort, descending=descending, limit=100))
    assert [o.id for o in page.items] == expected


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 8])
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("sort", ["id", "type", "height", "footprint"])
def test_cursor_pages_equal_the_whole(
    city: StateStore, sort: str, descending: bool, limit: int
) -> None:
    whole = city.query_objects(ObjectQuery(sort=sort, descending=descending, limit=100))
    walked = _walk(city, ObjectQuery(sort=sort, descending=descending, limit=limit))
    assert [o.id for o in walked] == [o.id for o in whole.items]


def _walk(store: StateStore, q: ObjectQuery) -> list[TwinObject]:
    out: list[TwinObject] = []
    cursor = None
    for _ in range(10_000):
        page = store.query_objects(ObjectQuery(**{**q.__dict__, "cursor": cursor}))
        assert len(page.items) <= q.limit
        out += page.items
        if page.next_cursor is None:
            break
        assert len(page.items) == q.limit
        cursor = decode_cursor(page.next_cursor)
    ids_ = [o.id for o in out]
    assert len(ids_) == len(set(ids_)), "duplicate across pages"
    return out


def test_last_page_has_no_cursor(city: StateStore) -> None:
    page = city.query_objects(ObjectQuery(limit=8))
    assert len(page.items) == 8 and page.next_cursor is None
    page = city.query_objects(ObjectQuery(limit=7))
    assert page.next_cursor is not None
    assert decode_cursor(page.next_cursor) == ("t1", "t1")
    page = city.query_objects(ObjectQuery(sort="height", limit=7))
    assert page.next_cursor is not None and decode_cursor(page.next_cursor) == (None, "Z9")


# --------------------------------------------------------------------------- differential


def _random_state(objs: list[TwinObject], rng: random.Random) -> list[StateUpdate]:
    ups = []
    for o in objs:
        if rng.random() < 0.7:
            v: Any = rng.choice([round(rng.uniform(0, 5), 2), rng.randint(0, 5), "n/a", False])
            ups.append(StateUpdate(o.id, "pressure", v, rng.uniform(0, 100)))
        if rng.random() < 0.6:
            v = rng.choice(["ok", "alarm", "Alarm", "maintenance", True, None])
            ups.append(StateUpdate(o.id, "status", v, rng.uniform(0, 100)))
    return ups


def _random_case(text: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


def _random_query(objs: list[TwinObject], rng: random.Random) -> ObjectQuery:
    conds: list[Condition] = []
    attr_values: dict[str, list[Any]] = {}
    for o in objs:
        for k, v in o.attributes.items():
            attr_values.setdefault(k, []).append(v)
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        scope = rng.choice(["attr", "attr", "state", "geom"])
        op = rng.choice(["=", "!=", ">", ">=", "<", "<=", "~"])
        value: str | float
        if scope == "attr":
            name = rng.choice([*attr_values, "missing"])
            actual = rng.choice(attr_values.get(name, [1.0]))
            if isinstance(actual, str):
                if op == "~":
                    i = rng.randrange(len(actual))
                    value = _random_case(actual[i : i + rng.randint(1, 5)], rng)
                else:
                    op = rng.choice(["=", "!="])
                    value = actual
            else:
                value = float(actual) + rng.choice([0, 0, 1, -1, 0.5])
                if op == "~":
                    value = str(int(value))
        elif scope == "state":
            name = rng.choice(["pressure", "status"])
            if name == "pressure" and op != "~":
                value = rng.choice([0.0, 1.0, 2.5, 3.0, 5.0, rng.uniform(0, 5)])
            elif op == "~":
                value = rng.choice(["AL", "ok", "a", "n/", "main"])
            else:
                op = rng.choice(["=", "!="])
                value = rng.choice(["ok", "alarm", "Alarm", "n/a"])
        else:
            name = rng.choice(["height", "footprint", "lod"])
            if name == "lod":
                op = rng.choice(["=", "!=", "~"])
                value = rng.choice(["2", "1", "2.2"])
            else:
                if op == "~":
                    op = "="
                hs = [sort_value(o, name) for o in objs if o.geometry]
                value = float(rng.choice(hs)) if rng.random() < 0.3 else rng.uniform(0, 60)
                if name == "footprint":
                    value = value if rng.random() < 0.3 else rng.uniform(0, 400)
        conds.append(Condition(scope, name, op, value))  # type: ignore[arg-type]
    bbox = None
    crs: Any = "wgs84"
    if rng.random() < 0.4:
        crs = rng.choice(["wgs84", "source"])
        boxes = [
            (o.geometry.bbox_wgs84 if crs == "wgs84" else o.geometry.bbox)
            for o in objs
            if o.geometry
        ]
        a, b = rng.choice(boxes), rng.choice(boxes)
        if rng.random() < 0.5:  # exact edges of real objects: touching counts
            bbox = (min(a[0], b[3]), min(a[1], b[4]), max(a[0], b[3]), max(a[1], b[4]))
        else:
            xs = sorted([rng.uniform(a[0], a[3]), rng.uniform(b[0], b[3])])
            ys = sorted([rng.uniform(a[1], a[4]), rng.uniform(b[1], b[4])])
            bbox = (xs[0], ys[0], xs[1], ys[1])
    text = None
    if rng.random() < 0.3:
        t = searchable_text(rng.choice(objs))
        i = rng.randrange(len(t))
        text = _random_case(t[i : i + rng.choice([1, 2, 3, 5, 8])], rng)
    types: tuple[str, ...] = ()
    if rng.random() < 0.3:
        types = tuple(rng.sample(["Building", "BuildingPart", "Road"], rng.randint(1, 2)))
    return ObjectQuery(
        types=types,
        conditions=tuple(conds),
        bbox=bbox,
        bbox_crs=crs,
        text=text,
        sort=rng.choice(["id", "type", "height", "footprint"]),
        descending=rng.random() < 0.5,
        limit=rng.choice([1, 3, 10, 50, 100]),
    )


def _pages(store: StateStore, q: ObjectQuery) -> list[tuple[list[str], str | None]]:
    out = []
    cursor = None
    while True:
        page = store.query_objects(ObjectQuery(**{**q.__dict__, "cursor": cursor}))
        out.append(([o.id for o in page.items], page.next_cursor))
        if page.next_cursor is None or len(out) > 300:
            return out
        cursor = decode_cursor(page.next_cursor)


def test_random_queries_equal_memory_store(
    sql_store: StateStore, zurich_objects: list[TwinObject]
) -> None:
    """The key property: SQL pages (ids and cursors) are exactly MemoryStore's."""
    rng = random.Random(20261123)
    reference = MemoryStore()
    state = _random_state(zurich_objects, rng)
    for s in (reference, sql_store):
        s.put_objects(fresh(zurich_objects))
    assert sql_store.apply_updates(state) == reference.apply_updates(state)
    nonempty = 0
    for n in range(400):
        q = _random_query(zurich_objects, rng)
        want = _pages(reference, q)
        got = _pages(sql_store, q)
        assert got == want, f"query #{n}: {q}"
        nonempty += bool(want[0][0])
    assert nonempty > 100  # the generator asks questions that have answers


# --------------------------------------------------------------------------- state


def test_newest_event_time_wins_and_late_goes_to_history(store: StateStore) -> None:
    r1 = store.apply_updates([StateUpdate("b1", "pressure", 2.0, 10.0, source="a")])
    assert (r1.stored, r1.duplicates, r1.late) == (1, 0, 0) and len(r1.latest) == 1
    late = StateUpdate("b1", "pressure", 1.0, 5.0, source="b", quality="suspect")
    r2 = store.apply_updates([late])
    assert (r2.stored, r2.duplicates, r2.late, r2.latest) == (1, 0, 1, [])
    sv = store.latest("b1")["pressure"]
    assert (sv.value, sv.time, sv.source, sv.quality) == (2.0, 10.0, "a", None)
    assert [p.time for p in store.history("b1", "pressure")] == [5.0, 10.0]
    assert store.history("b1", "pressure")[0] == HistoryPoint(5.0, 1.0, "b", "suspect")
    r3 = store.apply_updates([StateUpdate("b1", "pressure", 3.0, 11.0)])
    assert r3.latest == [StateUpdate("b1", "pressure", 3.0, 11.0)]
    assert store.latest("b1")["pressure"].value == 3.0
    assert store.latest("nobody") == {}


def test_duplicates_are_stored_once(store: StateStore) -> None:
    store.apply_updates([StateUpdate("b1", "p", 1.0, 10.0, msg_id="m1")])
    again = store.apply_updates(
        [
            StateUpdate("b1", "p", 99.0, 10.0),  # same object, property, time
            StateUpdate("b1", "p", 99.0, 20.0, msg_id="m1"),  # same message id
        ]
    )
    assert (again.stored, again.duplicates, again.late, again.latest) == (0, 2, 0, [])
    assert store.history("b1", "p") == [HistoryPoint(10.0, 1.0)]
    assert store.latest("b1")["p"].value == 1.0
    # The same time on another property or object is not a duplicate.
    other = store.apply_updates([StateUpdate("b1", "q", 1.0, 10.0), StateUpdate("b2", "p", 1, 10)])
    assert other.stored == 2


def test_apply_result_counts_within_one_batch(store: StateStore) -> None:
    store.apply_updates([StateUpdate("a", "p", 0.0, 8.0)])
    batch = [
        StateUpdate("a", "p", 1.0, 10.0),  # stored, latest (beats 8)
        StateUpdate("a", "p", 2.0, 10.0, msg_id="m"),  # duplicate time: m not taken
        StateUpdate("a", "p", 3.0, 5.0),  # stored, late
        StateUpdate("a", "p", 4.0, 10.0),  # duplicate
        StateUpdate("a", "p", 5.0, 11.0, msg_id="m"),  # stored (m is free), latest
        StateUpdate("a", "p", 6.0, 12.0, msg_id="m"),  # duplicate message id
        StateUpdate("a", "s", "on", 1.0),  # stored, latest (first value)
        StateUpdate("a", "p", 7.0, 10.5),  # stored, late (11 came earlier in the batch)
        StateUpdate("b", "p", None, 3.0, quality="missing"),  # stored, latest
    ]
    res = store.apply_updates(batch)
    assert (res.stored, res.duplicates, res.late) == (6, 3, 2)
    assert res.latest == [batch[0], batch[4], batch[6], batch[8]]
    latest = store.latest("a")
    assert {k: (v.value, v.time) for k, v in latest.items()} == {
        "p": (5.0, 11.0),
        "s": ("on", 1.0),
    }
    assert store.latest("b")["p"].value is None and store.latest("b")["p"].quality == "missing"
    assert [(p.time, p.value) for p in store.history("a", "p")] == [
        (5.0, 3.0),
        (8.0, 0.0),
        (10.0, 1.0),
        (10.5, 7.0),
        (11.0, 5.0),
    ]


def test_apply_result_equals_memory_on_random_batches(sql_store: StateStore) -> None:
    """Random batches with collisions of time and message id, in several transactions."""
    rng = random.Random(7)
    reference = MemoryStore()
    for _ in range(5):
        batch = [
            StateUpdate(
                rng.choice(["a", "b", "c"]),
                rng.choice(["p", "q"]),
                rng.choice([rng.randint(0, 9), rng.random(), "s", True, None]),
                float(rng.randint(0, 60)),
                msg_id=rng.choice([None, None, f"m{rng.randint(0, 80)}"]),
            )
            for _ in range(rng.choice([1, 50, 400]))
        ]
        want = reference.apply_updates(batch)
        got = sql_store.apply_updates(batch)
        assert got == want
    for oid in "abc":
        assert sql_store.latest(oid) == reference.latest(oid)
        for prop in "pq":
            assert sql_store.history(oid, prop) == reference.history(oid, prop)
    assert sql_store.stats()["history"] == reference.stats()["history"]


def test_value_types_round_trip(store: StateStore) -> None:
    values: list[Any] = [3, 2.5, 0.1, -0.0, 1e16, 'text "q" ü', True, False, None]
    store.apply_updates([StateUpdate("o", "p", v, float(i)) for i, v in enumerate(values)])
    got = [p.value for p in store.history("o", "p")]
    assert got == values
    assert [type(v) for v in got] == [type(v) for v in values]


def test_history_since_until_limit(store: StateStore) -> None:
    ups = [StateUpdate("o", "p", float(t), float(t)) for t in range(10, 0, -1)]  # reversed
    ups.append(StateUpdate("o", "other", 0.0, 5.0))
    store.apply_updates(ups)
    assert [p.time for p in store.history("o", "p")] == [float(t) for t in range(1, 11)]
    assert [p.time for p in store.history("o", "p", since=3, until=7)] == [3, 4, 5, 6]
    assert [p.time for p in store.history("o", "p", since=3, until=7, limit=2)] == [3, 4]
    assert [p.time for p in store.history("o", "p", since=9.5)] == [10]
    assert [p.time for p in store.history("o", "p", until=2)] == [1]
    assert store.history("o", "p", since=20) == []
    assert store.history("o", "none") == []


def test_history_buckets_by_hand(store: StateStore) -> None:
    store.apply_updates(
        [
            StateUpdate("o", "p", 1, 0.0),
            StateUpdate("o", "p", 3.0, 5.0),
            StateUpdate("o", "p", "x", 10.0),  # counted, but not a number
            StateUpdate("o", "p", 5.0, 15.0),
            StateUpdate("o", "p", 7.5, 20.0),
            StateUpdate("o", "p", True, 29.9),  # booleans are not numbers
            StateUpdate("o", "p", -2.0, -5.0),  # floor(-0.5) * 10 = -10
            StateUpdate("o", "q", "off", 40.0),
        ]
    )
    got = store.history_buckets("o", "p", 10)
    assert got == [
        HistoryBucket(-10.0, 1, -2.0, -2.0, -2.0),
        HistoryBucket(0.0, 2, 1.0, 2.0, 3.0),
        HistoryBucket(10.0, 2, 5.0, 5.0, 5.0),
        HistoryBucket(20.0, 2, 7.5, 7.5, 7.5),
    ]
    assert all(isinstance(b.start, int | float) for b in got)
    assert store.history_buckets("o", "p", 10, since=0, until=20, limit=1) == [
        HistoryBucket(0.0, 2, 1.0, 2.0, 3.0)
    ]
    assert store.history_buckets("o", "p", 60, since=0) == [
        HistoryBucket(0.0, 6, 1.0, (1 + 3 + 5 + 7.5) / 4, 7.5)
    ]
    assert store.history_buckets("o", "q", 10) == [HistoryBucket(40.0, 1, None, None, None)]
    assert store.history_buckets("o", "p", 2.5, since=4, until=6) == [
        HistoryBucket(5.0, 1, 3.0, 3.0, 3.0)
    ]


def test_prune_history_keeps_latest(store: StateStore) -> None:
    store.apply_updates(
        [StateUpdate("o", p, float(t), float(t)) for p in ("p", "q") for t in range(1, 11)]
    )
    assert store.prune_history(5.0) == 8
    assert [p.time for p in store.history("o", "p")] == [5, 6, 7, 8, 9, 10]
    assert store.latest("o")["q"].time == 10.0
    assert store.prune_history(5.0) == 0
    assert store.stats()["history"] == 12


def _buckets_close(a: list[HistoryBucket], b: list[HistoryBucket]) -> None:
    assert [(x.start, x.count, x.min, x.max) for x in a] == [
        (x.start, x.count, x.min, x.max) for x in b
    ]
    for x, y in zip(a, b, strict=True):
        assert (x.mean is None) == (y.mean is None)
        if x.mean is not None and y.mean is not None:
            assert math.isclose(x.mean, y.mean, rel_tol=1e-9, abs_tol=1e-9)


def test_buckets_of_whole_minutes_equal_raw_aggregation(sql_store: StateStore) -> None:
    """Minute buckets come from the rollup plus raw edges; they must equal the raw points'
    aggregation for any window (aligned or not), after late points, duplicates, strings
    and a prune that cuts a minute in half."""
    rng = random.Random(5)
    ref = MemoryStore()
    updates = []
    for i in range(3000):
        t = rng.uniform(0, 4 * 3600)
        v: Any = round(rng.uniform(-5, 5), 3) if rng.random() > 0.05 else "offline"
        updates.append(StateUpdate("o", "p", v, t, msg_id=f"m{i}"))
    updates += updates[:40]  # duplicates
    for k in range(0, len(updates), 250):
        sql_store.apply_updates(updates[k : k + 250])
        ref.apply_updates(updates[k : k + 250])
    cut = 1000.5
    assert sql_store.prune_history(cut) == ref.prune_history(cut)
    for _ in range(40):
        every = 60.0 * rng.choice([1, 2, 5, 15, 60])
        a, b = sorted(rng.uniform(-100, 4 * 3600 + 100) for _ in range(2))
        since = rng.choice([None, a, math.floor(a / 60) * 60.0])
        until = rng.choice([None, b, math.floor(b / 60) * 60.0])
        _buckets_close(
            sql_store.history_buckets("o", "p", every, since=since, until=until),
            ref.history_buckets("o", "p", every, since=since, until=until),
        )


def test_sqlite_v1_store_is_migrated(tmp_path: Path) -> None:
    """A store written with schema 1 (two R*Trees, positional trigram index, no rollup)
    opens with the current code: bbox, text and bucket queries answer as before."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = SqliteStore(url)
    store.put_objects(small_city())
    store.apply_updates(small_state())
    store.apply_updates([StateUpdate("t1", "flow", float(k), 120.0 + k) for k in range(300)])
    want_bbox = ids(store, bbox=(4.3, 51.0, 4.5, 52.0))
    want_src = ids(store, bbox=(0, 0, 1000, 1000), bbox_crs="source")
    want_text = ids(store, text="züri")
    want_buckets = store.history_buckets("t1", "flow", 120.0)
    store.close()
    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    db.executescript(
        "DROP TABLE objects_box; DROP TABLE objects_fts; DROP TABLE history_1m;"
        "CREATE VIRTUAL TABLE objects_wgs USING rtree (rid, minx, maxx, miny, maxy);"
        "CREATE VIRTUAL TABLE objects_src USING rtree (rid, minx, maxx, miny, maxy);"
        "CREATE VIRTUAL TABLE objects_fts USING fts5 (text, tokenize = 'trigram');"
        "UPDATE meta SET value = '1' WHERE key = 'schema_version';"
    )
    db.close()
    store = SqliteStore(url)
    try:
        assert want_bbox and want_text
        assert ids(store, bbox=(4.3, 51.0, 4.5, 52.0)) == want_bbox
        assert ids(store, bbox=(0, 0, 1000, 1000), bbox_crs="source") == want_src
        assert ids(store, text="züri") == want_text
        _buckets_close(store.history_buckets("t1", "flow", 120.0), want_buckets)
        version = store._read("SELECT value FROM meta WHERE key = 'schema_version'")[0][0]
        assert int(version) == 2
    finally:
        store.close()


def test_pruned_message_id_is_free_again(store: StateStore, request: pytest.FixtureRequest) -> None:
    """Retention forgets a message with its history row (the SQL stores keep msg_id in
    the row), so the id set does not grow without bound."""
    store.apply_updates([StateUpdate("o", "p", 1.0, 1.0, msg_id="m1")])
    assert store.prune_history(2.0) == 1
    assert store.apply_updates([StateUpdate("o", "p", 1.0, 1.0, msg_id="m1")]).stored == 1


# --------------------------------------------------------------------------- audit, stats


def test_audit_newest_first(store: StateStore) -> None:
    entries = [
        AuditEntry(1.0, "ann", "editor", "patch", ("b1", "b2"), "function=museum"),
        AuditEntry(3.0, "bob", "admin", "ingest", (), ""),
        AuditEntry(2.0, "ann", "editor", "state", ("p1",)),
    ]
    for e in entries:
        store.append_audit(e)
    assert store.list_audit() == [entries[1], entries[2], entries[0]]
    assert store.list_audit(limit=2) == [entries[1], entries[2]]
    assert store.list_audit(before=3.0) == [entries[2], entries[0]]
    assert store.list_audit(before=1.0) == []
    assert store.list_audit()[2].object_ids == ("b1", "b2")


def test_audit_same_time_later_append_first(
    store: StateStore, request: pytest.FixtureRequest
) -> None:
    """Newest first also among entries of the same second (appended later = newer)."""
    for action in ("first", "second", "third"):
        store.append_audit(AuditEntry(5.0, "ann", "editor", action))
    assert [a.action for a in store.list_audit()] == ["third", "second", "first"]


def test_stats_counts_rows(store: StateStore) -> None:
    assert store.stats() == {"objects": 0, "state": 0, "history": 0, "audit": 0}
    store.put_objects(small_city())
    store.put_objects(small_city()[:2], scenario="plan")
    store.apply_updates(small_state())
    store.apply_updates([StateUpdate("b1", "pressure", 0.5, 1.0)])  # late
    store.append_audit(AuditEntry(1.0, "a", "r", "x"))
    assert store.stats() == {"objects": 10, "state": 10, "history": 11, "audit": 1}


# --------------------------------------------------------------------------- per store


def _fill(store: StateStore) -> None:
    store.put_objects(small_city(), source="city.json", source_data=b"{}")
    store.apply_updates(small_state())
    store.append_audit(AuditEntry(1.0, "a", "r", "x", ("b1",)))


def _contents(store: StateStore) -> tuple[Any, ...]:
    return (
        [o.as_dict() for o in store.query_objects(ObjectQuery(limit=100)).items],
        store.latest("b1"),
        store.history("b1", "pressure"),
        store.list_audit(),
        store.get_source("city.json"),
        ids(store, text="kerk"),
        ids(store, bbox=(4.3, 51.0, 4.5, 52.0)),
    )


def test_sqlite_file_survives_reopen_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "twin.db"
    store = SqliteStore(f"sqlite:///{path}")
    _fill(store)
    before = _contents(store)
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = open_store(f"sqlite:///{path}")
    try:
        assert _contents(again) == before
        assert again.stats() == {"objects": 8, "state": 10, "history": 10, "audit": 1}
    finally:
        again.close()


@pytest.mark.postgres
def test_postgres_survives_reopen(pg_url: str) -> None:
    from twin.store.postgres import PostgresStore

    _pg_truncate(pg_url)
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    _fill(store)
    before = _contents(store)
    store.close()
    store.close()  # idempotent
    again = PostgresStore(pg_url)  # schema creation is idempotent
    try:
        assert _contents(again) == before
        assert again.trigram  # pg_trgm is available on the test server
    finally:
        again.close()


@pytest.mark.postgres
def test_postgres_queries_use_the_indexes(pg_url: str, zurich_objects: list[TwinObject]) -> None:
    """bbox, text, attribute and type filters compile to scans of their index."""
    import psycopg

    from twin.store.postgres import PostgresStore, _split_url

    cases = [
        (ObjectQuery(bbox=(8.55, 47.36, 8.551, 47.361)), "objects_wgs"),
        (ObjectQuery(bbox=(2684572, 1246323, 2684573, 1246324), bbox_crs="source"), "objects_src"),
        (ObjectQuery(text="4528-8be9"), "objects_search"),
        (ObjectQuery(conditions=parse_where("Herkunft=NF_LB_2011")), "objects_attributes"),
        (ObjectQuery(types=("Building",), sort="type", limit=10), "objects_type"),
        # Keyset pages by height walk the sort-key index (NULLs last), in both directions.
        (ObjectQuery(sort="height", cursor=(12.5, "x"), limit=10), "objects_height"),
        (ObjectQuery(sort="footprint", descending=True, cursor=(None, "x")), "objects_footprint"),
    ]
    _pg_truncate(pg_url)
    store = PostgresStore(pg_url)
    try:
        # ~10k rows: on a handful of pages every scan costs the same as any index.
        tiled = []
        for k in range(50):
            for o in zurich_objects:
                d = o.as_dict()
                d["id"] = f"{o.id}-{k}"
                tiled.append(TwinObject.from_dict(d))
        store.put_objects(tiled)
        conninfo, schema, _ = _split_url(pg_url)
        with psycopg.connect(conninfo) as conn:
            conn.execute(f'ANALYZE "{schema}".objects')
            conn.execute("SET enable_seqscan = off")
            for query, index in cases:
                sql, params = store._compile(query)
                plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))
                assert index in plan, plan
    finally:
        store.close()


def test_postgres_unreachable_is_a_clear_twin_error() -> None:
    pytest.importorskip("psycopg")
    from twin.store.postgres import PostgresStore

    with pytest.raises(
        TwinError, match=r"cannot connect to PostgreSQL at postgresql://u@127\.0\.0\.1:1/db"
    ) as info:
        PostgresStore("postgresql://u:secret@127.0.0.1:1/db?schema=x&connect_timeout=2")
    assert "secret" not in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["postgresql://127.0.0.1/db?schema=Bad-Name", "postgresql://h/db?schema=a;drop"]
)
def test_postgres_bad_schema_name(url: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(TwinError, match="bad schema name"):
        open_store(url)


def test_postgres_url_options() -> None:
    """``schema`` is ours and leaves the URL; libpq options and socket URLs pass through."""
    pytest.importorskip("psycopg")
    from twin.store.postgres import _split_url

    conninfo, schema, safe = _split_url(
        "postgresql://u:pw@db.example:5433/twin?schema=s1&sslmode=require"
    )
    assert schema == "s1" and safe == "postgresql://u@db.example:5433/twin"
    assert conninfo.startswith("postgresql://u:pw@db.example:5433/twin?sslmode=require&")
    assert "schema" not in conninfo and "connect_timeout=5" in conninfo
    conninfo, schema, safe = _split_url("postgresql:///twin?host=/run/postgresql&connect_timeout=1")
    assert conninfo == "postgresql:///twin?host=%2Frun%2Fpostgresql&connect_timeout=1"
    assert schema == "citytwin" and safe == "postgresql:///twin"
    with pytest.raises(TwinError, match="not a PostgreSQL URL"):
        _split_url("mysql://h/db")


def test_every_store_has_the_protocol(store: StateStore) -> None:
    assert isinstance(store, StateStore)
    assert isinstance(store.apply_updates([]), ApplyResult)
    assert store.put_objects([]) == 0


# --------------------------------------------------------------------------- dead letters, alerts


def test_dead_letters_newest_first_per_feed(store: StateStore) -> None:
    from twin.state import DeadLetter

    recs = [
        DeadLetter("mqtt", "unknown object", '{"id":"x"}', 5.0, "x", "p"),
        DeadLetter("http", "NaN", "{}", 7.0),
        DeadLetter("mqtt", "bad time", "payload ü", 9.0, None, None),
    ]
    store.append_rejected(recs[:2])
    store.append_rejected(recs[2:])
    store.append_rejected([])
    assert store.list_rejected("mqtt") == [recs[2], recs[0]]
    assert store.list_rejected() == [recs[2], recs[1], recs[0]]
    assert store.list_rejected("mqtt", limit=1) == [recs[2]]
    assert store.list_rejected(before=9.0) == [recs[1], recs[0]]
    assert store.list_rejected("nope") == []


def test_alerts_put_replace_and_list(store: StateStore) -> None:
    from twin.alerts import Alert

    a = Alert("a1", "low", "j1", "pressure", "open", "warning", 1.5, 10.0, "m", updated=10.0)
    b = Alert("a2", "hot", "l1", "loading", "open", "critical", 95, 11.0, updated=11.0)
    store.put_alert(a)
    store.put_alert(b)
    assert store.get_alert("a1") == a and store.get_alert("zz") is None
    assert [x.id for x in store.list_alerts()] == ["a2", "a1"]
    acked = a.acknowledge("eng", 20.0)
    store.put_alert(acked)
    assert store.get_alert("a1") == acked
    assert [x.id for x in store.list_alerts()] == ["a1", "a2"]
    assert [x.id for x in store.list_alerts(state="open")] == ["a2"]
    assert [x.id for x in store.list_alerts(state="acknowledged", object_id="j1")] == ["a1"]
    assert store.list_alerts(object_id="l1", limit=5) == [b]

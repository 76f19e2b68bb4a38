"""Twin objects, the Twin registry and the object-store basics (every store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from twin.errors import TwinError
from twin.objects import GeometrySummary, Twin, TwinObject
from twin.store import MemoryStore, StateStore, open_store


def _geo(height: float = 10.0) -> GeometrySummary:
    return GeometrySummary(
        lod="2.2",
        geometry_types=("Solid",),
        bbox=(0.0, 0.0, 0.0, 4.0, 5.0, height),
        centroid=(2.0, 2.5, height / 2),
        height=height,
        footprint_area=20.0,
        bbox_wgs84=(4.3, 52.0, 0.0, 4.31, 52.01, height),
        centroid_wgs84=(4.305, 52.005, height / 2),
    )


def _city() -> list[TwinObject]:
    return [
        TwinObject("b1", "Building", children=["b1-0", "b1-1"], attributes={"name": "Molen"}),
        TwinObject("b1-0", "BuildingPart", parents=["b1"], geometry=_geo()),
        TwinObject("b1-1", "BuildingPart", parents=["b1"], geometry=_geo(3.0)),
        TwinObject("r1", "Road"),
        TwinObject("n1", "+NoiseBarrier", attributes={"naam": "scherm"}),
    ]


# -- TwinObject ---------------------------------------------------------------------------


def test_object_properties() -> None:
    b1, part, _, road, noise = _city()
    assert part.parent == "b1" and b1.parent is None
    assert noise.is_extension and not road.is_extension
    assert b1.name == "Molen" and noise.name == "scherm" and road.name is None
    assert TwinObject("x", "Building", attributes={"name": 3}).name is None


def test_object_dict_roundtrip() -> None:
    obj = TwinObject(
        "b1-0",
        "BuildingPart",
        parents=["b1"],
        attributes={"h": 1.5, "名前": "塔"},
        geometry=_geo(),
        scenario="plan-a",
        extra={"address": [{"locality": "Delft"}]},
    )
    again = TwinObject.from_dict(obj.as_dict())
    assert again == obj
    assert again.geometry is not None and again.geometry.bbox == obj.geometry.bbox  # type: ignore[union-attr]


def test_geometry_summary_dict_is_json_ready() -> None:
    d = _geo().as_dict()
    assert d["bbox"] == [0.0, 0.0, 0.0, 4.0, 5.0, 10.0]
    assert isinstance(d["geometry_types"], list)
    assert GeometrySummary.from_dict(d) == _geo()
    bare = GeometrySummary("1", ("MultiSurface",), (0, 0, 0, 1, 1, 1), (0.5, 0.5, 0.5), 1, 1)
    assert bare.as_dict()["bbox_wgs84"] is None and bare.as_dict()["centroid_wgs84"] is None


# -- Twin registry ------------------------------------------------------------------------


def test_twin_registry_basics() -> None:
    twin = Twin(_city())
    assert len(twin) == 5
    assert twin.ids() == ["b1", "b1-0", "b1-1", "r1", "n1"]
    assert "b1" in twin and "zz" not in twin
    assert twin.get("zz") is None
    assert twin["r1"].type == "Road"
    with pytest.raises(KeyError):
        twin["zz"]
    assert [o.id for o in twin] == twin.ids()
    assert [o.id for o in twin.roots()] == ["b1", "r1", "n1"]
    assert [o.id for o in twin.children_of("b1")] == ["b1-0", "b1-1"]
    assert twin.children_of("zz") == []


def test_twin_counts_by_type_most_common_first() -> None:
    twin = Twin(_city())
    counts = twin.counts_by_type()
    assert counts == {"BuildingPart": 2, "Building": 1, "Road": 1, "+NoiseBarrier": 1}
    assert next(iter(counts)) == "BuildingPart"


def test_twin_add_replaces_by_id() -> None:
    twin = Twin(_city())
    twin.add(TwinObject("r1", "Railway"))
    assert len(twin) == 5
    assert twin["r1"].type == "Railway"
    assert twin.counts_by_type()["Railway"] == 1 and "Road" not in twin.counts_by_type()


def test_children_missing_from_registry_are_skipped() -> None:
    twin = Twin(
        [TwinObject("b", "Building", children=["gone", "p"]), TwinObject("p", "BuildingPart")]
    )
    assert [o.id for o in twin.children_of("b")] == ["p"]


# -- stores: memory and SQLite, same contract -------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'twin.db'}"
    s = open_store(url)
    try:
        yield s
    finally:
        s.close()


def test_open_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store("memory://"), StateStore)
    with pytest.raises(TwinError, match="unknown store URL"):
        open_store("ftp://example.org/db")


def test_put_get_count(store: StateStore) -> None:
    assert store.count() == 0 and store.counts_by_type() == {}
    assert store.put_objects(_city(), source="city.json") == 5
    assert store.count() == 5
    got = store.get_object("b1-0")
    assert got is not None
    assert got.type == "BuildingPart" and got.parents == ["b1"]
    assert got.geometry == _geo()
    assert store.get_object("nope") is None
    assert store.counts_by_type() == {
        "BuildingPart": 2,
        "Building": 1,
        "Road": 1,
        "+NoiseBarrier": 1,
    }


def test_reput_is_idempotent(store: StateStore) -> None:
    store.put_objects(_city(), source="city.json", source_data=b"{}")
    store.put_objects(_city(), source="city.json", source_data=b"{}")
    assert store.count() == 5
    assert store.counts_by_type()["BuildingPart"] == 2
    assert [s.name for s in store.sources()] == ["city.json"]
    # Replacing one object changes it, not the count.
    store.put_objects([TwinObject("r1", "Railway")])
    assert store.count() == 5
    assert store.get_object("r1").type == "Railway"  # type: ignore[union-attr]
    assert "Road" not in store.counts_by_type()


def test_duplicate_ids_in_one_batch_count_once(store: StateStore) -> None:
    # "Insert or replace": within one batch too, the later object wins (no driver error).
    n = store.put_objects([TwinObject("a", "Road"), TwinObject("a", "Railway")])
    assert n == 1 and store.count() == 1
    assert store.get_object("a").type == "Railway"  # type: ignore[union-attr]


def test_scenarios_are_separate(store: StateStore) -> None:
    store.put_objects(_city(), scenario="base")
    store.put_objects([TwinObject("b1", "Building", attributes={"name": "Nieuw"})], scenario="plan")
    assert store.count("base") == 5 and store.count("plan") == 1
    assert store.get_object("b1", "plan").attributes == {"name": "Nieuw"}  # type: ignore[union-attr]
    assert store.get_object("b1", "base").attributes == {"name": "Molen"}  # type: ignore[union-attr]
    assert store.get_object("r1", "plan") is None


def test_stored_objects_do_not_alias_the_callers(store: StateStore) -> None:
    """What a store holds does not change when the caller's objects change afterwards.

    The SQL stores serialize; the in-memory store is "the reference semantics for the
    SQL stores", so it must behave the same.
    """
    obj = TwinObject("a", "Building", attributes={"h": 1})
    store.put_objects([obj], scenario="x")
    store.put_objects([obj], scenario="y")
    obj.attributes["h"] = 2
    got = store.get_object("a", "x")
    assert got is not None
    assert got.scenario == "x"
    assert got.attributes == {"h": 1}


def test_source_documents_kept(store: StateStore) -> None:
    store.put_objects(_city(), source="a.city.json", source_data=b'{"a": 1}')
    store.put_objects([TwinObject("z", "Road")], source="b.city.json", source_data=b"{}")
    assert [s.name for s in store.sources()] == ["a.city.json", "b.city.json"]
    assert store.get_source("a.city.json") == b'{"a": 1}'
    assert store.get_source("missing") is None
    info = store.sources()[0]
    assert info.size == 8 and len(info.sha256) == 64

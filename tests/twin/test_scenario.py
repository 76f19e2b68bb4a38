"""diff_scenarios: added, removed, changed objects with height, footprint and volume changes."""

from __future__ import annotations

import pytest

from twin.objects import GeometrySummary, TwinObject
from twin.scenario import diff_scenarios, prism_volume


def _obj(oid: str, height: float, footprint: float, x: float = 0.0, **attrs: object) -> TwinObject:
    g = GeometrySummary(
        lod="1",
        geometry_types=("Solid",),
        bbox=(x, 0.0, 0.0, x + 10.0, 10.0, height),
        centroid=(x + 5.0, 5.0, height / 2),
        height=height,
        footprint_area=footprint,
    )
    return TwinObject(oid, "Building", attributes=dict(attrs), geometry=g)


def test_added_removed_changed_and_unchanged_objects() -> None:
    base = [_obj("a", 10, 100), _obj("b", 5, 50), _obj("c", 8, 80)]
    prop = [_obj("a", 20, 100), _obj("c", 8, 80), _obj("d", 12, 30, x=50)]
    diff = diff_scenarios(base, prop)
    assert diff.added == ["d"] and diff.removed == ["b"] and diff.changed == ["a"]
    by = {o.id: o for o in diff.objects}
    assert set(by) == {"a", "b", "d"}  # c is unchanged: not listed
    a = by["a"]
    assert a.fields == ("bbox", "height")
    assert (a.height_before, a.height_after, a.height_change) == (10, 20, 10)
    assert a.footprint_change == 0
    assert (a.volume_before, a.volume_after, a.volume_method) == (1000, 2000, "prism")
    assert by["b"].volume_change == -250 and by["b"].height_after is None
    assert by["d"].volume_change == 360 and by["d"].footprint_before is None
    t = diff.totals
    assert t["added"] == 1 and t["removed"] == 1 and t["changed"] == 1
    assert t["footprint_change"] == 30 - 50
    assert t["volume_change"] == 1000 - 250 + 360
    assert t["volume_added"] == 360 and t["volume_removed"] == 250
    assert diff.as_dict()["objects"][0]["volume"]["method"] == "prism"


def test_measured_volumes_win_when_both_sides_have_one() -> None:
    base = [_obj("a", 10, 100), _obj("b", 10, 100)]
    prop = [_obj("a", 20, 100), _obj("b", 20, 100)]
    diff = diff_scenarios(
        base, prop, base_volumes={"a": 700.0, "b": 700.0}, proposal_volumes={"a": 1500.0}
    )
    by = {o.id: o for o in diff.objects}
    assert (by["a"].volume_before, by["a"].volume_after, by["a"].volume_method) == (
        700.0,
        1500.0,
        "solid",
    )
    # b has a measured volume on one side only: both sides fall back to prisms.
    assert (by["b"].volume_before, by["b"].volume_after, by["b"].volume_method) == (
        1000.0,
        2000.0,
        "prism",
    )


def test_float_noise_is_not_a_change_but_attributes_and_moves_are() -> None:
    base = [_obj("a", 10, 100), _obj("b", 10, 100), _obj("c", 10, 100, usage="home")]
    prop = [
        _obj("a", 10 + 1e-12, 100 * (1 + 1e-13)),
        _obj("b", 10, 100, x=3.0),
        _obj("c", 10, 100, usage="office"),
    ]
    diff = diff_scenarios(base, prop)
    assert diff.changed == ["b", "c"]
    by = {o.id: o for o in diff.objects}
    assert by["b"].fields == ("bbox",) and by["b"].volume_change == 0
    assert by["c"].fields == ("attributes",)


def test_objects_without_geometry_and_identical_scenarios() -> None:
    group = TwinObject("g", "CityObjectGroup")
    assert prism_volume(group) is None
    diff = diff_scenarios([group], [])
    assert diff.removed == ["g"]
    assert diff.objects[0].volume_method is None and diff.objects[0].volume_change == 0
    same = [_obj("a", 1, 2)]
    assert diff_scenarios(same, same).objects == []
    assert diff_scenarios([], []).totals["volume_change"] == 0


def test_prism_volume() -> None:
    assert prism_volume(_obj("a", 2.5, 40)) == pytest.approx(100.0)

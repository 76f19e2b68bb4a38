"""Alert rules: parsing, holding for a duration by event time, resolving, scoping."""

from __future__ import annotations

import pytest

from twin.alerts import RuleEngine, parse_rule
from twin.errors import TwinError
from twin.state import StateUpdate as U

TYPES = {"j1": "WaterJunction", "j2": "WaterJunction", "l1": "PowerLine"}


def test_parse_rules() -> None:
    r = parse_rule("low", "pressure < 2.0 for 5m")
    assert (r.property, r.condition.op, r.condition.value, r.hold) == ("pressure", "<", 2.0, 300)
    r = parse_rule("fault", 'status == "fault"')
    assert (r.property, r.condition.op, r.condition.value, r.hold) == ("status", "=", "fault", 0)
    assert parse_rule("hot", "loading_percent > 90").holds(95.5)
    assert not parse_rule("hot", "loading_percent > 90").holds("95")  # strings aren't numbers
    for bad in ("pressure <", "pressure < 2 for never", "geom.height > 3", "a > 1 b < 2"):
        with pytest.raises(TwinError, match="alert rule"):
            parse_rule("bad", bad)
    with pytest.raises(TwinError, match="severity"):
        parse_rule("x", "a > 1", severity="meh")


def test_fires_after_holding_and_resolves_when_clear() -> None:
    eng = RuleEngine([parse_rule("low", "pressure < 2 for 5m", types=["WaterJunction"])])
    assert eng.observe([U("j1", "pressure", 1.5, 0.0)], TYPES) == []
    assert eng.observe([U("j1", "pressure", 1.9, 240.0)], TYPES) == []
    (opened,) = eng.observe([U("j1", "pressure", 1.8, 300.0)], TYPES)
    assert (opened.state, opened.object_id, opened.value, opened.opened) == (
        "open",
        "j1",
        1.8,
        300.0,
    )
    assert eng.observe([U("j1", "pressure", 1.7, 360.0)], TYPES) == []  # still open: no news
    acked = opened.acknowledge("ann", 400.0)
    eng.acknowledged(acked)
    (resolved,) = eng.observe([U("j1", "pressure", 2.5, 420.0)], TYPES)
    assert resolved.id == opened.id and resolved.state == "resolved"
    assert resolved.acknowledged_by == "ann" and resolved.resolved_at == 420.0
    with pytest.raises(TwinError, match="resolved"):
        resolved.acknowledge("bob", 500.0)


def test_a_dip_shorter_than_the_hold_does_not_fire() -> None:
    eng = RuleEngine([parse_rule("low", "pressure < 2 for 5m")])
    assert (
        eng.observe([U("j2", "pressure", 1.0, 0.0), U("j2", "pressure", 3.0, 100.0)], TYPES) == []
    )
    assert eng.observe([U("j2", "pressure", 1.0, 200.0)], TYPES) == []
    assert eng.observe([U("j2", "pressure", 1.0, 450.0)], TYPES) == []  # 250 s since 200
    assert len(eng.observe([U("j2", "pressure", 1.0, 500.0)], TYPES)) == 1


def test_scoping_by_type_and_id() -> None:
    eng = RuleEngine(
        [
            parse_rule("hot", "loading_percent > 90", types=["PowerLine"]),
            parse_rule("j1only", "pressure < 2", ids=["j1"]),
        ]
    )
    out = eng.observe(
        [
            U("j1", "loading_percent", 99.0, 1.0),
            U("l1", "loading_percent", 99.0, 1.0),
            U("j2", "pressure", 1.0, 1.0),
            U("j1", "pressure", 1.0, 1.0),
        ],
        TYPES,
    )
    assert sorted((a.rule, a.object_id) for a in out) == [("hot", "l1"), ("j1only", "j1")]


def test_open_alerts_survive_a_restart() -> None:
    eng = RuleEngine([parse_rule("low", "pressure < 2")])
    (a,) = eng.observe([U("j1", "pressure", 1.0, 1.0)], TYPES)
    fresh = RuleEngine([parse_rule("low", "pressure < 2")])
    fresh.load_open([a])
    assert fresh.observe([U("j1", "pressure", 1.0, 2.0)], TYPES) == []  # not opened twice
    (r,) = fresh.observe([U("j1", "pressure", 5.0, 3.0)], TYPES)
    assert r.id == a.id and r.state == "resolved"

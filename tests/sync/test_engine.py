"""The sync engine: batched commits, ack only after commit, dead letters, events, alerts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sync.engine import SyncEngine
from sync.model import Message
from twin.alerts import RuleEngine, parse_rule
from twin.errors import TwinError
from twin.objects import TwinObject
from twin.state import ApplyResult, StateUpdate
from twin.store import MemoryStore, StateStore
from twin.store.sqlite import SqliteStore

T = 1_780_000_000.0  # event times in 2026 (the mapping refuses clocks before 1971)
OBJECTS = [TwinObject("j1", "WaterJunction"), TwinObject("j2", "WaterJunction")]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    s: StateStore = (
        MemoryStore() if request.param == "memory" else SqliteStore(f"sqlite:///{tmp_path}/e.db")
    )
    s.put_objects(OBJECTS)
    yield s
    s.close()


def _msg(payload: Any, *, feed: str = "test", topic: str = "", ack: Any = None) -> Message:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    m = Message(feed=feed, payload=data, topic=topic)
    if ack is not None:
        m.ack = ack
    return m


def _run(engine: SyncEngine, messages: list[Message]) -> None:
    engine.start()
    futures = [engine.submit_wait(m) for m in messages]
    for f in futures:
        f.result(timeout=10)
    engine.stop()


def test_values_are_committed_before_the_ack(store: StateStore) -> None:
    seen_at_ack: list[Any] = []
    events: list[dict[str, Any]] = []

    def ack() -> None:
        v = store.latest("j1").get("pressure")
        seen_at_ack.append(v.value if v else None)

    engine = SyncEngine(store, publish=events.append)
    batch = [
        {"id": "j1", "property": "pressure", "value": 2.5, "time": T + 100},
        {"id": "j2", "property": "pressure", "value": 3.0, "time": T + 100},
    ]
    _run(engine, [_msg(batch, ack=ack), _msg(b"4.5", topic="city/j1/flow")])
    assert seen_at_ack == [2.5]
    assert store.latest("j2")["pressure"].value == 3.0
    assert store.latest("j1")["flow"].value == 4.5
    assert store.latest("j1")["flow"].source == "test"
    ids = sorted((u["id"], u["property"]) for e in events for u in e["updates"])
    assert ids == [("j1", "flow"), ("j1", "pressure"), ("j2", "pressure")]


def test_refused_values_become_dead_letters_and_the_rest_lands(store: StateStore) -> None:
    engine = SyncEngine(store)
    acked = threading.Event()
    batch = [
        {"id": "j1", "property": "pressure", "value": 2.0, "time": T + 10},
        {"id": "nope", "property": "pressure", "value": 2.0, "time": T + 10},
    ]
    engine.start()
    r1 = engine.submit_wait(_msg(batch, ack=acked.set)).result(10)
    r2 = engine.submit_wait(_msg(b"{not json", feed="test")).result(10)
    r3 = engine.submit_wait(_msg(b"NaN", topic="city/j2/pressure")).result(10)
    engine.stop()
    assert acked.is_set()  # a message with a refused value is still handled: acked
    assert (r1.accepted, r1.rejected) == (1, 1) and "nope" in r1.reasons[0]
    assert r2.rejected == 1 and r3.rejected == 1
    dead = store.list_rejected("test")
    assert len(dead) == 3
    reasons = " | ".join(d.reason for d in dead)
    assert "nope" in reasons
    assert any(d.payload.startswith("{not json") for d in dead)
    assert store.latest("j1")["pressure"].value == 2.0 and "pressure" not in store.latest("j2")


def test_late_and_duplicate_messages(store: StateStore) -> None:
    events: list[dict[str, Any]] = []
    engine = SyncEngine(store, publish=events.append)
    new = {"id": "j1", "property": "pressure", "value": 3.0, "time": T + 200, "msg_id": "a"}
    old = {"id": "j1", "property": "pressure", "value": 1.0, "time": T + 100, "msg_id": "b"}
    _run(engine, [_msg([new]), _msg([old]), _msg([new]), _msg([old])])
    assert store.latest("j1")["pressure"].value == 3.0
    assert [p.value for p in store.history("j1", "pressure")] == [1.0, 3.0]
    # Only the new latest value is news for viewers.
    assert [u["value"] for e in events for u in e["updates"]] == [3.0]


def test_store_failure_acks_nothing(tmp_path: Path) -> None:
    class Failing(MemoryStore):
        def apply_updates(self, updates: Any) -> ApplyResult:
            raise TwinError("disk full")

    store = Failing()
    store.put_objects(OBJECTS)
    acked = threading.Event()
    engine = SyncEngine(store)
    engine.start()
    fut = engine.submit_wait(
        _msg([{"id": "j1", "property": "p", "value": 1, "time": T + 1}], ack=acked.set)
    )
    with pytest.raises(TwinError, match="disk full"):
        fut.result(10)
    engine.stop()
    assert not acked.is_set()
    assert engine.status()["last_error"] and "disk full" in engine.status()["last_error"]


def test_alert_opens_resolves_and_is_published(store: StateStore) -> None:
    events: list[dict[str, Any]] = []
    rules = RuleEngine([parse_rule("low", "pressure < 2 for 5m", types=["WaterJunction"])])
    engine = SyncEngine(store, rules=rules, publish=events.append)
    series = [(0, 1.5), (200, 1.4), (300, 1.3), (400, 2.6)]
    _run(
        engine,
        [
            _msg([{"id": "j1", "property": "pressure", "value": v, "time": T + t}])
            for t, v in series
        ],
    )
    alerts = store.list_alerts()
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.state, a.object_id, a.opened, a.resolved_at) == ("resolved", "j1", T + 300, T + 400)
    kinds = [e["alert"]["state"] for e in events if e["kind"] == "alert"]
    assert kinds == ["open", "resolved"]


def test_many_messages_are_batched(store: StateStore) -> None:
    engine = SyncEngine(store, max_delay=0.05)
    msgs = [
        _msg([{"id": f"j{1 + k % 2}", "property": "n", "value": k, "time": T + k}])
        for k in range(500)
    ]
    engine.start()
    for m in msgs:
        engine.submit(m)
    engine.stop()
    st = engine.status()
    assert st["messages"] == 500 and st["updates"] == 500
    assert st["batches"] < 500  # several messages per transaction
    assert len(store.history("j1", "n")) == 250
    assert store.latest("j2")["n"] == pytest.approx(store.latest("j2")["n"])
    assert store.latest("j2")["n"].value == 499


def test_state_updates_are_applied_like_the_store(store: StateStore) -> None:
    """The engine adds nothing to the store's semantics: same latest values."""
    ref = MemoryStore()
    ref.put_objects(OBJECTS)
    rows = [
        {"id": "j1", "property": "q", "value": v, "time": T + t}
        for t, v in [(5, 1), (3, 2), (9, 3)]
    ]
    ref.apply_updates([StateUpdate("j1", "q", r["value"], r["time"], "test") for r in rows])
    _run(SyncEngine(store), [_msg(rows)])
    assert store.latest("j1") == ref.latest("j1")

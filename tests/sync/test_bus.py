"""Event buses against the real NATS and Redis: two workers' buses, order, gaps, URLs."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable

import orjson
import pytest
from conftest import need

from sync.bus import (
    DEFAULT_SUBJECT,
    RESYNC,
    InProcessBus,
    NatsBus,
    RedisBus,
    Subscription,
    _payloads,
    open_bus,
)
from sync.model import ChangeEvent, EventBus
from twin.errors import TwinError

N_EVENTS = 1_000


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _nats_url() -> str:
    if not _reachable(4222):
        need("NATS is not running on 127.0.0.1:4222")
    return f"nats://127.0.0.1:4222/t{uuid.uuid4().hex}"


def _redis_url() -> str:
    if not _reachable(6379):
        need("Redis is not running on 127.0.0.1:6379")
    return f"redis://127.0.0.1:6379/0?channel=t{uuid.uuid4().hex}"


BROKERS: dict[str, Callable[[], str]] = {"nats": _nats_url, "redis": _redis_url}


def _event(i: int) -> ChangeEvent:
    return {
        "kind": "state",
        "updates": [{"id": f"b{i % 7}", "property": "p", "value": i, "time": float(i)}],
    }


async def _collect(sub: Subscription, n: int) -> list[ChangeEvent]:
    out: list[ChangeEvent] = []
    async for event in sub:
        out.append(event)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_event_published_by_one_worker_reaches_the_other_in_order(broker: str) -> None:
    url = BROKERS[broker]()

    async def run() -> tuple[list[ChangeEvent], list[ChangeEvent]]:
        worker_a, worker_b = open_bus(url), open_bus(url)
        assert isinstance(worker_a, EventBus)
        try:
            sub_b = worker_b.subscribe()
            sub_a = worker_a.subscribe()  # the publisher's own process hears it too
            assert isinstance(sub_a, Subscription) and isinstance(sub_b, Subscription)
            await sub_b.start()
            await sub_a.start()
            got_b = asyncio.create_task(_collect(sub_b, N_EVENTS))
            got_a = asyncio.create_task(_collect(sub_a, N_EVENTS))
            for i in range(N_EVENTS):
                await worker_a.publish(_event(i))
            return await asyncio.wait_for(asyncio.gather(got_b, got_a), 30)
        finally:
            await worker_a.close()
            await worker_b.close()

    received_b, received_a = asyncio.run(run())
    assert [e["updates"][0]["value"] for e in received_b] == list(range(N_EVENTS))
    assert received_b[0] == _event(0) and received_b[-1] == _event(N_EVENTS - 1)
    assert received_a == received_b


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_subjects_do_not_cross_and_close_ends_the_iteration(broker: str) -> None:
    url, other = BROKERS[broker](), BROKERS[broker]()

    async def run() -> tuple[list[ChangeEvent], list[ChangeEvent]]:
        mine, theirs = open_bus(url), open_bus(other)
        try:
            sub = mine.subscribe()
            assert isinstance(sub, Subscription)
            await sub.start()
            await theirs.publish({"kind": "alert", "alert": {"n": "elsewhere"}})
            await mine.publish({"kind": "alert", "alert": {"n": "here"}})
            first = await asyncio.wait_for(_collect(sub, 1), 10)
            await mine.close()  # releases the subscription: iteration ends
            rest = await asyncio.wait_for(_collect(sub, 10), 10)
            return first, rest
        finally:
            await mine.close()
            await theirs.close()

    first, rest = asyncio.run(run())
    assert first == [{"kind": "alert", "alert": {"n": "here"}}]
    assert rest == []


def test_events_before_the_subscription_are_not_delivered() -> None:
    url = _nats_url()

    async def run() -> list[ChangeEvent]:
        bus = open_bus(url)
        try:
            await bus.publish({"kind": "alert", "n": 0})
            sub = bus.subscribe()
            assert isinstance(sub, Subscription)
            await sub.start()
            await bus.publish({"kind": "alert", "n": 1})
            return await asyncio.wait_for(_collect(sub, 1), 10)
        finally:
            await bus.close()

    assert asyncio.run(run()) == [{"kind": "alert", "n": 1}]


def test_in_process_bus_delivers_in_order_to_every_subscriber() -> None:
    async def run() -> tuple[list[ChangeEvent], list[ChangeEvent]]:
        bus = InProcessBus()
        one, two = bus.subscribe(), bus.subscribe()
        await one.start()
        await two.start()
        for i in range(N_EVENTS):
            await bus.publish(_event(i))
        a, b = await asyncio.gather(_collect(one, N_EVENTS), _collect(two, N_EVENTS))
        await bus.close()
        return a, b

    a, b = asyncio.run(run())
    assert [e["updates"][0]["value"] for e in a] == list(range(N_EVENTS))
    assert a == b


def test_a_slow_subscriber_gets_a_resync_marker_instead_of_unbounded_memory() -> None:
    async def run() -> tuple[list[ChangeEvent], list[ChangeEvent], int]:
        bus = InProcessBus(maxsize=10)
        slow, fast = bus.subscribe(), bus.subscribe()
        await slow.start()
        await fast.start()
        fast_got: list[ChangeEvent] = []
        for i in range(25):
            await bus.publish(_event(i))
            fast_got.append(await fast.__anext__())
        got = []
        while not slow._queue.empty():
            got.append(await slow.__anext__())
        await bus.close()
        return got, fast_got, slow.lost

    slow_got, fast_got, lost = asyncio.run(run())
    assert [e["updates"][0]["value"] for e in fast_got] == list(range(25))  # not affected
    # 0..9 queued; 10 overflows: 0..10 make way for a marker; 11..19 queue behind it;
    # 20 overflows again: one marker for all 21 lost events, then 21..24.
    assert slow_got[0] == {
        "kind": RESYNC,
        "reason": "subscriber fell behind: 21 events lost",
        "lost": 21,
    }
    assert lost == 21
    assert [e["updates"][0]["value"] for e in slow_got[1:]] == [21, 22, 23, 24]


def test_nats_reconnect_marks_a_gap() -> None:
    url = _nats_url()

    async def run() -> ChangeEvent:
        bus = NatsBus(url)
        try:
            sub = bus.subscribe()
            await sub.start()
            nc = await bus._connection()
            # What nats-py calls after it re-established a dropped connection.
            await nc._reconnected_cb()  # type: ignore[misc]
            return await asyncio.wait_for(sub.__anext__(), 5)
        finally:
            await bus.close()

    event = asyncio.run(run())
    assert event["kind"] == RESYNC and "NATS" in event["reason"]


def test_a_non_json_message_on_the_subject_is_skipped() -> None:
    url = _nats_url()

    async def run() -> list[ChangeEvent]:
        bus = NatsBus(url)
        try:
            sub = bus.subscribe()
            await sub.start()
            nc = await bus._connection()
            await nc.publish(bus.subject, b"not json")
            await nc.publish(bus.subject, b"[1, 2]")
            await bus.publish({"kind": "alert", "ok": True})
            return await asyncio.wait_for(_collect(sub, 1), 10)
        finally:
            await bus.close()

    assert asyncio.run(run()) == [{"kind": "alert", "ok": True}]


def test_unreachable_broker_is_a_clear_error() -> None:
    async def run(url: str) -> None:
        bus = NatsBus(url, connect_timeout=0.5) if url.startswith("nats") else open_bus(url)
        try:
            await bus.publish({"kind": "alert"})
        finally:
            await bus.close()

    with pytest.raises(TwinError, match="NATS"):
        asyncio.run(run("nats://127.0.0.1:1/x"))
    with pytest.raises(TwinError, match="Redis"):
        asyncio.run(run("redis://127.0.0.1:1/0"))


def test_bus_urls() -> None:
    assert isinstance(open_bus("memory://"), InProcessBus)
    nats_bus = open_bus("nats://127.0.0.1:4222")
    assert isinstance(nats_bus, NatsBus) and nats_bus.subject == DEFAULT_SUBJECT
    nats_bus = open_bus("nats://u:p@127.0.0.1:4222/city/one")
    assert isinstance(nats_bus, NatsBus)
    assert nats_bus.subject == "city.one.events"
    assert nats_bus.server == "nats://u:p@127.0.0.1:4222"
    nats_bus = open_bus("nats://127.0.0.1:4222?subject=a.b")
    assert isinstance(nats_bus, NatsBus) and nats_bus.subject == "a.b"
    redis_bus = open_bus("redis://127.0.0.1:6379/2?channel=x.y&health_check_interval=5")
    assert isinstance(redis_bus, RedisBus) and redis_bus.channel == "x.y"
    assert redis_bus.server == "redis://127.0.0.1:6379/2?health_check_interval=5"
    redis_bus = open_bus("redis://127.0.0.1:6379/0")
    assert isinstance(redis_bus, RedisBus) and redis_bus.channel == DEFAULT_SUBJECT
    with pytest.raises(TwinError, match="subject"):
        open_bus("nats://127.0.0.1:4222?subject=city.*")
    with pytest.raises(TwinError, match="unknown event bus"):
        open_bus("kafka://127.0.0.1:9092")


def test_big_state_events_are_split_under_the_payload_limit() -> None:
    event = {
        "kind": "state",
        "updates": [{"id": f"b{i}", "property": "p", "value": i} for i in range(100)],
    }
    parts = [orjson.loads(p) for p in _payloads(event, 1000)]
    assert len(parts) > 1 and all(len(orjson.dumps(p)) <= 1000 for p in parts)
    assert [u for p in parts for u in p["updates"]] == event["updates"]
    assert _payloads({"kind": "alert"}, 1000) == [b'{"kind":"alert"}']

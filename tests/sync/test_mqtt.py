"""MQTT feed against real Mosquitto: QoS 1, ack after commit, persistent session, reconnect."""

from __future__ import annotations

import contextlib
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from brokers import HOST, Broker, free_port, port_open, wait_until
from conftest import need
from paho.mqtt.enums import CallbackAPIVersion

from sync.feeds import Feed, MqttSettings, default_client_id, open_feed, parse_feed_url
from sync.model import Message
from sync.mqtt import MqttFeed
from twin.errors import FeedError, MissingExtra

PORT = 1883


class Collector:
    """Gathers messages from the network thread; optionally acks them itself."""

    def __init__(self, *, auto_ack: bool = False) -> None:
        self.messages: list[Message] = []
        self.auto_ack = auto_ack
        self._cond = threading.Condition()

    def __call__(self, m: Message) -> None:
        with self._cond:
            self.messages.append(m)
            self._cond.notify_all()
        if self.auto_ack:
            m.ack()

    def wait_for(self, n: int, timeout: float = 15.0) -> list[Message]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= n, timeout)
            return list(self.messages)

    def payloads(self) -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.messages]


def publish(topic: str, payloads: list[bytes], port: int = PORT) -> None:
    """Publish with QoS 1 and wait for each PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect(HOST, port)
    client.loop_start()
    try:
        for p in payloads:
            client.publish(topic, p, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def forget_session(client_id: str, port: int = PORT) -> None:
    """Drop the broker's session for a client id (CleanSession=1, MQTT 3.1.1 §3.1.2.4)."""
    if not port_open(port):
        return
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    client.connect(HOST, port)
    client.loop_start()
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def broker() -> int:
    if not port_open(PORT):
        need(f"Mosquitto is not reachable on {HOST}:{PORT}")
    return PORT


@pytest.fixture
def base() -> str:
    return f"citytwin-test/{uuid.uuid4().hex}"


@pytest.fixture
def feeds() -> Iterator[list[MqttFeed]]:
    """Feeds a test made: stopped, and their broker sessions dropped, at the end."""
    made: list[MqttFeed] = []
    yield made
    for f in made:
        f.stop()
    for cid in {f.client_id for f in made}:
        forget_session(cid, made[0].settings.port)


def make_feed(made: list[MqttFeed], url: str, name: str, drain_s: float = 2.0) -> MqttFeed:
    feed = MqttFeed.from_url(url, name=name or None)
    feed = MqttFeed(feed.settings, name=feed.name, url=url, drain_s=drain_s)
    made.append(feed)
    return feed


# -- against the system broker ---------------------------------------------------------


@pytest.mark.mqtt
def test_qos1_messages_arrive_with_topic_and_payload(
    broker: int, base: str, feeds: list[MqttFeed]
) -> None:
    feed = make_feed(feeds, f"mqtt://{HOST}:{broker}/{base}/+/pressure", name=f"a-{base}")
    assert isinstance(feed, Feed)
    got = Collector()
    feed.start(got)
    assert feed.wait_ready(15)
    assert feed.status().connected
    publish(f"{base}/j1/pressure", [b'{"v": 3.5}'])
    publish(f"{base}/j1/flow", [b"not for us"])
    publish(f"{base}/j2/pressure", [b"\x00\xffbinary"])
    msgs = got.wait_for(2)
    assert [(m.topic, m.payload) for m in msgs] == [
        (f"{base}/j1/pressure", b'{"v": 3.5}'),
        (f"{base}/j2/pressure", b"\x00\xffbinary"),
    ]
    assert all(m.feed == f"a-{base}" and m.received > 0 for m in msgs)
    s = feed.status()
    assert (s.received, s.acked, s.pending) == (2, 0, 2)
    # Acks may come from another thread (the engine's), and twice.

    def ack_twice() -> None:
        for m in msgs:
            m.ack()
            m.ack()

    t = threading.Thread(target=ack_twice)
    t.start()
    t.join()
    s = feed.status()
    assert (s.received, s.acked, s.pending) == (2, 2, 0)
    assert s.kind == "mqtt" and s.reconnects == 0 and s.last_error is None
    assert s.rate_per_s > 0 and s.lag_s is not None
    feed.stop()
    feed.stop()
    assert not feed.status().connected


@pytest.mark.mqtt
def test_unacked_messages_are_redelivered_to_the_same_client_id(
    broker: int, base: str, feeds: list[MqttFeed]
) -> None:
    url = f"mqtt://{HOST}:{broker}/{base}/%23"
    name = f"b-{base}"
    first = make_feed(feeds, url, name=name, drain_s=0.2)
    got1 = Collector()
    first.start(got1)
    assert first.wait_ready(15)
    sent = [f"m{i}".encode() for i in range(5)]
    publish(f"{base}/x", sent)
    msgs = got1.wait_for(5)
    assert [m.payload for m in msgs] == sent
    # The engine committed m0, m1 and m3 -- but m2 not: PUBACKs go in arrival order
    # (MQTT 3.1.1 §4.6), so m3's waits behind m2's and both stay in the session.
    for i in (0, 1, 3):
        msgs[i].ack()
    first.stop()  # waits drain_s for m2's ack, in vain

    second = make_feed(feeds, url, name=name)  # same name + topic -> same client id
    assert second.client_id == first.client_id
    got2 = Collector(auto_ack=True)
    second.start(got2)
    assert second.wait_ready(15)
    got2.wait_for(3)
    publish(f"{base}/x", [b"sentinel"])
    got2.wait_for(4)
    assert got2.payloads() == [b"m2", b"m3", b"m4", b"sentinel"]
    assert second.status().acked == 4
    second.stop()

    # All acked now: a third start gets nothing but what is new.
    third = make_feed(feeds, url, name=name)
    got3 = Collector(auto_ack=True)
    third.start(got3)
    assert third.wait_ready(15)
    publish(f"{base}/x", [b"last"])
    got3.wait_for(1)
    assert got3.payloads() == [b"last"]


@pytest.mark.mqtt
def test_stop_waits_for_the_acks_of_delivered_messages(
    broker: int, base: str, feeds: list[MqttFeed]
) -> None:
    url = f"mqtt://{HOST}:{broker}/{base}/t?name=drain-{base[-12:]}"
    first = make_feed(feeds, url, name="", drain_s=10.0)
    assert first.name == f"drain-{base[-12:]}"
    got = Collector()
    first.start(got)
    assert first.wait_ready(15)
    publish(f"{base}/t", [b"a", b"b", b"c"])
    msgs = got.wait_for(3)
    assert [m.payload for m in msgs] == [b"a", b"b", b"c"]

    def slow_commit() -> None:
        time.sleep(0.3)
        for m in msgs:
            m.ack()

    engine = threading.Thread(target=slow_commit)
    engine.start()
    first.stop()  # returns once all three are acked, before disconnecting
    engine.join()
    assert first.status().acked == 3

    second = make_feed(feeds, url, name="")
    assert second.client_id == first.client_id
    got2 = Collector(auto_ack=True)
    second.start(got2)
    assert second.wait_ready(15)
    publish(f"{base}/t", [b"sentinel"])
    got2.wait_for(1)
    assert got2.payloads() == [b"sentinel"]  # nothing came again


@pytest.mark.mqtt
def test_messages_published_while_stopped_arrive_on_restart(
    broker: int, base: str, feeds: list[MqttFeed]
) -> None:
    url = f"mqtt://{HOST}:{broker}/{base}/+?client_id=ct-{base[-20:]}"
    first = make_feed(feeds, url, name="c")
    assert first.client_id == f"ct-{base[-20:]}"
    first.start(Collector(auto_ack=True))
    assert first.wait_ready(15)
    first.stop()
    sent = [f"offline-{i}".encode() for i in range(10)]
    publish(f"{base}/s", sent)  # the session queues them (QoS 1, CleanSession=0)

    second = make_feed(feeds, url, name="c")
    got = Collector(auto_ack=True)
    second.start(got)
    got.wait_for(10)
    assert got.payloads() == sent
    assert {m.topic for m in got.messages} == {f"{base}/s"}


@pytest.mark.mqtt
def test_clean_session_forgets_what_was_queued(
    broker: int, base: str, feeds: list[MqttFeed]
) -> None:
    url = f"mqtt://{HOST}:{broker}/{base}/t?clean=1"
    first = make_feed(feeds, url, name=f"d-{base}")
    assert first.settings.clean
    first.start(Collector())
    assert first.wait_ready(15)
    first.stop()
    publish(f"{base}/t", [b"lost"])  # no session, so nobody keeps it
    second = make_feed(feeds, url, name=f"d-{base}")
    got = Collector(auto_ack=True)
    second.start(got)
    assert second.wait_ready(15)
    publish(f"{base}/t", [b"kept"])
    got.wait_for(1)
    assert got.payloads() == [b"kept"]


# -- a broker of our own, killed and restarted -----------------------------------------


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    if shutil.which("mosquitto") is None:
        need("the mosquitto binary is not installed")
    b = Broker(tmp_path, free_port())
    yield b
    b.stop()


@pytest.mark.mqtt
def test_feed_rides_out_a_broker_restart(own_broker: Broker) -> None:
    topic = f"restart/{uuid.uuid4().hex}"
    feed = MqttFeed.from_url(f"mqtt://{HOST}:{own_broker.port}/{topic}", name="restart")
    feed = MqttFeed(feed.settings, name="restart", backoff=(1, 2))

    # The engine's thread: "commits" each message a little later, then acks it, so
    # some are always in flight (received, not acked) when the broker goes away.
    got = Collector()
    committed: list[bytes] = []
    inbox: queue.Queue[Message] = queue.Queue()
    done = threading.Event()
    running = threading.Event()
    running.set()

    def on_message(m: Message) -> None:
        got(m)
        inbox.put(m)

    def engine() -> None:
        while not done.is_set():
            try:
                m = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            running.wait()
            time.sleep(0.01)
            committed.append(m.payload)
            m.ack()

    engine_thread = threading.Thread(target=engine, daemon=True)
    engine_thread.start()
    # The broker is down when the feed starts: it keeps trying.
    feed.start(on_message)
    try:
        assert wait_until(lambda: feed.status().last_error is not None, 10)
        assert "cannot connect" in str(feed.status().last_error)
        assert not feed.status().connected
        own_broker.start()
        assert feed.wait_ready(20)
        assert feed.status().connected and feed.status().reconnects == 0

        # A publisher with its own reconnect; "confirmed" = it got the PUBACK.
        pub = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"pub-{uuid.uuid4().hex[:12]}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        pub.reconnect_delay_set(1, 2)
        pub.connect(HOST, own_broker.port)
        pub.loop_start()
        confirmed: list[bytes] = []
        total = 150
        kill_at = 60
        for i in range(total):
            if i == kill_at - 10:
                running.clear()  # a slow commit: what arrives now stays unacked
            if i == kill_at:
                assert wait_until(lambda: feed.status().pending >= 5, 10)
                in_flight = [m.payload for m in got.messages if int(m.payload[1:]) >= i - 10]
                own_broker.stop()
                assert wait_until(lambda: not feed.status().connected, 10)
                own_broker.start()
                # Their acks now belong to a closed connection and are not sent.
                running.set()
            # The publisher's own reconnect (paho's backoff) brings it back.
            assert wait_until(pub.is_connected, 20)
            payload = f"n{i}".encode()
            info = pub.publish(topic, payload, qos=1)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(5)
                if info.is_published():
                    confirmed.append(payload)
            time.sleep(0.005)
        pub.disconnect()
        pub.loop_stop()

        assert len([p for p in confirmed if int(p[1:]) >= kill_at]) > 0
        assert len(confirmed) >= total // 2

        def missing() -> set[bytes]:
            return set(confirmed) - set(got.payloads())

        assert wait_until(lambda: not missing(), 30), f"never received: {sorted(missing())}"
        assert wait_until(lambda: set(committed) >= set(confirmed), 10)
        # What was in flight at the kill came again: the broker kept it on disk.
        assert in_flight
        assert wait_until(lambda: all(got.payloads().count(p) >= 2 for p in in_flight), 10)
        s = feed.status()
        assert s.reconnects >= 1 and s.connected
        # "disconnected: ...", or "cannot connect" if it retried before the broker was up.
        assert s.last_error is not None
        assert s.last_error.startswith(("disconnected", "cannot connect"))
    finally:
        done.set()
        engine_thread.join(5)
        feed.stop()


# -- URLs (no broker) ------------------------------------------------------------------


def test_mqtt_urls() -> None:
    s = parse_feed_url("mqtt://127.0.0.1:1883/city/#", name="city")
    assert s == MqttSettings(
        host="127.0.0.1", port=1883, topic="city/#", client_id=default_client_id("city", "city/#")
    )
    same = parse_feed_url("mqtt://127.0.0.1/city/%23", name="city")
    assert isinstance(same, MqttSettings) and same.client_id == s.client_id
    assert len(s.client_id) <= 23  # MQTT 3.1.1 §3.1.3.1
    s = parse_feed_url(
        "mqtts://alice:p%40ss@broker.example:8884/a/+/b/%23?qos=0&client_id=me&clean=true"
        "&keepalive=30"
    )
    assert s == MqttSettings(
        host="broker.example",
        port=8884,
        topic="a/+/b/#",
        qos=0,
        client_id="me",
        clean=True,
        username="alice",
        password="p@ss",
        tls=True,
        keepalive=30,
    )
    assert isinstance(parse_feed_url("mqtts://h/t"), MqttSettings)
    assert parse_feed_url("mqtts://h/t").port == 8883  # type: ignore[union-attr]
    feed = open_feed("mqtt://bob:secret@127.0.0.1:1/x/y")
    assert isinstance(feed, MqttFeed)
    assert "secret" not in feed.name and "secret" not in feed.status().url
    assert feed.status().url == "mqtt://bob:***@127.0.0.1:1/x/y"
    assert feed.status().connected is False
    feed.stop()  # never started: nothing to do
    named = open_feed("mqtt://h/a/%23?name=water&qos=1")
    assert named.name == "water"
    assert isinstance(named, MqttFeed)
    assert named.client_id == default_client_id("water", "a/#")
    assert open_feed("mqtt://h/a/%23?name=water", name="given").name == "given"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mqtt://127.0.0.1:1883/", "no topic filter"),
        ("mqtt://127.0.0.1:1883", "no topic filter"),
        ("mqtt:///city/#", "no broker host"),
        ("mqtt://h:99999/t", "bad port"),
        ("mqtt://h:x/t", "bad port"),
        ("mqtt://h/a/#/b", "'#' must be a whole last level"),
        ("mqtt://h/a/b#", "'#' must be a whole last level"),
        ("mqtt://h/a/b+/c", "'+' must be a whole level"),
        ("mqtt://h/t?qos=2", "qos must be 0 or 1"),
        ("mqtt://h/t?clean=sometimes", "not a boolean"),
        ("mqtt://h/t?keepalive=0", "keepalive"),
        ("mqtt://h/t?retain=1", "unknown option 'retain'"),
        ("mqtt:h/t", "expected mqtt://"),
    ],
)
def test_bad_mqtt_urls_raise_feed_error(url: str, needle: str) -> None:
    with pytest.raises(FeedError) as exc:
        open_feed(url)
    assert needle in str(exc.value)


def test_password_never_appears_in_errors() -> None:
    with pytest.raises(FeedError) as exc:
        open_feed("mqtt://u:hunter2@h/a/#/b")
    assert "hunter2" not in str(exc.value)


def test_missing_paho_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # import now fails
    feed = MqttFeed.from_url("mqtt://127.0.0.1:1/t", name="x")  # parsing needs no paho
    with pytest.raises(MissingExtra) as exc:
        feed.start(Collector())
    assert exc.value.extra == "mqtt" and "citytwin[mqtt]" in str(exc.value)
    assert not feed.status().connected


def test_stop_while_the_broker_is_unreachable_and_start_again() -> None:
    feed = MqttFeed.from_url(f"mqtt://{HOST}:{free_port()}/t", name="down")
    feed = MqttFeed(feed.settings, name="down", backoff=(1, 1))
    feed.start(Collector())
    with pytest.raises(FeedError, match="already started"):
        feed.start(Collector())
    assert wait_until(lambda: feed.status().last_error is not None, 10)
    s = feed.status()
    assert not s.connected and s.received == 0
    assert s.last_error == f"cannot connect to {HOST}:{feed.settings.port}"
    feed.stop()
    feed.start(Collector())  # a stopped feed can start again
    feed.stop()
    feed.stop()
    assert not feed.status().connected

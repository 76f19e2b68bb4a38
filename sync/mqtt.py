"""MQTT feed: a QoS 1 subscription in a persistent session, acked only after commit.

Delivery is at-least-once end to end (MQTT 3.1.1 §4.3.2): the PUBACK for a message is sent
only when the engine calls ``Message.ack()`` after committing it, so a message received but
not committed (crash, stop, lost connection) stays in the broker's session for this client
id (CleanSession=0, §3.1.2.4) and is sent again on the next connection (§4.4).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sync.feeds import FeedCounters, FeedStatus, MqttSettings, feed_name, parse_feed_url, redact_url
from sync.model import Message
from twin.errors import FeedError, MissingExtra

if TYPE_CHECKING:
    import paho.mqtt.client as paho

__all__ = ["MqttFeed"]

log = logging.getLogger(__name__)


def _paho() -> Any:
    """Import paho-mqtt late, so the core runs without the ``mqtt`` extra."""
    try:
        import paho.mqtt.client as client_module
    except ImportError as exc:
        raise MissingExtra("paho.mqtt", "mqtt") from exc
    return client_module


@dataclass(slots=True)
class _Delivery:
    """One QoS 1 PUBLISH awaiting its ack, on the connection it arrived on."""

    mid: int
    generation: int
    done: bool = False


class MqttFeed:
    """A :class:`sync.feeds.Feed` over one MQTT subscription (paho-mqtt 2, MQTT 3.1.1).

    The network thread (paho's ``loop_start``) calls ``on_message`` in arrival order,
    reconnects with exponential backoff and subscribes again after every connection.
    ``Message.ack`` may be called from any thread, any number of times.

    Args:
        settings: what the URL says (see :func:`sync.feeds.parse_feed_url`).
        name: the feed name put into ``Message.feed``; defaults to ``url``.
        url: the URL the feed came from, shown (without password) in its status.
        backoff: first and longest wait between connection attempts, in whole seconds.
        drain_s: how long :meth:`stop` waits for the acks of messages already delivered
            before it disconnects (later acks cannot reach the broker, which then sends
            those messages again to the next feed with this client id).
    """

    kind = "mqtt"

    def __init__(
        self,
        settings: MqttSettings,
        *,
        name: str | None = None,
        url: str | None = None,
        backoff: tuple[int, int] = (1, 30),
        drain_s: float = 2.0,
    ) -> None:
        self.settings = settings
        shown = url or f"mqtt://{settings.host}:{settings.port}/{settings.topic}"
        self.name = name or shown
        self.backoff = backoff
        self.drain_s = drain_s
        self._counters = FeedCounters(self.name, shown, self.kind)
        self._lock = threading.Lock()
        self._acks_done = threading.Condition(self._lock)
        self._ready = threading.Event()
        # Bumped on every connect and disconnect: an ack for a message of an earlier
        # connection must not be sent on this one, where its packet id may name another
        # message (§2.3.1); the broker resends that message instead (§4.4).
        self._generation = 0
        self._unacked: deque[_Delivery] = deque()
        self._client: paho.Client | None = None
        self._on_message: Callable[[Message], None] | None = None
        self._ever_connected = False
        self._stopping = False
        self._draining = False

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> MqttFeed:
        """Build a feed from an ``mqtt://`` URL.

        Args:
            url: ``mqtt://[user:password@]host[:port]/topic[?qos=1&client_id=...]``.
            name: the feed name; defaults to :func:`sync.feeds.feed_name` of the URL.

        Returns:
            The feed, not started.

        Raises:
            FeedError: the URL is not an MQTT feed URL.
        """
        name = feed_name(url, name)
        settings = parse_feed_url(url, name=name)
        if not isinstance(settings, MqttSettings):
            raise FeedError(f"not an MQTT feed URL: {redact_url(url)!r}")
        return cls(settings, name=name, url=url)

    @property
    def client_id(self) -> str:
        """The MQTT client identifier (the broker keys the persistent session by it)."""
        return self.settings.client_id

    def start(self, on_message: Callable[[Message], None]) -> None:
        """Connect in the background and deliver messages to ``on_message``.

        Returns at once; a broker that is down is retried with backoff.

        Args:
            on_message: called from the network thread, in arrival order.

        Raises:
            MissingExtra: paho-mqtt is not installed.
            FeedError: the feed is already running.
        """
        mqtt = _paho()
        if self._client is not None:
            raise FeedError(f"feed {self.name!r} is already started")
        s = self.settings
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            clean_session=s.clean,
            protocol=mqtt.MQTTv311,
            # PUBACK only through Message.ack(), after the commit (§4.3.2).
            manual_ack=True,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=self.backoff[0], max_delay=self.backoff[1])
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_subscribe = self._handle_subscribe
        client.on_message = self._handle_message
        self._on_message = on_message
        self._stopping = False
        self._draining = False
        self._client = client
        client.connect_async(s.host, s.port, keepalive=s.keepalive)
        client.loop_start()

    def stop(self) -> None:
        """Stop delivering, wait up to ``drain_s`` for pending acks, then disconnect.

        The session stays on the broker: messages not acked by then (and any that arrive
        meanwhile, which are no longer delivered) are sent again to the next feed with
        this client id. Idempotent; returns within a few seconds even while the broker is
        unreachable.
        """
        client = self._client
        if client is None:
            return
        with self._lock:
            self._draining = True
            # Let the engine commit and ack what it already has, so a clean shutdown
            # does not leave duplicates for the next start.
            self._acks_done.wait_for(lambda: not self._unacked, timeout=self.drain_s)
            self._stopping = True
            self._generation += 1
            self._unacked.clear()
        client.disconnect()
        client.loop_stop()
        self._client = None
        self._ready.clear()
        self._counters.connected = False

    def status(self) -> FeedStatus:
        """Return a snapshot of the feed's health."""
        return self._counters.snapshot()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected and subscribed (SUBACK received).

        Args:
            timeout: seconds to wait at most.

        Returns:
            True when the subscription is in place.
        """
        return self._ready.wait(timeout)

    # -- paho callbacks (network thread) -------------------------------------------

    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._counters.last_error = f"connection refused: {reason}"
            log.warning("feed %s: broker refused the connection: %s", self.name, reason)
            return
        with self._lock:
            self._generation += 1
            self._unacked.clear()
            if self._ever_connected:
                self._counters.reconnects += 1
            self._ever_connected = True
        self._counters.connected = True
        # Subscribe after every connection, even when the session is present
        # (flags.session_present, §3.2.2.2): the broker may have lost the session, and a
        # repeated SUBSCRIBE only replaces the same subscription (§3.8.4).
        client.subscribe(self.settings.topic, qos=self.settings.qos)

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        s = self.settings
        self._counters.last_error = f"cannot connect to {s.host}:{s.port}"

    def _handle_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[Any],
        properties: Any,
    ) -> None:
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            # SUBACK return code 0x80 (§3.9.3): the broker refused the topic filter.
            self._counters.last_error = f"subscription to {self.settings.topic!r} refused"
            log.error("feed %s: subscription refused: %s", self.name, failed)
            return
        self._ready.set()

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            self._generation += 1
            self._unacked.clear()
            self._acks_done.notify_all()
            stopping = self._stopping
        self._counters.connected = False
        self._ready.clear()
        if not stopping:
            self._counters.last_error = f"disconnected: {reason}"
            log.warning("feed %s: disconnected (%s), reconnecting", self.name, reason)

    def _handle_message(self, client: paho.Client, userdata: Any, msg: Any) -> None:
        delivery: _Delivery | None = None
        with self._lock:
            if self._draining:
                # Stopping: not delivered and never acked, so the session keeps it.
                return
            if msg.qos > 0:
                delivery = _Delivery(msg.mid, self._generation)
                self._unacked.append(delivery)
        received = self._counters.received()
        message = Message(
            feed=self.name,
            payload=bytes(msg.payload),
            topic=msg.topic,
            received=received,
            ack=self._acker(delivery),
        )
        callback = self._on_message
        if callback is None:
            return
        try:
            callback(message)
        except Exception as exc:
            # The network thread must survive a failing callback.
            # Not acked, so the broker sends it again after the next reconnect.
            self._counters.last_error = f"on_message failed: {exc!r}"
            log.exception("feed %s: on_message failed", self.name)

    # -- acks (any thread) ---------------------------------------------------------

    def _acker(self, delivery: _Delivery | None) -> Callable[[], None]:
        state = {"acked": False}

        def ack() -> None:
            with self._lock:
                if state["acked"]:
                    return
                state["acked"] = True
                self._counters.acked()
                if delivery is not None:
                    delivery.done = True
                    self._flush_acks()

        return ack

    def _flush_acks(self) -> None:
        """Send PUBACKs for the acked prefix of the unacked messages (holding the lock).

        MQTT 3.1.1 §4.6: a client MUST send PUBACKs in the order the PUBLISH packets were
        received, so an ack for a later message waits for the earlier ones.
        """
        client = self._client
        while self._unacked and self._unacked[0].done:
            delivery = self._unacked.popleft()
            if client is not None and delivery.generation == self._generation:
                client.ack(delivery.mid, 1)
        if not self._unacked:
            self._acks_done.notify_all()

"""Event buses: fan change events out to every API worker (in-process, NATS, Redis)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import orjson

from sync.model import ChangeEvent, EventBus
from twin.errors import MissingExtra, TwinError

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as NatsSubscription
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

__all__ = [
    "DEFAULT_SUBJECT",
    "RESYNC",
    "InProcessBus",
    "NatsBus",
    "RedisBus",
    "Subscription",
    "open_bus",
    "start_subscription",
]

log = logging.getLogger(__name__)

RESYNC = "resync"
"""``kind`` of the marker a subscription yields where it lost events.

A subscriber that fell behind (its bounded queue overflowed) or whose connection to the
broker dropped and came back gets ``{"kind": "resync", "reason": ...}`` in place of the
lost events: a consumer that mirrors state (the viewer stream) reloads a snapshot.
"""

DEFAULT_SUBJECT = "citytwin.events"
"""NATS subject and Redis channel when the URL names none."""

QUEUE_SIZE = 10_000
CONNECT_TIMEOUT_S = 5.0


class Subscription:
    """Events from a bus as an async iterator, from :meth:`start` on, until :meth:`aclose`.

    The first ``__anext__`` starts the subscription; call :meth:`start` first when the
    caller must know it is live (e.g. before reading a snapshot that later events amend).
    The queue between the broker client and the consumer is bounded: when it overflows
    the queued events are dropped and one :data:`RESYNC` marker takes their place, so a
    slow consumer costs memory only up to ``maxsize`` and never blocks the publisher.
    """

    def __init__(self, maxsize: int = QUEUE_SIZE) -> None:
        self.maxsize = maxsize
        self.lost = 0
        self._queue: asyncio.Queue[ChangeEvent | None] = asyncio.Queue(maxsize + 1)
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Subscribe (idempotent); events published after this returns are delivered.

        Raises:
            TwinError: the broker is unreachable.
        """
        if not self._started:
            self._started = True
            await self._open()

    def put(self, event: ChangeEvent) -> None:
        """Queue an event for the consumer without waiting (the broker client's side)."""
        if self._closed:
            return
        if self._queue.qsize() >= self.maxsize:
            real, marked = self._drain()
            real += event.get("kind") != RESYNC
            self.lost += real
            # One marker stands for this gap and any earlier one that was still queued.
            event = {
                "kind": RESYNC,
                "reason": f"subscriber fell behind: {real + marked} events lost",
                "lost": real + marked,
            }
        self._queue.put_nowait(event)

    def gap(self, reason: str) -> None:
        """Mark lost events (e.g. a reconnect to the broker) with a :data:`RESYNC` marker."""
        self.put({"kind": RESYNC, "reason": reason})

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ChangeEvent:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """Unsubscribe and end the iteration (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._drain()
        self._queue.put_nowait(None)  # wakes a consumer waiting in __anext__
        if self._started:
            await self._close()

    def _drain(self) -> tuple[int, int]:
        """Empty the queue; return (events it held, events its markers stood for)."""
        real = marked = 0
        while not self._queue.empty():
            event = self._queue.get_nowait()
            if event is None:
                continue
            if event.get("kind") == RESYNC:
                marked += int(event.get("lost", 0))
            else:
                real += 1
        return real, marked

    async def _open(self) -> None:
        """Register with the broker (implementations)."""

    async def _close(self) -> None:
        """Unregister from the broker (implementations)."""


def _decode(data: bytes, where: str) -> ChangeEvent | None:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        log.warning("%s: ignored a message that is not JSON (%d bytes)", where, len(data))
        return None
    if not isinstance(event, dict):
        log.warning("%s: ignored a JSON message that is not an object", where)
        return None
    return event


# -- in-process ----------------------------------------------------------------------------


class _MemorySubscription(Subscription):
    def __init__(self, bus: InProcessBus) -> None:
        super().__init__(bus.maxsize)
        self._bus = bus

    async def _open(self) -> None:
        self._bus._subs.add(self)

    async def _close(self) -> None:
        self._bus._subs.discard(self)


class InProcessBus:
    """The default bus: one process, every subscriber gets every event (asyncio queues).

    A slow subscriber's queue is bounded; when it overflows that subscriber (only) gets a
    :data:`RESYNC` marker in place of the events it lost (the stream then resynchronizes
    it with a snapshot).
    """

    url = "memory://"

    def __init__(self, maxsize: int = QUEUE_SIZE) -> None:
        self.maxsize = maxsize
        self._subs: set[Subscription] = set()

    async def publish(self, event: ChangeEvent) -> None:
        """Hand ``event`` to every live subscription of this process."""
        for sub in list(self._subs):
            sub.put(event)

    def subscribe(self) -> Subscription:
        """Events published after the subscription starts (see :class:`Subscription`)."""
        return _MemorySubscription(self)

    async def close(self) -> None:
        """End every subscription."""
        for sub in list(self._subs):
            await sub.aclose()
        self._subs.clear()


# -- NATS ------------------------------------------------------------------------------------


class _NatsSubscription(Subscription):
    def __init__(self, bus: NatsBus) -> None:
        super().__init__(bus.maxsize)
        self._bus = bus
        self._sub: NatsSubscription | None = None

    async def _open(self) -> None:
        nc = await self._bus._connection()

        async def on_message(msg: Msg) -> None:
            event = _decode(msg.data, self._bus.url)
            if event is not None:
                self.put(event)

        # Our own queue bounds memory; the client's pending limits stay as a backstop.
        self._sub = await nc.subscribe(self._bus.subject, cb=on_message)
        # PING/PONG: once the server answers, it has processed our SUB, so anything any
        # connection publishes from now on reaches us (NATS client protocol, PING/PONG).
        await nc.flush(timeout=int(CONNECT_TIMEOUT_S))
        self._bus._subs.add(self)

    async def _close(self) -> None:
        self._bus._subs.discard(self)
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # connection already closed: nothing to release
                log.debug("NATS unsubscribe: %s", exc)


class NatsBus:
    """Change events on a NATS subject (core NATS publish/subscribe, no persistence).

    ``nats://host:port[/prefix][?subject=...]``: the subject is ``<prefix>.events``
    (``/`` in the prefix become ``.``), or ``subject`` verbatim, else ``citytwin.events``.
    One connection per bus, opened on first use; nats-py reconnects forever, and each
    subscription yields a :data:`RESYNC` marker after a reconnect (core NATS does not
    keep what was published meanwhile). ``publish`` does not wait for a flush: the
    client writes in call order on one TCP connection, which keeps every publisher's
    order, and the server delivers one connection's messages in order.
    """

    def __init__(
        self, url: str, *, maxsize: int = QUEUE_SIZE, connect_timeout: float = CONNECT_TIMEOUT_S
    ) -> None:
        try:
            import nats  # noqa: F401
        except ImportError:
            raise MissingExtra("nats-py", "nats") from None
        parts = urlsplit(url)
        if not parts.hostname:
            raise TwinError(f"NATS URL {url!r} has no host (nats://host:port/prefix)")
        query = parse_qs(parts.query)
        prefix = parts.path.strip("/").replace("/", ".")
        subject = query.get("subject", [""])[0] or (
            f"{prefix}.events" if prefix else DEFAULT_SUBJECT
        )
        tokens = subject.split(".")
        if any(not t or t in ("*", ">") or any(c.isspace() for c in t) for t in tokens):
            raise TwinError(f"bad NATS subject {subject!r} in {url!r} (no wildcards or spaces)")
        self.url = url
        self.server = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        self.subject = subject
        self.maxsize = maxsize
        self.connect_timeout = connect_timeout
        self._nc: NatsClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._subs: set[_NatsSubscription] = set()

    async def _connection(self) -> NatsClient:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A client belongs to the loop it was made on (a new TestClient, a new
            # asyncio.run): forget the old one rather than touch it from this loop.
            self._loop, self._nc, self._lock = loop, None, asyncio.Lock()
            self._subs.clear()
        assert self._lock is not None
        async with self._lock:
            if self._nc is not None and not self._nc.is_closed:
                return self._nc
            import nats
            import nats.errors

            async def on_error(exc: Exception) -> None:
                log.warning("NATS %s: %s", self.server, exc)

            async def on_disconnected() -> None:
                log.warning("NATS %s: disconnected, reconnecting", self.server)

            async def on_reconnected() -> None:
                log.warning("NATS %s: reconnected", self.server)
                for sub in list(self._subs):
                    sub.gap("reconnected to NATS: events published meanwhile are lost")

            try:
                # max_reconnect_attempts=-1 also retries the first connect forever: the
                # timeout turns an unreachable server into an error instead.
                self._nc = await asyncio.wait_for(
                    nats.connect(
                        servers=[self.server],
                        name="citytwin",
                        connect_timeout=2,
                        reconnect_time_wait=1,
                        max_reconnect_attempts=-1,
                        error_cb=on_error,
                        disconnected_cb=on_disconnected,
                        reconnected_cb=on_reconnected,
                    ),
                    self.connect_timeout,
                )
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                raise TwinError(f"cannot reach NATS at {self.server}: {exc or 'timeout'}") from exc
            return self._nc

    async def publish(self, event: ChangeEvent) -> None:
        """Publish ``event`` to every subscriber of every worker (including this one).

        A ``state`` event larger than the server's ``max_payload`` is sent as several
        events, each with part of the updates, in order.

        Raises:
            TwinError: NATS is unreachable.
        """
        nc = await self._connection()
        for data in _payloads(event, nc.max_payload):
            await nc.publish(self.subject, data)

    def subscribe(self) -> Subscription:
        """Events any worker publishes after the subscription starts."""
        return _NatsSubscription(self)

    async def close(self) -> None:
        """Unsubscribe, send what is buffered and close the connection."""
        for sub in list(self._subs):
            await sub.aclose()
        nc, self._nc = self._nc, None
        if nc is not None and self._loop is asyncio.get_running_loop() and not nc.is_closed:
            try:
                await nc.flush(timeout=2)
            except Exception as exc:  # best effort: the connection may already be gone
                log.debug("NATS flush on close: %s", exc)
            await nc.close()


def _payloads(event: ChangeEvent, limit: int) -> list[bytes]:
    """``event`` as JSON, split into several ``state`` events when over ``limit`` bytes."""
    data = orjson.dumps(event)
    updates = event.get("updates")
    if len(data) <= limit or event.get("kind") != "state" or not isinstance(updates, list):
        return [data]
    if len(updates) < 2:
        raise TwinError(f"a state event of {len(data)} bytes exceeds the bus limit {limit}")
    half = len(updates) // 2
    return [
        *_payloads({**event, "updates": updates[:half]}, limit),
        *_payloads({**event, "updates": updates[half:]}, limit),
    ]


# -- Redis -----------------------------------------------------------------------------------


class _RedisSubscription(Subscription):
    def __init__(self, bus: RedisBus) -> None:
        super().__init__(bus.maxsize)
        self._bus = bus
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None

    async def _open(self) -> None:
        from redis.exceptions import RedisError

        client = await self._bus._connection()
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self._bus.channel)
            # SUBSCRIBE is confirmed by a "subscribe" push; after it, the server delivers
            # every PUBLISH to the channel to us (Redis docs, Pub/Sub).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CONNECT_TIMEOUT_S
            while True:
                msg = await pubsub.get_message(timeout=max(0.0, deadline - loop.time()))
                if msg is not None and msg.get("type") == "subscribe":
                    break
                if loop.time() >= deadline:
                    raise TimeoutError("no SUBSCRIBE confirmation")
        except (RedisError, OSError, TimeoutError) as exc:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise TwinError(f"cannot subscribe on Redis {self._bus.server}: {exc}") from exc
        self._pubsub = pubsub
        self._reader = asyncio.create_task(self._read(pubsub))
        self._bus._subs.add(self)

    async def _read(self, pubsub: PubSub) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        where = f"Redis {self._bus.server} {self._bus.channel}"
        backoff = 0.5
        lost = False
        while True:
            try:
                msg = await pubsub.get_message(timeout=None)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                # The next get_message reconnects and the client subscribes again.
                if not lost:
                    log.warning("%s: connection lost (%s), reconnecting", where, exc)
                lost = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if lost:
                lost, backoff = False, 0.5
                log.warning("%s: reconnected", where)
                self.gap("reconnected to Redis: events published meanwhile are lost")
            if msg is None or msg.get("type") != "message":
                continue
            data = msg["data"]
            event = _decode(data if isinstance(data, bytes) else str(data).encode(), where)
            if event is not None:
                self.put(event)

    async def _close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.unsubscribe()
            except Exception as exc:  # connection already gone: closing is enough
                log.debug("Redis unsubscribe: %s", exc)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        self._bus._subs.discard(self)


class RedisBus:
    """Change events on a Redis pub/sub channel (fire-and-forget, like core NATS).

    ``redis://host:port/db[?channel=...]`` (``rediss://`` for TLS); the channel defaults
    to ``citytwin.events``. Publishing goes through one connection, so events leave in
    call order; each subscription reads on its own connection, which redis-py re-opens
    and re-subscribes after a drop (with a :data:`RESYNC` marker for the gap).
    """

    def __init__(self, url: str, *, maxsize: int = QUEUE_SIZE) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            raise MissingExtra("redis", "redis") from None
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.channel = query.pop("channel", [""])[0] or DEFAULT_SUBJECT
        self.url = url
        # redis-py passes unknown query parameters to the connection: strip ours.
        self.server = urlunsplit(
            (parts.scheme, parts.netloc, parts.path, urlencode(query, doseq=True), "")
        )
        self.maxsize = maxsize
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: set[_RedisSubscription] = set()

    async def _connection(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None:
            from redis.asyncio import Redis

            # A client belongs to the loop it was made on: make one per loop.
            self._loop = loop
            self._subs.clear()
            # single_connection_client: publishes share one connection (and its lock),
            # so they reach the server in call order; pub/sub takes pool connections.
            self._client = Redis.from_url(
                self.server, single_connection_client=True, socket_connect_timeout=2
            )
        return self._client

    async def publish(self, event: ChangeEvent) -> None:
        """Publish ``event`` to every subscriber of every worker (including this one).

        Raises:
            TwinError: Redis is unreachable.
        """
        from redis.exceptions import RedisError

        client = await self._connection()
        try:
            await client.publish(self.channel, orjson.dumps(event))
        except (RedisError, OSError) as exc:
            raise TwinError(f"cannot publish on Redis {self.server}: {exc}") from exc

    def subscribe(self) -> Subscription:
        """Events any worker publishes after the subscription starts."""
        return _RedisSubscription(self)

    async def close(self) -> None:
        """End every subscription and close the connections."""
        for sub in list(self._subs):
            await sub.aclose()
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose(close_connection_pool=True)


async def start_subscription(sub: Any) -> None:
    """Start a subscription if it can be started explicitly (see :class:`Subscription`).

    Other async iterators (a plain async generator as a test fake) start on first use.
    """
    if isinstance(sub, Subscription):
        await sub.start()


def open_bus(url: str) -> EventBus:
    """The bus named by a URL.

    Args:
        url: ``memory://`` (one process), ``nats://host:port[/prefix][?subject=...]``,
            ``redis://host:port/db[?channel=...]`` (or ``rediss://``).

    Returns:
        The bus; it connects on first use.

    Raises:
        TwinError: unknown scheme or a malformed URL.
        MissingExtra: the client library of that bus is not installed.
    """
    if url in ("memory://", "memory", ""):
        return InProcessBus()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("nats", "tls"):
        return NatsBus(url)
    if scheme in ("redis", "rediss"):
        return RedisBus(url)
    raise TwinError(f"unknown event bus URL {url!r} (memory://, nats://host:port, redis://...)")

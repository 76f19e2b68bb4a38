"""The ``Feed`` protocol every adapter implements, its status record and feed URLs.

A feed only moves bytes: it wraps what arrives in :class:`sync.model.Message` values and hands
them to a callback; decoding, mapping and committing are the engine's. Feeds are chosen by URL:

* ``mqtt://[user:password@]host[:port]/<topic-filter>[?qos=1&client_id=...&clean=false]``
  (``mqtts://`` for TLS). The topic filter may hold ``+`` and ``#`` (MQTT 3.1.1 §4.7.1), raw
  or percent-encoded (``%23``, ``%2B``).
* ``replay:FILE[?speed=1.0&loop=0&format=jsonl|csv]`` -- a JSONL (optionally ``.gz``) or CSV
  file replayed at its event-time pace (``speed=0``: as fast as possible).

Both take a ``name=`` option: the feed name (``Message.feed``) when none is given in code.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

from sync.model import Message
from twin.errors import FeedError

__all__ = [
    "Feed",
    "FeedCounters",
    "FeedStatus",
    "MqttSettings",
    "ReplaySettings",
    "default_client_id",
    "feed_name",
    "open_feed",
    "parse_feed_url",
    "redact_url",
]

RATE_WINDOW_S = 10.0
"""The window over which :attr:`FeedStatus.rate_per_s` is measured."""


@dataclass(slots=True)
class FeedStatus:
    """A snapshot of one feed's health, for ``/api/feeds`` and the CLI.

    Attributes:
        name: the feed's name (``Message.feed`` of what it delivers).
        url: the feed URL without its password.
        kind: ``mqtt`` or ``replay`` (or another adapter's kind).
        connected: whether the feed is connected to its source right now.
        received: messages delivered to the callback so far.
        acked: messages acknowledged (committed) so far.
        pending: ``received - acked``.
        rate_per_s: messages per second over the last :data:`RATE_WINDOW_S` seconds.
        last_message_at: wall-clock time (epoch s) of the last delivery, if any.
        lag_s: now minus the event time of the last message when the adapter knows it,
            else now minus ``last_message_at``; None before the first message.
        reconnects: successful connections after the first one.
        last_error: the last connection or read error, if any.
        finished: True once a finite feed (a replay without ``loop``) has delivered all.
    """

    name: str
    url: str
    kind: str
    connected: bool = False
    received: int = 0
    acked: int = 0
    pending: int = 0
    rate_per_s: float = 0.0
    last_message_at: float | None = None
    lag_s: float | None = None
    reconnects: int = 0
    last_error: str | None = None
    finished: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Return the status as a JSON-ready dict."""
        return asdict(self)


@runtime_checkable
class Feed(Protocol):
    """A source of messages: MQTT subscription, replay file, HTTP push...

    ``start`` is non-blocking (the feed runs its own threads and calls ``on_message`` from
    them, in arrival order); ``stop`` is idempotent and returns within a bounded time.
    """

    name: str

    def start(self, on_message: Callable[[Message], None]) -> None:
        """Start delivering messages to ``on_message`` from the feed's own thread."""
        ...

    def stop(self) -> None:
        """Stop delivering, release the connection and join the threads."""
        ...

    def status(self) -> FeedStatus:
        """Return a snapshot of the feed's health."""
        ...


class FeedCounters:
    """Thread-safe counters behind :meth:`Feed.status`, shared by the adapters.

    Args:
        name: the feed name.
        url: the feed URL (its password is removed here).
        kind: the adapter kind.
        clock: wall-clock time source (epoch seconds); injectable for tests.
    """

    def __init__(
        self, name: str, url: str, kind: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self.url = redact_url(url)
        self.kind = kind
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._recent: deque[float] = deque()
        self._received = 0
        self._acked = 0
        self._last_at: float | None = None
        self._last_event_time: float | None = None
        self.connected = False
        self.reconnects = 0
        self.last_error: str | None = None
        self.finished = False

    def received(self, event_time: float | None = None) -> float:
        """Count one delivered message and return the time it was counted.

        Args:
            event_time: the message's event time (epoch s) when the adapter knows it.

        Returns:
            The wall-clock receive time, to put into ``Message.received``.
        """
        now = self._clock()
        with self._lock:
            self._received += 1
            self._last_at = now
            self._last_event_time = event_time
            self._recent.append(now)
            self._prune(now)
        return now

    def acked(self) -> None:
        """Count one acknowledged message (call once per message)."""
        with self._lock:
            self._acked += 1

    def _prune(self, now: float) -> None:
        while self._recent and self._recent[0] < now - RATE_WINDOW_S:
            self._recent.popleft()

    def snapshot(self) -> FeedStatus:
        """Return the current :class:`FeedStatus`."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            # Measure over the time the feed has existed when that is shorter than the
            # window, so a feed started 2 s ago does not report a fifth of its real rate.
            window = max(min(RATE_WINDOW_S, now - self._started), 1.0)
            if self._last_event_time is not None:
                lag: float | None = now - self._last_event_time
            elif self._last_at is not None:
                lag = now - self._last_at
            else:
                lag = None
            return FeedStatus(
                name=self.name,
                url=self.url,
                kind=self.kind,
                connected=self.connected,
                received=self._received,
                acked=self._acked,
                pending=self._received - self._acked,
                rate_per_s=len(self._recent) / window,
                last_message_at=self._last_at,
                lag_s=lag,
                reconnects=self.reconnects,
                last_error=self.last_error,
                finished=self.finished,
            )


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """What an ``mqtt://`` URL says.

    Attributes:
        host: broker host.
        port: broker port (1883, or 8883 for ``mqtts``).
        topic: the topic filter to subscribe to (``+``/``#`` wildcards allowed).
        qos: subscription QoS, 0 or 1.
        client_id: MQTT client identifier; stable so the broker keeps the session.
        clean: MQTT 3.1.1 CleanSession flag (§3.1.2.4); False keeps the session.
        username: user name from the URL userinfo, if any.
        password: password from the URL userinfo, if any.
        tls: True for ``mqtts://``.
        keepalive: keep-alive interval in seconds (§3.1.2.10).
    """

    host: str
    port: int
    topic: str
    qos: int = 1
    client_id: str = ""
    clean: bool = False
    username: str | None = None
    password: str | None = None
    tls: bool = False
    keepalive: int = 60


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """What a ``replay:`` URL says.

    Attributes:
        path: the file to replay.
        speed: event-time speed-up; 0 means no pacing at all.
        loop: start again at the end of the file, until stopped.
        format: ``jsonl`` or ``csv`` (from the suffix unless given).
    """

    path: Path
    speed: float = 1.0
    loop: bool = False
    format: str = "jsonl"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(value: str, key: str, url: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise FeedError(f"feed URL {redact_url(url)!r}: {key}={value!r} is not a boolean (0/1)")


def _options(query: str, allowed: set[str], url: str) -> dict[str, str]:
    opts: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise FeedError(
                f"feed URL {redact_url(url)!r}: unknown option {key!r} (known: {known})"
            )
        opts[key] = value
    return opts


def redact_url(url: str) -> str:
    """Return ``url`` with the password of its userinfo (if any) replaced by ``***``.

    Args:
        url: a feed, store or bus URL.

    Returns:
        The URL, safe to log and to show in status.
    """
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@?#]*):([^/@?#]*)@", url)
    if m is None:
        return url
    return f"{m.group(1)}{m.group(2)}:***@{url[m.end() :]}"


def _check_topic_filter(topic: str, url: str) -> None:
    # MQTT 3.1.1 §4.7.1: '#' only as the whole last level, '+' only as a whole level;
    # §4.7.3: a topic filter is at least one character and contains no U+0000.
    if not topic:
        raise FeedError(f"feed URL {redact_url(url)!r}: no topic filter after host[:port]/")
    if "\x00" in topic:
        raise FeedError(f"feed URL {redact_url(url)!r}: topic filter contains NUL")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise FeedError(
                f"feed URL {redact_url(url)!r}: '#' must be a whole last level in {topic!r}"
            )
        if "+" in level and level != "+":
            raise FeedError(f"feed URL {redact_url(url)!r}: '+' must be a whole level in {topic!r}")


def default_client_id(name: str, topic: str) -> str:
    """Derive a stable MQTT client id from a feed name and its topic filter.

    The same feed gets the same id after a restart, so the broker resumes its persistent
    session (MQTT 3.1.1 §3.1.2.4). The id is 23 characters of ``[0-9a-zA-Z-]``, which
    every broker must accept (§3.1.3.1).

    Args:
        name: the feed name.
        topic: the topic filter.

    Returns:
        The client identifier.
    """
    digest = hashlib.sha256(f"{name}\x00{topic}".encode()).hexdigest()
    return f"ct-{digest[:20]}"


def _parse_mqtt(url: str, name: str) -> MqttSettings:
    # A raw '#' in a URL starts the fragment; in a feed URL it is the MQTT multi-level
    # wildcard, so it is escaped before splitting (feed URLs have no fragment).
    parts = urlsplit(url.replace("#", "%23"))
    tls = parts.scheme == "mqtts"
    if not parts.hostname:
        raise FeedError(f"feed URL {redact_url(url)!r}: no broker host")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise FeedError(f"feed URL {redact_url(url)!r}: bad port ({exc})") from exc
    topic = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    _check_topic_filter(topic, url)
    opts = _options(parts.query, {"qos", "client_id", "clean", "keepalive", "name"}, url)
    qos_text = opts.get("qos", "1")
    if qos_text not in ("0", "1"):
        # QoS 2 is refused on purpose: the engine's ack-after-commit gives at-least-once,
        # which is what QoS 1 promises; QoS 2's exactly-once would be a false claim.
        raise FeedError(f"feed URL {redact_url(url)!r}: qos must be 0 or 1, not {qos_text!r}")
    keepalive_text = opts.get("keepalive", "60")
    if not keepalive_text.isdigit() or not 5 <= int(keepalive_text) <= 65535:
        raise FeedError(
            f"feed URL {redact_url(url)!r}: keepalive must be 5..65535 s, not {keepalive_text!r}"
        )
    client_id = opts.get("client_id") or default_client_id(name, topic)
    return MqttSettings(
        host=parts.hostname,
        port=port,
        topic=topic,
        qos=int(qos_text),
        client_id=client_id,
        clean=_flag(opts["clean"], "clean", url) if "clean" in opts else False,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls,
        keepalive=int(keepalive_text),
    )


def _replay_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if last == ".csv":
        return "csv"
    return None


def _parse_replay(url: str) -> ReplaySettings:
    rest = url[len("replay:") :]
    file_part, _, query = rest.partition("?")
    if file_part.startswith("//"):
        # replay:///abs/file.jsonl, the file:// habit.
        file_part = file_part[2:]
    file_part = unquote(file_part)
    if not file_part:
        raise FeedError(f"feed URL {url!r}: no file after 'replay:'")
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise FeedError(f"feed URL {url!r}: replay file {str(path)!r} does not exist")
    opts = _options(query, {"speed", "loop", "format", "name"}, url)
    try:
        speed = float(opts.get("speed", "1"))
    except ValueError:
        raise FeedError(f"feed URL {url!r}: speed={opts['speed']!r} is not a number") from None
    if not math.isfinite(speed) or speed < 0:
        raise FeedError(f"feed URL {url!r}: speed must be >= 0 (0 = no pacing), not {speed}")
    fmt = opts.get("format") or _replay_format(path)
    if fmt not in ("jsonl", "csv"):
        raise FeedError(
            f"feed URL {url!r}: cannot tell the replay format of {path.name!r} "
            "(use .jsonl, .ndjson, .csv, optionally .gz, or ?format=jsonl|csv)"
        )
    loop = _flag(opts["loop"], "loop", url) if "loop" in opts else False
    return ReplaySettings(path=path, speed=speed, loop=loop, format=fmt)


def feed_name(url: str, name: str | None = None) -> str:
    """Return the name of the feed a URL makes: ``name``, else its ``name=`` option, else
    the URL without its password.

    Args:
        url: a feed URL.
        name: a name given in code, which wins.

    Returns:
        The feed name.
    """
    if name:
        return name
    query = url.replace("#", "%23").partition("?")[2]
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key == "name":
            return value
    return redact_url(url.strip())


def parse_feed_url(url: str, *, name: str | None = None) -> MqttSettings | ReplaySettings:
    """Read a feed URL into its settings, without connecting or opening anything.

    Args:
        url: ``mqtt://``, ``mqtts://`` or ``replay:`` URL (see the module docstring).
        name: the feed name, which the default MQTT client id derives from; defaults to
            :func:`feed_name` of the URL.

    Returns:
        :class:`MqttSettings` or :class:`ReplaySettings`.

    Raises:
        FeedError: the URL is malformed, names an unknown scheme or option, or (replay)
            a file that does not exist.
    """
    url = url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("mqtt", "mqtts"):
        if not url.lower().startswith(f"{scheme}://"):
            raise FeedError(f"feed URL {redact_url(url)!r}: expected {scheme}://host[:port]/topic")
        return _parse_mqtt(url, feed_name(url, name))
    if scheme == "replay":
        return _parse_replay(url)
    raise FeedError(
        f"feed URL {redact_url(url)!r}: unknown scheme {scheme!r} "
        "(supported: mqtt://host:port/topic, mqtts://..., replay:FILE)"
    )


def open_feed(url: str, *, name: str | None = None) -> Feed:
    """Build the feed a URL names (not started yet).

    Args:
        url: ``mqtt://host:port/topic/#?qos=1``, ``replay:data/run.jsonl.gz?speed=10``...
        name: the feed name put into every ``Message.feed``; defaults to the URL's
            ``name=`` option, else the URL without its password.

    Returns:
        An :class:`sync.mqtt.MqttFeed` or :class:`sync.replay.ReplayFeed`.

    Raises:
        FeedError: the URL is not a valid feed URL (see :func:`parse_feed_url`).
        MissingExtra: an ``mqtt://`` URL without paho-mqtt installed.
    """
    name = feed_name(url, name)
    settings = parse_feed_url(url, name=name)
    if isinstance(settings, MqttSettings):
        from sync.mqtt import MqttFeed

        return MqttFeed(settings, name=name, url=url)
    from sync.replay import ReplayFeed

    return ReplayFeed(settings, name=name, url=url)

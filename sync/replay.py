"""Replay feed: a recorded JSONL (optionally gzipped) or CSV file, paced by its event times.

The adapter moves bytes: a JSONL line is delivered as it is (the decoder reads it as JSON;
a malformed line is delivered too and dead-lettered downstream), a CSV row as a small CSV
document of the header plus that row (RFC 4180). It reads only the ``time`` of each record,
to wait between messages as long as the recording did, divided by ``speed``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, cast

from sync.feeds import (
    FeedCounters,
    FeedStatus,
    ReplaySettings,
    feed_name,
    parse_feed_url,
    redact_url,
)
from sync.model import Message
from twin.errors import FeedError

__all__ = ["ReplayFeed", "parse_time"]

log = logging.getLogger(__name__)

_MS_THRESHOLD = 1e11
"""Numbers above this are epoch milliseconds (1e11 s is in the year 5138)."""

_JOIN_TIMEOUT_S = 5.0


def parse_time(value: Any) -> float | None:
    """Read an event time as epoch seconds (UTC), or None when it is not one.

    Args:
        value: epoch seconds or milliseconds (number or numeric string), or an ISO 8601
            date-time (``2024-05-01T12:00:00Z``; without an offset it is taken as UTC).

    Returns:
        Epoch seconds, or None.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        t = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            t = float(text)
        except ValueError:
            try:
                dt = datetime.fromisoformat(text)
            except ValueError:
                return None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            return dt.timestamp()
    else:
        return None
    if not math.isfinite(t):
        return None
    return t / 1000.0 if abs(t) > _MS_THRESHOLD else t


def _json_time(line: bytes) -> float | None:
    # Cheap test first: most lines of a big replay are parsed here only for their time.
    if b'"time"' not in line:
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if isinstance(obj, list):
        obj = next((o for o in obj if isinstance(o, dict) and "time" in o), None)
    if isinstance(obj, dict):
        return parse_time(obj.get("time"))
    return None


@dataclass(frozen=True, slots=True)
class _Record:
    payload: bytes
    time: float | None
    content_type: str


class ReplayFeed:
    """A :class:`sync.feeds.Feed` that replays a recorded file.

    The first record is delivered at once; each later record when as much (clock) time has
    passed since the first as the event times differ, divided by ``speed``. Records
    without a readable time, or older than the one before, are delivered without waiting.

    Args:
        settings: what the URL says (see :func:`sync.feeds.parse_feed_url`).
        name: the feed name put into ``Message.feed``; defaults to ``url``.
        url: the URL the feed came from, shown in its status.
        clock: monotonic time source for pacing (injectable for tests).
        sleep: waits for the given seconds; defaults to a wait that :meth:`stop` ends
            early. Injectable for tests.
    """

    kind = "replay"

    def __init__(
        self,
        settings: ReplaySettings,
        *,
        name: str | None = None,
        url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        shown = url or f"replay:{settings.path}"
        self.name = name or redact_url(shown)
        self._counters = FeedCounters(self.name, shown, self.kind)
        self._clock = clock
        self._stop = threading.Event()
        self._sleep: Callable[[float], None] = sleep or self._interruptible_sleep
        self._thread: threading.Thread | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> ReplayFeed:
        """Build a replay feed from a ``replay:FILE[?speed=N&loop=0]`` URL.

        Args:
            url: the replay URL.
            name: the feed name; defaults to :func:`sync.feeds.feed_name` of the URL.
            clock: monotonic time source for pacing.
            sleep: the wait function for pacing.

        Returns:
            The feed, not started.

        Raises:
            FeedError: the URL is not a valid replay URL or the file does not exist.
        """
        name = feed_name(url, name)
        settings = parse_feed_url(url, name=name)
        if not isinstance(settings, ReplaySettings):
            raise FeedError(f"not a replay feed URL: {redact_url(url)!r}")
        return cls(settings, name=name, url=url, clock=clock, sleep=sleep)

    def _interruptible_sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def start(self, on_message: Callable[[Message], None]) -> None:
        """Start replaying in a background thread.

        Args:
            on_message: called from the replay thread for each record, in file order.

        Raises:
            FeedError: the feed is already running.
        """
        if self._thread is not None and self._thread.is_alive():
            raise FeedError(f"feed {self.name!r} is already started")
        self._stop.clear()
        self._counters.finished = False
        self._counters.connected = True
        self._thread = threading.Thread(
            target=self._run, args=(on_message,), name=f"replay:{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop replaying and join the thread (idempotent, at most a few seconds)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT_S)
        self._counters.connected = False

    def status(self) -> FeedStatus:
        """Return a snapshot of the replay's progress (``finished`` once at the end)."""
        return self._counters.snapshot()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the replay to end (a finite one, or after :meth:`stop`).

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.

        Returns:
            True when the replay thread has ended.
        """
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # -- replay thread -------------------------------------------------------------

    def _run(self, on_message: Callable[[Message], None]) -> None:
        try:
            while not self._stop.is_set():
                delivered = self._replay_once(on_message)
                # An empty file would make a looping replay spin: end it instead.
                if not self.settings.loop or delivered == 0:
                    break
            if not self._stop.is_set():
                self._counters.finished = True
        except (OSError, EOFError, UnicodeError, csv.Error) as exc:
            self._counters.last_error = f"cannot read {self.settings.path}: {exc}"
            log.error("feed %s: %s", self.name, self._counters.last_error)
            self._counters.finished = True
        finally:
            self._counters.connected = False

    def _replay_once(self, on_message: Callable[[Message], None]) -> int:
        speed = self.settings.speed
        first_event: float | None = None
        first_clock = 0.0
        count = 0
        for record in self._records():
            if self._stop.is_set():
                break
            if speed > 0 and record.time is not None:
                if first_event is None:
                    first_event, first_clock = record.time, self._clock()
                else:
                    due = first_clock + (record.time - first_event) / speed
                    delay = due - self._clock()
                    if delay > 0:
                        self._sleep(delay)
                        if self._stop.is_set():
                            break
            self._deliver(record, on_message)
            count += 1
        return count

    def _deliver(self, record: _Record, on_message: Callable[[Message], None]) -> None:
        # Replayed event times are historical, so lag is measured from the delivery.
        received = self._counters.received()
        message = Message(
            feed=self.name,
            payload=record.payload,
            topic="",
            received=received,
            ack=self._acker(),
            content_type=record.content_type,
        )
        try:
            on_message(message)
        except Exception as exc:
            # One failing callback must not end the replay.
            self._counters.last_error = f"on_message failed: {exc!r}"
            log.exception("feed %s: on_message failed", self.name)

    def _acker(self) -> Callable[[], None]:
        lock = threading.Lock()
        state = {"acked": False}

        def ack() -> None:
            with lock:
                if state["acked"]:
                    return
                state["acked"] = True
            self._counters.acked()

        return ack

    def _open(self) -> IO[bytes]:
        path = self.settings.path
        if path.suffix.lower() == ".gz":
            return cast(IO[bytes], gzip.open(path, "rb"))
        return path.open("rb")

    def _records(self) -> Iterator[_Record]:
        if self.settings.format == "csv":
            return self._csv_records()
        return self._jsonl_records()

    def _jsonl_records(self) -> Iterator[_Record]:
        with self._open() as f:
            for raw in f:
                line = raw.rstrip(b"\r\n")
                if not line.strip():
                    continue
                yield _Record(line, _json_time(line), "application/json")

    def _csv_records(self) -> Iterator[_Record]:
        with self._open() as f:
            text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="replace", newline="")
            reader = csv.reader(text)
            header = next(reader, None)
            if header is None:
                return
            names = [h.strip().lower() for h in header]
            time_col = names.index("time") if "time" in names else None
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                t = None
                if time_col is not None and time_col < len(row):
                    t = parse_time(row[time_col])
                yield _Record(_csv_document(header, row), t, "text/csv")


def _csv_document(header: list[str], row: list[str]) -> bytes:
    """Serialize the header and one row as a CSV document (RFC 4180 §2: CRLF lines)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerow(row)
    return out.getvalue().encode("utf-8")

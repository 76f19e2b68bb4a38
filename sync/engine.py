"""The sync engine: feed messages -> decoded, validated, batched commits -> acks and events.

One worker thread owns the write path. Adapters (MQTT, replay, HTTP) hand it
:class:`~sync.model.Message` values; it collects them for at most ``max_delay`` seconds
(or ``max_batch`` messages), decodes and validates them, stores refused values as dead
letters, commits the rest in one transaction, and only then acknowledges the messages
(an MQTT QoS 1 PUBACK is sent at that point) and publishes the new latest values and any
alerts. So a crash at any moment loses nothing that was acknowledged: unacknowledged
messages are redelivered by the broker (persistent session) when the server restarts.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sync.decode import decode
from sync.mapping import Mapping, resolve_all
from sync.model import ChangeEvent, DecodeError, Message, state_event
from twin.alerts import Alert, RuleEngine
from twin.query import ObjectQuery
from twin.state import DeadLetter, StateUpdate
from twin.store.base import StateStore

__all__ = ["BatchResult", "SyncEngine"]

Publish = Callable[[ChangeEvent], None]


@dataclass
class BatchResult:
    """What one message (or batch) did, for the HTTP feed's answer."""

    accepted: int = 0
    stored: int = 0
    duplicates: int = 0
    late: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)


@dataclass
class _Stats:
    messages: int = 0
    updates: int = 0
    rejected: int = 0
    batches: int = 0
    last_commit: float | None = None
    last_error: str | None = None
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=256))


_STOP = object()


class SyncEngine:
    """Batches feed messages into store transactions; acks after commit; publishes events."""

    def __init__(
        self,
        store: StateStore,
        *,
        mapping: Mapping | None = None,
        rules: RuleEngine | None = None,
        publish: Publish | None = None,
        formats: dict[str, str] | None = None,
        topic_template: str = "city/{object_id}/{property}",
        max_batch: int = 2_000,
        max_delay: float = 0.02,
        queue_size: int = 20_000,
    ) -> None:
        self.store = store
        self.mapping = mapping
        self.rules = rules or RuleEngine()
        self.publish = publish or (lambda event: None)
        self.formats = formats or {}
        self.topic_template = topic_template
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._q: queue.Queue[Any] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._types: dict[str, str | None] = {}
        self._rules_lock = threading.Lock()
        self.stats = _Stats()
        self.rules.load_open(store.list_alerts(state="open", limit=10_000))
        self.rules.load_open(store.list_alerts(state="acknowledged", limit=10_000))

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="sync-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the worker."""
        if self._thread is not None and self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join(timeout)
        self._thread = None

    # -- input ----------------------------------------------------------------------------
    def submit(self, message: Message) -> None:
        """Queue a message (blocks when the queue is full: back-pressure on the feed)."""
        if not message.received:
            message.received = time.time()
        self._q.put((message, None))

    def submit_wait(self, message: Message) -> Future[BatchResult]:
        """Queue a message; the future resolves after its batch is committed."""
        if not message.received:
            message.received = time.time()
        fut: Future[BatchResult] = Future()
        self._q.put((message, fut))
        return fut

    def status(self) -> dict[str, Any]:
        """Counters and the recent commit rate (for /api/healthz)."""
        s = self.stats
        now = time.time()
        recent = [(t, n) for t, n in s.recent if now - t <= 10.0]
        return {
            "running": self._thread is not None and self._thread.is_alive(),
            "queued": self._q.qsize(),
            "messages": s.messages,
            "updates": s.updates,
            "rejected": s.rejected,
            "batches": s.batches,
            "updates_per_s": round(sum(n for _, n in recent) / 10.0, 1),
            "last_commit": s.last_commit,
            "last_error": s.last_error,
        }

    # -- worker ---------------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._q.get()
            if item is _STOP:
                break
            batch = [item]
            deadline = time.monotonic() + self.max_delay
            while len(batch) < self.max_batch:
                timeout = deadline - time.monotonic()
                try:
                    nxt = (
                        self._q.get(timeout=max(0.0, timeout))
                        if timeout > 0
                        else self._q.get_nowait()
                    )
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)
            self._process(batch)

    def _process(self, batch: list[tuple[Message, Future[BatchResult] | None]]) -> None:
        try:
            results = self._commit([m for m, _ in batch])
        except Exception as exc:  # a store failure: nothing is acked, feeds redeliver
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            for _, fut in batch:
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
            return
        for (message, fut), result in zip(batch, results, strict=True):
            try:
                message.ack()
            except Exception as exc:  # the broker went away: it will redeliver
                self.stats.last_error = f"ack failed: {exc}"
            if fut is not None and not fut.done():
                fut.set_result(result)

    def _exists(self, ids: set[str]) -> set[str]:
        unknown = [i for i in ids if i not in self._types]
        for k in range(0, len(unknown), 500):
            chunk = tuple(unknown[k : k + 500])
            for o in self.store.query_objects(ObjectQuery(ids=chunk, limit=len(chunk))).items:
                self._types[o.id] = o.type
        return {i for i in ids if i in self._types}

    def _commit(self, messages: list[Message]) -> list[BatchResult]:
        results = [BatchResult() for _ in messages]
        dead: list[DeadLetter] = []
        updates: list[StateUpdate] = []
        for i, m in enumerate(messages):
            try:
                obs = decode(m, self.formats.get(m.feed), topic_template=self.topic_template)
            except DecodeError as exc:
                dead.append(
                    DeadLetter(
                        m.feed, str(exc), m.payload[:2048].decode("utf-8", "replace"), m.received
                    )
                )
                results[i].rejected += 1
                results[i].reasons.append(str(exc))
                continue
            ups, rej = resolve_all(
                obs, feed=m.feed, received=m.received, exists=self._exists, mapping=self.mapping
            )
            dead.extend(rej)
            results[i].rejected += len(rej)
            results[i].reasons.extend(r.reason for r in rej[:20])
            results[i].accepted += len(ups)
            updates.extend(ups)
        if dead:
            self.store.append_rejected(dead)
        applied = self.store.apply_updates(updates)
        # Per-message counts: the store reports totals; spread them for the HTTP answer.
        if len(messages) == 1:
            results[0].stored = applied.stored
            results[0].duplicates = applied.duplicates
            results[0].late = applied.late
        s = self.stats
        now = time.time()
        s.messages += len(messages)
        s.updates += applied.stored
        s.rejected += len(dead)
        s.batches += 1
        s.last_commit = now
        s.recent.append((now, applied.stored))
        if applied.latest:
            self.publish(state_event(applied.latest))
            self._alerts(applied.latest)
        return results

    def _alerts(self, latest: Iterable[StateUpdate]) -> None:
        if not self.rules.rules:
            return
        with self._rules_lock:
            changed = self.rules.observe(sorted(latest, key=lambda u: u.time), self._types)
        for alert in changed:
            self.store.put_alert(alert)
            self.publish({"kind": "alert", "id": alert.object_id, "alert": alert.as_dict()})

    def acknowledge(self, alert: Alert) -> None:
        """Tell the rule engine about an acknowledgement made through the API."""
        with self._rules_lock:
            self.rules.acknowledged(alert)

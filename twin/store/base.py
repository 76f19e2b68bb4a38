"""The StateStore protocol: objects, latest state, history and audit, by object id."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from twin.alerts import Alert
from twin.objects import TwinObject
from twin.query import ObjectQuery
from twin.state import (
    ApplyResult,
    AuditEntry,
    DeadLetter,
    HistoryBucket,
    HistoryPoint,
    StateUpdate,
    StateValue,
)

__all__ = ["ObjectStore", "Page", "SourceInfo", "StateStore", "searchable_text", "sort_value"]


@dataclass(frozen=True)
class SourceInfo:
    """A stored source document (e.g. the CityJSON file a city was ingested from)."""

    name: str
    sha256: str
    size: int
    added: float


@dataclass
class Page:
    """One page of a list query."""

    items: list[TwinObject] = field(default_factory=list)
    next_cursor: str | None = None


def sort_value(obj: TwinObject, field: str) -> Any:
    """The value an object sorts by (the key of every store's keyset pagination)."""
    if field == "id":
        return obj.id
    if field == "type":
        return obj.type
    g = obj.geometry
    if field == "height":
        return g.height if g else None
    if field == "footprint":
        return g.footprint_area if g else None
    return obj.id


def searchable_text(obj: TwinObject) -> str:
    """What free-text search looks in, in every store: id, name and address-like attributes."""
    parts = [obj.id]
    for key in ("name", "naam", "Name", "address", "adres", "street", "identificatie"):
        v = obj.attributes.get(key)
        if v is not None:
            parts.append(str(v))
    addr = obj.extra.get("address")
    if addr is not None:
        parts.append(str(addr))
    return " ".join(parts)


@runtime_checkable
class StateStore(Protocol):
    """Where twin objects and their live state live.

    Implementations: :class:`twin.store.memory.MemoryStore` (tests, embedded),
    ``SqliteStore`` (default, one file), ``PostgresStore`` (scale-out). Every write
    method is one transaction: all of it lands or none of it.
    """

    url: str

    def put_objects(
        self,
        objects: Iterable[TwinObject],
        *,
        scenario: str = "base",
        source: str = "",
        source_data: bytes | None = None,
    ) -> int:
        """Insert or replace objects (idempotent); return how many were written.

        With ``source_data`` the source document (the CityJSON file the objects came
        from) is stored under the name ``source`` in the same transaction; the scene is
        built from the stored sources.
        """
        ...

    def sources(self, scenario: str = "base") -> list[SourceInfo]:
        """The source documents of a scenario, in the order they were first added."""
        ...

    def get_source(self, name: str, scenario: str = "base") -> bytes | None:
        """One source document's bytes, or None."""
        ...

    def get_object(self, object_id: str, scenario: str = "base") -> TwinObject | None:
        """One object, or None."""
        ...

    def query_objects(self, query: ObjectQuery) -> Page:
        """A page of objects matching the query, with the cursor of the next page."""
        ...

    def count(self, scenario: str = "base") -> int:
        """Number of objects in a scenario."""
        ...

    def counts_by_type(self, scenario: str = "base") -> dict[str, int]:
        """Number of objects per type, most common first."""
        ...

    def apply_updates(self, updates: Sequence[StateUpdate]) -> ApplyResult:
        """Append to history and advance the latest state (newest event time wins).

        Duplicates (same object, property and time, or same message id) are stored once.
        """
        ...

    def latest(self, object_id: str) -> dict[str, StateValue]:
        """The latest value of every property of an object."""
        ...

    def history(
        self,
        object_id: str,
        prop: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[HistoryPoint]:
        """Raw history points in time order."""
        ...

    def history_buckets(
        self,
        object_id: str,
        prop: str,
        every: float,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[HistoryBucket]:
        """History downsampled server-side into buckets of ``every`` seconds."""
        ...

    def prune_history(self, before: float) -> int:
        """Delete history older than ``before`` (retention); return rows deleted."""
        ...

    def append_audit(self, entry: AuditEntry) -> None:
        """Append one entry to the audit log."""
        ...

    def list_audit(self, *, limit: int = 100, before: float | None = None) -> list[AuditEntry]:
        """Newest audit entries first."""
        ...

    def append_rejected(self, records: Sequence[DeadLetter]) -> None:
        """Store dead-letter records (refused feed messages) with their reasons."""
        ...

    def list_rejected(
        self, feed: str | None = None, *, limit: int = 100, before: float | None = None
    ) -> list[DeadLetter]:
        """Newest dead letters first, of one feed or all."""
        ...

    def put_alert(self, alert: Alert) -> None:
        """Insert or replace an alert (by id)."""
        ...

    def get_alert(self, alert_id: str) -> Alert | None:
        """One alert, or None."""
        ...

    def list_alerts(
        self, *, state: str | None = None, object_id: str | None = None, limit: int = 100
    ) -> list[Alert]:
        """Alerts, most recently changed first; filtered by state and/or object."""
        ...

    def stats(self) -> dict[str, int]:
        """Row counts: objects, state, history, audit."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


ObjectStore = StateStore

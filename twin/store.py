"""The object store protocol and its in-memory implementation (test fake, embedded default)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from twin.objects import TwinObject

__all__ = ["MemoryStore", "ObjectStore"]


@runtime_checkable
class ObjectStore(Protocol):
    """Where twin objects live. SQLite and PostgreSQL versions implement the same calls."""

    def put_objects(self, objects: Iterable[TwinObject], *, source: str = "") -> int:
        """Insert or replace objects all-or-nothing; return how many were written."""
        ...

    def get_object(self, object_id: str) -> TwinObject | None:
        """Return one object or None."""
        ...

    def count(self) -> int:
        """Number of objects."""
        ...

    def counts_by_type(self) -> dict[str, int]:
        """Number of objects per type."""
        ...


class MemoryStore:
    """Objects in a dict; re-ingesting the same ids replaces them (idempotent)."""

    def __init__(self) -> None:
        self._objects: dict[str, TwinObject] = {}

    def put_objects(self, objects: Iterable[TwinObject], *, source: str = "") -> int:
        batch = {o.id: o for o in objects}  # built first: all-or-nothing
        self._objects.update(batch)
        return len(batch)

    def get_object(self, object_id: str) -> TwinObject | None:
        return self._objects.get(object_id)

    def count(self) -> int:
        return len(self._objects)

    def counts_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self._objects.values():
            out[o.type] = out.get(o.type, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

"""Live state of twin objects: updates, latest values, history points and buckets."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApplyResult",
    "AuditEntry",
    "DeadLetter",
    "HistoryBucket",
    "HistoryPoint",
    "StateUpdate",
    "StateValue",
]

Scalar = float | int | str | bool | None


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """One observed value of one property of one object.

    Attributes:
        object_id: the twin object (CityJSON id or network asset id).
        property: e.g. ``pressure``, ``status``.
        value: a number, string, boolean or null.
        time: event time, seconds since the Unix epoch (UTC).
        source: the feed it came from.
        quality: optional quality flag from the source.
        msg_id: optional message id; a repeated id is applied once.
    """

    object_id: str
    property: str
    value: Scalar
    time: float
    source: str = ""
    quality: str | None = None
    msg_id: str | None = None

    @builtins.property  # the field `property` shadows the builtin in this class body
    def number(self) -> float | None:
        """The value as a float when it is numeric (booleans are not)."""
        v = self.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        return float(v)


@dataclass(frozen=True, slots=True)
class StateValue:
    """The latest value of a property."""

    value: Scalar
    time: float
    source: str = ""
    quality: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "value": self.value,
            "time": self.time,
            "source": self.source,
            "quality": self.quality,
        }


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One raw history point."""

    time: float
    value: Scalar
    source: str = ""
    quality: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryBucket:
    """Downsampled history: numeric aggregates over [start, start + every)."""

    start: float
    count: int
    min: float | None
    mean: float | None
    max: float | None


@dataclass
class ApplyResult:
    """What a batch of updates did."""

    stored: int = 0
    duplicates: int = 0
    late: int = 0
    latest: list[StateUpdate] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One write, as the append-only audit log records it."""

    time: float
    actor: str
    role: str
    action: str
    object_ids: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A feed message (or one value of it) refused, with the reason: never silently dropped."""

    feed: str
    reason: str
    payload: str
    time: float
    entity: str | None = None
    property: str | None = None

"""What moves through sync/: raw messages, decoded observations, rejections, change events.

The pipeline (each step its own module, pure where it can be):

1. an adapter (``mqtt.py``, ``replay.py``, the HTTP route) receives bytes and wraps them in
   a :class:`Message` with an ``ack`` to call once the data is safely committed;
2. a decoder (``decode.py``, pure) turns a message into :class:`Observation` values, keyed
   as the source names things (a SensorThings datastream, an NGSI-LD entity...), or raises
   :class:`DecodeError`;
3. the mapping (``mapping.py``, pure) resolves observations to twin
   :class:`twin.state.StateUpdate` values, or to :class:`Rejection` records with a reason;
4. the engine (``engine.py``) commits updates in batched transactions, stores rejections
   (dead letters), then acks the messages and publishes :data:`ChangeEvent` dicts on the
   :class:`EventBus` (``bus.py``), which the WebSocket stream fans out to viewers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from twin.errors import FeedError
from twin.state import DeadLetter, StateUpdate

__all__ = [
    "ChangeEvent",
    "DecodeError",
    "EventBus",
    "Message",
    "Observation",
    "Rejection",
    "state_event",
]


class DecodeError(FeedError):
    """A message that no decoder can read; becomes a dead-letter record with this reason."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One decoded value before mapping, keyed the way its source keys it.

    Attributes:
        entity: a twin object id, or an external key the mapping resolves (SensorThings
            datastream/thing id, NGSI entity id, CSV sensor column...).
        property: the property name, or None when the mapping decides (a SensorThings
            datastream maps to one object *and* property).
        value: number, string, boolean or null as decoded.
        time: event time (epoch seconds, UTC), or None for "when received".
        unit: unit as the source states it (``bar``, ``kPa``, UCUM code...), if any.
        msg_id: a message id for duplicate suppression, if the source has one.
        quality: a quality flag from the source, if any.
    """

    entity: str
    property: str | None
    value: Any
    time: float | None = None
    unit: str | None = None
    msg_id: str | None = None
    quality: str | None = None


Rejection = DeadLetter
"""A dead-letter record: what arrived, from which feed, and why it was refused
(:class:`twin.state.DeadLetter`; the store keeps them)."""


@dataclass(slots=True)
class Message:
    """Bytes from a feed, with the ack to call after their updates are committed.

    ``ack`` is idempotent to call; adapters without acknowledgement pass a no-op.
    """

    feed: str
    payload: bytes
    topic: str = ""
    received: float = 0.0
    ack: Callable[[], None] = field(default=lambda: None)
    content_type: str | None = None


ChangeEvent = dict[str, Any]
"""A JSON-ready event on the bus. Kinds (key ``kind``):

* ``{"kind": "state", "updates": [{"id", "property", "value", "time", "source"}...]}`` --
  new latest values (late messages that only reached history are not sent);
* ``{"kind": "alert", "alert": {...}}`` -- an alert opened, acknowledged or resolved;
* ``{"kind": "resync", "reason": ...}`` -- a bus subscriber lost events (overflow,
  reconnect): the stream answers with fresh snapshots;
* ``{"kind": "comment", "session", "comment": {...}}`` -- a comment became visible;
* ``{"kind": "moderation", "session", "comment_id", "entry", "state", "comment"?}`` --
  approved or hidden (never the text of a hidden comment).
"""


def state_event(updates: Iterable[StateUpdate]) -> ChangeEvent:
    """The ``state`` event announcing new latest values."""
    return {
        "kind": "state",
        "updates": [
            {
                "id": u.object_id,
                "property": u.property,
                "value": u.value,
                "time": u.time,
                "source": u.source,
            }
            for u in updates
        ],
    }


@runtime_checkable
class EventBus(Protocol):
    """Fan-out of change events to every API worker (and so every viewer).

    Implementations: in-process (default, one worker), NATS, Redis pub/sub.
    """

    url: str

    async def publish(self, event: ChangeEvent) -> None:
        """Send an event to every subscriber of every worker (including this one)."""
        ...

    def subscribe(self) -> AsyncIterator[ChangeEvent]:
        """Events from now on, in publish order per publisher, until the iterator is closed."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

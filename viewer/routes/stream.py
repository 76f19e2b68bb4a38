"""Live state to viewers: WebSocket ``/api/stream`` and Server-Sent Events ``/api/stream/sse``.

Protocol (both transports carry the same JSON messages):

* Query parameters: ``ids`` (comma-separated object ids), ``types`` (comma-separated
  CityJSON types), ``bbox`` (WGS84 ``minx,miny,maxx,maxy``), ``since`` (a ``seq`` to
  resume from) and ``worker`` (the ``worker`` of the hello that ``since`` came from).
  An object matches when its id is in ``ids``, or when it has one of ``types`` and
  intersects ``bbox`` (each only if given). No filter at all means every object.
* ``{"type": "hello", "seq": N, "worker": W, "resumed": bool}`` first. ``resumed`` is true
  when ``since`` was still in this worker's buffer of recent events: the events missed
  since then follow as deltas and no snapshot is sent. Otherwise a snapshot follows.
* ``{"type": "snapshot", "seq": N, "states": {id: {property: {value, time, source}}},
  "objects": n, "capped": bool, "message": ..., "unknown_ids": [...]}``: the latest state
  of the matched objects as of ``seq`` (at most 5,000 objects; ``capped`` and ``message``
  say when more match -- deltas still cover every match).
* ``{"type": "delta", "seq": N, "updates": [{id, property, value, time, source}...]}``:
  new latest values, coalesced per client: at most 10 messages a second, and within a
  window only the newest value of each (id, property) is sent.
* ``{"type": "event", "seq": N, "event": {...}}``: other bus events (``{"kind": "alert"}``
  ...), filtered by their ``id``/``object_id`` when they carry one.
* ``{"type": "error", "message": ...}``: a bad filter (the connection then closes with
  code 1008 if it was the initial one) or a bad client message.
* The WebSocket client may send ``{"subscribe": {"ids": [...], "types": [...],
  "bbox": [minx, miny, maxx, maxy]}}`` to replace its filter; a new snapshot answers.
* SSE frames: ``event: hello|snapshot|delta|event|error``, ``id: <seq>`` (not on hello,
  so the browser's ``Last-Event-ID`` -- honoured on reconnect -- is always a position
  the client has fully received), ``data: <the JSON message>``; ``: keepalive`` comments
  every 15 s (WHATWG HTML, Server-sent events).

Sequence numbers are per worker: one counter for every event that worker receives from
the bus, and a ring buffer of the last 10,000 for resuming. Each worker holds one bus
subscription (started by its first client) and fans it out to per-client buffers that
coalesce, so a slow client costs bounded memory and never blocks the others: past
50,000 pending values it is simply sent a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, RootModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.websockets import WebSocketDisconnect, WebSocketState

from sync.bus import RESYNC, start_subscription
from sync.model import ChangeEvent
from twin.errors import TwinError
from twin.objects import TwinObject
from twin.query import ObjectQuery, QueryError, decode_cursor, parse_bbox
from twin.store.base import StateStore
from viewer.deps import Services
from viewer.routes.common import ERRORS, ErrorBody

__all__ = [
    "MAX_SNAPSHOT",
    "StreamClient",
    "StreamFilter",
    "StreamHub",
    "StreamMessage",
    "get_hub",
    "router",
]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["stream"])

MAX_SNAPSHOT = 5_000
MAX_IDS = 10_000
RING_SIZE = 10_000
RING_MAX_UPDATES = 500_000  # state updates held in the ring (events can be batches)
FLUSH_INTERVAL_S = 0.1  # at most 10 messages a second per client
MAX_PENDING = 50_000  # coalesced values held for one client before it gets a snapshot
MAX_PENDING_EVENTS = 1_000
META_CACHE_SIZE = 200_000
KEEPALIVE_S = 15.0
MAX_CLIENT_MESSAGE = 256 * 1024
PAGE = 1_000

Scalar = float | int | str | bool | None
Box = tuple[float, float, float, float]
Meta = tuple[str, Box | None]
"""What a type/bbox filter needs to know about an object: its type and WGS84 2D bbox."""


# -- messages (documentation and tests; the stream builds plain dicts) -----------------------


class StateOut(BaseModel):
    """The latest value of one property in a snapshot."""

    value: Scalar
    time: float
    source: str


class UpdateOut(BaseModel):
    """One new latest value in a delta."""

    id: str
    property: str
    value: Scalar
    time: float
    source: str = ""


class HelloMessage(BaseModel):
    """First message: this worker's position and whether ``since`` could be resumed."""

    type: Literal["hello"]
    seq: int
    worker: str
    resumed: bool


class SnapshotMessage(BaseModel):
    """The latest state of the matched objects as of ``seq``."""

    type: Literal["snapshot"]
    seq: int
    states: dict[str, dict[str, StateOut]]
    objects: int
    capped: bool = False
    message: str | None = None
    unknown_ids: list[str] = Field(default_factory=list)


class DeltaMessage(BaseModel):
    """New latest values up to ``seq``, newest per (id, property) within a window."""

    type: Literal["delta"]
    seq: int
    updates: list[UpdateOut]


class EventMessage(BaseModel):
    """Any other bus event (alerts, comments...), as published."""

    type: Literal["event"]
    seq: int
    event: dict[str, Any]


class ErrorMessage(BaseModel):
    """A filter or client message the server cannot use."""

    type: Literal["error"]
    message: str


class StreamMessage(
    RootModel[
        Annotated[
            HelloMessage | SnapshotMessage | DeltaMessage | EventMessage | ErrorMessage,
            Field(discriminator="type"),
        ]
    ]
):
    """One message of the stream (the ``data`` of one SSE frame, one WebSocket message)."""


# -- filters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamFilter:
    """Which objects a client follows: ids, or types within a WGS84 bbox (or everything)."""

    ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    bbox: Box | None = None

    @property
    def everything(self) -> bool:
        """True when no filter is given: every object matches."""
        return not self.ids and not self.types and self.bbox is None

    @property
    def needs_meta(self) -> bool:
        """True when matching needs the object's type or bbox."""
        return bool(self.types) or self.bbox is not None

    def matches(self, object_id: str, meta: Meta | None) -> bool:
        """Whether ``object_id`` (whose type and bbox are ``meta``, if known) matches."""
        if self.everything or object_id in self.ids:
            return True
        if not self.needs_meta or meta is None:
            return False
        kind, box = meta
        if self.types and kind not in self.types:
            return False
        if self.bbox is not None:
            if box is None:
                return False
            minx, miny, maxx, maxy = self.bbox
            # Intersection, as the stores' bbox queries (ObjectQuery.bbox).
            return not (box[2] < minx or box[0] > maxx or box[3] < miny or box[1] > maxy)
        return True


def _names(value: Any, what: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise QueryError(f"{what} must be a comma-separated string or a list of strings", what)
    out = frozenset(v for v in items if v)
    if len(out) > MAX_IDS:
        raise QueryError(f"more than {MAX_IDS} {what}", what)
    return out


def parse_filter(ids: Any = None, types: Any = None, bbox: Any = None) -> StreamFilter:
    """A filter from query parameters (strings) or a ``subscribe`` message (lists).

    Raises:
        QueryError: a malformed list or bbox.
    """
    box: Box | None = None
    if isinstance(bbox, list):
        if len(bbox) != 4 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in bbox
        ):
            raise QueryError("bbox must be four numbers [minx, miny, maxx, maxy]", "bbox")
        box = parse_bbox(",".join(str(float(v)) for v in bbox))
    elif isinstance(bbox, str) and bbox.strip():
        box = parse_bbox(bbox)
    elif bbox is not None and not isinstance(bbox, str):
        raise QueryError("bbox must be four numbers [minx, miny, maxx, maxy]", "bbox")
    return StreamFilter(_names(ids, "ids"), _names(types, "types"), box)


def _meta(obj: TwinObject) -> Meta:
    g = obj.geometry
    b = g.bbox_wgs84 if g is not None else None
    return obj.type, ((b[0], b[1], b[3], b[4]) if b is not None else None)


def _event_object(event: ChangeEvent) -> str | None:
    """The object a non-state event is about, if it names one (top level or its payload)."""
    if event.get("kind") in ("comment", "moderation"):
        # A comment's id is not an object id: session events go to every viewer.
        return None
    for holder in (event, event.get(str(event.get("kind")))):
        if isinstance(holder, dict):
            for key in ("id", "object_id"):
                value = holder.get(key)
                if isinstance(value, str):
                    return value
    return None


def _event_ids(event: ChangeEvent) -> list[str]:
    if event.get("kind") == "state":
        updates = event.get("updates")
        if isinstance(updates, list):
            return [
                u["id"] for u in updates if isinstance(u, dict) and isinstance(u.get("id"), str)
            ]
        return []
    oid = _event_object(event)
    return [oid] if oid is not None else []


# -- per-worker hub --------------------------------------------------------------------------


class MetaCache:
    """LRU of object id -> (type, WGS84 bbox), so type/bbox filters are cheap per update."""

    def __init__(self, size: int = META_CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[str, Meta | None] = OrderedDict()

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids not cached (unique, in order)."""
        return [i for i in dict.fromkeys(ids) if i not in self._items]

    def lookup(self, object_id: str) -> tuple[bool, Meta | None]:
        """(cached?, meta) without touching the store."""
        if object_id in self._items:
            self._items.move_to_end(object_id)
            return True, self._items[object_id]
        return False, None

    def update(self, metas: dict[str, Meta | None]) -> None:
        """Remember metas (None: no such object), evicting the least recently used."""
        for k, v in metas.items():
            self._items[k] = v
            self._items.move_to_end(k)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def _load_meta(store: StateStore, scenario: str, ids: list[str]) -> dict[str, Meta | None]:
    out: dict[str, Meta | None] = dict.fromkeys(ids)
    for i in range(0, len(ids), PAGE):
        chunk = tuple(ids[i : i + PAGE])
        page = store.query_objects(ObjectQuery(scenario=scenario, ids=chunk, limit=len(chunk)))
        for obj in page.items:
            out[obj.id] = _meta(obj)
    return out


def _states(store: StateStore, object_id: str) -> dict[str, dict[str, Any]]:
    return {
        p: {"value": sv.value, "time": sv.time, "source": sv.source}
        for p, sv in store.latest(object_id).items()
    }


@dataclass
class _Snapshot:
    states: dict[str, dict[str, dict[str, Any]]]
    metas: dict[str, Meta | None]
    unknown: list[str]
    capped: bool


def _read_snapshot(store: StateStore, scenario: str, flt: StreamFilter, cap: int) -> _Snapshot:
    """The latest state of up to ``cap`` matched objects: ids first, then types/bbox by id."""
    states: dict[str, dict[str, dict[str, Any]]] = {}
    metas: dict[str, Meta | None] = {}
    unknown: list[str] = []
    capped = False
    if flt.ids:
        ids = sorted(flt.ids)
        metas.update(_load_meta(store, scenario, ids))
        for object_id in ids:
            if metas[object_id] is None:
                unknown.append(object_id)
            elif len(states) >= cap:
                capped = True
            else:
                states[object_id] = _states(store, object_id)
    if (flt.needs_meta or flt.everything) and not capped:
        cursor = None
        while True:
            page = store.query_objects(
                ObjectQuery(
                    scenario=scenario,
                    types=tuple(sorted(flt.types)),
                    bbox=flt.bbox,
                    limit=PAGE,
                    cursor=cursor,
                )
            )
            for obj in page.items:
                metas[obj.id] = _meta(obj)
                if obj.id in states:
                    continue
                if len(states) >= cap:
                    capped = True
                    break
                states[obj.id] = _states(store, obj.id)
            if capped or page.next_cursor is None:
                break
            cursor = decode_cursor(page.next_cursor)
    return _Snapshot(states, metas, unknown, capped)


class StreamClient:
    """One viewer's subscription: its filter and what is pending for it (coalesced)."""

    def __init__(self, hub: StreamHub, flt: StreamFilter) -> None:
        self.hub = hub
        self.filter = flt
        self.pending: dict[tuple[str, str], dict[str, Any]] = {}
        self.pending_seq = 0
        self.events: deque[tuple[int, ChangeEvent]] = deque()
        self.dropped_events = 0
        self.control: deque[dict[str, Any]] = deque()
        self.snapshot_needed = False
        self.closed = False
        self._wake = asyncio.Event()

    def offer(self, seq: int, event: ChangeEvent) -> None:
        """Take one bus event: keep what matches, newest value per (id, property)."""
        if event.get("kind") == "state":
            updates = event.get("updates")
            if not isinstance(updates, list) or self.snapshot_needed:
                return
            hit = False
            for u in updates:
                if not isinstance(u, dict):
                    continue
                object_id, prop = u.get("id"), u.get("property")
                if not isinstance(object_id, str) or not isinstance(prop, str):
                    continue
                if not self.filter.matches(object_id, self.hub.meta_of(object_id, self.filter)):
                    continue
                hit = True
                key = (object_id, prop)
                old = self.pending.get(key)
                # Newest event time wins, as in the store; a tie goes to the later message.
                if old is None or not _time(u) < _time(old):
                    self.pending[key] = {
                        "id": object_id,
                        "property": prop,
                        "value": u.get("value"),
                        "time": u.get("time"),
                        "source": u.get("source", ""),
                    }
            if not hit:
                return
            self.pending_seq = seq
            if len(self.pending) > MAX_PENDING:
                self.resync()
                return
        else:
            object_id = _event_object(event)
            if object_id is not None and not self.filter.matches(
                object_id, self.hub.meta_of(object_id, self.filter)
            ):
                return
            self.events.append((seq, event))
            if len(self.events) > MAX_PENDING_EVENTS:
                self.events.popleft()
                self.dropped_events += 1
        self._wake.set()

    def resync(self) -> None:
        """Drop pending values and send a fresh snapshot next."""
        self.pending.clear()
        self.snapshot_needed = True
        self._wake.set()

    def resubscribe(self, flt: StreamFilter) -> None:
        """Replace the filter; a snapshot of the new selection follows."""
        self.filter = flt
        self.resync()

    def say(self, message: dict[str, Any]) -> None:
        """Send a control message (an error) ahead of pending data."""
        self.control.append(message)
        self._wake.set()

    def close(self) -> None:
        """Stop :meth:`messages`."""
        self.closed = True
        self._wake.set()

    def _flush(self) -> list[dict[str, Any]]:
        out: list[tuple[int, dict[str, Any]]] = [
            (seq, {"type": "event", "seq": seq, "event": event}) for seq, event in self.events
        ]
        self.events.clear()
        if self.pending:
            updates = list(self.pending.values())
            self.pending.clear()
            out.append(
                (self.pending_seq, {"type": "delta", "seq": self.pending_seq, "updates": updates})
            )
        out.sort(key=lambda m: m[0])
        return [m for _, m in out]

    async def messages(self, deadline: float | None = None) -> AsyncIterator[dict[str, Any] | None]:
        """Snapshots, deltas and events for this client as they come; None = keep-alive.

        Args:
            deadline: loop time at which to stop (None: until :meth:`close`).
        """
        loop = asyncio.get_running_loop()
        last = float("-inf")
        while not self.closed:
            if deadline is not None and loop.time() >= deadline:
                return
            if self.control:
                yield self.control.popleft()
                continue
            if self.snapshot_needed:
                self.snapshot_needed = False
                self.pending.clear()
                yield await self.hub.snapshot(self.filter)
                last = loop.time()
                continue
            if not self.pending and not self.events:
                self._wake.clear()
                wait = KEEPALIVE_S if deadline is None else min(KEEPALIVE_S, deadline - loop.time())
                try:
                    await asyncio.wait_for(self._wake.wait(), max(wait, 0.0))
                except TimeoutError:
                    yield None
                continue
            delay = last + FLUSH_INTERVAL_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # meanwhile more values coalesce
                continue
            last = loop.time()
            for message in self._flush():
                yield message


def _size(event: ChangeEvent) -> int:
    updates = event.get("updates")
    return len(updates) if isinstance(updates, list) else 1


def _time(update: dict[str, Any]) -> float:
    t = update.get("time")
    return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else float("-inf")


class StreamHub:
    """A worker's one bus subscription, its sequence numbers, ring buffer and clients."""

    def __init__(
        self, services: Services, *, ring_size: int = RING_SIZE, cap: int = MAX_SNAPSHOT
    ) -> None:
        self.services = services
        self.worker = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.seq = 0
        self.floor = 0  # the oldest `since` whose following events are all in the ring
        self.ring: deque[tuple[int, ChangeEvent]] = deque()
        self.ring_size = ring_size
        self._ring_updates = 0
        self.clients: set[StreamClient] = set()
        self.meta = MetaCache()
        self.cap = cap
        self.loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def scenario(self) -> str:
        """The scenario whose objects filters and snapshots use."""
        return self.services.settings.scenario

    async def start(self) -> None:
        """Subscribe to the bus once (idempotent); live before this returns.

        Raises:
            TwinError: the bus is unreachable.
        """
        if self._task is not None and not self._task.done():
            return
        async with self._lock:
            if self._task is not None and not self._task.done():
                return
            sub = self.services.bus.subscribe()
            await start_subscription(sub)
            # Events before this were not seen: nothing earlier can be replayed.
            self.floor = self.seq
            self._task = asyncio.create_task(self._pump(sub), name="stream-hub")

    async def _pump(self, sub: AsyncIterator[ChangeEvent]) -> None:
        backoff = 1.0
        while True:
            try:
                async for event in sub:
                    await self.dispatch(event)
                    backoff = 1.0
                return  # the bus was closed
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event bus subscription failed; subscribing again")
            finally:
                close = getattr(sub, "aclose", None)
                if close is not None:
                    await close()
            await self.dispatch({"kind": RESYNC, "reason": "event bus subscription failed"})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            sub = self.services.bus.subscribe()
            try:
                await start_subscription(sub)
            except Exception as exc:
                log.warning("event bus still unavailable: %s", exc)

    def meta_of(self, object_id: str, flt: StreamFilter) -> Meta | None:
        """An object's meta when ``flt`` needs it (cached; the store only on a miss)."""
        if not flt.needs_meta or object_id in flt.ids:
            return None
        cached, meta = self.meta.lookup(object_id)
        if not cached:
            # Rare: dispatch prefetches; a client's new filter may need it first.
            metas = _load_meta(self.services.store, self.scenario, [object_id])
            self.meta.update(metas)
            meta = metas[object_id]
        return meta

    async def prefetch(self, events: Iterable[ChangeEvent], *, force: bool = False) -> None:
        """Load the meta of the objects in ``events`` that a type/bbox filter will ask for.

        Args:
            events: bus events about to be offered to clients.
            force: load even if no connected client filters by type or bbox (yet).
        """
        if not force and not any(c.filter.needs_meta for c in self.clients):
            return
        ids = self.meta.missing(i for e in events for i in _event_ids(e))
        if not ids:
            return
        try:
            metas = await run_in_threadpool(_load_meta, self.services.store, self.scenario, ids)
        except Exception:
            log.exception("cannot load object types/bboxes for stream filters")
            return
        self.meta.update(metas)

    async def dispatch(self, event: ChangeEvent) -> None:
        """Number one bus event, keep it for resuming and offer it to every client."""
        await self.prefetch([event])
        # From here on no await: numbering, the ring and the fan-out are one step, so a
        # client that connects or resumes sees each event exactly once.
        self.seq += 1
        if event.get("kind") == RESYNC:
            log.warning("stream: events lost (%s); clients get a snapshot", event.get("reason"))
            self.floor = self.seq
            for client in self.clients:
                client.resync()
            return
        self._remember(self.seq, event)
        for client in self.clients:
            client.offer(self.seq, event)

    def _remember(self, seq: int, event: ChangeEvent) -> None:
        """Keep the event for resuming; forget the oldest past the count or update limits."""
        self.ring.append((seq, event))
        self._ring_updates += _size(event)
        while len(self.ring) > self.ring_size or (
            self._ring_updates > RING_MAX_UPDATES and len(self.ring) > 1
        ):
            _, old = self.ring.popleft()
            self._ring_updates -= _size(old)

    def can_resume(self, since: int) -> bool:
        """Whether every event after ``since`` is still in the ring buffer."""
        if since < self.floor or since > self.seq:
            return False
        return since == self.seq or (bool(self.ring) and self.ring[0][0] <= since + 1)

    async def connect(
        self, flt: StreamFilter, since: int | None = None, worker: str | None = None
    ) -> tuple[StreamClient, dict[str, Any]]:
        """Register a client; return it and its hello (resumed from ``since`` if possible).

        Raises:
            TwinError: the bus is unreachable.
        """
        await self.start()
        resumable = since is not None and worker in (None, self.worker)
        if resumable and since is not None and flt.needs_meta:
            await self.prefetch((e for s, e in self.ring if s > since), force=True)
        client = StreamClient(self, flt)
        resumed = resumable and since is not None and self.can_resume(since)
        if resumed and since is not None:
            for s, e in self.ring:
                if s > since:
                    client.offer(s, e)
        else:
            client.snapshot_needed = True
        self.clients.add(client)
        hello = {"type": "hello", "seq": self.seq, "worker": self.worker, "resumed": resumed}
        return client, hello

    def disconnect(self, client: StreamClient) -> None:
        """Forget a client."""
        client.close()
        self.clients.discard(client)

    async def snapshot(self, flt: StreamFilter) -> dict[str, Any]:
        """A snapshot message for ``flt`` as of now (the current ``seq``)."""
        seq = self.seq
        snap = await run_in_threadpool(
            _read_snapshot, self.services.store, self.scenario, flt, self.cap
        )
        self.meta.update(snap.metas)
        message: dict[str, Any] = {
            "type": "snapshot",
            "seq": seq,
            "states": snap.states,
            "objects": len(snap.states),
            "capped": snap.capped,
        }
        if snap.capped:
            message["message"] = (
                f"more than {self.cap:,} objects match: the snapshot holds {self.cap:,} "
                "(ids first, then by id); deltas still cover every match"
            )
        if snap.unknown:
            message["unknown_ids"] = snap.unknown[:100]
        return message


def get_hub(app: Any) -> StreamHub:
    """The worker's hub, kept on ``app.state`` (made on first use, per event loop)."""
    hub: StreamHub | None = getattr(app.state, "stream_hub", None)
    if hub is None or hub.loop is not asyncio.get_running_loop():
        hub = StreamHub(app.state.services)
        app.state.stream_hub = hub
    return hub


def _dumps(message: dict[str, Any]) -> str:
    return orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS).decode()


# -- WebSocket -------------------------------------------------------------------------------


async def _receive(websocket: WebSocket, client: StreamClient) -> None:
    """Read client messages (``subscribe``) until the socket closes."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = (message.get("bytes") or b"").decode("utf-8", "replace")
            if len(raw) > MAX_CLIENT_MESSAGE:
                client.say({"type": "error", "message": "message too large"})
                continue
            try:
                body = orjson.loads(raw)
                if not isinstance(body, dict) or not isinstance(body.get("subscribe"), dict):
                    raise QueryError('expected {"subscribe": {"ids", "types", "bbox"}}')
                sub = body["subscribe"]
                client.resubscribe(parse_filter(sub.get("ids"), sub.get("types"), sub.get("bbox")))
            except orjson.JSONDecodeError:
                client.say({"type": "error", "message": "message is not JSON"})
            except TwinError as exc:
                client.say({"type": "error", "message": exc.message})
    except WebSocketDisconnect:
        return
    finally:
        client.close()


@router.websocket("/stream")
async def stream_websocket(
    websocket: WebSocket,
    ids: str | None = None,
    types: str | None = None,
    bbox: str | None = None,
    since: int | None = None,
    worker: str | None = None,
) -> None:
    """Live state over a WebSocket (protocol in the module docstring)."""
    await websocket.accept()
    try:
        flt = parse_filter(ids, types, bbox)
    except TwinError as exc:
        await websocket.send_text(_dumps({"type": "error", "message": exc.message}))
        await websocket.close(code=1008)  # RFC 6455 §7.4.1: policy violation
        return
    hub = get_hub(websocket.app)
    try:
        client, hello = await hub.connect(flt, since, worker)
    except TwinError as exc:
        await websocket.send_text(_dumps({"type": "error", "message": exc.message}))
        await websocket.close(code=1011)  # RFC 6455 §7.4.1: unexpected condition
        return
    receiver = asyncio.create_task(_receive(websocket, client))
    try:
        await websocket.send_text(_dumps(hello))
        async for message in client.messages():
            if message is not None:
                await websocket.send_text(_dumps(message))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away mid-send
    finally:
        hub.disconnect(client)
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        if websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError):
                await websocket.close()


# -- Server-Sent Events ----------------------------------------------------------------------


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` (WHATWG HTML, Server-sent events)."""

    media_type = "text/event-stream"


def _frame(message: dict[str, Any]) -> str:
    kind = message["type"]
    head = f"event: {kind}\n"
    if kind != "hello" and "seq" in message:
        head += f"id: {message['seq']}\n"
    return f"{head}data: {_dumps(message)}\n\n"


SSE_DESCRIPTION = """Live state as Server-Sent Events, for clients without WebSockets
(the WebSocket ``/api/stream`` takes the same parameters and sends the same messages).

Frames: ``event: hello|snapshot|delta|event|error``, ``id: <seq>``, ``data: <JSON>``.
First a ``hello`` (``seq``, ``worker``, ``resumed``); then a ``snapshot`` of the matched
objects' latest state (at most 5,000 objects; ``capped`` says when more match), or, when
resuming, the missed deltas; then ``delta`` messages with new latest values (at most 10 a
second, newest value per object and property within a window) and ``event`` messages
(alerts and other events, filtered by object id when they name one).

Resume: the browser sends ``Last-Event-ID`` on reconnect (or pass ``since``); if this
worker still has the events after it (last 10,000), they are replayed and ``resumed`` is
true, else a fresh snapshot is sent. ``: keepalive`` comments come every 15 s."""


@router.get(
    "/stream/sse",
    response_class=EventStreamResponse,
    responses={
        200: {"model": StreamMessage, "description": "an endless event stream"},
        503: {"model": ErrorBody, "description": "the event bus is unreachable"},
        **ERRORS,
    },
    summary="Live state as Server-Sent Events",
    description=SSE_DESCRIPTION,
)
async def stream_sse(
    request: Request,
    ids: Annotated[str | None, Query(description="comma-separated object ids")] = None,
    types: Annotated[str | None, Query(description="comma-separated CityJSON types")] = None,
    bbox: Annotated[
        str | None, Query(description="WGS84 minx,miny,maxx,maxy (intersecting objects)")
    ] = None,
    since: Annotated[int | None, Query(ge=0, description="resume after this seq")] = None,
    worker: Annotated[
        str | None, Query(max_length=200, description="the worker `since` came from")
    ] = None,
    timeout: Annotated[
        float | None,
        Query(gt=0, le=86_400, description="end the stream after this many seconds"),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="the last `id` received (resume)"),
    ] = None,
) -> EventStreamResponse:
    flt = parse_filter(ids, types, bbox)
    if last_event_id is not None and last_event_id.strip().isdigit():
        since = int(last_event_id)
    hub = get_hub(request.app)
    try:
        client, hello = await hub.connect(flt, since, worker)
    except TwinError as exc:
        raise HTTPException(503, exc.message) from exc
    deadline = asyncio.get_running_loop().time() + timeout if timeout else None

    async def frames() -> AsyncIterator[str]:
        try:
            yield "retry: 1000\n" + _frame(hello)
            async for message in client.messages(deadline):
                yield ": keepalive\n\n" if message is None else _frame(message)
        finally:
            hub.disconnect(client)

    return EventStreamResponse(
        frames(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )

"""Event buses: fan change events out to every API worker (in-process, NATS, Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sync.model import ChangeEvent
from twin.errors import TwinError

__all__ = ["InProcessBus", "open_bus"]


class InProcessBus:
    """The default bus: one process, every subscriber gets every event (asyncio queues).

    A slow subscriber's queue is bounded; when it is full the oldest event is dropped for
    that subscriber only (the stream then resynchronizes it with a snapshot).
    """

    url = "memory://"

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._queues: set[asyncio.Queue[ChangeEvent]] = set()

    async def publish(self, event: ChangeEvent) -> None:
        for q in list(self._queues):
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[ChangeEvent]:
        q: asyncio.Queue[ChangeEvent] = asyncio.Queue(self.maxsize)
        self._queues.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._queues.discard(q)

    async def close(self) -> None:
        self._queues.clear()


def open_bus(url: str) -> InProcessBus:
    """The bus named by a URL: ``memory://`` (NATS and Redis are added by their adapters).

    Raises:
        TwinError: unknown scheme.
    """
    if url in ("memory://", "memory", ""):
        return InProcessBus()
    raise TwinError(f"unknown event bus URL {url!r} (memory://, nats://host:port, redis://...)")

"""Request dependencies: the wired services and the caller's role."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from scene.service import SceneCache
from sync.bus import InProcessBus
from sync.config import LiveConfig
from sync.engine import SyncEngine
from sync.feeds import Feed
from sync.model import EventBus, state_event
from twin.errors import TwinError
from twin.network_index import NetworkIndex
from twin.state import AuditEntry, StateUpdate
from twin.store.base import StateStore
from twin.store.participation import ParticipationStore
from viewer.auth import Caller, authorize
from viewer.settings import Settings

__all__ = ["Services", "ServicesDep", "require"]

_log = logging.getLogger("citytwin")


@dataclass
class Services:
    """The concrete parts one app runs on (wired by :func:`viewer.bootstrap.bootstrap`)."""

    settings: Settings
    store: StateStore
    scenes: SceneCache
    tokens: dict[str, Caller]
    networks: NetworkIndex
    bus: EventBus = field(default_factory=InProcessBus)
    live: LiveConfig = field(default_factory=LiveConfig)
    engine: SyncEngine | None = None
    feeds: list[Feed] = field(default_factory=list)
    participation: ParticipationStore | None = None

    def feed_status(self) -> dict[str, Any]:
        """The sync engine's counters and every feed's status."""
        return {
            "engine": self.engine.status() if self.engine is not None else None,
            "feeds": [f.status().as_dict() for f in self.feeds],
        }

    started: float = field(default_factory=time.time)

    async def publish_latest(self, updates: list[StateUpdate]) -> None:
        """Tell every viewer about new latest values (late messages are not news).

        The values are committed already: a bus that is down must not turn the write into
        an error (viewers resynchronize from a snapshot when they reconnect).
        """
        if not updates:
            return
        event = state_event(updates)
        try:
            await self.bus.publish(event)
        except TwinError as exc:
            _log.warning("event bus: %s (the values are stored)", exc)

    def audit(self, caller: Caller, action: str, object_ids: list[str], detail: str = "") -> None:
        """Append a write to the audit log."""
        self.store.append_audit(
            AuditEntry(time.time(), caller.name, caller.role, action, tuple(object_ids), detail)
        )


async def get_services(request: Request) -> Services:
    """The app's services (async: a sync dependency would cost a thread hop per request)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def require(*roles: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits callers whose token has one of ``roles``."""
    allowed = frozenset(roles)

    async def dependency(
        services: ServicesDep,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Caller:
        return authorize(services.tokens, authorization, allowed)

    return dependency

"""Request dependencies: the wired services and the caller's role."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request

from scene.service import SceneCache
from sync.bus import InProcessBus
from sync.model import EventBus
from twin.network_index import NetworkIndex
from twin.state import AuditEntry, StateUpdate
from twin.store.base import StateStore
from viewer.auth import Caller, authorize
from viewer.settings import Settings

__all__ = ["Services", "ServicesDep", "require"]


@dataclass
class Services:
    """The concrete parts one app runs on (wired by :func:`viewer.bootstrap.bootstrap`)."""

    settings: Settings
    store: StateStore
    scenes: SceneCache
    tokens: dict[str, Caller]
    networks: NetworkIndex
    bus: EventBus = field(default_factory=InProcessBus)
    started: float = field(default_factory=time.time)

    async def publish_latest(self, updates: list[StateUpdate]) -> None:
        """Tell every viewer about new latest values (late messages are not news)."""
        if updates:
            await self.bus.publish(
                {
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
            )

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

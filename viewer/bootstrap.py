"""The one place that wires concrete parts (store, scene cache, tokens) from settings."""

from __future__ import annotations

from scene.service import SceneCache
from sync.bus import open_bus
from sync.config import load_config
from twin.network_index import NetworkIndex
from twin.store import open_store
from twin.store.participation import participation_store_for
from viewer.auth import parse_tokens
from viewer.deps import Services
from viewer.settings import Settings

__all__ = ["bootstrap"]


def bootstrap(settings: Settings | None = None) -> Services:
    """Open the store named by ``settings.db`` and wire the services.

    Raises:
        twin.errors.TwinError: bad settings or an unreachable store.
    """
    settings = settings or Settings()
    tokens = parse_tokens(settings.tokens)
    store = open_store(settings.db)
    return Services(
        settings=settings,
        store=store,
        scenes=SceneCache(store),
        tokens=tokens,
        networks=NetworkIndex(store),
        bus=open_bus(settings.bus),
        live=load_config(settings.config),
        participation=participation_store_for(store),
    )

"""The networks of a scenario, loaded from the store's network documents and cached."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from twin.errors import NotFound
from twin.network import Network, neighbours, network_from_json
from twin.store.base import SourceInfo, StateStore

__all__ = ["NETWORK_SOURCE_PREFIX", "NetworkIndex", "network_source_name"]

NETWORK_SOURCE_PREFIX = "network:"
"""Stored source documents whose name starts with this hold a network (JSON graph)."""


def network_source_name(network_id: str) -> str:
    """The source-document name a network is stored under."""
    return NETWORK_SOURCE_PREFIX + network_id


@dataclass(frozen=True)
class _Loaded:
    sha256: str
    network: Network
    served_by: dict[str, str]  # building id -> node id (the links, as stored)
    serves: dict[str, list[str]]  # node id -> building ids


class NetworkIndex:
    """Networks by id for one store; a network is re-read only when its document changes."""

    def __init__(self, store: StateStore, *, ttl: float = 1.0) -> None:
        self.store = store
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], _Loaded] = {}
        self._infos_at: dict[str, tuple[float, dict[str, SourceInfo]]] = {}

    def _infos(self, scenario: str, *, cached: bool = False) -> dict[str, SourceInfo]:
        # Every object read asks for relations; for those (cached=True) the list of
        # networks is re-read at most once per `ttl` seconds (a network ingested by
        # another process shows up within that), not once per request.
        now = time.monotonic()
        hit = self._infos_at.get(scenario)
        if cached and hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        infos = {
            i.name[len(NETWORK_SOURCE_PREFIX) :]: i
            for i in self.store.sources(scenario)
            if i.name.startswith(NETWORK_SOURCE_PREFIX)
        }
        self._infos_at[scenario] = (now, infos)
        return infos

    def refresh(self) -> None:
        """Forget the cached list of networks (after this process stored one)."""
        self._infos_at.clear()

    def ids(self, scenario: str = "base") -> list[str]:
        """Ids of the networks stored in a scenario, in the order they were added."""
        return list(self._infos(scenario))

    def _load(self, network_id: str, scenario: str, info: SourceInfo | None = None) -> _Loaded:
        name = network_source_name(network_id)
        info = info or self._infos(scenario).get(network_id)
        if info is None:
            raise NotFound(f"no network {network_id!r} in scenario {scenario!r}")
        key = (scenario, network_id)
        cached = self._cache.get(key)
        if cached is not None and cached.sha256 == info.sha256:
            return cached
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.sha256 == info.sha256:
                return cached
            data = self.store.get_source(name, scenario)
            if data is None:
                raise NotFound(f"no network {network_id!r} in scenario {scenario!r}")
            net = network_from_json(data)
            serves: dict[str, list[str]] = {}
            for b, n in sorted(net.links.items()):
                serves.setdefault(n, []).append(b)
            loaded = _Loaded(info.sha256, net, dict(net.links), serves)
            self._cache[key] = loaded
            return loaded

    def get(self, network_id: str, scenario: str = "base") -> Network:
        """One network.

        Raises:
            NotFound: no such network in the scenario.
        """
        return self._load(network_id, scenario).network

    def all(self, scenario: str = "base") -> list[Network]:
        """Every network of a scenario."""
        return [self.get(i, scenario) for i in self.ids(scenario)]

    def relations(self, object_id: str, scenario: str = "base") -> dict[str, object] | None:
        """What the networks say about an object, or None when they say nothing.

        For a network asset: its network, neighbours and the buildings it serves (a node)
        or its end nodes (an edge). For a building: the network nodes that serve it.
        """
        infos = self._infos(scenario, cached=True)
        if not infos:
            return None
        if object_id.startswith("net:"):
            network_id = object_id.split(":", 2)[1]
            if network_id not in infos:
                return None
            loaded = self._load(network_id, scenario, infos[network_id])
            net = loaded.network
            if object_id not in net:
                return None
            out: dict[str, object] = {
                "network": network_id,
                "kind": net.kind,
                "neighbours": neighbours(net, object_id),
            }
            if net.is_edge(object_id):
                u, v, _ = net.edge(object_id)
                out["from"], out["to"] = u, v
                out["serves"] = []
            else:
                out["serves"] = loaded.serves.get(object_id, [])
                out["source"] = object_id in net.sources
            return out
        served = []
        for network_id, info in infos.items():
            loaded = self._load(network_id, scenario, info)
            node = loaded.served_by.get(object_id)
            if node is not None:
                served.append({"network": network_id, "kind": loaded.network.kind, "node": node})
        return {"served_by": served} if served else None

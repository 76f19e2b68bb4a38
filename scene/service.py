"""The current scene of a scenario: a GLB built from the store's source documents, cached."""

from __future__ import annotations

import gzip
import hashlib
import io
import threading
from dataclasses import dataclass

from scene.gltf import GlbBuilder
from scene.proposal import scene_view
from twin.errors import NotFound
from twin.network import network_from_json
from twin.network_index import NETWORK_SOURCE_PREFIX
from twin.store.base import StateStore

__all__ = ["SceneCache", "SceneGlb"]


@dataclass(frozen=True)
class SceneGlb:
    """A built scene: bytes, gzip bytes and an ETag derived from its sources."""

    data: bytes
    gzipped: bytes
    etag: str
    features: int
    origin: tuple[float, float, float]


class SceneCache:
    """Builds a scenario's GLB from its stored sources when they change."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._cache: dict[str, SceneGlb] = {}

    def get(self, scenario: str = "base") -> SceneGlb:
        """The scene of ``scenario``; rebuilt only if its sources changed.

        Raises:
            NotFound: the scenario has no source documents.
        """
        from ingest.cityjson import parse_cityjson

        infos = self.store.sources(scenario)
        if not infos:
            raise NotFound(f"scenario {scenario!r} has no scene (nothing ingested)")
        etag = (
            '"'
            + hashlib.sha256("|".join(f"{i.name}:{i.sha256}" for i in infos).encode()).hexdigest()[
                :32
            ]
            + '"'
        )
        cached = self._cache.get(scenario)
        if cached is not None and cached.etag == etag:
            return cached
        # A proposal (scene.proposal) hides removed/replaced base objects and is drawn in
        # its base's frame, so both scenes line up (resolved before taking the lock).
        view = scene_view(self.store, scenario, [i.name for i in infos])
        origin = self.get(view.base).origin if view.base is not None else None
        with self._lock:
            cached = self._cache.get(scenario)
            if cached is not None and cached.etag == etag:
                return cached
            builder = GlbBuilder(scenario, origin=origin)
            # Cities first: they fix the scene origin; networks are stored in the city's CRS
            # (see ingest.networks.place) and drawn in the same frame.
            networks = [i for i in infos if i.name.startswith(NETWORK_SOURCE_PREFIX)]
            for info in [i for i in infos if i not in networks] + networks:
                if view.skips(info.name):
                    continue
                data = self.store.get_source(info.name, scenario)
                if data is None:
                    continue
                if info in networks:
                    builder.add_network(network_from_json(data))
                else:
                    builder.add(view.apply(info.name, parse_cityjson(data, source=info.name)))
            buf = io.BytesIO()
            stats = builder.write(buf)
            glb = buf.getvalue()
            built = SceneGlb(glb, gzip.compress(glb, 6), etag, stats.features, stats.origin)
            self._cache[scenario] = built
            return built

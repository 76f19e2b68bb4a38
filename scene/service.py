"""The current scene of a scenario: a GLB built from the store's source documents, cached."""

from __future__ import annotations

import gzip
import hashlib
import io
import threading
from dataclasses import dataclass

from scene.gltf import GlbBuilder
from twin.errors import NotFound
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
        with self._lock:
            cached = self._cache.get(scenario)
            if cached is not None and cached.etag == etag:
                return cached
            builder = GlbBuilder(scenario)
            for info in infos:
                data = self.store.get_source(info.name, scenario)
                if data is not None:
                    builder.add(parse_cityjson(data, source=info.name))
            buf = io.BytesIO()
            stats = builder.write(buf)
            glb = buf.getvalue()
            built = SceneGlb(glb, gzip.compress(glb, 6), etag, stats.features, stats.origin)
            self._cache[scenario] = built
            return built

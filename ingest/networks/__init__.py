"""Network readers: each turns a utility/GIS file into a :class:`twin.network.Network`.

One module per format (trimesh ``exchange/`` style); :data:`READERS` maps a format name to
``module:function`` and :func:`read_network` picks one by name or file suffix. Heavy
libraries (pyosmium, pandapower, wntr, pyogrio) are optional and imported only when used.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from twin.errors import IngestError
from twin.network import Network

__all__ = ["READERS", "detect_format", "read_network"]

READERS: dict[str, str] = {
    "epanet": "ingest.networks.epanet:read_epanet",
    "pandapower": "ingest.networks.pandapower:read_pandapower",
    "geojson": "ingest.networks.geojson:read_geojson",
    "gpkg": "ingest.networks.geojson:read_gpkg",
    "osm": "ingest.networks.osm:read_osm_networks",
}

_SUFFIXES = {
    ".inp": "epanet",
    ".geojson": "geojson",
    ".gpkg": "gpkg",
    ".pbf": "osm",
    ".osm": "osm",
}


def detect_format(path: str | Path) -> str:
    """The reader name for a file, by suffix (``.json`` is a pandapower net or GeoJSON).

    Raises:
        IngestError: unknown suffix.
    """
    p = Path(path)
    name = p.name.lower()
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    if name.endswith(".json"):
        with p.open("rb") as fh:
            head = fh.read(4096)
        return "pandapower" if b"pandapowerNet" in head else "geojson"
    raise IngestError(
        "unknown network format (expected .inp, .json, .geojson, .gpkg, .osm.pbf)",
        source=str(path),
    )


def read_network(path: str | Path, fmt: str | None = None, **options: Any) -> list[Network]:
    """Read every network a file holds (OSM files hold several).

    Raises:
        IngestError: unreadable or malformed input.
        twin.errors.MissingExtra: the format needs an optional extra.
    """
    fmt = fmt or detect_format(path)
    target = READERS.get(fmt)
    if target is None:
        raise IngestError(f"unknown network format {fmt!r} (one of {', '.join(READERS)})")
    module, func = target.split(":")
    result = getattr(importlib.import_module(module), func)(path, **options)
    return list(result) if isinstance(result, list | tuple) else [result]

"""CityTwin domain core: objects, geometry container, errors (no I/O, no web, no drivers).

Names are imported lazily so that ``import twin.errors`` (the CLI's first import) does
not pull in numpy.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "CityModel",
    "GeometrySummary",
    "IngestError",
    "Material",
    "ModelWarning",
    "NotFound",
    "SceneError",
    "Twin",
    "TwinError",
    "TwinObject",
]

_WHERE = {
    "CityModel": "twin.geometry",
    "Material": "twin.geometry",
    "ModelWarning": "twin.geometry",
    "GeometrySummary": "twin.objects",
    "Twin": "twin.objects",
    "TwinObject": "twin.objects",
    "IngestError": "twin.errors",
    "NotFound": "twin.errors",
    "SceneError": "twin.errors",
    "TwinError": "twin.errors",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'twin' has no attribute {name!r}")
    return getattr(import_module(module), name)

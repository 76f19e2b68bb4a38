"""CityTwin domain core: objects, geometry container, errors (no I/O, no web, no drivers)."""

from twin.errors import IngestError, NotFound, SceneError, TwinError
from twin.geometry import CityModel, Material, ModelWarning
from twin.objects import GeometrySummary, Twin, TwinObject

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

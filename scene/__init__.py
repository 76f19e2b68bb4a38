"""Scene building: triangulation and glTF/GLB export of city models."""

from scene.gltf import GlbBuilder, SceneStats, model_to_glb, write_glb, write_glb_stream
from scene.triangulate import Triangulation, triangulate

__all__ = [
    "GlbBuilder",
    "SceneStats",
    "Triangulation",
    "model_to_glb",
    "triangulate",
    "write_glb",
    "write_glb_stream",
]

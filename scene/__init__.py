"""Scene building: triangulation and glTF/GLB export of city models."""

from scene.gltf import SceneStats, model_to_glb, write_glb
from scene.triangulate import Triangulation, triangulate

__all__ = ["SceneStats", "Triangulation", "model_to_glb", "triangulate", "write_glb"]

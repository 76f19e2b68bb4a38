"""Decode GLB files for tests, independently of the writer (glTF 2.0 §4.4, struct + numpy).

Reads plain float32 accessors and quantized ones (KHR_mesh_quantization: normalized
integer components, interleaving byte strides); :meth:`Glb.accessor` returns POSITION
values in the mesh's local frame, i.e. through the transform of the node that draws it,
so tests compare positions the same way whether or not the file is quantized.
"""

from __future__ import annotations

import itertools
import json
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

_COMPONENTS = {
    5120: np.int8,
    5121: np.uint8,
    5122: np.int16,
    5123: np.uint16,
    5125: np.uint32,
    5126: np.float32,
}
# Largest value of each integer component type: a normalized c decodes as c / this.
_NORMALIZED_MAX = {5120: 127.0, 5121: 255.0, 5122: 32767.0, 5123: 65535.0}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


@dataclass
class Glb:
    """A GLB split into its JSON and BIN chunks (glTF 2.0 §4.4), read with struct/numpy."""

    doc: dict[str, Any]
    blob: bytes

    @classmethod
    def parse(cls, data: bytes) -> Glb:
        magic, version, length = struct.unpack_from("<III", data, 0)
        assert (magic, version, length) == (0x46546C67, 2, len(data))
        jlen, jtype = struct.unpack_from("<II", data, 12)
        assert jtype == 0x4E4F534A and jlen % 4 == 0
        blen, btype = struct.unpack_from("<II", data, 20 + jlen)
        assert btype == 0x004E4942 and 28 + jlen + blen == len(data)
        return cls(json.loads(data[20 : 20 + jlen]), data[28 + jlen :])

    def view(self, index: int) -> bytes:
        v = self.doc["bufferViews"][index]
        start = v.get("byteOffset", 0)
        return self.blob[start : start + v["byteLength"]]

    def accessor(self, index: int, *, raw: bool = False) -> np.ndarray:
        """An accessor's values, one row per element (glTF 2.0 §3.6.2).

        Args:
            index: the accessor index.
            raw: the stored values as they are; otherwise normalized integers are
                decoded to floats (glTF 2.0 §3.11) and POSITION / NORMAL accessors of
                the mesh are mapped through its node's transform (KHR_mesh_quantization
                dequantizes positions with the node's translation and scale).
        """
        acc = self.doc["accessors"][index]
        v = self.doc["bufferViews"][acc["bufferView"]]
        width = _WIDTH[acc["type"]]
        dtype = np.dtype(_COMPONENTS[acc["componentType"]]).newbyteorder("<")
        elem = dtype.itemsize * width
        stride = v.get("byteStride", elem)
        assert stride >= elem and stride % dtype.itemsize == 0
        # glTF 2.0 §3.6.2.4: vertex attribute elements start on 4-byte boundaries.
        if v.get("target") == 34962:
            assert stride % 4 == 0, f"accessor {index}: stride {stride} not 4-byte aligned"
        start = v.get("byteOffset", 0) + acc.get("byteOffset", 0)
        count = acc["count"]
        if count:
            end = start + (count - 1) * stride + elem
            assert end <= v.get("byteOffset", 0) + v["byteLength"] <= len(self.blob)
        arr = np.ndarray(
            (count, width),
            dtype=dtype,
            buffer=self.blob,
            offset=start,
            strides=(stride, dtype.itemsize),
        ).copy()
        if raw:
            return arr if width > 1 else arr.reshape(-1)
        out: np.ndarray = arr
        if acc.get("normalized"):
            top = _NORMALIZED_MAX[acc["componentType"]]
            # Signed values: max(c / top, -1) (glTF 2.0 §3.11), so -128 decodes as -1.
            out = np.maximum(arr.astype(np.float64) / top, -1.0)
        # A float32 file's node has no transform: its values come back as stored.
        if index in self._position_accessors and not self._identity:
            m = self.mesh_matrix
            out = out.astype(np.float64) @ m[:3, :3].T + m[:3, 3]
        elif index in self._normal_accessors and not self._identity:
            lin = self.mesh_matrix[:3, :3]
            if not np.allclose(lin, lin[0, 0] * np.eye(3)):
                # Normals go through the inverse transpose (row vectors: n @ M^-1).
                out = out.astype(np.float64) @ np.linalg.inv(lin)
                out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out if width > 1 else out.reshape(-1)

    @cached_property
    def _position_accessors(self) -> frozenset[int]:
        return frozenset(p["attributes"]["POSITION"] for p in self.primitives)

    @cached_property
    def _normal_accessors(self) -> frozenset[int]:
        return frozenset(
            p["attributes"]["NORMAL"] for p in self.primitives if "NORMAL" in p["attributes"]
        )

    @cached_property
    def _identity(self) -> bool:
        return bool(np.array_equal(self.mesh_matrix, np.eye(4)))

    @cached_property
    def mesh_matrix(self) -> np.ndarray:
        """The world matrix of the one node drawing mesh 0 (glTF 2.0 §3.5.2-3)."""
        nodes = self.doc.get("nodes", [])
        found: list[np.ndarray] = []
        scene = self.doc["scenes"][self.doc.get("scene", 0)]
        stack = [(n, np.eye(4)) for n in scene.get("nodes", [])]
        while stack:
            i, parent = stack.pop()
            m = parent @ _node_matrix(nodes[i])
            if nodes[i].get("mesh") == 0:
                found.append(m)
            stack.extend((c, m) for c in nodes[i].get("children", []))
        assert len(found) == 1, f"mesh 0 drawn by {len(found)} nodes"
        matrix: np.ndarray = found[0]
        return matrix

    @property
    def primitives(self) -> list[dict[str, Any]]:
        return list(self.doc["meshes"][0]["primitives"])

    @property
    def origin(self) -> np.ndarray:
        return np.asarray(self.doc["asset"]["extras"]["citytwin"]["origin"], dtype=np.float64)

    def to_source(self, local: np.ndarray) -> np.ndarray:
        """glTF local (x east, y up, z south) -> source CRS (east, north, up)."""
        p = local.astype(np.float64)
        return self.origin + np.column_stack([p[:, 0], -p[:, 2], p[:, 1]])

    def table(self) -> tuple[int, dict[str, Any]]:
        """The EXT_structural_metadata property table: (count, {column: values})."""
        meta = self.doc["extensions"]["EXT_structural_metadata"]
        (table,) = meta["propertyTables"]
        classes = meta["schema"]["classes"]
        props = classes[table["class"]]["properties"]
        out: dict[str, Any] = {}
        for name, prop in table["properties"].items():
            if props[name]["type"] == "STRING":
                assert prop["stringOffsetType"] == "UINT32"
                offs = np.frombuffer(self.view(prop["stringOffsets"]), dtype=np.uint32)
                assert offs.size == table["count"] + 1 and offs[0] == 0
                vals = self.view(prop["values"])
                assert offs[-1] == len(vals)
                out[name] = [vals[a:b].decode("utf-8") for a, b in itertools.pairwise(offs)]
            else:
                assert props[name]["componentType"] == "FLOAT64"
                out[name] = np.frombuffer(self.view(prop["values"]), dtype=np.float64)
                assert out[name].size == table["count"]
        return int(table["count"]), out

    def real_positions(self, mode: int) -> np.ndarray:
        """Source-CRS coordinates of every vertex of the primitives with this mode."""
        prims = [p for p in self.doc["meshes"][0]["primitives"] if p.get("mode", 4) == mode]
        if not prims:
            return np.zeros((0, 3))
        pos = np.vstack([self.accessor(p["attributes"]["POSITION"]) for p in prims])
        pos = pos.astype(np.float64)
        # glTF (x right, y up, z toward viewer) -> source (east, north, up).
        out: np.ndarray = self.origin + np.column_stack([pos[:, 0], -pos[:, 2], pos[:, 1]])
        return out

    def strings(self, column: str) -> list[str] | None:
        """A STRING column of the EXT_structural_metadata property table, or None."""
        table = self.doc["extensions"]["EXT_structural_metadata"]["propertyTables"][0]
        prop = table["properties"].get(column)
        if prop is None:
            return None
        offs = np.frombuffer(self.view(prop["stringOffsets"]), dtype=np.uint32).tolist()
        values = self.view(prop["values"])
        assert len(offs) == table["count"] + 1
        return [values[a:b].decode("utf-8") for a, b in itertools.pairwise(offs)]

    def material_of(self, prim: dict[str, Any]) -> dict[str, Any]:
        return dict(self.doc["materials"][prim["material"]])


def _node_matrix(node: dict[str, Any]) -> np.ndarray:
    """A node's local matrix: ``matrix`` (column-major) or T * R * S (glTF 2.0 §3.5.3)."""
    if "matrix" in node:
        return np.array(node["matrix"], dtype=np.float64).reshape(4, 4, order="F")
    x, y, z, w = node.get("rotation", [0.0, 0.0, 0.0, 1.0])
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    m: np.ndarray = np.eye(4)
    m[:3, :3] = rot @ np.diag(node.get("scale", [1.0, 1.0, 1.0]))
    m[:3, 3] = node.get("translation", [0.0, 0.0, 0.0])
    return m

"""Decode GLB files for tests, independently of the writer (glTF 2.0 §4.4, struct + numpy)."""

from __future__ import annotations

import itertools
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

_COMPONENTS = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
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

    def accessor(self, index: int) -> np.ndarray:
        acc = self.doc["accessors"][index]
        v = self.doc["bufferViews"][acc["bufferView"]]
        width = _WIDTH[acc["type"]]
        dtype = np.dtype(_COMPONENTS[acc["componentType"]])
        assert v.get("byteStride") in (None, dtype.itemsize * width)
        arr = np.frombuffer(
            self.blob,
            dtype=dtype,
            count=acc["count"] * width,
            offset=v.get("byteOffset", 0) + acc.get("byteOffset", 0),
        )
        return arr.reshape(acc["count"], width) if width > 1 else arr

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
        return self.origin + np.column_stack([pos[:, 0], -pos[:, 2], pos[:, 1]])

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

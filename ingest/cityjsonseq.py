"""Convert a CityJSON document of any size into a CityJSONSeq file in bounded memory.

CityJSON 2.0 §9 (CityJSON Text Sequences): the first line is a ``CityJSON`` object with
empty ``CityObjects``/``vertices`` and the members every feature shares (``transform``,
``metadata``, ``extensions``, ``geometry-templates``); every further line is one
``CityJSONFeature``: a 1st-level City Object with all its descendants (``children``),
with its own local ``vertices`` and its own local ``appearance`` (the materials, textures
and texture coordinates it uses, re-indexed). Materials and textures that geometry
templates use go in the header's ``appearance``, as cjseq does.

How the document is read, whatever its size and member order:

1. A numpy scan over the bytes finds the spans of the top-level members (string- and
   escape-aware bracket depth), so no member is parsed before its turn and unknown
   root members (Extension properties) are kept.
2. ``vertices`` (and ``appearance.vertices-texture``) are parsed ~256 KiB at a time
   (orjson on pieces cut between entries) into a temporary binary file that is
   memory-mapped: the coordinates never all exist as Python lists.
3. ``CityObjects`` are streamed with ijson (``kvitems``). An object whose relatives are
   all present is written at once; one that waits for its root or its children is
   serialised to a spill store (in memory up to a limit, then on disk). Links to a
   ``CityObjectGroup`` are membership, not ownership: a group is a feature of its own.
4. Links that only one side declares and that point back at an object already written
   (e.g. a parent without ``children`` that came first) are merged into that object's
   feature by one rewrite pass at the end, so no relative is ever split off.

Input that is already a CityJSONSeq is validated and copied line by line (header
upgraded from 1.1, vertex indices checked, one compact line per feature). CityJSON 1.0
and 1.1 are upgraded on the fly with cjio's rules (``ingest.upgrade``); pre-1.0 files
are upgraded by cjio itself, which reads them whole. A document without ``transform``
gets one (scale 0.001, translate = the minimum corner) and its coordinates quantized.
The output is written to a temporary file and renamed: on any error there is no
``dest`` file.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import ijson
import numpy as np
import numpy.typing as npt
import orjson

from ingest.cityjson import sequence_line
from twin.errors import IngestError
from twin.geometry import ModelWarning

__all__ = ["SequenceStats", "write_sequence"]

ProgressFn = Callable[[int, int], None]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Bytes the structure scan looks at per step (its numpy temporaries are ~10x this).
_SCAN_CHUNK = 1 << 18
# Bytes of an array of vertices (or texture coordinates) parsed at a time.
_ARRAY_PIECE = 1 << 18
# Bytes of waiting CityObjects kept in memory before they go to the spill file.
_SPILL_BYTES = 32 << 20
# ijson read size.
_IJSON_BUF = 1 << 18
_DEFAULT_SCALE = 0.001
_INT_LIMIT = 2**62
_BIG_MEMBERS = frozenset({"CityObjects", "vertices", "appearance"})
_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 13, 32]] = True
_DEPTH = np.zeros(256, dtype=np.int8)
_DEPTH[[ord("{"), ord("[")]] = 1
_DEPTH[[ord("}"), ord("]")]] = -1
_GENERIC_EXT = "cityjson.org/extensions/download/generic.ext.json"
# CityJSON 1.0 metadata members kept by the 1.0 -> 1.1 upgrade, with their 1.1 names
# (cjio's upgrade_version_v10_v11).
_V11_METADATA = {
    "citymodelIdentifier": "identifier",
    "datasetPointOfContact": "pointOfContact",
    "datasetTitle": "title",
    "datasetReferenceDate": "referenceDate",
    "geographicalExtent": "geographicalExtent",
    "referenceSystem": "referenceSystem",
}


@dataclass
class SequenceStats:
    """What :func:`write_sequence` wrote.

    Attributes:
        features: CityJSONFeature lines written (the header line not counted).
        objects: City Objects written, over all features.
        vertices: vertices written, over all features (a vertex two features share is
            written in both).
        bytes: size of the output file.
        warnings: things a user should know (upgrades, quantization, dangling links).
        source_version: the ``version`` the input declared.
        copied: the input was already a CityJSONSeq and was copied line by line.
    """

    features: int = 0
    objects: int = 0
    vertices: int = 0
    bytes: int = 0
    warnings: list[ModelWarning] = field(default_factory=list)
    source_version: str = ""
    copied: bool = False


def write_sequence(
    src: str | Path,
    dest: str | Path,
    *,
    progress: ProgressFn | None = None,
) -> SequenceStats:
    """Convert a CityJSON document (any size, any member order) into a CityJSONSeq file.

    Memory stays bounded by the largest feature plus the objects that must wait for
    their relatives (and those spill to disk past a limit), not by the document.

    Args:
        src: a CityJSON document (0.6 .. 2.0) or a CityJSONSeq (copied through).
        dest: the ``.city.jsonl`` file to write; replaced atomically.
        progress: called as ``progress(bytes_done, total_bytes)`` of the input.

    Returns:
        Counts of what was written and the warnings.

    Raises:
        IngestError: the input is missing, not JSON, truncated, not CityJSON, has no
            ``CityObjects``, an unsupported version, a bad vertex/material/texture
            index, or the output cannot be written. ``dest`` is then left untouched.
    """
    src_p, dest_p = Path(src), Path(dest)
    source = str(src_p)
    try:
        fh = src_p.open("rb")
    except FileNotFoundError:
        raise IngestError("no such file", source=source) from None
    except IsADirectoryError:
        raise IngestError("is a directory, not a CityJSON file", source=source) from None
    except OSError as exc:
        raise IngestError(f"cannot read file ({exc.strerror})", source=source) from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise IngestError("empty file: no CityJSON content", source=source)
        layout = _scan_object(fh.fileno(), 0, size, source, "document")
        head = {
            k: _load_member(fh.fileno(), span, source, k)
            for k, span in layout.members.items()
            if k not in _BIG_MEMBERS
        }
        kind = head.get("type")
        if layout.trailing is not None:
            if kind == "CityJSON":
                return _copy_sequence(src_p, dest_p, source, progress)
            if kind == "CityJSONFeature":
                raise IngestError(
                    "a CityJSONSeq must start with a CityJSON header line, found a "
                    "CityJSONFeature (CityJSON 2.0 §9)",
                    source=source,
                    where="line 1",
                )
            raise IngestError(
                "extra content after the JSON document (not one JSON object)",
                source=source,
                where=f"byte {layout.trailing}",
            )
        if kind == "CityJSONFeature":
            raise IngestError(
                "a lone CityJSONFeature has no CityJSON header (no transform): nothing to "
                "stream; write it as a CityJSONSeq with its header line",
                source=source,
            )
        version = str(head.get("version", ""))
        if kind == "CityModel" or (kind == "CityJSON" and version.startswith("0.")):
            fh.close()
            return _convert_pre_v1(src_p, dest_p, source, progress)
        if kind is None:
            raise IngestError(
                "missing top-level 'type' member: not a CityJSON document "
                '(expected "type": "CityJSON")',
                source=source,
            )
        if kind != "CityJSON":
            raise IngestError(f"top-level 'type' is {kind!r}, expected 'CityJSON'", source=source)
        minor = _minor_version(version, source)
        if "CityObjects" not in layout.members:
            raise IngestError(
                "missing 'CityObjects' member: not a CityJSON document", source=source
            )
        return _Converter(fh.fileno(), size, layout, head, minor, source, progress).run(dest_p)


# -- structure scan ----------------------------------------------------------------------


@dataclass
class _Layout:
    """Where the members of one JSON object are, in bytes of the file."""

    members: dict[str, tuple[int, int]]  # key -> value span [start, end)
    end: int  # just past the closing brace
    trailing: int | None  # offset of the first non-space byte after the object, if any


def _scan_object(fd: int, start: int, end: int, source: str, what: str) -> _Layout:
    """Find the member spans of the JSON object in ``[start, end)`` of a file.

    Numpy over chunks: quotes not escaped by an odd run of backslashes toggle the
    in-string state (xor-accumulate), brackets outside strings give the depth
    (cumsum), and ``:``/``,`` at depth 1 separate the members. Nothing is parsed;
    the member values are checked by whoever reads them.
    """
    depth = 0
    in_str = False
    bs_run = 0  # backslashes ending the previous chunk
    opened = closed = -1
    trailing: int | None = None
    seps: list[tuple[int, int]] = []  # (offset, byte) of ':' and ',' at depth 1
    pos = start
    while pos < end and trailing is None:
        buf = os.pread(fd, min(_SCAN_CHUNK, end - pos), pos)
        if not buf:
            break
        a = np.frombuffer(buf, dtype=np.uint8)
        quotes = np.flatnonzero(a == 34)
        if quotes.size:
            quotes = _unescaped(buf, quotes, bs_run)
        i = len(buf) - 1
        while i >= 0 and buf[i] == 92:
            i -= 1
        bs_run = (bs_run if i < 0 else 0) + (len(buf) - 1 - i)
        toggles = np.zeros(a.size, dtype=np.uint8)
        toggles[quotes] = 1
        inside = np.bitwise_xor.accumulate(toggles)
        if in_str:
            inside ^= 1
        in_str = bool(inside[-1])
        outside = inside.view(np.int8) ^ 1
        delta = _DEPTH[a]
        delta *= outside
        d = np.cumsum(delta, dtype=np.int32)
        d += depth
        if int(d.min()) < 0:
            bad = int(np.argmax(d < 0))
            raise IngestError(
                f"invalid JSON: '{chr(buf[bad])}' closes more than was opened",
                source=source,
                where=f"byte {pos + bad}",
            )
        after = 0  # where, in this chunk, bytes after the closed object start
        if opened < 0:
            text = np.flatnonzero(~_WS[a])
            if text.size:
                p = int(text[0])
                if buf[p] != ord("{"):
                    raise IngestError(
                        _not_object(buf, p, what), source=source, where=f"byte {pos + p}"
                    )
                opened = pos + p
        if opened >= 0 and closed < 0:
            ends = np.flatnonzero(d == 0)
            ends = ends[ends > opened - pos]
            if ends.size:
                closed = pos + int(ends[0])
                after = int(ends[0]) + 1
        if closed >= 0:
            rest = np.flatnonzero(~_WS[a[after:]])
            if rest.size:
                trailing = pos + after + int(rest[0])
        top = np.flatnonzero(d == 1)
        if top.size:
            c = a[top]
            top = top[((c == 58) | (c == 44)) & (outside[top] == 1)]
            seps.extend((pos + p, buf[p]) for p in top.tolist())
        depth = int(d[-1])
        pos += len(buf)
    if opened < 0:
        raise IngestError("empty file: no JSON content", source=source)
    if closed < 0:
        state = "inside a string" if in_str else f"with {depth} bracket(s) still open"
        raise IngestError(
            f"truncated or unbalanced JSON: the {what} ends {state}",
            source=source,
            where=f"byte {end}",
        )
    seps = [s for s in seps if s[0] < closed]
    return _Layout(_members(fd, opened, closed, seps, source), closed + 1, trailing)


def _not_object(buf: bytes, p: int, what: str) -> str:
    c = chr(buf[p])
    if c == "[":
        return f"the {what} is a JSON array, expected a CityJSON object"
    if c in '"-0123456789tfn':
        return f"the {what} is a JSON value but not an object (expected '{{')"
    return f"not JSON: the {what} starts with {c!r} where '{{' was expected"


def _unescaped(buf: bytes, quotes: IntArray, bs_run: int) -> IntArray:
    """Drop the quotes preceded by an odd run of backslashes (escaped, \\")."""
    prev = quotes - 1
    flagged = np.zeros(quotes.size, dtype=bool)
    inner = prev >= 0
    arr = np.frombuffer(buf, dtype=np.uint8)
    flagged[inner] = arr[prev[inner]] == 92
    if quotes[0] == 0 and bs_run:
        flagged[0] = True
    if not flagged.any():
        return quotes
    keep = np.ones(quotes.size, dtype=bool)
    for k in np.flatnonzero(flagged).tolist():
        i = int(quotes[k]) - 1
        n = 0
        while i >= 0 and buf[i] == 92:
            n += 1
            i -= 1
        if i < 0:
            n += bs_run
        keep[k] = n % 2 == 0
    return quotes[keep]


def _members(
    fd: int, opened: int, closed: int, seps: list[tuple[int, int]], source: str
) -> dict[str, tuple[int, int]]:
    """Turn the ':'/',' offsets of an object into {key: value span}."""
    if not seps:
        inner = closed - opened - 1
        body = os.pread(fd, min(inner, 4096), opened + 1)
        if inner > 4096 or body.strip():
            raise IngestError(
                "invalid JSON object (no 'key': value)", source=source, where=f"byte {opened}"
            )
        return {}
    out: dict[str, tuple[int, int]] = {}
    prev = opened
    for k in range(0, len(seps), 2):
        colon, c = seps[k]
        if c != ord(":"):
            raise IngestError(
                "invalid JSON: expected ':' after a key", source=source, where=f"byte {colon}"
            )
        key_raw = os.pread(fd, colon - prev - 1, prev + 1)
        try:
            key = orjson.loads(key_raw)
        except orjson.JSONDecodeError:
            key = None
        if not isinstance(key, str):
            raise IngestError(
                f"invalid JSON: object key {key_raw.strip()[:40]!r} is not a string",
                source=source,
                where=f"byte {prev + 1}",
            )
        if k + 1 < len(seps):
            comma, c = seps[k + 1]
            if c != ord(","):
                raise IngestError(
                    "invalid JSON: expected ',' between members",
                    source=source,
                    where=f"byte {comma}",
                )
        else:
            comma = closed
        out[key] = (colon + 1, comma)  # a repeated key: the last one wins, as in orjson
        prev = comma
    return out


def _load_member(fd: int, span: tuple[int, int], source: str, key: str) -> Any:
    raw = os.pread(fd, span[1] - span[0], span[0])
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise IngestError(
            f"JSON syntax error in '{key}': {str(exc).split(':')[0]}",
            source=source,
            where=f"byte {span[0] + max(0, exc.pos)}",
        ) from None


class _SpanReader:
    """A read()-able view of ``[start, end)`` of a file for ijson."""

    def __init__(self, fd: int, start: int, end: int, on_read: Callable[[int], None]) -> None:
        self.fd = fd
        self.pos = start
        self.end = end
        self.on_read = on_read

    def read(self, n: int = -1) -> bytes:
        left = self.end - self.pos
        n = left if n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = os.pread(self.fd, n, self.pos)
        self.pos += len(data)
        self.on_read(len(data))
        return data


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _minor_version(version: str, source: str) -> str:
    for v in ("1.0", "1.1", "2.0"):
        if version == v or version.startswith(v + "."):
            return v
    raise IngestError(
        f"unsupported CityJSON version {version!r} (supported: 0.6 .. 2.0)", source=source
    )


# -- arrays streamed to disk ---------------------------------------------------------------


@dataclass
class _Array:
    """A (n, k) array in a memory-mapped temporary file, with its per-column minimum."""

    data: npt.NDArray[Any]
    lo: FloatArray


def _stream_array(
    fd: int,
    span: tuple[int, int] | None,
    path: Path,
    *,
    cols: int,
    integer: bool,
    source: str,
    what: str,
) -> _Array:
    """Stream a JSON array of ``cols``-number arrays into a memory-mapped file."""
    dtype = np.int64 if integer else np.float64
    lo = np.full(cols, np.inf)
    n = 0
    if span is not None:
        with path.open("wb") as out:
            for rows in _array_pieces(fd, span, source, what):
                arr = _check_rows(rows, n, cols, integer, source, what)
                if arr.shape[0]:
                    lo = np.minimum(lo, arr.min(axis=0))
                out.write(arr.tobytes())
                n += arr.shape[0]
    if n == 0:
        return _Array(np.zeros((0, cols), dtype=dtype), lo)
    # A plain ndarray over the mapping: fancy indexing then skips memmap's subclass hooks.
    data = np.asarray(np.memmap(path, dtype=dtype, mode="r", shape=(n, cols)))
    return _Array(data, lo)


def _array_pieces(fd: int, span: tuple[int, int], source: str, what: str) -> Iterator[Any]:
    """Parse a JSON array of number arrays a piece at a time (orjson, ~256 KiB each).

    Pieces are cut after a ``]`` followed by ``,``: in an array of number arrays that is
    always between two entries. Anything else (strings, deeper nesting) makes a piece
    fail to parse, which is reported like any syntax error.
    """
    pos, end = span
    head = os.pread(fd, min(64, end - pos), pos)
    lead = len(head) - len(head.lstrip())
    if head[lead : lead + 1] != b"[":
        raise IngestError(f"'{what}' must be an array", source=source, where=what)
    pos += lead + 1
    carry = b""
    while pos < end or carry:
        at = pos - len(carry)
        buf = carry + os.pread(fd, min(_ARRAY_PIECE, end - pos), pos)
        pos += len(buf) - len(carry)
        if pos >= end:
            body = buf.rstrip()
            if not body.endswith(b"]"):
                raise IngestError(
                    f"JSON syntax error in '{what}': the array does not end with ']'",
                    source=source,
                    where=what,
                )
            piece, carry = body[:-1], b""
        else:
            cut = _last_entry_end(buf)
            if cut < 0:
                carry = buf
                continue
            piece, carry = buf[:cut], buf[cut + 1 :]
        try:
            rows = orjson.loads(b"[" + piece + b"]")
        except orjson.JSONDecodeError as exc:
            raise IngestError(
                f"JSON syntax error in '{what}': {str(exc).split(':')[0]}",
                source=source,
                where=f"byte {at + max(0, exc.pos - 1)}",
            ) from None
        yield rows


def _last_entry_end(buf: bytes) -> int:
    """Offset of the last ``,`` that follows a ``]`` (only whitespace between), or -1."""
    i = len(buf)
    while True:
        i = buf.rfind(b",", 0, i)
        if i < 0:
            return -1
        j = i - 1
        while j >= 0 and buf[j] in b" \t\r\n":
            j -= 1
        if j >= 0 and buf[j] == 93:
            return i


def _check_rows(
    batch: list[Any], first: int, cols: int, integer: bool, source: str, what: str
) -> npt.NDArray[Any]:
    dtype = np.int64 if integer else np.float64
    if not isinstance(batch, list):
        raise IngestError(f"{what} must be an array", source=source, where=what)
    if not batch:
        return np.zeros((0, cols), dtype=dtype)
    try:
        arr = np.asarray(batch)
    except (ValueError, TypeError, OverflowError):
        arr = np.zeros((0,))
    if arr.ndim != 2 or arr.shape[1] != cols or arr.dtype.kind not in "iuf":
        bad = next(
            (
                i
                for i, v in enumerate(batch)
                if not (
                    isinstance(v, list)
                    and len(v) == cols
                    and all(isinstance(c, int | float) and not isinstance(c, bool) for c in v)
                )
            ),
            None,
        )
        if bad is None:  # numbers beyond int64 make an object array
            raise IngestError(
                "coordinate outside the 64-bit range", source=source, where=f"{what} index {first}"
            )
        raise IngestError(
            f"entry is not {cols} numbers",
            source=source,
            where=f"{what} index {first + bad}",
        )
    if arr.dtype.kind == "f":
        in_range = np.isfinite(arr).all(axis=1) & (np.abs(arr) < _INT_LIMIT).all(axis=1)
        whole = (np.floor(arr) == arr).all(axis=1) if integer else in_range
        if not (in_range & whole).all():
            bad = int(np.argmin(in_range & whole))
            problem = (
                "coordinate outside the range a CityJSON reader accepts"
                if not in_range[bad]
                else "coordinates must be integers when 'transform' is present (CityJSON 2.0 §3.2)"
            )
            raise IngestError(problem, source=source, where=f"{what} index {first + bad}")
    elif (np.abs(arr) >= _INT_LIMIT).any():
        bad = int(np.argmax((np.abs(arr) >= _INT_LIMIT).any(axis=1)))
        raise IngestError(
            "coordinate outside the 64-bit range",
            source=source,
            where=f"{what} index {first + bad}",
        )
    return np.ascontiguousarray(arr, dtype=dtype)


# -- re-indexing -------------------------------------------------------------------------


def _collect_rings(node: list[Any], out: list[list[Any]], where: str, source: str) -> None:
    """Append the innermost lists (rings, or a MultiPoint's indices) of ``node`` to ``out``."""
    if not node or type(node[0]) is not list:
        out.append(node)
        return
    for x in node:
        if type(x) is not list:
            raise IngestError(
                f"boundaries mix arrays and the value {x!r}", source=source, where=where
            )
        _collect_rings(x, out, where, source)


def _shift_ints(node: list[Any], off: int) -> None:
    for k, x in enumerate(node):
        if type(x) is int:
            node[k] = x + off
        elif type(x) is list:
            _shift_ints(x, off)


@dataclass
class _Appearance:
    """The document's appearance: the lists features take their slices from."""

    materials: list[Any] = field(default_factory=list)
    textures: list[Any] = field(default_factory=list)
    uv: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 2)))
    themes: dict[str, Any] = field(default_factory=dict)


class _Local:
    """Index maps of one feature (or of the header's templates): global -> local."""

    def __init__(self, app: _Appearance, source: str, base: tuple[int, int, int, int]) -> None:
        self.app = app
        self.source = source
        self.rings: list[list[Any]] = []  # vertex index lists, rewritten together
        self.ring_where: list[tuple[int, str]] = []  # (first ring, location) per geometry
        self.m: dict[int, int] = {}
        self.t: dict[int, int] = {}
        self.uv: dict[int, int] = {}
        self.vbase, self.mbase, self.tbase, self.uvbase = base
        self.dropped: list[str] = []

    def geometry(self, g: Any, where: str, *, vertices: bool = True) -> None:
        if not isinstance(g, dict):
            return
        b = g.get("boundaries")
        if vertices and isinstance(b, list):
            self.ring_where.append((len(self.rings), where))
            _collect_rings(b, self.rings, where, self.source)
        mat = g.get("material")
        if isinstance(mat, dict) and mat and self.app.materials:
            # The theme a reader draws: the default one if the geometry has it, else its
            # first (ingest.cityjson does the same); only there is a bad single "value"
            # an error, elsewhere it becomes "no material" with a warning.
            drawn = self.app.themes.get("default-theme-material")
            if drawn not in mat:
                drawn = next(iter(mat))
            for theme, ent in mat.items():
                if not isinstance(ent, dict):
                    continue
                at = f"{where} material theme {theme!r}"
                if isinstance(ent.get("values"), list):
                    self._material_values(ent["values"], at)
                value = ent.get("value")
                if value is None:
                    continue
                n = len(self.app.materials)
                if theme == drawn or (type(value) is int and 0 <= value < n):
                    ent["value"] = self._material(value, at)
                else:
                    ent["value"] = None
                    self.dropped.append(f"{at}: material value {value!r} ({n} materials)")
        tex = g.get("texture")
        if isinstance(tex, dict) and self.app.textures:
            for theme, ent in tex.items():
                if isinstance(ent, dict) and isinstance(ent.get("values"), list):
                    self._texture_values(ent["values"], f"{where} texture theme {theme!r}")

    def vertex_indices(self, n: int) -> IntArray:
        """Rewrite the collected rings to local indices (from ``vbase``).

        Local order is the global order (np.unique), so reading the coordinates walks
        the memory-mapped vertex file forwards.

        Returns:
            The global index of every local vertex.
        """
        flat = list(itertools.chain.from_iterable(self.rings))
        if not flat:
            self.rings.clear()
            return np.zeros(0, dtype=np.int64)
        if set(map(type, flat)) != {int}:
            pos = next(i for i, x in enumerate(flat) if type(x) is not int)
            raise IngestError(
                f"vertex index {flat[pos]!r} is not an integer",
                source=self.source,
                where=self._where(pos),
            )
        try:
            arr = np.array(flat, dtype=np.int64)
        except OverflowError:
            pos = next(i for i, x in enumerate(flat) if abs(x) >= 2**63)
            raise IngestError(
                f"vertex index {flat[pos]} out of range ({n} vertices)",
                source=self.source,
                where=self._where(pos),
            ) from None
        uniq, inv = np.unique(arr, return_inverse=True)
        if uniq[0] < 0 or uniq[-1] >= n:
            bad = int(uniq[0] if uniq[0] < 0 else uniq[-1])
            raise IngestError(
                f"vertex index {bad} out of range ({n} vertices)",
                source=self.source,
                where=self._where(int(np.argmax(arr == bad))),
            )
        vals = (inv.reshape(-1) + self.vbase).tolist()
        i = 0
        for r in self.rings:
            j = i + len(r)
            r[:] = vals[i:j]
            i = j
        self.rings.clear()
        return uniq

    def _where(self, pos: int) -> str:
        """Where the ``pos``-th collected vertex index is (object and geometry)."""
        ends = np.cumsum([len(r) for r in self.rings])
        ring = int(np.searchsorted(ends, pos, side="right"))
        starts = [r0 for r0, _ in self.ring_where]
        k = int(np.searchsorted(starts, ring, side="right")) - 1
        return self.ring_where[max(k, 0)][1] if self.ring_where else ""

    def _material(self, x: Any, where: str) -> int:
        n = len(self.app.materials)
        if type(x) is not int or not 0 <= x < n:
            raise IngestError(
                f"material index {x!r} out of range ({n} materials)",
                source=self.source,
                where=where,
            )
        j = self.m.get(x)
        if j is None:
            j = self.m[x] = self.mbase + len(self.m)
        return j

    def _material_values(self, node: list[Any], where: str) -> None:
        for k, x in enumerate(node):
            if isinstance(x, list):
                self._material_values(x, where)
            elif x is not None:
                node[k] = self._material(x, where)

    def _texture_values(self, node: list[Any], where: str) -> None:
        ntex, nuv = len(self.app.textures), self.app.uv.shape[0]
        for k, x in enumerate(node):
            if type(x) is not list or not x:
                continue
            t = x[0]
            if type(t) is list:  # a level above the rings: surfaces, shells, solids
                self._texture_values(x, where)
                continue
            if t is None:  # [null]: this ring has no texture (CityJSON 2.0 §8.3)
                continue
            if type(t) is not int or not 0 <= t < ntex:
                raise IngestError(
                    f"texture index {t!r} out of range ({ntex} textures)"
                    if type(t) is int
                    else f"texture index {t!r} is not an integer",
                    source=self.source,
                    where=where,
                )
            tj = self.t.get(t)
            if tj is None:
                tj = self.t[t] = self.tbase + len(self.t)
            out = [tj]
            for u in x[1:]:
                if type(u) is not int or not 0 <= u < nuv:
                    raise IngestError(
                        f"texture coordinate index {u!r} out of range ({nuv})"
                        if type(u) is int
                        else f"texture coordinate index {u!r} is not an integer",
                        source=self.source,
                        where=where,
                    )
                uj = self.uv.get(u)
                if uj is None:
                    uj = self.uv[u] = self.uvbase + len(self.uv)
                out.append(uj)
            node[k] = out

    def appearance(self) -> tuple[list[Any], list[Any], FloatArray]:
        """The materials, textures and texture coordinates this map uses, in local order."""
        mats = [self.app.materials[i] for i in self.m]
        texs = [self.app.textures[i] for i in self.t]
        if self.uv:
            uv = self.app.uv[np.fromiter(self.uv, dtype=np.int64, count=len(self.uv))]
        else:
            uv = np.zeros((0, 2))
        return mats, texs, np.asarray(uv, dtype=np.float64)


# -- objects that wait for their relatives ---------------------------------------------------


class _Store:
    """Serialised City Objects waiting for their feature: in memory, then on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mem: dict[str, bytes] = {}
        self.mem_bytes = 0
        self.disk: dict[str, tuple[int, int]] = {}
        self.fh: BinaryIO | None = None

    def put(self, oid: str, data: bytes) -> None:
        if self.mem_bytes + len(data) <= _SPILL_BYTES:
            self.mem[oid] = data
            self.mem_bytes += len(data)
            return
        if self.fh is None:
            self.fh = self.path.open("w+b")
        off = self.fh.seek(0, os.SEEK_END)
        self.fh.write(data)
        self.disk[oid] = (off, len(data))

    def pop(self, oid: str) -> Any:
        data = self.mem.pop(oid, None)
        if data is not None:
            self.mem_bytes -= len(data)
        else:
            assert self.fh is not None
            off, n = self.disk.pop(oid)
            self.fh.seek(off)
            data = self.fh.read(n)
        return orjson.loads(data)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


@dataclass(eq=False)
class _Group:
    """Objects that will make one feature, and the ids it still waits for."""

    members: list[str] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)
    dead: bool = False


def _id_list(value: Any, member: str, oid: str, source: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise IngestError(
            f"'{member}' must be an array of object ids", source=source, where=f"object {oid!r}"
        )
    return value


class _Grouper:
    """Puts each City Object with its relatives; hands over every complete feature.

    Ownership links are ``children`` of, and ``parents`` naming, any object but a
    ``CityObjectGroup`` (a group lists members, it does not own them; CityJSON 2.0
    §2.8). Objects are kept only while their group misses an id.
    """

    def __init__(
        self, store: _Store, emit: Callable[[list[tuple[str, Any]]], None], source: str
    ) -> None:
        self.store = store
        self.emit = emit
        self.source = source
        self.owner: dict[str, _Group] = {}  # waiting objects and ids awaited as children
        self.is_group: dict[str, bool] = {}  # waiting objects: CityObjectGroup or not
        self.order: dict[str, int] = {}  # waiting objects: arrival number
        self.waiting: dict[str, list[str]] = {}  # unseen parent id -> objects naming it
        self.written_groups: set[str] = set()
        self.count = 0
        self.duplicates: list[str] = []

    def add(self, oid: str, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise IngestError(
                "CityObject is not a JSON object", source=self.source, where=f"object {oid!r}"
            )
        self.count += 1
        if oid in self.is_group:
            # A repeated key: the last value wins, as when the document is parsed whole.
            self.duplicates.append(oid)
            self.store.pop(oid)
            self.store.put(oid, orjson.dumps(obj))
            return
        is_group = obj.get("type") == "CityObjectGroup"
        parents = _id_list(obj.get("parents"), "parents", oid, self.source)
        children = _id_list(obj.get("children"), "children", oid, self.source)
        if not parents and isinstance(obj.get("parent"), str):
            parents = [obj["parent"]]  # CityJSON 0.x
        grp = self.owner.get(oid)
        if grp is None:
            grp = _Group()
        grp.missing.discard(oid)
        grp.members.append(oid)
        self.owner[oid] = grp
        self.is_group[oid] = is_group
        self.order[oid] = self.count
        touched: list[_Group] = []
        for w in self.waiting.pop(oid, ()):
            gw = self.owner.get(w)
            if gw is None:
                continue
            gw.missing.discard(oid)
            if is_group:
                touched.append(gw)  # membership of a group: the member stays its own root
            else:
                grp = self._union(grp, gw)
        if not is_group:
            for p in parents:
                if p in self.written_groups:
                    continue
                if p in self.is_group:
                    if not self.is_group[p]:
                        grp = self._union(grp, self.owner[p])
                    continue
                self.waiting.setdefault(p, []).append(oid)
                grp.missing.add(p)
            for c in children:
                other = self.owner.get(c)
                if other is None:
                    self.owner[c] = grp
                    grp.missing.add(c)
                else:
                    grp = self._union(grp, other)
        if grp.missing:
            self.store.put(oid, _dumps(obj, oid, self.source))
        else:
            self._write(grp, oid, obj)
        for g in touched:
            if not g.dead and not g.missing and g is not grp:
                self._write(g, None, None)

    def _union(self, a: _Group, b: _Group) -> _Group:
        if a is b:
            return a
        if len(a.members) + len(a.missing) < len(b.members) + len(b.missing):
            a, b = b, a
        for m in b.members:
            self.owner[m] = a
        for x in b.missing:
            if self.owner.get(x) is b:
                self.owner[x] = a
        a.members.extend(b.members)
        a.missing |= b.missing
        b.members, b.missing, b.dead = [], set(), True
        return a

    def _take(self, grp: _Group, oid: str | None, obj: Any) -> list[tuple[str, Any]]:
        members = sorted(grp.members, key=self.order.__getitem__)
        out = []
        for m in members:
            out.append((m, obj if m == oid else self.store.pop(m)))
            if self.is_group.pop(m):
                self.written_groups.add(m)
            del self.owner[m]
            del self.order[m]
        grp.dead = True
        return out

    def _write(self, grp: _Group, oid: str | None, obj: Any) -> None:
        self.emit(self._take(grp, oid, obj))

    def leftovers(self) -> list[tuple[list[tuple[str, Any]], set[str]]]:
        """The groups still waiting at the end, with the ids they wait for."""
        seen: set[int] = set()
        out = []
        for g in list(self.owner.values()):
            if g.dead or id(g) in seen or not g.members:
                continue
            seen.add(id(g))
            missing = set(g.missing)
            out.append((self._take(g, None, None), missing))
        self.owner.clear()
        self.waiting.clear()
        return out


def _dumps(obj: Any, oid: str, source: str) -> bytes:
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError as exc:
        raise IngestError(
            f"cannot re-encode object ({exc})", source=source, where=f"object {oid!r}"
        ) from None


def _root_of(objects: list[tuple[str, Any]]) -> str | None:
    """The first object that no other object of the feature names as parent or owns."""
    ids = {oid for oid, _ in objects}
    owned = {
        c
        for _, obj in objects
        if obj.get("type") != "CityObjectGroup"
        for c in (obj.get("children") or [])
        if isinstance(c, str)
    }
    for oid, obj in objects:
        parents = obj.get("parents")
        if oid in owned or (isinstance(parents, list) and ids.intersection(parents)):
            continue
        return oid
    return None


# -- upgrades (cjio's rules, one object at a time) -----------------------------------------


def _upgrade_header(head: dict[str, Any], minor: str, warnings: list[ModelWarning]) -> bool:
    """Upgrade the root members of a 1.0/1.1 document to 2.0 in place.

    Returns:
        Whether ``+GenericCityObject`` objects become ``GenericCityObject`` (1.1 files
        that declare cjio's Generic Extension).
    """
    if minor == "2.0":
        return False
    meta = head.get("metadata")
    if minor == "1.0":
        if isinstance(meta, dict):
            ref = meta.get("referenceSystem")
            if isinstance(ref, str) and "epsg" in ref.lower():
                m = re.search(r"(\d+)\s*$", ref)
                if m:
                    meta["referenceSystem"] = (
                        f"https://www.opengis.net/def/crs/EPSG/0/{int(m.group(1))}"
                    )
            kept = {_V11_METADATA[k]: v for k, v in meta.items() if k in _V11_METADATA}
            dropped = sorted(set(meta) - set(_V11_METADATA))
            if dropped:
                warnings.append(
                    ModelWarning(
                        "metadata-dropped",
                        f"CityJSON 1.0 metadata members without a 2.0 equivalent dropped: "
                        f"{', '.join(dropped)}",
                    )
                )
            head["metadata"] = meta = kept
        gt = head.get("geometry-templates")
        if isinstance(gt, dict) and isinstance(gt.get("templates"), list):
            for t in gt["templates"]:
                if isinstance(t, dict) and "lod" in t:
                    t["lod"] = _lod_str(t["lod"])
    if isinstance(meta, dict):
        poc = meta.get("pointOfContact")
        if isinstance(poc, dict) and "address" in poc:
            poc["address"] = {"address": poc["address"]}
    generic = False
    ext = head.get("extensions")
    if minor == "1.1" and isinstance(ext, dict):
        gen = ext.get("Generic")
        if isinstance(gen, dict) and _GENERIC_EXT in str(gen.get("url", "")):
            del ext["Generic"]
            generic = True
    warnings.append(
        ModelWarning("upgraded", f"CityJSON {minor} upgraded to 2.0 while streaming (cjio's rules)")
    )
    return generic


def _lod_str(lod: Any) -> Any:
    if isinstance(lod, bool) or not isinstance(lod, int | float):
        return lod
    return str(lod)


def _upgrade_object(obj: dict[str, Any], minor: str, generic: bool) -> None:
    """Upgrade one City Object of a 1.0/1.1 document to 2.0 in place."""
    if minor == "1.0":
        geoms = obj.get("geometry")
        if isinstance(geoms, list):
            if not geoms:
                del obj["geometry"]
            for g in geoms:
                if isinstance(g, dict) and g.get("type") != "GeometryInstance" and "lod" in g:
                    g["lod"] = _lod_str(g["lod"])
        otype = obj.get("type")
        if otype == "CityObjectGroup" and "members" in obj:
            obj["children"] = obj.pop("members")
        elif otype == "BridgeConstructionElement":
            obj["type"] = "BridgeConstructiveElement"
        if isinstance(obj.get("address"), dict):
            obj["address"] = [obj["address"]]
    elif generic and obj.get("type") == "+GenericCityObject":
        obj["type"] = "GenericCityObject"


# -- the conversion --------------------------------------------------------------------------


@contextlib.contextmanager
def _atomic(dest: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A temporary file beside ``dest``, renamed onto it only if the block succeeds."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise IngestError(f"cannot write output ({exc.strerror})", source=str(dest)) from None
    path = Path(tmp)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
            yield fh, path
        os.replace(path, dest)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class _Converter:
    """One CityJSON document -> one CityJSONSeq file."""

    def __init__(
        self,
        fd: int,
        size: int,
        layout: _Layout,
        head: dict[str, Any],
        minor: str,
        source: str,
        progress: ProgressFn | None,
    ) -> None:
        self.fd = fd
        self.size = size
        self.layout = layout
        self.head = head
        self.minor = minor
        self.source = source
        self.progress = progress
        self.stats = SequenceStats(source_version=str(head.get("version", "")))
        self.warnings = self.stats.warnings
        self.done = 0
        self.reported = 0
        self.vertices: _Array | None = None
        self.quantize: tuple[FloatArray, FloatArray] | None = None
        self.app = _Appearance()
        self.out: BinaryIO | None = None
        self.generic = False

    # progress over the input bytes: everything but CityObjects counts as read once
    # the vertices are in; CityObjects as ijson reads them.
    def _advance(self, n: int) -> None:
        self.done += n
        if self.progress and (
            self.done - self.reported >= self.size // 100 or self.done >= self.size
        ):
            self.reported = self.done
            self.progress(min(self.done, self.size), self.size)

    def run(self, dest: Path) -> SequenceStats:
        self.generic = _upgrade_header(self.head, self.minor, self.warnings)
        transform = self._transform()
        with tempfile.TemporaryDirectory(prefix=".cjseq-", dir=dest.parent) as td:
            tmp = Path(td)
            members = self.layout.members
            self.vertices = _stream_array(
                self.fd,
                members.get("vertices"),
                tmp / "vertices.bin",
                cols=3,
                integer=transform is not None,
                source=self.source,
                what="vertices",
            )
            if transform is None:
                lo = self.vertices.lo if self.vertices.data.shape[0] else np.zeros(3)
                scale = np.full(3, _DEFAULT_SCALE)
                self.quantize = (lo, scale)
                transform = {"scale": scale.tolist(), "translate": lo.tolist()}
                if self.vertices.data.shape[0]:
                    self.warnings.append(
                        ModelWarning(
                            "quantized",
                            "the document has no 'transform': coordinates quantized with scale "
                            f"{_DEFAULT_SCALE} from the minimum corner (CityJSON 2.0 §9 needs one)",
                        )
                    )
            self._appearance(tmp)
            header = self._header(transform)
            co = members["CityObjects"]
            self._advance(self.size - (co[1] - co[0]))
            with _atomic(dest) as (out, part):
                self.out = out
                out.write(orjson.dumps(header) + b"\n")
                store = _Store(tmp / "pending.bin")
                try:
                    grouper = _Grouper(store, self._emit, self.source)
                    self._objects(grouper, co)
                    leftovers = grouper.leftovers()
                    if grouper.duplicates:
                        self.warnings.append(
                            ModelWarning(
                                "duplicate-id",
                                f"{len(grouper.duplicates)} object id(s) appear twice; the last "
                                f"one is kept (first: {grouper.duplicates[0]!r})",
                            )
                        )
                finally:
                    store.close()
                out.flush()
                if leftovers:
                    self._merge_late(out, part, tmp, leftovers)
            self.stats.bytes = dest.stat().st_size
        if self.progress:
            self.progress(self.size, self.size)
        return self.stats

    def _transform(self) -> dict[str, list[float]] | None:
        t = self.head.get("transform")
        if t is None:
            return None
        ok = isinstance(t, dict) and all(
            isinstance(t.get(k), list)
            and len(t[k]) == 3
            and all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                for x in t[k]
            )
            for k in ("scale", "translate")
        )
        if not ok:
            raise IngestError(
                "'transform' must have 'scale' and 'translate' of 3 numbers",
                source=self.source,
                where="transform",
            )
        return {"scale": list(t["scale"]), "translate": list(t["translate"])}

    def _appearance(self, tmp: Path) -> None:
        span = self.layout.members.get("appearance")
        if span is None:
            return
        lay = _scan_object(self.fd, span[0], span[1], self.source, "'appearance' member")
        if lay.trailing is not None:
            raise IngestError(
                "invalid JSON after the 'appearance' object",
                source=self.source,
                where=f"byte {lay.trailing}",
            )
        small = {
            k: _load_member(self.fd, s, self.source, f"appearance.{k}")
            for k, s in lay.members.items()
            if k != "vertices-texture"
        }
        for key in ("materials", "textures"):
            val = small.get(key, [])
            if val is None:
                val = []
            if not isinstance(val, list):
                raise IngestError(f"'appearance.{key}' must be an array", source=self.source)
            setattr(self.app, key, val)
        self.app.themes = {k: v for k, v in small.items() if k not in ("materials", "textures")}
        uv = _stream_array(
            self.fd,
            lay.members.get("vertices-texture"),
            tmp / "uv.bin",
            cols=2,
            integer=False,
            source=self.source,
            what="vertices-texture",
        )
        self.app.uv = uv.data

    def _header(self, transform: dict[str, list[float]]) -> dict[str, Any]:
        head = self.head
        out: dict[str, Any] = {
            "type": "CityJSON",
            "version": "2.0",
            "transform": transform,
            "CityObjects": {},
            "vertices": [],
        }
        for key in ("metadata", "extensions"):
            if key in head:
                out[key] = head[key]
        app: dict[str, Any] = dict(self.app.themes)
        gt = head.get("geometry-templates")
        if gt is not None:
            if isinstance(gt, dict) and isinstance(gt.get("templates"), list):
                # Template appearance lives in the header (the features cannot carry it).
                loc = _Local(self.app, self.source, (0, 0, 0, 0))
                for i, t in enumerate(gt["templates"]):
                    loc.geometry(t, f"geometry template {i}", vertices=False)
                mats, texs, uv = loc.appearance()
                if mats:
                    app["materials"] = mats
                if texs:
                    app["textures"] = texs
                if uv.shape[0]:
                    app["vertices-texture"] = uv.tolist()
            out["geometry-templates"] = gt
        if app:
            out["appearance"] = app
        for key, val in head.items():
            if key not in out and key not in _BIG_MEMBERS and key not in ("type", "version"):
                out[key] = val  # Extension root properties and the like (CityJSON 2.0 §8)
        return out

    def _objects(self, grouper: _Grouper, span: tuple[int, int]) -> None:
        reader = _SpanReader(self.fd, span[0], span[1], self._advance)
        try:
            items = ijson.kvitems(reader, "", use_float=True, buf_size=_IJSON_BUF)
            for oid, obj in items:
                if self.minor != "2.0" and isinstance(obj, dict):
                    _upgrade_object(obj, self.minor, self.generic)
                grouper.add(oid, obj)
        except ijson.JSONError as exc:
            raise IngestError(
                f"JSON syntax error in 'CityObjects': {_first_line(exc)}",
                source=self.source,
                where=f"near byte {reader.pos}",
            ) from None
        if grouper.count == 0:
            # 'CityObjects' must be an object; ijson yields nothing for other values.
            first = os.pread(self.fd, min(64, span[1] - span[0]), span[0]).lstrip()[:1]
            if first != b"{":
                raise IngestError(
                    "'CityObjects' must be a JSON object", source=self.source, where="CityObjects"
                )

    # -- features ------------------------------------------------------------------------

    def _localize(self, objects: list[tuple[str, Any]], loc: _Local) -> IntArray:
        """Re-index the objects' geometry in place; return their quantized vertices."""
        for oid, obj in objects:
            where = f"object {oid!r}"
            geoms = obj.get("geometry")
            if isinstance(geoms, list):
                for gi, g in enumerate(geoms):
                    loc.geometry(g, f"{where} geometry {gi}")
            addresses = obj.get("address")
            for addr in addresses if isinstance(addresses, list) else [addresses]:
                if isinstance(addr, dict) and isinstance(addr.get("location"), dict):
                    loc.geometry(addr["location"], f"{where} address location")
        for msg in loc.dropped:
            self.warnings.append(ModelWarning("material-dropped", f"{msg} is no material index"))
        loc.dropped.clear()
        verts = self.vertices
        assert verts is not None
        idx = loc.vertex_indices(verts.data.shape[0])
        if not idx.size:
            return np.zeros((0, 3), dtype=np.int64)
        coords = np.asarray(verts.data[idx])
        if self.quantize is None:
            return np.ascontiguousarray(coords, dtype=np.int64)
        lo, scale = self.quantize
        return np.rint((coords - lo) / scale).astype(np.int64)

    def _feature(
        self, objects: list[tuple[str, Any]], loc: _Local, vertices: IntArray, root: str
    ) -> dict[str, Any]:
        feat: dict[str, Any] = {
            "type": "CityJSONFeature",
            "id": root,
            "CityObjects": _root_first(root, objects),
            "vertices": vertices,
        }
        mats, texs, uv = loc.appearance()
        app: dict[str, Any] = {}
        if mats:
            app["materials"] = mats
        if texs:
            app["textures"] = texs
        if uv.shape[0]:
            app["vertices-texture"] = uv
        if app:
            app.update(self.app.themes)
            feat["appearance"] = app
        return feat

    def _write_feature(self, feat: dict[str, Any], out: BinaryIO) -> None:
        try:
            line = orjson.dumps(feat, option=orjson.OPT_SERIALIZE_NUMPY)
        except orjson.JSONEncodeError as exc:
            raise IngestError(
                f"cannot re-encode feature ({exc})",
                source=self.source,
                where=f"object {feat['id']!r}",
            ) from None
        out.write(line)
        out.write(b"\n")
        self.stats.features += 1
        self.stats.objects += len(feat["CityObjects"])
        self.stats.vertices += len(feat["vertices"])

    def _emit(self, objects: list[tuple[str, Any]]) -> None:
        assert self.out is not None
        root = _root_of(objects)
        if root is None:
            root = objects[0][0]
            self.warnings.append(
                ModelWarning(
                    "parent-cycle",
                    f"objects {[o for o, _ in objects][:5]} are each other's "
                    "parents; the first is the feature's root",
                    root,
                )
            )
        loc = _Local(self.app, self.source, (0, 0, 0, 0))
        verts = self._localize(objects, loc)
        self._write_feature(self._feature(objects, loc, verts, root), self.out)

    # -- links declared by one side only, pointing at features already written -------------

    def _merge_late(
        self,
        out: BinaryIO,
        part: Path,
        tmp: Path,
        leftovers: list[tuple[list[tuple[str, Any]], set[str]]],
    ) -> None:
        """Merge the groups still waiting into the features that hold what they wait for.

        Rewrites the output once: features holding an awaited id are taken out and
        written again together with the objects that waited for them.
        """
        wanted: dict[str, int] = {}
        for li, (_, missing) in enumerate(leftovers):
            for x in missing:
                wanted.setdefault(x, li)
        pattern = (
            re.compile(b"|".join(re.escape(orjson.dumps(x)) + rb":\{" for x in sorted(wanted)))
            if wanted
            else None
        )
        # union-find over leftover groups (ints) and written lines (("line", n))
        parent: dict[Any, Any] = {}

        def find(x: Any) -> Any:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        taken: dict[int, dict[str, Any]] = {}
        found: set[str] = set()
        with part.open("rb") as fh:
            for n, line in enumerate(fh):
                if n == 0 or pattern is None or not pattern.search(line):
                    continue
                feat = orjson.loads(line)
                hits = [x for x in feat["CityObjects"] if x in wanted]
                if not hits:
                    continue
                taken[n] = feat
                for x in hits:
                    found.add(x)
                    parent[find(("line", n))] = find(wanted[x])
                    for li, (_, missing) in enumerate(leftovers):
                        if x in missing:
                            parent[find(li)] = find(("line", n))
        for li in range(len(leftovers)):
            find(li)
        comps: dict[Any, list[Any]] = {}
        for node in list(parent):
            comps.setdefault(find(node), []).append(node)
        dangling = sorted(set(wanted) - found)
        if dangling:
            self.warnings.append(
                ModelWarning(
                    "dangling-link",
                    f"{len(dangling)} parent/child id(s) name no object in the file "
                    f"(first: {dangling[0]!r}); the objects naming them are written without them",
                )
            )
        merged = sum(1 for li in range(len(leftovers)) if len(comps[find(li)]) > 1)
        if merged:
            self.warnings.append(
                ModelWarning(
                    "late-link",
                    f"{merged} object group(s) name as parent or child an object that came "
                    "earlier without the reverse link; merged into that object's feature",
                )
            )
        tmp_out = tmp / "rewrite.part"
        self.stats.features -= len(taken)
        for feat in taken.values():
            self.stats.objects -= len(feat["CityObjects"])
            self.stats.vertices -= len(feat["vertices"])
        with tmp_out.open("wb", buffering=1 << 20) as new, part.open("rb") as old:
            for n, line in enumerate(old):
                if n not in taken:
                    new.write(line)
            for nodes in comps.values():
                lines = sorted(x[1] for x in nodes if isinstance(x, tuple))
                groups = sorted(x for x in nodes if isinstance(x, int))
                self._write_merged(
                    [taken[n] for n in lines],
                    [obj for li in groups for obj in leftovers[li][0]],
                    new,
                )
        os.replace(tmp_out, part)

    def _write_merged(
        self, feats: list[dict[str, Any]], objects: list[tuple[str, Any]], out: BinaryIO
    ) -> None:
        all_objects: list[tuple[str, Any]] = []
        vert_parts: list[IntArray] = []
        mats: list[Any] = []
        texs: list[Any] = []
        uvs: list[Any] = []
        for old in feats:
            app = old.get("appearance") or {}
            nv = sum(len(p) for p in vert_parts)
            offs = (nv, len(mats), len(texs), len(uvs))
            for oid, obj in old["CityObjects"].items():
                _shift_object(obj, offs)
                all_objects.append((oid, obj))
            vert_parts.append(np.asarray(old["vertices"], dtype=np.int64).reshape(-1, 3))
            mats += app.get("materials", [])
            texs += app.get("textures", [])
            uvs += app.get("vertices-texture", [])
        nv = sum(len(p) for p in vert_parts)
        loc = _Local(self.app, self.source, (nv, len(mats), len(texs), len(uvs)))
        vert_parts.append(self._localize(objects, loc))
        all_objects += objects
        m2, t2, uv2 = loc.appearance()
        root = _root_of(all_objects) or all_objects[0][0]
        feat: dict[str, Any] = {
            "type": "CityJSONFeature",
            "id": root,
            "CityObjects": _root_first(root, all_objects),
            "vertices": np.vstack(vert_parts) if vert_parts else np.zeros((0, 3), np.int64),
        }
        app_out: dict[str, Any] = {}
        if mats or m2:
            app_out["materials"] = mats + m2
        if texs or t2:
            app_out["textures"] = texs + t2
        if uvs or uv2.shape[0]:
            app_out["vertices-texture"] = uvs + uv2.tolist()
        if app_out:
            app_out.update(self.app.themes)
            feat["appearance"] = app_out
        self._write_feature(feat, out)


def _root_first(root: str, objects: list[tuple[str, Any]]) -> dict[str, Any]:
    """The feature's CityObjects, its root first, the others in arrival order."""
    out = {oid: obj for oid, obj in objects if oid == root}
    out.update((oid, obj) for oid, obj in objects if oid != root)
    return out


def _shift_object(obj: Any, offs: tuple[int, int, int, int]) -> None:
    """Shift a written feature's local indices by the offsets of a merged feature."""
    if not isinstance(obj, dict) or offs == (0, 0, 0, 0):
        return
    nv, nm, nt, nuv = offs
    geoms = list(obj.get("geometry") or [])
    addresses = obj.get("address")
    for addr in addresses if isinstance(addresses, list) else [addresses]:
        if isinstance(addr, dict) and isinstance(addr.get("location"), dict):
            geoms.append(addr["location"])
    for g in geoms:
        if not isinstance(g, dict):
            continue
        if isinstance(g.get("boundaries"), list) and nv:
            _shift_ints(g["boundaries"], nv)
        for ent in (g.get("material") or {}).values():
            if isinstance(ent, dict):
                if isinstance(ent.get("values"), list):
                    _shift_ints(ent["values"], nm)
                if type(ent.get("value")) is int:
                    ent["value"] += nm
        for ent in (g.get("texture") or {}).values():
            if isinstance(ent, dict) and isinstance(ent.get("values"), list):
                _shift_tex(ent["values"], nt, nuv)


def _shift_tex(node: list[Any], nt: int, nuv: int) -> None:
    for k, x in enumerate(node):
        if type(x) is not list or not x:
            continue
        if type(x[0]) is list:
            _shift_tex(x, nt, nuv)
        elif x[0] is not None:
            node[k] = [x[0] + nt] + [u + nuv for u in x[1:]]


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


# -- inputs that need another path -------------------------------------------------------------


def _convert_pre_v1(
    src: Path, dest: Path, source: str, progress: ProgressFn | None
) -> SequenceStats:
    """CityJSON 0.6 .. 0.9: upgrade with cjio (reads the file whole), then stream."""
    from ingest.upgrade import upgrade_cityjson

    with tempfile.TemporaryDirectory(prefix=".cjseq-", dir=dest.parent) as td:
        up = Path(td) / "upgraded.city.json"
        old = upgrade_cityjson(src, up)
        stats = write_sequence(up, dest, progress=progress)
    stats.source_version = old
    stats.warnings.insert(
        0,
        ModelWarning(
            "upgraded", f"CityJSON {old} upgraded to 2.0 with cjio first (read whole, not streamed)"
        ),
    )
    return stats


def _copy_sequence(
    src: Path, dest: Path, source: str, progress: ProgressFn | None
) -> SequenceStats:
    """Validate a CityJSONSeq line by line and write it again (2.0 header, compact lines)."""
    stats = SequenceStats(copied=True)
    total = src.stat().st_size
    done = 0
    header: dict[str, Any] | None = None
    minor = "2.0"
    generic = False
    with src.open("rb") as fh, _atomic(dest) as (out, _):
        for lineno, raw in enumerate(fh, start=1):
            done += len(raw)
            item = sequence_line(raw, lineno, source, first=header is None)
            if item is None:
                continue
            if header is None:
                version = str(item.get("version", ""))
                stats.source_version = version
                minor = _minor_version(version, source)
                if item.get("CityObjects") or item.get("vertices"):
                    raise IngestError(
                        "the CityJSONSeq header line must have empty 'CityObjects' and "
                        "'vertices' (CityJSON 2.0 §9)",
                        source=source,
                        where=f"line {lineno}",
                    )
                generic = _upgrade_header(item, minor, stats.warnings)
                item["version"] = "2.0"
                item["CityObjects"] = {}
                item["vertices"] = []
                header = item
                out.write(orjson.dumps(item) + b"\n")
                continue
            objs = item.get("CityObjects")
            fid = item.get("id")
            if not isinstance(objs, dict) or not isinstance(fid, str) or fid not in objs:
                raise IngestError(
                    f"CityJSONFeature id {fid!r} is not one of its CityObjects (CityJSON 2.0 §9)",
                    source=source,
                    where=f"line {lineno}",
                )
            verts = item.get("vertices") or []
            if verts and "transform" not in header:
                raise IngestError(
                    "CityJSONSeq header has no 'transform' (mandatory for sequences, "
                    "CityJSON 2.0 §9): feature vertices cannot be placed",
                    source=source,
                    where="line 1",
                )
            arr = _check_rows(verts, 0, 3, True, source, f"line {lineno} vertices")
            for oid, obj in objs.items():
                if not isinstance(obj, dict):
                    raise IngestError(
                        "CityObject is not a JSON object",
                        source=source,
                        where=f"line {lineno} object {oid!r}",
                    )
                if minor != "2.0":
                    _upgrade_object(obj, minor, generic)
                _check_indices(obj, arr.shape[0], source, f"line {lineno} object {oid!r}")
            out.write(orjson.dumps(item) + b"\n")
            stats.features += 1
            stats.objects += len(objs)
            stats.vertices += arr.shape[0]
            if progress:
                progress(done, total)
        if header is None:
            raise IngestError("empty sequence", source=source)
    stats.bytes = dest.stat().st_size
    return stats


def _check_indices(obj: dict[str, Any], n: int, source: str, where: str) -> None:
    geoms = obj.get("geometry")
    for g in geoms if isinstance(geoms, list) else []:
        b = g.get("boundaries") if isinstance(g, dict) else None
        if not isinstance(b, list):
            continue
        for x in _leaves(b):
            if type(x) is not int:
                raise IngestError(
                    f"vertex index {x!r} is not an integer", source=source, where=where
                )
            if not 0 <= x < n:
                raise IngestError(
                    f"vertex index {x} out of range ({n} vertices in its feature)",
                    source=source,
                    where=where,
                )

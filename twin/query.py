"""Object queries as data: filters parsed from text, sort, cursor pagination (pure).

Filter syntax (``where=``, conditions joined by ``,`` meaning AND)::

    yearOfConstruction>1990          attribute (bare name)
    function=residential             attribute, string compare
    name~"Oude Kerk"                 contains, case-insensitive
    state.pressure<2.5               live state of a property
    state.status=alarm
    geom.height>=20                  geometry summary: height, footprint, lod

Operators: ``= != > >= < <= ~``. Values are numbers when they parse as one, else
strings (quote them to keep a numeric-looking string a string). The stores compile a
:class:`ObjectQuery` to one SQL statement; :func:`match` is the reference semantics
the in-memory store uses.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from twin.errors import TwinError

__all__ = [
    "Condition",
    "ObjectQuery",
    "QueryError",
    "decode_cursor",
    "encode_cursor",
    "parse_bbox",
    "parse_where",
]

Op = Literal["=", "!=", ">", ">=", "<", "<=", "~"]
Scope = Literal["attr", "state", "geom"]
GEOM_FIELDS = frozenset({"height", "footprint", "lod"})
SORT_FIELDS = frozenset({"id", "type", "height", "footprint"})
MAX_CONDITIONS = 20
MAX_WHERE_LENGTH = 2000

_COND = re.compile(
    r"""^\s*(?P<name>[A-Za-z_][\w.:\-]*)\s*(?P<op>!=|>=|<=|=|>|<|~)\s*(?P<value>.*?)\s*$""",
    re.DOTALL,
)
_NAME = re.compile(r"^[A-Za-z_][\w:\-]*$")


class QueryError(TwinError):
    """A query that cannot be understood; ``token`` is the offending part."""

    exit_code = 2

    def __init__(self, message: str, token: str = "") -> None:
        super().__init__(message)
        self.token = token


@dataclass(frozen=True, slots=True)
class Condition:
    """One filter condition."""

    scope: Scope
    name: str
    op: Op
    value: str | float

    @property
    def numeric(self) -> bool:
        """True when the value is a number (numeric comparison)."""
        return isinstance(self.value, float)


@dataclass(frozen=True)
class ObjectQuery:
    """A list query: filters, sort, page size and cursor."""

    scenario: str = "base"
    types: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: Literal["wgs84", "source"] = "wgs84"
    text: str | None = None
    sort: str = "id"
    descending: bool = False
    limit: int = 100
    cursor: tuple[Any, str] | None = None
    ids: tuple[str, ...] = field(default_factory=tuple)


def _split(text: str) -> list[str]:
    """Split on commas outside double quotes."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quoted:
        raise QueryError(f"unclosed quote in filter {text!r}", text)
    parts.append("".join(buf))
    return [p for p in (x.strip() for x in parts) if p]


def parse_where(*texts: str) -> tuple[Condition, ...]:
    """Parse filter expressions (see module docstring).

    Args:
        texts: one or more ``where`` strings; all conditions are ANDed.

    Returns:
        The conditions.

    Raises:
        QueryError: a condition cannot be parsed; ``token`` names it.
    """
    out: list[Condition] = []
    for text in texts:
        if len(text) > MAX_WHERE_LENGTH:
            raise QueryError(f"filter longer than {MAX_WHERE_LENGTH} characters", text[:40])
        for part in _split(text):
            m = _COND.match(part)
            if m is None:
                raise QueryError(
                    f"cannot parse filter {part!r}: expected NAME OP VALUE with OP one of "
                    "= != > >= < <= ~",
                    part,
                )
            name, op, raw = m.group("name"), m.group("op"), m.group("value")
            scope: Scope = "attr"
            if name.startswith("state."):
                scope, name = "state", name[6:]
            elif name.startswith("geom."):
                scope, name = "geom", name[5:]
                if name not in GEOM_FIELDS:
                    raise QueryError(
                        f"unknown geometry field {name!r} in {part!r} "
                        f"(one of {', '.join(sorted(GEOM_FIELDS))})",
                        part,
                    )
            elif name.startswith("attr."):
                name = name[5:]
            if not _NAME.match(name):
                raise QueryError(f"bad property name {name!r} in {part!r}", part)
            if raw == "":
                raise QueryError(f"missing value in filter {part!r}", part)
            value: str | float
            if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                value = raw[1:-1]
            else:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
                else:
                    if value != value or value in (float("inf"), float("-inf")):
                        raise QueryError(f"not a finite number in {part!r}", part) from None
            if scope == "geom" and name == "lod":
                # LoDs are labels ("2", "2.2"), compared as text.
                value = raw.strip('"')
                if op not in ("=", "!=", "~"):
                    raise QueryError(f"lod compares with = != ~ only, in {part!r}", part)
            if op in (">", ">=", "<", "<=") and not isinstance(value, float):
                raise QueryError(f"{op} needs a number in {part!r}", part)
            if op == "~" and isinstance(value, float):
                value = raw
            out.append(Condition(scope, name, op, value))  # type: ignore[arg-type]
            if len(out) > MAX_CONDITIONS:
                raise QueryError(f"more than {MAX_CONDITIONS} conditions", part)
    return tuple(out)


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """Parse ``minx,miny,maxx,maxy``.

    Raises:
        QueryError: not four finite numbers with min <= max.
    """
    parts = text.split(",")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise QueryError(f"bbox {text!r} must be four numbers minx,miny,maxx,maxy", text) from None
    if len(vals) != 4 or any(v != v or abs(v) == float("inf") for v in vals):
        raise QueryError(f"bbox {text!r} must be four numbers minx,miny,maxx,maxy", text)
    if vals[0] > vals[2] or vals[1] > vals[3]:
        raise QueryError(f"bbox {text!r} has min > max", text)
    return (vals[0], vals[1], vals[2], vals[3])


def encode_cursor(sort_value: Any, object_id: str) -> str:
    """An opaque cursor for keyset pagination after (sort value, id)."""
    return base64.urlsafe_b64encode(orjson.dumps([sort_value, object_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, str]:
    """Decode :func:`encode_cursor` output.

    Raises:
        QueryError: not a cursor this API made.
    """
    try:
        pad = "=" * (-len(cursor) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(cursor + pad))
    except (ValueError, orjson.JSONDecodeError):
        raise QueryError("invalid cursor", cursor[:40]) from None
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not isinstance(data[1], str)
        or not (data[0] is None or isinstance(data[0], str | int | float))
    ):
        raise QueryError("invalid cursor", cursor[:40])
    return data[0], data[1]


def compare(actual: Any, cond: Condition) -> bool:
    """Reference semantics of one condition against a value.

    Numeric comparisons match only numbers; string comparisons (``=``, ``!=``, ``~``
    with a string) match only strings; a missing value matches only ``!=``. The SQL
    stores implement exactly this.
    """
    is_num = isinstance(actual, int | float) and not isinstance(actual, bool)
    if cond.op == "~":
        return isinstance(actual, str) and str(cond.value).lower() in actual.lower()
    if cond.numeric:
        if not is_num:
            return cond.op == "!="
        num, v = float(actual), float(cond.value)
        return {
            "=": num == v,
            "!=": num != v,
            ">": num > v,
            ">=": num >= v,
            "<": num < v,
            "<=": num <= v,
        }[cond.op]
    equal = isinstance(actual, str) and actual == cond.value
    return equal if cond.op == "=" else not equal


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Parse ``30s``, ``5m``, ``1h``, ``1d`` into seconds.

    Raises:
        QueryError: not a positive duration.
    """
    m = _DURATION.match(text)
    if m is None:
        raise QueryError(f"duration {text!r} must look like 30s, 5m, 1h or 1d", text)
    seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if seconds <= 0:
        raise QueryError(f"duration {text!r} must be positive", text)
    return seconds


def parse_time(text: str) -> float:
    """Parse an ISO 8601 time (UTC if no offset) or epoch seconds into epoch seconds.

    Raises:
        QueryError: neither form.
    """
    from datetime import UTC, datetime

    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value == value and abs(value) < 1e11:
            return value
        raise QueryError(f"time {text!r} is out of range", text)
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(
            f"time {text!r} must be ISO 8601 (2026-11-23T12:00:00Z) or epoch seconds", text
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()

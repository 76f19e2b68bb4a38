"""Feed mapping: observations -> twin state updates or rejections (pure, no I/O).

A :class:`Mapping` says which twin object an external key (a SensorThings datastream, an
NGSI entity URN, a CSV column) stands for, how external attribute names become twin
properties, and what each property accepts (type, unit, range). :func:`resolve_all` applies
it to a batch of observations; every observation becomes either a
:class:`~twin.state.StateUpdate` or a :class:`~sync.model.Rejection` with a reason.

A mapping file (JSON or TOML; the mapping may sit under a ``mapping`` table next to other
sections)::

    strict_properties = false
    [entities]
    "datastream:17" = {object = "net:water:J-10", property = "pressure", scale = 0.001}
    "urn:ngsi-ld:Junction:63fe" = "net:water:J-10"       # shorthand: object only
    [attributes]
    flow = "flow_rate"
    [properties.pressure]
    type = "number"
    unit = "bar"
    minimum = 0
    maximum = 16
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from sync.model import Observation, Rejection
from twin.errors import FeedError
from twin.state import StateUpdate

__all__ = [
    "MAX_FUTURE_S",
    "MAX_PAYLOAD_BYTES",
    "MIN_TIME",
    "EntityMap",
    "Mapping",
    "PropertySpec",
    "convert_unit",
    "resolve_all",
    "unit_dimension",
]

MIN_TIME = 31_536_000.0
"""Earliest accepted event time: 1971-01-01T00:00:00Z. Devices whose clock was never set
report times at (or just after) the epoch; such times are refused rather than stored as
history from 1970."""

MAX_FUTURE_S = 86_400.0
"""How far past the receive time an event time may lie (a day: clock skew and time zones
mistaken for UTC stay inside; a milliseconds/seconds mix-up does not)."""

MAX_PAYLOAD_BYTES = 2048
"""Bound on a rejection's ``payload`` (UTF-8 bytes)."""

_INT64 = 2**63 - 1

PropertyType = Literal["number", "string", "boolean", "any"]
_TYPES: tuple[str, ...] = ("number", "string", "boolean", "any")


# --- units ---------------------------------------------------------------------------

# unit -> (dimension, factor, offset): value_in_base = value * factor + offset.
# Symbols as written by people and SensorThings unitOfMeasurement.symbol, UCUM codes
# (Cel, [degF], [gal_us]/min) and the UN/CEFACT Recommendation 20 common codes that NGSI
# ``unitCode`` uses (smart-data-models: MTR, MMT, G51, MQS, KWT, LTR, MTQ, C62...), plus
# EPANET's flow unit names (EPANET 2.2 manual, [OPTIONS] UNITS: LPS, GPM, CMH...).
_US_GALLON = 3.785411784e-3  # m3, exact by definition
_UNITS: dict[str, tuple[str, float, float]] = {}


def _units(dimension: str, factor: float, *names: str, offset: float = 0.0) -> None:
    for name in names:
        _UNITS[name] = (dimension, factor, offset)


_units("pressure", 1.0, "Pa", "PAL")
_units("pressure", 100.0, "hPa", "A97", "mbar", "MBR")
_units("pressure", 1e3, "kPa", "KPA")
_units("pressure", 1e6, "MPa", "MPA")
_units("pressure", 1e5, "bar", "BAR")
_units("pressure", 6894.757293168361, "psi", "PS", "[psi]")
_units("pressure", 101325.0, "atm", "ATM")
_units("length", 1.0, "m", "MTR")
_units("length", 1e-3, "mm", "MMT")
_units("length", 1e-2, "cm", "CMT")
_units("length", 1e3, "km", "KMT")
_units("length", 0.3048, "ft", "FOT", "[ft_i]")
_units("length", 0.0254, "in", "INH", "[in_i]")
_units("flow", 1.0, "m3/s", "MQS", "CMS")
_units("flow", 1.0 / 3600.0, "m3/h", "MQH", "CMH")
_units("flow", 1.0 / 86400.0, "m3/d", "CMD")
_units("flow", 1e-3, "L/s", "l/s", "G51", "LPS")
_units("flow", 1e-3 / 60.0, "L/min", "l/min", "L2", "LPM")
_units("flow", 1.0 / 86400.0 * 1e3, "ML/d", "MLD")
_units("flow", _US_GALLON / 60.0, "gpm", "GPM", "G2", "[gal_us]/min")
_units("flow", _US_GALLON * 1e6 / 86400.0, "MGD")
_units("flow", 0.3048**3, "ft3/s", "cfs", "CFS")
_units("volume", 1.0, "m3", "MTQ")
_units("volume", 1e-3, "L", "l", "LTR")
_units("power", 1.0, "W", "WTT")
_units("power", 1e3, "kW", "KWT")
_units("power", 1e6, "MW", "MAW")
_units("energy", 1.0, "Wh", "WHR")
_units("energy", 1e3, "kWh", "KWH")
_units("energy", 1e6, "MWh", "MWH")
_units("current", 1.0, "A", "AMP")
_units("current", 1e-3, "mA", "4K")
_units("voltage", 1.0, "V", "VLT")
_units("voltage", 1e-3, "mV", "2Z")
_units("voltage", 1e3, "kV", "KVT")
_units("velocity", 1.0, "m/s", "MTS")
_units("velocity", 1.0 / 3.6, "km/h", "KMH")
_units("frequency", 1.0, "Hz", "HTZ")
_units("ratio", 1.0, "1", "C62")
_units("ratio", 0.01, "%", "P1")
_units("concentration", 1.0, "mg/L", "mg/l", "M1", "g/m3")
_units("mass_flow", 1.0, "g/h", "F27")
_units("mass_flow", 1e3, "kg/h", "E93")
_units("kinematic_viscosity", 1.0, "m2/s", "S4")
_units("rate", 1.0, "1/d", "E91")
# Temperatures go through kelvin; "C" alone is not accepted (it is the coulomb).
_units("temperature", 1.0, "K", "KEL")
_units("temperature", 1.0, "°C", "degC", "Cel", "CEL", "℃", offset=273.15)
_units("temperature", 5.0 / 9.0, "°F", "degF", "[degF]", "FAH", "℉", offset=273.15 - 32 * 5 / 9)


def _norm_unit(unit: str) -> str:
    return unit.strip().replace("³", "3").replace("²", "2").replace("^", "")


def unit_dimension(unit: str) -> str | None:
    """The physical dimension of a unit this module knows (``pressure``, ``flow``...).

    Args:
        unit: a symbol (``kPa``), UCUM (``Cel``) or UN/CEFACT code (``KPA``).

    Returns:
        The dimension name, or None for an unknown unit.
    """
    found = _UNITS.get(_norm_unit(unit))
    return found[0] if found else None


def convert_unit(value: float, source: str, target: str) -> float:
    """Convert a value between two units of the same dimension.

    Identical units (after spelling normalisation: ``m³`` = ``m3``) convert as-is even
    when unknown.

    Args:
        value: the number in ``source`` units.
        source: the unit the value is in.
        target: the unit wanted.

    Returns:
        The value in ``target`` units.

    Raises:
        FeedError: ``unit 'X' cannot be converted to 'Y'``.
    """
    src, dst = _norm_unit(source), _norm_unit(target)
    if src == dst:
        return value
    a, b = _UNITS.get(src), _UNITS.get(dst)
    if a is None or b is None or a[0] != b[0]:
        raise FeedError(f"unit {source!r} cannot be converted to {target!r}")
    # Multiply before dividing: kPa -> bar is 250 * 1000 / 100000 = 2.5 exactly.
    return ((value * a[1] + a[2]) - b[2]) / b[1]


# --- the mapping ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """What a twin property accepts.

    Attributes:
        type: ``number`` (int or float, not bool), ``string``, ``boolean`` or ``any``;
            null is accepted by every type (a reading that is absent).
        unit: the unit values are stored in; observations in another unit are converted.
        minimum: lowest accepted number (after conversion), inclusive.
        maximum: highest accepted number (after conversion), inclusive.
    """

    type: PropertyType = "any"
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True, slots=True)
class EntityMap:
    """The twin object (and, for single-value sources, property) behind an external key.

    Attributes:
        object: the twin object id.
        property: the twin property every observation of this key sets (a SensorThings
            datastream), or None to keep the observation's own property name.
        scale: numbers are multiplied by this first (raw counts to the source unit)...
        offset: ...then this is added.
    """

    object: str
    property: str | None = None
    scale: float = 1.0
    offset: float = 0.0


def _bad(where: str, problem: str) -> FeedError:
    return FeedError(f"mapping: {where}: {problem}")


def _check_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in d:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise _bad(f"{where}{key}", f"unknown key (known: {known})")


def _table(d: dict[str, Any], key: str) -> dict[str, Any]:
    value = d.get(key, {})
    if not isinstance(value, dict):
        raise _bad(key, f"expected a table/object, not {type(value).__name__}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(where, f"expected a non-empty string, not {value!r}")
    return value


def _number(value: Any, where: str, default: float | None) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(where, f"expected a number, not {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _bad(where, f"expected a finite number, not {value!r}")
    return number


def _entity_map(key: str, raw: Any) -> EntityMap:
    where = f"entities.{key!r}"
    if isinstance(raw, str):
        return EntityMap(object=_text(raw, where))
    if not isinstance(raw, dict):
        raise _bad(where, f"expected an object id or a table, not {raw!r}")
    _check_keys(raw, {"object", "property", "scale", "offset"}, f"{where}.")
    if "object" not in raw:
        raise _bad(where, "no 'object'")
    prop = raw.get("property")
    scale = _number(raw.get("scale"), f"{where}.scale", 1.0)
    offset = _number(raw.get("offset"), f"{where}.offset", 0.0)
    assert scale is not None and offset is not None
    return EntityMap(
        object=_text(raw["object"], f"{where}.object"),
        property=None if prop is None else _text(prop, f"{where}.property"),
        scale=scale,
        offset=offset,
    )


def _property_spec(name: str, raw: Any) -> PropertySpec:
    where = f"properties.{name!r}"
    if not isinstance(raw, dict):
        raise _bad(where, f"expected a table, not {raw!r}")
    _check_keys(raw, {"type", "unit", "minimum", "maximum"}, f"{where}.")
    kind = raw.get("type", "any")
    if kind not in _TYPES:
        raise _bad(f"{where}.type", f"expected one of {', '.join(_TYPES)}, not {kind!r}")
    unit = raw.get("unit")
    if unit is not None:
        unit = _text(unit, f"{where}.unit")
        if kind not in ("number", "any"):
            raise _bad(f"{where}.unit", f"a {kind} property has no unit")
    lo = _number(raw.get("minimum"), f"{where}.minimum", None)
    hi = _number(raw.get("maximum"), f"{where}.maximum", None)
    if (lo is not None or hi is not None) and kind not in ("number", "any"):
        raise _bad(where, f"a {kind} property has no minimum/maximum")
    if lo is not None and hi is not None and lo > hi:
        raise _bad(where, f"minimum {lo} is above maximum {hi}")
    return PropertySpec(type=cast(PropertyType, kind), unit=unit, minimum=lo, maximum=hi)


@dataclass
class Mapping:
    """How one feed's keys and names become twin objects and properties.

    Attributes:
        entities: external key -> :class:`EntityMap`; a key not listed is taken as a twin
            object id itself.
        attributes: external attribute name -> twin property name (``flow`` ->
            ``flow_rate``); a name not listed is kept.
        properties: twin property -> :class:`PropertySpec`.
        strict_properties: refuse properties that ``properties`` does not declare.
        default_time: the time of an observation without one: ``received``.
    """

    entities: dict[str, EntityMap] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    properties: dict[str, PropertySpec] = field(default_factory=dict)
    strict_properties: bool = False
    default_time: Literal["received"] = "received"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Mapping:
        """Build a mapping from its JSON/TOML form (see the module docstring).

        Args:
            d: the parsed document (or its ``mapping`` table).

        Returns:
            The mapping.

        Raises:
            FeedError: a malformed or unknown key; the message names it.
        """
        if not isinstance(d, dict):
            raise FeedError(f"mapping: expected a table/object, not {type(d).__name__}")
        _check_keys(
            d, {"entities", "attributes", "properties", "strict_properties", "default_time"}, ""
        )
        entities = {k: _entity_map(k, v) for k, v in _table(d, "entities").items()}
        attributes = {k: _text(v, f"attributes.{k!r}") for k, v in _table(d, "attributes").items()}
        properties = {k: _property_spec(k, v) for k, v in _table(d, "properties").items()}
        strict = d.get("strict_properties", False)
        if not isinstance(strict, bool):
            raise _bad("strict_properties", f"expected true or false, not {strict!r}")
        default_time = d.get("default_time", "received")
        if default_time != "received":
            raise _bad("default_time", f"only 'received' is supported, not {default_time!r}")
        return cls(
            entities=entities,
            attributes=attributes,
            properties=properties,
            strict_properties=strict,
        )

    @classmethod
    def load(cls, path: str | Path) -> Mapping:
        """Read a mapping from a JSON or TOML file.

        The mapping is the whole document, or its ``mapping`` table when the file also
        holds other sections (the server config file).

        Args:
            path: a ``.json`` or ``.toml`` file.

        Returns:
            The mapping.

        Raises:
            FeedError: the file cannot be read or parsed, or the mapping is malformed.
        """
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise FeedError(f"mapping {str(p)!r}: cannot read ({exc.strerror or exc})") from None
        try:
            if p.suffix.lower() == ".toml":
                doc: Any = tomllib.loads(raw.decode("utf-8"))
            elif p.suffix.lower() == ".json":
                doc = json.loads(raw)
            else:
                raise FeedError(f"mapping {str(p)!r}: expected a .json or .toml file")
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise FeedError(f"mapping {str(p)!r}: {exc}") from None
        if isinstance(doc, dict) and isinstance(doc.get("mapping"), dict):
            doc = doc["mapping"]
        try:
            return cls.from_dict(doc)
        except FeedError as exc:
            raise FeedError(f"{str(p)!r}: {exc.message}") from None


# --- resolution ----------------------------------------------------------------------


def _payload(obs: Observation) -> str:
    fields: dict[str, Any] = {
        "entity": obs.entity,
        "property": obs.property,
        "value": obs.value,
        "time": obs.time,
        "unit": obs.unit,
        "msg_id": obs.msg_id,
        "quality": obs.quality,
    }
    try:
        text = json.dumps(fields, default=repr, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        text = ""
    if text and len(text.encode()) <= MAX_PAYLOAD_BYTES:
        return text
    # Too long (a huge string value or id): shorten every field to keep valid JSON.
    short = {k: (_clip(v) if isinstance(v, str) else v) for k, v in fields.items()}
    if not isinstance(short["value"], str | int | float | bool | type(None)):
        short["value"] = _clip(_safe_repr(short["value"]))
    try:
        text = json.dumps(short, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError, OverflowError):
        text = json.dumps({"entity": _clip(str(obs.entity)), "value": "<unprintable>"})
    return _bound(text)


def _clip(text: str, limit: int = 256) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except (RecursionError, ValueError):
        return f"<{type(value).__name__}>"


def _bound(text: str) -> str:
    data = text.encode()
    if len(data) <= MAX_PAYLOAD_BYTES:
        return text
    return data[: MAX_PAYLOAD_BYTES - 3].decode("utf-8", "ignore") + "..."


_ANY = PropertySpec()
"""The spec of a property the mapping does not declare: any type, no unit or range."""


class _Refused(Exception):
    """One observation's rejection reason, inside this module only."""


def _check_value(value: Any, spec: PropertySpec, unit: str | None, emap: EntityMap | None) -> Any:
    """The value to store, converted and checked; raises _Refused with the reason."""
    if value is None:
        return None
    if isinstance(value, bool):
        if spec.type not in ("boolean", "any"):
            raise _Refused(f"wrong type: boolean for a {spec.type} property")
        return value
    if isinstance(value, str):
        if spec.type not in ("string", "any"):
            raise _Refused(f"wrong type: string {_clip(value, 40)!r} for a {spec.type} property")
        return value
    if not isinstance(value, int | float):
        raise _Refused(
            f"value must be a number, string, boolean or null, not {type(value).__name__}"
        )
    if spec.type not in ("number", "any"):
        raise _Refused(f"wrong type: number for a {spec.type} property")
    number: int | float = value
    if isinstance(number, int) and abs(number) > _INT64:
        raise _Refused("integer out of the 64-bit range")
    if isinstance(number, float) and not math.isfinite(number):
        raise _Refused(f"value is not finite ({number})")
    if emap is not None and (emap.scale != 1.0 or emap.offset != 0.0):
        number = float(number) * emap.scale + emap.offset
    if unit and spec.unit and _norm_unit(unit) != _norm_unit(spec.unit):
        try:
            number = convert_unit(float(number), unit, spec.unit)
        except FeedError as exc:
            raise _Refused(exc.message) from None
    if isinstance(number, float) and not math.isfinite(number):
        raise _Refused("value is not finite after scaling or unit conversion")
    suffix = f" {spec.unit}" if spec.unit else ""
    if spec.minimum is not None and number < spec.minimum:
        raise _Refused(f"value {number}{suffix} is below the minimum {spec.minimum}{suffix}")
    if spec.maximum is not None and number > spec.maximum:
        raise _Refused(f"value {number}{suffix} is above the maximum {spec.maximum}{suffix}")
    return number


def _check_time(time: float | None, received: float) -> float:
    if time is None:
        return received
    if isinstance(time, bool) or not isinstance(time, int | float):
        raise _Refused(f"time is not a number: {_clip(_safe_repr(time), 40)}")
    try:
        t = float(time)
    except OverflowError:
        t = math.inf
    if not math.isfinite(t):
        raise _Refused(f"time is not finite ({time})")
    if t < MIN_TIME:
        raise _Refused(f"time {t} is before 1971 (an unset device clock?)")
    if math.isfinite(received) and t > received + MAX_FUTURE_S:
        raise _Refused(f"time {t} is more than a day after it was received ({received})")
    return t


def resolve_all(
    observations: Sequence[Observation],
    *,
    feed: str,
    received: float,
    exists: Callable[[set[str]], set[str]],
    mapping: Mapping | None = None,
    payload_of: Callable[[Observation], str] | None = None,
) -> tuple[list[StateUpdate], list[Rejection]]:
    """Resolve decoded observations to state updates, refusing what does not fit.

    Each observation's entity goes through ``mapping.entities`` (else it is the object id
    itself); its property is the entity map's, else the observation's renamed by
    ``mapping.attributes``. Refused, with a reason: no property (a datastream nobody
    mapped), an unknown object, an undeclared property (strict mapping), a wrong type
    (booleans are not numbers), NaN/inf, a 64-bit-overflowing integer, a value out of
    [minimum, maximum] (after scale/offset, then unit conversion into the declared unit),
    an unconvertible unit, a time before :data:`MIN_TIME` or more than
    :data:`MAX_FUTURE_S` after ``received``.

    Args:
        observations: decoded observations.
        feed: the feed name (``StateUpdate.source``, ``Rejection.feed``).
        received: when the message arrived (epoch s): the time of observations without one.
        exists: given candidate object ids, returns those that exist; called at most once
            (not at all when no observation gets that far), so the caller makes one query.
        mapping: the feed's mapping; None maps identically with no checks but types.
        payload_of: the rejection payload of an observation (e.g. the message bytes);
            default: a JSON of the observation. Bounded to :data:`MAX_PAYLOAD_BYTES`.

    Returns:
        ``(updates, rejections)``, each in input order.
    """
    mapping = mapping or Mapping()
    updates: list[StateUpdate] = []
    refused: list[tuple[int, Rejection]] = []

    def refuse(index: int, obs: Observation, reason: str) -> None:
        payload = payload_of(obs) if payload_of is not None else _payload(obs)
        refused.append(
            (
                index,
                Rejection(
                    feed=feed,
                    reason=reason,
                    payload=_bound(payload),
                    time=received,
                    entity=_clip(obs.entity) if isinstance(obs.entity, str) else None,
                    property=_clip(obs.property) if isinstance(obs.property, str) else None,
                ),
            )
        )

    # Pass 1: names, so that the existence check is one call over every candidate.
    resolved: list[tuple[int, Observation, str, str, EntityMap | None]] = []
    for index, obs in enumerate(observations):
        entity = obs.entity
        if not isinstance(entity, str) or not entity:
            refuse(index, obs, "no entity id")
            continue
        emap = mapping.entities.get(entity)
        object_id = emap.object if emap else entity
        prop = emap.property if emap and emap.property else None
        if prop is None and isinstance(obs.property, str) and obs.property:
            prop = mapping.attributes.get(obs.property, obs.property)
        if prop is None:
            kind = "datastream" if entity.startswith("datastream:") else "entity"
            refuse(
                index, obs, f"no property for {kind} {_clip(entity, 80)!r} (map it in 'entities')"
            )
            continue
        resolved.append((index, obs, object_id, prop, emap))

    candidates = {r[2] for r in resolved}
    known = exists(candidates) if candidates else set()

    # Pass 2: in input order, refuse or build the update.
    properties = mapping.properties
    strict = mapping.strict_properties
    # The latest event time _check_time accepts; not finite: every time takes that path.
    limit = received + MAX_FUTURE_S if math.isfinite(received) else -math.inf
    append = updates.append
    for index, obs, object_id, prop, emap in resolved:
        try:
            if object_id not in known:
                via = f" (mapped from {_clip(obs.entity, 80)!r})" if object_id != obs.entity else ""
                raise _Refused(f"unknown object {_clip(object_id, 80)!r}{via}")
            spec = properties.get(prop)
            if spec is None:
                if strict:
                    raise _Refused(f"unknown property {_clip(prop, 80)!r} (strict mapping)")
                spec = _ANY
            value = obs.value
            vtype = type(value)
            # Fast path: what _check_value returns unchanged for an unconstrained property
            # with no scale/offset (text, null, a boolean, a finite float, a 64-bit int).
            if not (
                spec is _ANY
                and (emap is None or (emap.scale == 1.0 and emap.offset == 0.0))
                and (
                    vtype is str
                    or value is None
                    or vtype is bool
                    or (vtype is float and value - value == 0.0)
                    or (vtype is int and -_INT64 <= value <= _INT64)
                )
            ):
                unit = obs.unit if isinstance(obs.unit, str) and obs.unit else None
                value = _check_value(value, spec, unit, emap)
            time = obs.time
            # Fast path: a float time _check_time accepts as it is.
            if time is None:
                time = received
            elif not (type(time) is float and MIN_TIME <= time <= limit):
                time = _check_time(time, received)
        except _Refused as exc:
            refuse(index, obs, str(exc))
            continue
        quality = obs.quality
        msg_id = obs.msg_id
        append(
            StateUpdate(
                object_id,
                prop,
                value,
                time,
                feed,
                quality if quality is None or isinstance(quality, str) else None,
                msg_id if msg_id is None or isinstance(msg_id, str) else None,
            )
        )
    # Pass 1 and pass 2 both refuse: restore input order (the sort is stable).
    refused.sort(key=lambda pair: pair[0])
    return updates, [rejection for _, rejection in refused]

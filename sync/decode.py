"""Feed decoders: message bytes -> :class:`~sync.model.Observation` values (pure, no I/O).

Formats, by registry name (:data:`DECODERS`):

* ``json`` -- the house format: ``{"id", "property", "value", "time"}`` objects or lists of
  them (``object_id`` is an alias of ``id``; ``msg_id``, ``quality`` and ``unit`` are
  optional). On a topic matching the template (``city/{object_id}/{property}``) the payload
  may be a bare value or ``{"value", "time"}``; ``city/batch`` carries a list of full items.
* ``sensorthings`` -- OGC SensorThings API 1.1 Observations (single, array, ``{"value": [...]}``
  collection, deep-insert Thing or Datastream), keyed ``datastream:<@iot.id or name>``.
* ``ngsi-ld`` -- ETSI NGSI-LD entities (normalized, concise or keyValues), lists of them and
  Notifications; keyed by entity id, one observation per scalar Property.
* ``ngsi-v2`` -- FIWARE NGSI v2 entities (normalized or keyValues), lists and notifications.
* ``csv`` -- long (``id,property,value[,time][,msg_id]``) or wide (``time,<entity>[.<prop>]``).

Every decoder either returns observations or raises :class:`~sync.model.DecodeError` with a
one-line reason that names where the problem is (``item 3: no 'value'``, ``row 7: bad time
'x'``); no other exception escapes :func:`decode`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sync.model import DecodeError, Message, Observation

__all__ = [
    "DECODERS",
    "DEFAULT_TOPIC_TEMPLATE",
    "Decoder",
    "decode",
    "decode_csv",
    "decode_json",
    "decode_ngsi_ld",
    "decode_ngsi_v2",
    "decode_sensorthings",
    "detect_format",
    "parse_time",
]

DEFAULT_TOPIC_TEMPLATE = "city/{object_id}/{property}"
"""Where a bare value names its object and property: ``city/net:water:J-10/pressure``."""

Decoder = Callable[[Message, str], list[Observation]]
"""A decoder: ``(message, topic_template) -> observations``; raises :class:`DecodeError`."""

EPOCH_MS_THRESHOLD = 1e11
"""Numeric times above this are epoch milliseconds (1e11 s is the year 5138)."""

_SHORT = 60

# SensorThings MQTT topics (OGC 18-088 SensorThings API 1.1 §14.2.2: an Observation published
# on v1.1/Datastreams(<id>)/Observations); the key is an OData key literal: 1 or 'abc'.
_ST_TOPIC = re.compile(r"(?:^|/)v1\.[01]/Datastreams\((?P<id>[^()/]*)\)/Observations$")
_ST_KEYS = frozenset(
    {
        "result",
        "phenomenonTime",
        "resultTime",
        "Datastream",
        "Datastreams",
        "Observations",
        "@iot.id",
        "@iot.selfLink",
    }
)

# NGSI-LD attribute types that are not Property values (ETSI GS CIM 009 V1.8 §4.5).
_LD_NON_PROPERTY = frozenset(
    {
        "Relationship",
        "GeoProperty",
        "LanguageProperty",
        "VocabProperty",
        "JsonProperty",
        "ListProperty",
        "ListRelationship",
    }
)
_LD_TYPES = _LD_NON_PROPERTY | {"Property"}
# NGSI v2 attribute types that carry geometry or references, not readings (FIWARE NGSI v2
# §"Geospatial properties of entities").
_V2_SKIP_TYPES = frozenset(
    {"geo:json", "geo:point", "geo:line", "geo:box", "geo:polygon", "Relationship"}
)
# Entity members that identify or locate the entity, or date it (used as the observation
# time below), rather than being readings.
_NGSI_META = frozenset(
    {
        "@context",
        "id",
        "@id",
        "type",
        "@type",
        "location",
        "dateObserved",
        "dateModified",
        "dateCreated",
        "createdAt",
        "modifiedAt",
        "TimeInstant",
    }
)
_NGSI_ENTITY_TIME = ("dateObserved", "TimeInstant", "dateModified", "modifiedAt")

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+")


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def _at(where: str, problem: str) -> DecodeError:
    return DecodeError(f"{where}: {problem}" if where else problem)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)  # bool is an int


def parse_time(value: Any) -> float:
    """Read an event time as epoch seconds (UTC).

    Accepts epoch seconds (number or numeric string), epoch milliseconds (a number above
    :data:`EPOCH_MS_THRESHOLD`), ISO 8601 date-times with ``Z`` or an offset (a naive one is
    UTC), and ISO 8601 intervals ``start/end`` (the end is used, as the moment the
    observation was complete; OGC SensorThings 1.1 §8.2.7 phenomenonTime may be an interval).

    Args:
        value: the time as the source wrote it.

    Returns:
        Seconds since the Unix epoch.

    Raises:
        DecodeError: the value is not a readable, finite time.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DecodeError(f"bad time {_short(value)}")
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return parse_time(float(text))
        if "/" in text:
            # ISO 8601 interval: use its end; a duration end ("start/PT5M") is not supported.
            text = text.rsplit("/", 1)[1].strip()
        try:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
        except (ValueError, OverflowError, OSError):
            raise DecodeError(f"bad time {_short(value)}") from None
    try:
        seconds = float(value)
    except OverflowError:
        raise DecodeError(f"bad time {_short(value)}") from None
    if not math.isfinite(seconds):
        raise DecodeError(f"bad time {_short(value)}")
    return seconds / 1000.0 if seconds > EPOCH_MS_THRESHOLD else seconds


def _time_at(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except DecodeError as exc:
        raise _at(where, exc.message) from None


def _lenient_time(value: Any) -> float | None:
    # An entity-wide date attribute is data, not protocol: one that cannot be read means
    # "time unknown" (so: received), not a refused entity. Real samples hold such typos
    # (smart-data-models ACMeasurement: "2020-03-17TT08:45:00Z").
    try:
        return parse_time(value) if value is not None else None
    except DecodeError:
        return None


def _text_id(value: Any, where: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _at(where, f"{key!r} must be text, not {_short(value)}")
    text = str(value)
    if not text:
        raise _at(where, f"empty {key!r}")
    return text


def _opt_text(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _at(where, f"{key!r} must be text, not {_short(value)}")
    return str(value)


def _load_json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except RecursionError:
        raise DecodeError("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise DecodeError(f"not JSON: {str(exc)[:120]}") from None


def _media_type(message: Message) -> str:
    return (message.content_type or "").split(";", 1)[0].strip().lower()


@lru_cache(maxsize=64)
def _template(template: str) -> tuple[re.Pattern[str], str, bool]:
    """Compile a topic template to (pattern, batch topic, has {property})."""
    parts = re.split(r"\{([^{}]*)\}", template)
    regex = []
    names = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            regex.append(re.escape(part))
        elif part in ("object_id", "property") and part not in names:
            names.append(part)
            # MQTT topic levels are separated by '/' (MQTT 3.1.1 §4.7.1.1); ids may hold ':'.
            regex.append(f"(?P<{part}>[^/]+)")
        else:
            raise DecodeError(
                f"topic template {template!r}: unknown or repeated placeholder {{{part}}}"
            )
    if "object_id" not in names:
        raise DecodeError(f"topic template {template!r} has no {{object_id}}")
    return re.compile("".join(regex)), parts[0] + "batch", "property" in names


def _match_topic(topic: str, template: str) -> tuple[str, str | None] | None:
    pattern, _batch, has_property = _template(template)
    match = pattern.fullmatch(topic) if topic else None
    if match is None:
        return None
    return match["object_id"], match["property"] if has_property else None


# --- json -----------------------------------------------------------------------------


def _json_item(obj: Any, where: str, entity: str | None, prop: str | None) -> Observation:
    if not isinstance(obj, dict):
        raise _at(where, f"expected an object, not {_short(obj)}")
    if "id" in obj:
        entity = _text_id(obj["id"], where, "id")
    elif "object_id" in obj:
        entity = _text_id(obj["object_id"], where, "object_id")
    if entity is None:
        raise _at(where, "no 'id'")
    if "property" in obj:
        prop = _text_id(obj["property"], where, "property")
    if prop is None:
        raise _at(where, "no 'property'")
    if "value" not in obj:
        raise _at(where, "no 'value'")
    value = obj["value"]
    if not _is_scalar(value):
        raise _at(where, f"'value' must be a number, string, boolean or null, not {_short(value)}")
    return Observation(
        entity=entity,
        property=prop,
        value=value,
        time=_time_at(obj.get("time"), where),
        unit=_opt_text(obj, "unit", where),
        msg_id=_opt_text(obj, "msg_id", where),
        quality=_opt_text(obj, "quality", where),
    )


_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
_NO_VALUE = object()
_BIG_INT = 2**1000  # float() of a larger int may overflow: left to parse_time


def _json_items(doc: list[Any], entity: str | None, prop: str | None) -> list[Observation]:
    """``_json_item`` over a list, with a fast path for the common item shape.

    An item with text ``id`` and ``property``, a scalar ``value``, a finite numeric or no
    ``time`` and text or no ``unit``/``msg_id``/``quality`` (the exact types ``json.loads``
    returns) is read here with the same result :func:`_json_item` gives; anything else goes
    through :func:`_json_item`, so every error message stays the same.
    """
    out: list[Observation] = []
    append = out.append
    for i, obj in enumerate(doc, 1):
        if type(obj) is dict:
            e = obj.get("id")
            p = obj.get("property")
            v = obj.get("value", _NO_VALUE)
            t = obj.get("time")
            unit = obj.get("unit")
            msg_id = obj.get("msg_id")
            quality = obj.get("quality")
            if (
                type(e) is str
                and e
                and type(p) is str
                and p
                and type(v) in _SCALAR_TYPES
                and (unit is None or type(unit) is str)
                and (msg_id is None or type(msg_id) is str)
                and (quality is None or type(quality) is str)
            ):
                # parse_time of a number: float seconds, epoch ms above the threshold;
                # ``x - x == 0.0`` is false for inf and NaN (those take the slow path).
                if t is None:
                    append(Observation(e, p, v, None, unit, msg_id, quality))
                    continue
                tt = type(t)
                if (tt is float and t - t == 0.0) or (tt is int and -_BIG_INT < t < _BIG_INT):
                    seconds = float(t)
                    if seconds > EPOCH_MS_THRESHOLD:
                        seconds /= 1000.0
                    append(Observation(e, p, v, seconds, unit, msg_id, quality))
                    continue
        append(_json_item(obj, f"item {i}", entity, prop))
    return out


def _json_doc(doc: Any, message: Message, template: str) -> list[Observation]:
    _pattern, batch_topic, _ = _template(template)
    if message.topic and message.topic == batch_topic:
        if not isinstance(doc, list):
            raise DecodeError(f"topic {batch_topic!r} carries a JSON list of items")
        return _json_items(doc, None, None)
    bound = _match_topic(message.topic, template)
    entity, prop = bound if bound else (None, None)
    if isinstance(doc, list):
        return _json_items(doc, entity, prop)
    if isinstance(doc, dict):
        return [_json_item(doc, "", entity, prop)]
    if entity is None or prop is None:
        raise DecodeError(
            f"a bare value needs a topic like {template!r}, not {_short(message.topic)}"
        )
    return [Observation(entity=entity, property=prop, value=doc)]


def _bare_text(message: Message, template: str, error: DecodeError) -> list[Observation]:
    bound = _match_topic(message.topic, template)
    if bound is None or bound[1] is None:
        raise error
    try:
        text = message.payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DecodeError("payload is neither JSON nor UTF-8 text") from None
    if not text:
        raise DecodeError("empty payload")
    return [Observation(entity=bound[0], property=bound[1], value=text)]


def decode_json(
    message: Message, topic_template: str = DEFAULT_TOPIC_TEMPLATE
) -> list[Observation]:
    """Decode the house JSON format (see the module docstring).

    Args:
        message: the message; its topic binds bare values to an object and property.
        topic_template: topic pattern with ``{object_id}`` and ``{property}``.

    Returns:
        The observations, in payload order.

    Raises:
        DecodeError: unreadable payload, or an item without id, property or value.
    """
    if not message.payload.strip():
        raise DecodeError("empty payload")
    try:
        doc = _load_json(message.payload)
    except DecodeError as exc:
        # MQTT payloads are often plain text ("open", "21.5"): a bare string value.
        return _bare_text(message, topic_template, exc)
    return _json_doc(doc, message, topic_template)


# --- OGC SensorThings API 1.1 -----------------------------------------------------------


def _st_key(raw: str) -> str:
    # OData key literal (OGC 18-088 §9.2.3): 42 or 'text' with '' for a quote.
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1].replace("''", "'")
    return raw


_DsInfo = tuple[str, str | None, str | None]  # entity, unit, observed property name


def _st_datastream_info(ds: Any, where: str) -> _DsInfo:
    if not isinstance(ds, dict):
        raise _at(where, f"Datastream must be an object, not {_short(ds)}")
    if ds.get("@iot.id") is not None:
        key = _text_id(ds["@iot.id"], where, "@iot.id")
    elif isinstance(ds.get("name"), str) and ds["name"]:
        key = ds["name"]
    else:
        raise _at(where, "Datastream has neither '@iot.id' nor 'name'")
    unit = None
    uom = ds.get("unitOfMeasurement")
    if isinstance(uom, dict):
        for k in ("symbol", "definition"):
            if isinstance(uom.get(k), str) and uom[k]:
                unit = uom[k]
                break
    prop = None
    observed = ds.get("ObservedProperty")
    if isinstance(observed, dict) and isinstance(observed.get("name"), str) and observed["name"]:
        prop = observed["name"]
    return f"datastream:{key}", unit, prop


def _st_observation(obs: dict[str, Any], where: str, ds: _DsInfo | None) -> Observation:
    if "Datastream" in obs and obs["Datastream"] is not None:
        ds = _st_datastream_info(obs["Datastream"], f"{where}.Datastream" if where else "")
    if ds is None:
        raise _at(where, "no Datastream (neither 'Datastream' nor a Datastreams(<id>) topic)")
    if "result" not in obs:
        raise _at(where, "no 'result'")
    result = obs["result"]
    if not _is_scalar(result):
        raise _at(where, f"'result' must be a number, string, boolean or null: {_short(result)}")
    # phenomenonTime is when the value held in the world; resultTime when it was produced
    # (OGC 18-088 §8.2.7). The former is the twin's event time, the latter a fallback.
    when = obs.get("phenomenonTime")
    if when is None:
        when = obs.get("resultTime")
    quality = obs.get("resultQuality")
    msg_id = obs.get("@iot.id")
    if msg_id is not None:
        msg_id = _text_id(msg_id, where, "@iot.id")
    entity, unit, prop = ds
    return Observation(
        entity=entity,
        property=prop,
        value=result,
        time=_time_at(when, where),
        unit=unit,
        msg_id=msg_id,
        quality=str(quality) if quality is not None and _is_scalar(quality) else None,
    )


def _st_list(value: Any, where: str, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise _at(where, f"{key!r} must be a list")
    return value


def _st_entity(item: Any, where: str, topic_ds: _DsInfo | None, out: list[Observation]) -> None:
    if not isinstance(item, dict):
        raise _at(where, f"expected an object, not {_short(item)}")
    if "Datastreams" in item:  # a Thing, deep insert (OGC 18-088 §10.2.2)
        for j, ds in enumerate(_st_list(item["Datastreams"], where, "Datastreams"), 1):
            _st_datastream(ds, f"{where}.Datastreams[{j}]" if where else f"Datastreams[{j}]", out)
    elif "Observations" in item:
        _st_datastream(item, where, out)
    else:
        out.append(_st_observation(item, where, topic_ds))


def _st_datastream(ds: Any, where: str, out: list[Observation]) -> None:
    info = _st_datastream_info(ds, where)
    assert isinstance(ds, dict)
    for k, obs in enumerate(_st_list(ds.get("Observations", []), where, "Observations"), 1):
        label = f"{where}.Observations[{k}]" if where else f"Observations[{k}]"
        if not isinstance(obs, dict):
            raise _at(label, f"expected an object, not {_short(obs)}")
        out.append(_st_observation(obs, label, info))


def _sensorthings_doc(doc: Any, message: Message) -> list[Observation]:
    match = _ST_TOPIC.search(message.topic)
    topic_ds: _DsInfo | None = None
    if match:
        key = _st_key(match["id"])
        if not key:
            raise DecodeError(f"topic {_short(message.topic)}: empty Datastream id")
        topic_ds = (f"datastream:{key}", None, None)
    out: list[Observation] = []
    if isinstance(doc, dict) and isinstance(doc.get("value"), list):
        # A collection response (OGC 18-088 §9.3.3): {"@iot.count", "value": [...]}.
        for i, item in enumerate(doc["value"], 1):
            _st_entity(item, f"value[{i}]", topic_ds, out)
    elif isinstance(doc, list):
        for i, item in enumerate(doc, 1):
            _st_entity(item, f"observation {i}", topic_ds, out)
    else:
        _st_entity(doc, "", topic_ds, out)
    return out


def decode_sensorthings(
    message: Message, topic_template: str = DEFAULT_TOPIC_TEMPLATE
) -> list[Observation]:
    """Decode OGC SensorThings API 1.1 Observations.

    Each observation is keyed ``datastream:<@iot.id>`` (or ``datastream:<name>`` in a deep
    insert without ids); its property is the ObservedProperty name when the payload has one,
    else None (the mapping decides); its unit is the Datastream's unitOfMeasurement symbol.

    Args:
        message: the message; an MQTT topic ``v1.1/Datastreams(<id>)/Observations``
            names the datastream of Observations that do not embed one.
        topic_template: unused (the registry's common signature).

    Returns:
        The observations, in payload order.

    Raises:
        DecodeError: unreadable JSON, an Observation without result or datastream, a bad time.
    """
    del topic_template
    return _sensorthings_doc(_load_json(message.payload), message)


# --- NGSI-LD and NGSI v2 ----------------------------------------------------------------


def _unwrap(value: Any, unit: Any, observed: Any) -> tuple[Any, Any, Any]:
    """One level of nesting, as real data holds it, to a scalar with unit and time."""
    if isinstance(value, dict):
        if "@value" in value and _is_scalar(value["@value"]):
            # A JSON-LD value object {"@type": "DateTime", "@value": ...} (JSON-LD 1.1 §4.2.1).
            return value["@value"], unit, observed
        if "value" in value and value.get("type", "Property") == "Property":
            # smart-data-models (WaterDistributionManagementEPANET) nest the measured
            # Property in the value: {"value": {"type": "Property", "value": 20,
            # "unitCode": "MTR"}, "observedBy": ...}; NGSI v2 StructuredValue likewise.
            inner = value["value"]
            if isinstance(inner, dict) and "@value" in inner:
                inner = inner["@value"]
            unit = value.get("unitCode", unit)
            observed = value.get("observedAt", observed)
            return inner, unit, observed
    return value, unit, observed


def _entity_id(entity: Any, where: str) -> str:
    if not isinstance(entity, dict):
        raise _at(where, f"expected an entity object, not {_short(entity)}")
    raw = entity.get("id", entity.get("@id"))
    if raw is None:
        raise _at(where, "no 'id'")
    if not isinstance(raw, str) or not raw:
        raise _at(where, f"'id' must be a non-empty string, not {_short(raw)}")
    return raw


def _entity_time(entity: dict[str, Any]) -> float | None:
    for key in _NGSI_ENTITY_TIME:
        attr = entity.get(key)
        if isinstance(attr, dict) and "value" in attr:
            attr = attr["value"]  # normalized: {"type": ..., "value": ...}
        attr, _, _ = _unwrap(attr, None, None)
        found = _lenient_time(attr) if _is_scalar(attr) else None
        if found is not None:
            return found
    return None


def _ngsi_entity(entity: Any, where: str, v2: bool, out: list[Observation]) -> None:
    eid = _entity_id(entity, where)
    label = where or eid
    fallback = _entity_time(entity)
    for name, attr in entity.items():
        if name in _NGSI_META or name.startswith("@"):
            continue
        unit: Any = None
        observed: Any = None
        if isinstance(attr, dict):
            if "value" not in attr:
                continue  # a Relationship ("object"), GeoJSON, or structured keyValues
            kind = attr.get("type") if isinstance(attr.get("type"), str) else None
            if v2:
                if kind in _V2_SKIP_TYPES:
                    continue
                meta = attr.get("metadata")
                if isinstance(meta, dict):
                    # NGSI v2 metadata: {"TimeInstant": {"type": "DateTime", "value": ...},
                    # "unitCode": {"value": "MTR"}} (FIWARE IoT Agent / smart-data-models).
                    for key, field_name in (("TimeInstant", "observed"), ("unitCode", "unit")):
                        item = meta.get(key)
                        if isinstance(item, dict) and item.get("value") is not None:
                            if field_name == "observed":
                                observed = item["value"]
                            else:
                                unit = item["value"]
            else:
                if attr.get("type", "Property") != "Property":
                    continue  # NGSI-LD §4.5: only Property values are readings
                unit = attr.get("unitCode")
                observed = attr.get("observedAt")
            value, unit, observed = _unwrap(attr["value"], unit, observed)
        else:
            value = attr
        if not _is_scalar(value):
            continue  # arrays and structured values have no single state value
        when = _time_at(observed, f"{label}.{name}") if observed is not None else fallback
        out.append(
            Observation(
                entity=eid,
                property=name,
                value=value,
                time=when,
                unit=unit if isinstance(unit, str) and unit else None,
            )
        )


def _ngsi_entities(doc: Any, v2: bool) -> list[Observation]:
    if (
        isinstance(doc, dict)
        and isinstance(doc.get("data"), list)
        and (doc.get("type") == "Notification" or "subscriptionId" in doc)
    ):
        # NGSI-LD Notification (ETSI GS CIM 009 §5.3.1) / NGSI v2 notification payload.
        doc = doc["data"]
        label = "data[{}]"
    else:
        label = "entity {}"
    out: list[Observation] = []
    if isinstance(doc, list):
        for i, entity in enumerate(doc, 1):
            _ngsi_entity(entity, label.format(i), v2, out)
    else:
        _ngsi_entity(doc, "", v2, out)
    return out


def decode_ngsi_ld(
    message: Message, topic_template: str = DEFAULT_TOPIC_TEMPLATE
) -> list[Observation]:
    """Decode ETSI NGSI-LD entities (normalized, concise or keyValues) and Notifications.

    One observation per scalar Property: entity = the entity id (URN), property = the
    attribute name, unit = ``unitCode``, time = ``observedAt``, else the entity's
    ``dateObserved``/``dateModified``. Relationships, GeoProperties, ``location``, arrays
    and structured values are skipped.

    Args:
        message: the message.
        topic_template: unused (the registry's common signature).

    Returns:
        The observations, in payload order.

    Raises:
        DecodeError: unreadable JSON, an entity without id, a bad ``observedAt``.
    """
    del topic_template
    return _ngsi_entities(_load_json(message.payload), v2=False)


def decode_ngsi_v2(
    message: Message, topic_template: str = DEFAULT_TOPIC_TEMPLATE
) -> list[Observation]:
    """Decode FIWARE NGSI v2 entities (normalized or keyValues), lists and notifications.

    Like :func:`decode_ngsi_ld`; the time is the attribute's ``TimeInstant`` metadata, the
    unit its ``unitCode`` metadata, and ``geo:*`` attributes are skipped.

    Args:
        message: the message.
        topic_template: unused (the registry's common signature).

    Returns:
        The observations, in payload order.

    Raises:
        DecodeError: unreadable JSON, an entity without id, a bad ``TimeInstant``.
    """
    del topic_template
    return _ngsi_entities(_load_json(message.payload), v2=True)


def _ngsi_flavor(entity: dict[str, Any]) -> str:
    if "@context" in entity:
        return "ngsi-ld"
    for attr in entity.values():
        if isinstance(attr, dict):
            kind = attr.get("type")
            if isinstance(kind, str) and kind in _LD_TYPES:
                return "ngsi-ld"
            if "metadata" in attr or isinstance(kind, str):
                return "ngsi-v2"
    raw = entity.get("id")
    return "ngsi-ld" if isinstance(raw, str) and raw.startswith("urn:ngsi-ld:") else "ngsi-v2"


# --- CSV ------------------------------------------------------------------------------


def _csv_cell(text: str) -> Any:
    cell = text.strip()
    low = cell.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    if _INT.fullmatch(cell):
        try:
            return int(cell)
        except ValueError:  # beyond the int digit limit: keep the text
            return cell
    if _NUMBER.fullmatch(cell):
        return float(cell)
    return cell


def _csv_rows(text: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DecodeError(f"row {reader.line_num}: not CSV ({exc})") from None
    return rows


def _csv_long(header: list[str], rows: list[tuple[int, list[str]]]) -> list[Observation]:
    idcol = "id" if "id" in header else "object_id"
    out: list[Observation] = []
    for line, row in rows:
        where = f"row {line}"
        if len(row) > len(header):
            raise _at(where, f"{len(row)} cells, the header has {len(header)}")
        cells = dict(zip(header, (c.strip() for c in row), strict=False))
        entity = cells.get(idcol, "")
        prop = cells.get("property", "")
        raw = cells.get("value", "")
        if not entity:
            raise _at(where, f"no {idcol!r}")
        if not prop:
            raise _at(where, "no 'property'")
        if raw == "":
            continue  # an empty cell: no reading
        when = cells.get("time", "")
        out.append(
            Observation(
                entity=entity,
                property=prop,
                value=_csv_cell(raw),
                time=_time_at(when, where) if when else None,
                unit=cells.get("unit") or None,
                msg_id=cells.get("msg_id") or None,
                quality=cells.get("quality") or None,
            )
        )
    return out


def _csv_wide(row0: list[str], rows: list[tuple[int, list[str]]]) -> list[Observation]:
    columns: list[tuple[str, str | None]] = []
    for name in (c.strip() for c in row0[1:]):
        if not name:
            raise DecodeError("row 1: empty column name")
        head, dot, tail = name.rpartition(".")
        # "a.b" is entity a, property b (split at the last dot: ids may hold dots).
        columns.append((head, tail) if dot and head and tail else (name, None))
    out: list[Observation] = []
    for line, row in rows:
        where = f"row {line}"
        if len(row) > len(columns) + 1:
            raise _at(where, f"{len(row)} cells, the header has {len(columns) + 1}")
        when = row[0].strip() if row else ""
        time = _time_at(when, where) if when else None
        for (entity, prop), cell in zip(columns, row[1:], strict=False):
            if cell.strip():
                out.append(
                    Observation(entity=entity, property=prop, value=_csv_cell(cell), time=time)
                )
    return out


def _csv_kind(first_line: str) -> str | None:
    names = [c.strip().strip('"').lower() for c in first_line.split(",")]
    if ("id" in names or "object_id" in names) and "property" in names and "value" in names:
        return "long"
    if len(names) >= 2 and names[0] in ("time", "timestamp"):
        return "wide"
    return None


def decode_csv(message: Message, topic_template: str = DEFAULT_TOPIC_TEMPLATE) -> list[Observation]:
    """Decode CSV in long or wide form (see the module docstring).

    Cells become numbers (integers stay int), booleans (``true``/``false``) or text; empty
    cells are skipped.

    Args:
        message: the message (UTF-8, an optional BOM).
        topic_template: unused (the registry's common signature).

    Returns:
        The observations, row by row.

    Raises:
        DecodeError: not UTF-8 or CSV, an unknown header, a row without id/property or
            with a bad time (``row 7: bad time 'x'``).
    """
    del topic_template
    try:
        text = message.payload.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DecodeError("CSV is not UTF-8") from None
    rows = _csv_rows(text)
    if not rows:
        raise DecodeError("empty CSV")
    (_, row0), body = rows[0], rows[1:]
    header = [c.strip().lower() for c in row0]
    if len(set(header)) != len(header):
        raise DecodeError("row 1: repeated column name")
    if ("id" in header or "object_id" in header) and "property" in header and "value" in header:
        return _csv_long(header, body)
    if len(header) >= 2 and header[0] in ("time", "timestamp"):
        return _csv_wide(row0, body)
    raise DecodeError(
        "row 1: the header needs id,property,value[,time] (long) or time,<column>... (wide)"
    )


# --- registry and auto-detection -------------------------------------------------------


DECODERS: dict[str, Decoder] = {
    "json": decode_json,
    "sensorthings": decode_sensorthings,
    "ngsi-ld": decode_ngsi_ld,
    "ngsi-v2": decode_ngsi_v2,
    "csv": decode_csv,
}
"""Decoders by format name; ``decode(message, fmt)`` picks from here."""


def _sniff(doc: Any, message: Message, template: str) -> str:
    topic = message.topic
    if _media_type(message) == "application/ld+json":
        return "ngsi-ld"  # the NGSI-LD media type (ETSI GS CIM 009 §6.3.5)
    if topic and _ST_TOPIC.search(topic):
        return "sensorthings"
    if topic and (topic == _template(template)[1] or _match_topic(topic, template)):
        return "json"
    if isinstance(doc, dict):
        if doc.get("type") == "Notification":
            return "ngsi-ld"
        if "subscriptionId" in doc and "data" in doc:
            return "ngsi-v2"
        if isinstance(doc.get("value"), list) and not {"id", "property"} & doc.keys():
            return "sensorthings"  # a collection response {"@iot.count", "value": [...]}
        first: Any = doc
    elif isinstance(doc, list):
        first = next((item for item in doc if isinstance(item, dict)), None)
    else:
        first = None
    if not isinstance(first, dict):
        return "json"
    if not _ST_KEYS.isdisjoint(first):
        return "sensorthings"
    if "property" in first or "object_id" in first:
        return "json"
    if "@context" in first or ("id" in first and "type" in first):
        return _ngsi_flavor(first)
    return "json"


_DOC_DECODERS: dict[str, Callable[[Any, Message, str], list[Observation]]] = {
    "json": _json_doc,
    "sensorthings": lambda doc, message, _t: _sensorthings_doc(doc, message),
    "ngsi-ld": lambda doc, _m, _t: _ngsi_entities(doc, v2=False),
    "ngsi-v2": lambda doc, _m, _t: _ngsi_entities(doc, v2=True),
}


def _detect(message: Message, template: str) -> tuple[str, Any]:
    """The format, and the parsed JSON document (``_NO_DOC`` when not parsed)."""
    media = _media_type(message)
    if media in ("text/csv", "application/csv") or message.topic.endswith(".csv"):
        return "csv", _NO_DOC
    if not message.payload.strip():
        raise DecodeError("empty payload")
    try:
        doc = _load_json(message.payload)
    except DecodeError:
        first = message.payload.lstrip()[:4096].split(b"\n", 1)[0]
        if _csv_kind(first.decode("utf-8-sig", "replace")):
            return "csv", _NO_DOC
        return "json", _NO_DOC  # bare text on a template topic, or json's own error
    return _sniff(doc, message, template), doc


_NO_DOC = object()


def detect_format(message: Message, topic_template: str = DEFAULT_TOPIC_TEMPLATE) -> str:
    """Tell which decoder reads a message, from its content type, topic and content.

    Args:
        message: the message.
        topic_template: topic pattern of the house JSON format.

    Returns:
        A key of :data:`DECODERS`.

    Raises:
        DecodeError: the payload is empty.
    """
    return _detect(message, topic_template)[0]


def decode(
    message: Message,
    fmt: str | None = None,
    *,
    topic_template: str = DEFAULT_TOPIC_TEMPLATE,
) -> list[Observation]:
    """Decode a feed message into observations.

    Args:
        message: the message (payload, topic, content type).
        fmt: a key of :data:`DECODERS`, or None to detect it from the content type
            (``text/csv``, ``application/ld+json``), the topic and the content.
        topic_template: topic pattern of the house JSON format, with ``{object_id}`` and
            ``{property}``; ``<prefix>batch`` carries a list of items.

    Returns:
        The observations, in payload order (possibly none: an empty list, an entity
        with no scalar property).

    Raises:
        DecodeError: the payload cannot be read; the message says what and where.
    """
    try:
        if fmt is None:
            found, doc = _detect(message, topic_template)
            if doc is not _NO_DOC:
                return _DOC_DECODERS[found](doc, message, topic_template)
            fmt = found
        decoder = DECODERS.get(fmt)
        if decoder is None:
            known = ", ".join(sorted(DECODERS))
            raise DecodeError(f"unknown format {fmt!r} (known: {known})")
        return decoder(message, topic_template)
    except RecursionError:
        raise DecodeError("payload nested too deeply") from None

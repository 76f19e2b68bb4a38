"""Feed mapping: unit conversion, mapping files, every rejection, real samples end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.decode import decode
from sync.mapping import (
    MAX_PAYLOAD_BYTES,
    EntityMap,
    Mapping,
    PropertySpec,
    convert_unit,
    resolve_all,
    unit_dimension,
)
from sync.model import Message, Observation
from twin.errors import FeedError
from twin.state import StateUpdate

NOW = 1_700_000_000.0


class Exists:
    """A store stand-in for ``exists``: the known ids, and every call made."""

    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)
        self.calls: list[set[str]] = []

    def __call__(self, candidates: set[str]) -> set[str]:
        self.calls.append(set(candidates))
        return candidates & self.ids


# --- units ----------------------------------------------------------------------------


def test_conversions() -> None:
    assert convert_unit(1, "kPa", "bar") == 0.01  # exactly
    assert convert_unit(250, "kPa", "bar") == 2.5
    assert convert_unit(1, "KPA", "BAR") == 0.01  # UN/CEFACT codes
    assert convert_unit(2.5, "bar", "kPa") == 250
    assert convert_unit(1, "MPa", "bar") == 10
    assert convert_unit(1, "psi", "kPa") == pytest.approx(6.894757293168361)
    assert convert_unit(100, "mm", "m") == pytest.approx(0.1)
    assert convert_unit(203.0, "MMT", "m") == pytest.approx(0.203)
    assert convert_unit(1, "ft", "m") == pytest.approx(0.3048)
    assert convert_unit(1, "m3/h", "L/s") == pytest.approx(1 / 3.6)
    assert convert_unit(1, "gpm", "L/s") == pytest.approx(0.0630901964)
    assert convert_unit(20, "G51", "m3/s") == pytest.approx(0.02)
    assert convert_unit(1, "MQS", "L/s") == pytest.approx(1000)
    assert convert_unit(1, "m³/h", "CMH") == 1  # spelling normalised
    assert convert_unit(50, "KWT", "W") == 50_000
    assert convert_unit(1, "MW", "kW") == 1000
    assert convert_unit(11, "kV", "V") == 11_000
    assert convert_unit(150, "LTR", "m3") == pytest.approx(0.15)
    assert convert_unit(0, "°C", "K") == pytest.approx(273.15)
    assert convert_unit(212, "degF", "Cel") == pytest.approx(100)
    assert convert_unit(300, "K", "°F") == pytest.approx(80.33)
    assert convert_unit(5, "%", "1") == pytest.approx(0.05)
    assert convert_unit(7, "RRC", "RRC") == 7  # unknown but identical: as is
    assert unit_dimension("MTR") == "length" and unit_dimension("furlong") is None
    with pytest.raises(FeedError, match=r"^unit 'MTR' cannot be converted to 'bar'$"):
        convert_unit(20, "MTR", "bar")
    with pytest.raises(FeedError, match="unit 'C' cannot be converted to 'K'"):
        convert_unit(20, "C", "K")  # C is the coulomb, not Celsius
    with pytest.raises(FeedError, match="unit 'furlong'"):
        convert_unit(1, "furlong", "m")


# --- mapping files --------------------------------------------------------------------


def test_from_dict() -> None:
    m = Mapping.from_dict(
        {
            "entities": {
                "datastream:17": {
                    "object": "net:water:J-10",
                    "property": "pressure",
                    "scale": 0.001,
                    "offset": 1,
                },
                "urn:ngsi-ld:Junction:J1": "net:water:J-1",
            },
            "attributes": {"flow": "flow_rate"},
            "properties": {
                "pressure": {"type": "number", "unit": "bar", "minimum": 0, "maximum": 16}
            },
            "strict_properties": True,
        }
    )
    assert m.entities["datastream:17"] == EntityMap("net:water:J-10", "pressure", 0.001, 1.0)
    assert m.entities["urn:ngsi-ld:Junction:J1"] == EntityMap("net:water:J-1")
    assert m.attributes == {"flow": "flow_rate"}
    assert m.properties["pressure"] == PropertySpec("number", "bar", 0.0, 16.0)
    assert m.strict_properties is True and m.default_time == "received"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"entity": {}}, "mapping: entity: unknown key"),
        ({"entities": {"d:1": {"property": "p"}}}, "mapping: entities.'d:1': no 'object'"),
        (
            {"entities": {"d:1": {"object": "o", "scale": "x"}}},
            "mapping: entities.'d:1'.scale: expected a number",
        ),
        (
            {"entities": {"d:1": {"object": "o", "scale": float("nan")}}},
            "mapping: entities.'d:1'.scale: expected a finite number",
        ),
        (
            {"entities": {"d:1": {"object": "o", "unit": "bar"}}},
            "mapping: entities.'d:1'.unit: unknown key",
        ),
        ({"entities": {"d:1": 5}}, "mapping: entities.'d:1': expected an object id"),
        ({"entities": {"d:1": ""}}, "mapping: entities.'d:1': expected a non-empty string"),
        ({"entities": []}, "mapping: entities: expected a table"),
        ({"attributes": {"flow": 3}}, "mapping: attributes.'flow': expected a non-empty"),
        ({"properties": {"p": {"type": "float"}}}, "mapping: properties.'p'.type: expected one"),
        (
            {"properties": {"p": {"type": "number", "minimum": 5, "maximum": 1}}},
            "mapping: properties.'p': minimum 5.0 is above maximum 1.0",
        ),
        (
            {"properties": {"p": {"type": "string", "unit": "bar"}}},
            "mapping: properties.'p'.unit: a string property has no unit",
        ),
        (
            {"properties": {"p": {"type": "boolean", "maximum": 1}}},
            "mapping: properties.'p': a boolean property has no minimum/maximum",
        ),
        ({"properties": {"p": {"min": 1}}}, "mapping: properties.'p'.min: unknown key"),
        ({"strict_properties": "yes"}, "mapping: strict_properties: expected true or false"),
        ({"default_time": "event"}, "mapping: default_time: only 'received'"),
    ],
)
def test_from_dict_errors_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(FeedError) as info:
        Mapping.from_dict(doc)
    assert str(info.value).startswith(message), str(info.value)


def test_load_json_and_toml(tmp_path: Path) -> None:
    toml = tmp_path / "twin.toml"
    toml.write_text(
        """
[mapping]
strict_properties = true
[mapping.entities]
"datastream:17" = {object = "net:water:J-10", property = "pressure"}
"urn:ngsi-ld:Pipe:P1" = "net:water:P-1"
[mapping.attributes]
flow = "flow_rate"
[mapping.properties.pressure]
type = "number"
unit = "bar"

[[alerts]]
name = "low pressure"
"""
    )
    m = Mapping.load(toml)
    assert m.entities["datastream:17"].property == "pressure"
    assert m.entities["urn:ngsi-ld:Pipe:P1"].object == "net:water:P-1"
    assert m.properties["pressure"].unit == "bar" and m.strict_properties
    js = tmp_path / "mapping.json"
    js.write_text(json.dumps({"attributes": {"flow": "flow_rate"}}))
    assert Mapping.load(js).attributes == {"flow": "flow_rate"}

    with pytest.raises(FeedError, match="cannot read"):
        Mapping.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[entities\n")
    with pytest.raises(FeedError, match=r"bad\.toml"):
        Mapping.load(bad)
    (tmp_path / "m.yaml").write_text("{}")
    with pytest.raises(FeedError, match=r"expected a \.json or \.toml"):
        Mapping.load(tmp_path / "m.yaml")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"properties": {"p": {"type": "float"}}}))
    with pytest.raises(FeedError, match=r"wrong\.json'.*properties\.'p'\.type"):
        Mapping.load(wrong)


# --- resolution -----------------------------------------------------------------------


def _mapping() -> Mapping:
    return Mapping.from_dict(
        {
            "entities": {
                "datastream:17": {"object": "J-10", "property": "pressure"},
                "datastream:18": {"object": "meter", "property": "count", "scale": 10, "offset": 1},
                "datastream:19": "J-10",
                "urn:x:J10": "J-10",
            },
            "attributes": {"flow": "flow_rate"},
            "properties": {
                "pressure": {"type": "number", "unit": "bar", "minimum": 0, "maximum": 16},
                "open": {"type": "boolean"},
                "status": {"type": "string"},
                "flow_rate": {"type": "number", "unit": "L/s"},
                "count": {"type": "number"},
            },
        }
    )


def test_resolve_maps_converts_and_calls_exists_once() -> None:
    exists = Exists("J-10", "meter", "b1")
    obs = [
        Observation("datastream:17", None, 250, NOW - 10, unit="kPa", msg_id="m1"),
        Observation("urn:x:J10", "flow", 1, NOW - 5, unit="m3/h", quality="good"),
        Observation("datastream:18", None, 4, None),
        Observation("b1", "temp", 21, NOW),
        Observation("J-10", "open", True, NOW),
        Observation("J-10", "status", None, NOW),
    ]
    updates, rejections = resolve_all(
        obs, feed="scada", received=NOW, exists=exists, mapping=_mapping()
    )
    assert rejections == []
    assert exists.calls == [{"J-10", "meter", "b1"}]
    assert updates[1].value == pytest.approx(1 / 3.6)  # 1 m3/h in L/s
    updates[1] = StateUpdate("J-10", "flow_rate", 1 / 3.6, NOW - 5, "scada", "good")
    assert updates == [
        StateUpdate("J-10", "pressure", 2.5, NOW - 10, "scada", None, "m1"),
        StateUpdate("J-10", "flow_rate", 1 / 3.6, NOW - 5, "scada", "good"),
        StateUpdate("meter", "count", 41.0, NOW, "scada"),  # time: received
        StateUpdate("b1", "temp", 21, NOW, "scada"),
        StateUpdate("J-10", "open", True, NOW, "scada"),
        StateUpdate("J-10", "status", None, NOW, "scada"),
    ]
    assert isinstance(updates[3].value, int)  # ints stay ints when nothing converts them
    # No mapping: the entity is the object id, no checks but the basic ones.
    updates, rejections = resolve_all(
        [Observation("b1", "temp", "warm", NOW)], feed="f", received=NOW, exists=Exists("b1")
    )
    assert updates == [StateUpdate("b1", "temp", "warm", NOW, "f")] and rejections == []


def _reason(
    obs: Observation,
    mapping: Mapping | None = None,
    known: tuple[str, ...] = ("J-10", "meter", "b1"),
) -> str:
    updates, rejections = resolve_all(
        [obs], feed="f", received=NOW, exists=Exists(*known), mapping=mapping or _mapping()
    )
    assert updates == [] and len(rejections) == 1
    r = rejections[0]
    assert r.feed == "f" and r.time == NOW and r.entity == obs.entity
    assert json.loads(r.payload)["entity"] == obs.entity
    return r.reason


def test_every_rejection_reason() -> None:
    m = _mapping()
    assert _reason(Observation("datastream:99", None, 1, NOW)) == (
        "no property for datastream 'datastream:99' (map it in 'entities')"
    )
    assert _reason(Observation("datastream:19", None, 1, NOW)).startswith(
        "no property for datastream"
    )
    assert _reason(Observation("", "p", 1, NOW)) == "no entity id"
    assert _reason(Observation("nope", "p", 1, NOW)) == "unknown object 'nope'"
    assert _reason(Observation("urn:x:J10", "p", 1, NOW), known=("b1",)) == (
        "unknown object 'J-10' (mapped from 'urn:x:J10')"
    )
    strict = Mapping(properties=m.properties, strict_properties=True)
    assert _reason(Observation("b1", "colour", "red", NOW), strict) == (
        "unknown property 'colour' (strict mapping)"
    )
    assert _reason(Observation("J-10", "pressure", "high", NOW)) == (
        "wrong type: string 'high' for a number property"
    )
    assert _reason(Observation("J-10", "pressure", True, NOW)) == (
        "wrong type: boolean for a number property"
    )
    assert _reason(Observation("J-10", "open", 1, NOW)) == (
        "wrong type: number for a boolean property"
    )
    assert _reason(Observation("J-10", "status", False, NOW)) == (
        "wrong type: boolean for a string property"
    )
    assert _reason(Observation("J-10", "x", [1, 2], NOW)) == (
        "value must be a number, string, boolean or null, not list"
    )
    assert _reason(Observation("J-10", "pressure", math.nan, NOW)) == "value is not finite (nan)"
    assert _reason(Observation("J-10", "x", -math.inf, NOW)) == "value is not finite (-inf)"
    assert _reason(Observation("J-10", "x", 2**70, NOW)) == "integer out of the 64-bit range"
    assert _reason(Observation("J-10", "pressure", 17, NOW)) == (
        "value 17 bar is above the maximum 16.0 bar"
    )
    assert _reason(Observation("J-10", "pressure", -50, NOW, unit="kPa")) == (
        "value -0.5 bar is below the minimum 0.0 bar"
    )
    assert _reason(Observation("J-10", "pressure", 20, NOW, unit="MTR")) == (
        "unit 'MTR' cannot be converted to 'bar'"
    )
    assert _reason(Observation("J-10", "pressure", 1e308, NOW, unit="MPa")) == (
        "value is not finite after scaling or unit conversion"
    )
    assert _reason(Observation("b1", "t", 1, math.nan)) == "time is not finite (nan)"
    assert _reason(Observation("b1", "t", 1, 0.0)).startswith("time 0.0 is before 1971")
    assert _reason(Observation("b1", "t", 1, NOW * 1000)).startswith(
        "time 1700000000000.0 is more than a day after it was received"
    )


def test_rejections_keep_order_payload_and_bounds() -> None:
    exists = Exists("b1")
    obs = [
        Observation("b1", "t", 1, NOW),
        Observation("b1", "t", math.inf, NOW),  # refused in pass 2
        Observation("datastream:5", None, 1, NOW),  # refused in pass 1
        Observation("x" * 5000, "t", "y" * 10_000, NOW),  # unknown object, huge payload
    ]
    updates, rejections = resolve_all(obs, feed="f", received=NOW, exists=exists)
    assert [u.value for u in updates] == [1]
    assert [r.reason.split(" ")[0] for r in rejections] == ["value", "no", "unknown"]
    big = rejections[2]
    assert len(big.payload.encode()) <= MAX_PAYLOAD_BYTES
    assert json.loads(big.payload)["value"].startswith("yyy")  # still JSON
    assert len(big.entity or "") < 300
    # Only candidates that got past pass 1 are asked about, once.
    assert exists.calls == [{"b1", "x" * 5000}]
    # A caller-chosen payload (e.g. the message bytes), bounded too.
    _, rejections = resolve_all(
        [Observation("nope", "t", 1, NOW)],
        feed="f",
        received=NOW,
        exists=exists,
        payload_of=lambda o: "raw:" + "z" * 5000,
    )
    assert rejections[0].payload.startswith("raw:zzz")
    assert len(rejections[0].payload.encode()) <= MAX_PAYLOAD_BYTES
    # Nothing left to check: no store query at all.
    calls = len(exists.calls)
    resolve_all([Observation("datastream:5", None, 1)], feed="f", received=NOW, exists=exists)
    assert len(exists.calls) == calls


# --- real samples end to end ------------------------------------------------------------


def test_round_trip_frost_deep_insert(shared_data: Path) -> None:
    path = shared_data / "feeds" / "sensorthings" / "frost_entitiesDefault_deepinsert.json"
    mapping = Mapping.from_dict(
        {
            "entities": {
                "datastream:datastream name 1": {"object": "lamp-1", "property": "luminous_flux"},
                "datastream:datastream name 2": {"object": "room-2", "property": "temperature"},
            },
            "properties": {
                "luminous_flux": {"type": "number", "unit": "lm"},
                "temperature": {"type": "number", "unit": "K"},
            },
        }
    )
    obs = decode(Message("frost", path.read_bytes()))
    exists = Exists("lamp-1", "room-2")
    updates, rejections = resolve_all(
        obs, feed="frost", received=NOW, exists=exists, mapping=mapping
    )
    assert exists.calls == [{"lamp-1", "room-2"}]
    assert [(u.object_id, u.property, u.value, u.time) for u in updates] == [
        ("lamp-1", "luminous_flux", 3, 1425340800.0),
        ("lamp-1", "luminous_flux", 4, 1425427200.0),
    ]
    # The sample's temperature datastream says "C" (Centigrade), which is no unit we can
    # convert to kelvin: refused, not guessed.
    assert [r.reason for r in rejections] == ["unit 'C' cannot be converted to 'K'"] * 2
    assert [json.loads(r.payload)["value"] for r in rejections] == [5, 6]


def test_round_trip_ngsi_ld_epanet(shared_data: Path) -> None:
    base = shared_data / "feeds" / "ngsi"
    mapping = Mapping.from_dict(
        {
            "entities": {
                "urn:ngsi-ld:Pipe:74azsty-70d4l-4da9-b7d0-3340ef655nnb": "net:water:P-1",
                "urn:ngsi-ld:Junction:63fe7d79-0d4c-4da9-b7d0-3340efa0656a": "net:water:J-1",
            },
            "attributes": {"flow": "flow_rate"},
            "properties": {
                "flow_rate": {"type": "number", "unit": "m3/h"},
                "diameter": {"type": "number", "unit": "m"},
                "velocity": {"type": "number", "unit": "m/s", "maximum": 5},
                "status": {"type": "string"},
                "head": {"type": "number", "unit": "m"},
                "pressure": {"type": "number", "unit": "bar"},
                "elevation": {"type": "number", "unit": "ft"},
            },
            "strict_properties": True,
        }
    )
    obs = []
    for name in (
        "ngsild_epanet_Pipe_normalized.jsonld",
        "ngsild_epanet_Junction_normalized.jsonld",
    ):
        obs += decode(Message("ngsi", (base / name).read_bytes()))
    exists = Exists("net:water:P-1", "net:water:J-1")
    updates, rejections = resolve_all(
        obs, feed="ngsi", received=NOW, exists=exists, mapping=mapping
    )
    assert len(exists.calls) == 1
    got = {(u.object_id, u.property): u.value for u in updates}
    assert got == {
        ("net:water:P-1", "flow_rate"): pytest.approx(72.0),  # 20 L/s (G51) in m3/h
        ("net:water:P-1", "diameter"): pytest.approx(0.203),  # 203 mm (MMT)
        ("net:water:P-1", "velocity"): 2,  # MTS = m/s, unchanged
        ("net:water:P-1", "status"): "OPEN",
        ("net:water:J-1", "head"): 20,  # MTR = m
        ("net:water:J-1", "elevation"): pytest.approx(105.8 / 0.3048),
    }
    assert all(u.time == NOW and u.source == "ngsi" for u in updates)
    reasons = {
        (r.entity or "").rsplit(":", 1)[0] + "/" + (r.property or ""): r.reason for r in rejections
    }
    assert reasons["urn:ngsi-ld:Junction/pressure"] == "unit 'MTR' cannot be converted to 'bar'"
    assert reasons["urn:ngsi-ld:Pipe/tag"] == "unknown property 'tag' (strict mapping)"
    assert len(updates) + len(rejections) == len(obs)


# --- property test --------------------------------------------------------------------

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.none()),
    st.integers(min_value=2**62, max_value=2**80),
)
_units = st.sampled_from([None, "", "bar", "kPa", "MTR", "°C", "K", "L/s", "furlong", "G51"])
_observations = st.builds(
    Observation,
    entity=st.sampled_from(
        ["", "b1", "J-10", "datastream:17", "datastream:18", "urn:x:J10", "nope"]
    )
    | st.text(max_size=4),
    property=st.none()
    | st.sampled_from(["pressure", "open", "status", "flow", "count"])
    | st.text(max_size=3),
    value=_values,
    time=st.none() | st.floats() | st.integers(min_value=-(2**70), max_value=2**70),
    unit=_units,
    msg_id=st.none() | st.text(max_size=3),
    quality=st.none() | st.text(max_size=3),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obs=st.lists(_observations, max_size=8), strict=st.booleans(), mapped=st.booleans())
def test_random_observations_never_raise(
    obs: list[Observation], strict: bool, mapped: bool
) -> None:
    mapping = _mapping() if mapped else None
    if mapping is not None:
        mapping.strict_properties = strict
    exists = Exists("b1", "J-10", "meter")
    updates, rejections = resolve_all(obs, feed="f", received=NOW, exists=exists, mapping=mapping)
    assert len(updates) + len(rejections) == len(obs)
    assert len(exists.calls) <= 1
    for u in updates:
        assert u.object_id in exists.ids and u.source == "f"
        assert math.isfinite(u.time) and 31_536_000 <= u.time <= NOW + 86_400
        if isinstance(u.value, float):
            assert math.isfinite(u.value)
    for r in rejections:
        assert r.reason and len(r.payload.encode()) <= MAX_PAYLOAD_BYTES

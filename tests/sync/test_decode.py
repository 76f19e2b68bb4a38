"""Feed decoders on hand-made payloads and the real SensorThings/NGSI samples in shared/data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import find_shared_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.decode import DECODERS, decode, detect_format, parse_time
from sync.model import DecodeError, Message, Observation


def _msg(payload: Any, topic: str = "", content_type: str | None = None) -> Message:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Message(feed="f", payload=data, topic=topic, content_type=content_type)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def _error(message: Message, fmt: str | None = None) -> str:
    with pytest.raises(DecodeError) as info:
        decode(message, fmt)
    text = str(info.value)
    assert "\n" not in text
    return text


# --- times ----------------------------------------------------------------------------


def test_parse_time_forms() -> None:
    assert parse_time(1_700_000_000) == 1_700_000_000.0
    assert parse_time(1_700_000_000.5) == 1_700_000_000.5
    assert parse_time(1_700_000_000_123) == pytest.approx(1_700_000_000.123)  # epoch ms
    assert parse_time("1700000000") == 1_700_000_000.0
    assert parse_time("2024-01-02T03:04:05Z") == _ts("2024-01-02T03:04:05")
    assert parse_time("2024-01-02T05:04:05+02:00") == _ts("2024-01-02T03:04:05")
    assert parse_time("2024-01-02T03:04:05") == _ts("2024-01-02T03:04:05")  # naive = UTC
    assert parse_time("2024-01-02T03:04:05.250Z") == _ts("2024-01-02T03:04:05") + 0.25
    # An interval: its end.
    assert parse_time("2016-12-07T11:10:00Z/2016-12-07T11:15:00Z") == _ts("2016-12-07T11:15:00")
    for bad in ("x", "", True, None, float("nan"), float("inf"), [1], 10**400, "2020-13-01"):
        with pytest.raises(DecodeError, match="bad time"):
            parse_time(bad)


# --- json -----------------------------------------------------------------------------


def test_json_object_list_and_aliases() -> None:
    obs = decode(
        _msg(
            [
                {"id": "b1", "property": "temp", "value": 21.5, "time": 1_700_000_000},
                {
                    "object_id": "net:water:J-10",
                    "property": "pressure",
                    "value": 3,
                    "time": "2024-01-02T03:04:05Z",
                    "msg_id": "m-1",
                    "quality": "good",
                    "unit": "bar",
                },
                {"id": "v1", "property": "open", "value": True, "time": 1_700_000_000_000},
                {"id": "v1", "property": "note", "value": None},
            ],
            topic="ingest",
        )
    )
    assert obs == [
        Observation("b1", "temp", 21.5, 1_700_000_000.0),
        Observation(
            "net:water:J-10", "pressure", 3, _ts("2024-01-02T03:04:05"), "bar", "m-1", "good"
        ),
        Observation("v1", "open", True, 1_700_000_000.0),
        Observation("v1", "note", None),
    ]
    single = decode(_msg({"id": "b1", "property": "p", "value": "x"}))
    assert single == [Observation("b1", "p", "x")]


def test_json_template_topic_bare_values() -> None:
    topic = "city/net:water:J-10/pressure"
    assert decode(_msg(b"3.25", topic)) == [Observation("net:water:J-10", "pressure", 3.25)]
    assert decode(_msg(b"true", topic))[0].value is True
    assert decode(_msg(b"null", topic))[0].value is None
    assert decode(_msg(b'"open"', topic))[0].value == "open"
    assert decode(_msg(b"  open \n", topic))[0].value == "open"  # bare text, not JSON
    obs = decode(_msg({"value": 7, "time": "2024-01-02T03:04:05Z"}, topic))
    assert obs == [Observation("net:water:J-10", "pressure", 7, _ts("2024-01-02T03:04:05"))]
    assert decode(_msg({"value": 7}, topic))[0].time is None
    # Another template, without {property}: the object must then name it.
    obs = decode(_msg({"value": 1, "property": "p"}, "t/b2"), topic_template="t/{object_id}")
    assert obs == [Observation("b2", "p", 1)]
    with pytest.raises(DecodeError, match="bare value needs a topic"):
        decode(_msg(b"1", "t/b2"), topic_template="t/{object_id}")


def test_json_batch_topic() -> None:
    items = [
        {"id": f"b{i}", "property": "p", "value": i, "time": 1_700_000_000 + i} for i in range(5)
    ]
    obs = decode(_msg(items, "city/batch"))
    assert [(o.entity, o.value, o.time) for o in obs] == [
        (f"b{i}", i, 1_700_000_000.0 + i) for i in range(5)
    ]
    assert "carries a JSON list" in _error(
        _msg({"id": "b", "property": "p", "value": 1}, "city/batch")
    )
    assert _error(_msg([{"property": "p", "value": 1}], "city/batch")) == "item 1: no 'id'"


def test_json_errors_name_the_item() -> None:
    items = [{"id": "a", "property": "p", "value": 1}] * 2 + [{"id": "a", "property": "p"}]
    assert _error(_msg(items, "in")) == "item 3: no 'value'"
    assert _error(_msg([{"id": "a", "value": 1}], "in")) == "item 1: no 'property'"
    assert (
        _error(_msg([{"id": "a", "property": "p", "value": 1, "time": "soon"}], "in"))
        == "item 1: bad time 'soon'"
    )
    assert "'value' must be a number" in _error(
        _msg({"id": "a", "property": "p", "value": [1, 2]}, "in")
    )
    assert "bare value needs a topic" in _error(_msg(b"3", "elsewhere"))
    assert "not JSON" in _error(_msg(b"{oops", "elsewhere"))
    assert _error(_msg(b"   ", "city/a/b")) == "empty payload"
    assert "unknown format" in _error(_msg(b"1"), "yaml")
    assert "'id' must be text" in _error(_msg({"id": {}, "property": "p", "value": 1}, "x"))


# --- SensorThings ---------------------------------------------------------------------


def test_sensorthings_frost_deep_insert(shared_data: Path) -> None:
    path = shared_data / "feeds" / "sensorthings" / "frost_entitiesDefault_deepinsert.json"
    doc = json.loads(path.read_text())
    # Independent count and values: walk the Thing's datastreams by hand.
    expected = []
    for ds in doc["Datastreams"]:
        for o in ds["Observations"]:
            expected.append(
                (
                    f"datastream:{ds['name']}",
                    ds["ObservedProperty"]["name"],
                    o["result"],
                    ds["unitOfMeasurement"]["symbol"],
                    o["phenomenonTime"],
                )
            )
    assert len(expected) == 4
    msg = Message("frost", path.read_bytes())
    assert detect_format(msg) == "sensorthings"
    obs = decode(msg)
    assert [(o.entity, o.property, o.value, o.unit) for o in obs] == [e[:4] for e in expected]
    assert [o.time for o in obs] == [parse_time(e[4]) for e in expected]
    assert obs[0].time == _ts("2015-03-03T00:00:00")
    assert decode(msg, "sensorthings") == obs


def test_sensorthings_observation_forms() -> None:
    one = {
        "@iot.id": 901,
        "phenomenonTime": "2024-05-01T10:00:00Z/2024-05-01T10:15:00Z",
        "resultTime": "2024-05-01T10:16:00Z",
        "result": 4.2,
        "Datastream": {"@iot.id": 17},
    }
    obs = decode(_msg(one))
    assert obs == [
        Observation("datastream:17", None, 4.2, _ts("2024-05-01T10:15:00"), msg_id="901")
    ]
    # resultTime when there is no phenomenonTime; the datastream from the MQTT topic.
    bare = {"resultTime": "2024-05-01T10:16:00Z", "result": "on"}
    for topic in ("v1.1/Datastreams(17)/Observations", "v1.0/Datastreams('a''b')/Observations"):
        got = decode(_msg(bare, topic))
        assert got[0].time == _ts("2024-05-01T10:16:00") and got[0].value == "on"
    assert decode(_msg(bare, "v1.1/Datastreams(17)/Observations"))[0].entity == "datastream:17"
    assert decode(_msg(bare, "v1.0/Datastreams('a''b')/Observations"))[0].entity == (
        "datastream:a'b"
    )
    # An array, and a {"value": [...]} collection with an expanded Datastream.
    coll = {
        "@iot.count": 2,
        "value": [
            {
                "@iot.id": "o1",
                "phenomenonTime": "2024-05-01T10:00:00Z",
                "result": 1,
                "Datastream": {
                    "@iot.id": "ds-a",
                    "unitOfMeasurement": {"symbol": "kPa"},
                    "ObservedProperty": {"name": "pressure"},
                },
            },
            {
                "@iot.id": "o2",
                "phenomenonTime": "2024-05-01T10:01:00Z",
                "result": 2,
                "Datastream": {"@iot.id": "ds-b"},
            },
        ],
    }
    got = decode(_msg(coll))
    assert [(o.entity, o.property, o.unit, o.msg_id, o.value) for o in got] == [
        ("datastream:ds-a", "pressure", "kPa", "o1", 1),
        ("datastream:ds-b", None, None, "o2", 2),
    ]
    assert len(decode(_msg(coll["value"]))) == 2
    # No datastream anywhere, no result, a non-scalar result.
    assert "observation 2: no Datastream" in _error(_msg([one, bare]))
    assert _error(_msg({"Datastream": {"@iot.id": 1}, "phenomenonTime": 0})) == "no 'result'"
    assert "'result' must be" in _error(
        _msg({"Datastream": {"@iot.id": 1}, "result": [1, 2]}), "sensorthings"
    )
    assert "value[1]: bad time" in _error(
        _msg({"value": [{"Datastream": {"@iot.id": 1}, "result": 1, "phenomenonTime": "x"}]})
    )


# --- NGSI-LD / NGSI v2 ----------------------------------------------------------------

_NGSI_SKIP = {
    "@context",
    "id",
    "type",
    "location",
    "dateObserved",
    "dateModified",
    "dateCreated",
    "TimeInstant",
}


def _inner(value: Any) -> Any:
    """The scalar an attribute value stands for (nested Property / JSON-LD value object)."""
    if isinstance(value, dict) and "@value" in value:
        return value["@value"]
    if (
        isinstance(value, dict)
        and "value" in value
        and value.get("type", "Property") == ("Property")
    ):
        return _inner(value["value"]) if isinstance(value["value"], dict) else value["value"]
    return value


def _expected_ld(entity: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, attr in entity.items():
        if name in _NGSI_SKIP:
            continue
        if isinstance(attr, dict):
            if attr.get("type", "Property") != "Property" or "value" not in attr:
                continue  # Relationship, GeoProperty, GeoJSON / structured keyValues
            value = _inner(attr["value"])
        else:
            value = attr
        if value is None or isinstance(value, str | int | float):
            out[name] = value
    return out


def _expected_v2(entity: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, attr in entity.items():
        if name in _NGSI_SKIP:
            continue
        if isinstance(attr, dict):
            if str(attr.get("type", "")).startswith("geo:") or "value" not in attr:
                continue
            value = _inner(attr["value"])
        else:
            value = attr
        if value is None or isinstance(value, str | int | float):
            out[name] = value
    return out


def _ngsi_files(pattern: str) -> list[str]:
    """Sample names at collection time (the ``shared_data`` fixture skips/fails if absent)."""
    base = find_shared_data()
    return sorted(p.name for p in (base / "feeds" / "ngsi").glob(pattern)) if base else []


@pytest.mark.parametrize("name", _ngsi_files("ngsild_*.jsonld"))
def test_ngsi_ld_samples(shared_data: Path, name: str) -> None:
    path = shared_data / "feeds" / "ngsi" / name
    entity = json.loads(path.read_text())
    msg = Message("ngsi", path.read_bytes(), content_type="application/ld+json")
    obs = decode(msg)
    assert all(o.entity == entity["id"] for o in obs)
    assert {o.property: o.value for o in obs} == _expected_ld(entity)
    assert len(obs) == len(_expected_ld(entity))
    # Without the content type the content tells it is NGSI-LD, with the same result.
    assert detect_format(Message("ngsi", path.read_bytes())) == "ngsi-ld"
    assert decode(Message("ngsi", path.read_bytes())) == obs
    for o in obs:  # units are what the attribute (or the nested Property) says
        attr = entity[o.property]
        if isinstance(attr, dict):
            nested = attr["value"] if isinstance(attr["value"], dict) else {}
            assert o.unit == nested.get("unitCode", attr.get("unitCode"))


def test_ngsi_ld_sample_details(shared_data: Path) -> None:
    base = shared_data / "feeds" / "ngsi"
    pipe = {
        o.property: o
        for o in decode(Message("n", (base / "ngsild_epanet_Pipe_normalized.jsonld").read_bytes()))
    }
    assert (pipe["flow"].value, pipe["flow"].unit) == (20, "G51")
    assert (pipe["diameter"].value, pipe["diameter"].unit) == (203.0, "MMT")
    assert "startsAt" not in pipe and "vertices" not in pipe  # Relationship, GeoProperty
    ac = {
        o.property: o
        for o in decode(
            Message("n", (base / "ngsild_ACMeasurement_normalized.jsonld").read_bytes())
        )
    }
    assert ac["frequency"].value == 50.020672
    assert ac["frequency"].time == _ts("2020-02-24T22:00:00") + 0.173
    assert "activePower" not in ac  # per-phase object: not a scalar
    # dateObserved there is "2020-03-17TT08:45:00Z" (a typo): no fallback time.
    assert ac["areaServed"].time is None
    dev = {
        o.property: o
        for o in decode(
            Message("n", (base / "ngsild_DeviceMeasurement_normalized.jsonld").read_bytes())
        )
    }
    assert dev["numValue"].value == 55.2 and dev["numValue"].time == _ts("2021-09-03T07:33:18")
    kv = decode(Message("n", (base / "ngsild_epanet_Tank_keyvalues.jsonld").read_bytes()))
    assert {o.property: o.value for o in kv}["maxLevel"] == 6.75


def test_ngsi_ld_notification_and_errors() -> None:
    entity = {
        "id": "urn:ngsi-ld:Junction:J1",
        "type": "Junction",
        "pressure": {
            "type": "Property",
            "value": 2.5,
            "unitCode": "BAR",
            "observedAt": "2024-01-01T00:00:00Z",
        },
        "head": {"value": 40},  # concise form
        "status": "open",  # keyValues
        "feeds": {"type": "Relationship", "object": "urn:ngsi-ld:Pipe:P1"},
    }
    note = {
        "id": "urn:ngsi-ld:Notification:1",
        "type": "Notification",
        "subscriptionId": "urn:s:1",
        "notifiedAt": "2024-01-01T00:00:01Z",
        "data": [entity, {**entity, "id": "urn:ngsi-ld:Junction:J2"}],
    }
    obs = decode(_msg(note))
    assert [(o.entity, o.property, o.value, o.unit) for o in obs[:3]] == [
        ("urn:ngsi-ld:Junction:J1", "pressure", 2.5, "BAR"),
        ("urn:ngsi-ld:Junction:J1", "head", 40, None),
        ("urn:ngsi-ld:Junction:J1", "status", "open", None),
    ]
    assert obs[0].time == _ts("2024-01-01T00:00:00") and obs[1].time is None
    assert len(obs) == 6 and obs[3].entity == "urn:ngsi-ld:Junction:J2"
    bad = {**entity, "pressure": {"type": "Property", "value": 1, "observedAt": "later"}}
    assert _error(_msg(bad), "ngsi-ld") == "urn:ngsi-ld:Junction:J1.pressure: bad time 'later'"
    assert _error(_msg({**note, "data": [entity, {"type": "X"}]})) == "data[2]: no 'id'"
    # keyValues with an entity date as the time.
    kv = {"id": "urn:ngsi-ld:S:1", "type": "S", "level": 3, "dateObserved": "2024-02-02T00:00:00Z"}
    assert decode(_msg(kv), "ngsi-ld") == [
        Observation("urn:ngsi-ld:S:1", "level", 3, _ts("2024-02-02T00:00:00"))
    ]


@pytest.mark.parametrize("name", _ngsi_files("ngsiv2_*.json"))
def test_ngsi_v2_samples(shared_data: Path, name: str) -> None:
    path = shared_data / "feeds" / "ngsi" / name
    entity = json.loads(path.read_text())
    msg = Message("ngsi", path.read_bytes())
    assert detect_format(msg) == "ngsi-v2"
    obs = decode(msg)
    assert all(o.entity == entity["id"] for o in obs)
    assert {o.property: o.value for o in obs} == _expected_v2(entity)
    assert len(obs) == len(_expected_v2(entity))


def test_ngsi_v2_metadata_notification_and_key_values() -> None:
    entity = {
        "id": "Junction:J1",
        "type": "Junction",
        "pressure": {
            "type": "Number",
            "value": 250,
            "metadata": {
                "TimeInstant": {"type": "DateTime", "value": "2024-01-01T00:00:00Z"},
                "unitCode": {"type": "Text", "value": "KPA"},
            },
        },
        "location": {"type": "geo:json", "value": {"type": "Point", "coordinates": [1, 2]}},
        "TimeInstant": {"type": "DateTime", "value": "2024-01-01T00:05:00Z"},
        "status": {"type": "Text", "value": "open"},
    }
    obs = decode(_msg({"subscriptionId": "s1", "data": [entity]}))
    assert obs == [
        Observation("Junction:J1", "pressure", 250, _ts("2024-01-01T00:00:00"), "KPA"),
        Observation("Junction:J1", "status", "open", _ts("2024-01-01T00:05:00")),
    ]
    kv = [{"id": "T1", "type": "Tank", "level": 2.5, "tags": ["a"]}]
    assert decode(_msg(kv), "ngsi-v2") == [Observation("T1", "level", 2.5)]
    bad = {
        **entity,
        "pressure": {"type": "Number", "value": 1, "metadata": {"TimeInstant": {"value": "soon"}}},
    }
    assert _error(_msg(bad), "ngsi-v2") == "Junction:J1.pressure: bad time 'soon'"


# --- CSV ------------------------------------------------------------------------------


def test_csv_long() -> None:
    text = (
        "id,property,value,time,msg_id\n"
        "b1,temp,21.5,2024-01-01T00:00:00Z,m1\n"
        "b1,count,7,1700000000,\n"
        "\n"
        "v1,open,TRUE,,\n"
        "v1,mode,eco,,\n"
        "v1,skipped,,,\n"
    )
    obs = decode(_msg(text.encode(), content_type="text/csv; charset=utf-8"))
    assert obs == [
        Observation("b1", "temp", 21.5, _ts("2024-01-01T00:00:00"), msg_id="m1"),
        Observation("b1", "count", 7, 1_700_000_000.0),
        Observation("v1", "open", True),
        Observation("v1", "mode", "eco"),
    ]
    assert isinstance(obs[1].value, int)
    # Detected without a content type, from the header; object_id as the id column.
    alias = b"\xef\xbb\xbfobject_id,property,value\nnet:water:J-10,pressure,2\n"
    assert detect_format(_msg(alias)) == "csv"
    assert decode(_msg(alias)) == [Observation("net:water:J-10", "pressure", 2)]


def test_csv_wide_and_errors() -> None:
    text = "time,b1.temp,net:water:J-10.pressure,meter7\n1700000000,20,3.5,\n1700000060,,3.6,9\n"
    obs = decode(_msg(text.encode()), "csv")
    assert obs == [
        Observation("b1", "temp", 20, 1_700_000_000.0),
        Observation("net:water:J-10", "pressure", 3.5, 1_700_000_000.0),
        Observation("net:water:J-10", "pressure", 3.6, 1_700_000_060.0),
        Observation("meter7", None, 9, 1_700_000_060.0),
    ]
    rows = ["id,property,value,time"] + ["a,p,1,1700000000"] * 5 + ["a,p,1,x"]
    assert _error(_msg("\n".join(rows).encode()), "csv") == "row 7: bad time 'x'"
    assert _error(_msg(b"time,a\n1,2,3\n"), "csv") == "row 2: 3 cells, the header has 2"
    assert _error(_msg(b"id,property,value\n,p,1\n"), "csv") == "row 2: no 'id'"
    assert "header needs" in _error(_msg(b"a,b\n1,2\n"), "csv")
    assert _error(_msg(b"\xff\xfe,\n"), "csv") == "CSV is not UTF-8"
    assert _error(_msg(b""), "csv") == "empty CSV"


# --- registry and robustness -----------------------------------------------------------


def test_registry_names() -> None:
    assert set(DECODERS) == {"json", "sensorthings", "ngsi-ld", "ngsi-v2", "csv"}
    msg = _msg({"id": "a", "property": "p", "value": 1})
    assert DECODERS["json"](msg, "city/{object_id}/{property}") == [Observation("a", "p", 1)]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "object_id",
                    "property",
                    "value",
                    "time",
                    "type",
                    "data",
                    "result",
                    "Datastream",
                    "Datastreams",
                    "Observations",
                    "@iot.id",
                    "phenomenonTime",
                    "observedAt",
                    "unitCode",
                    "metadata",
                    "TimeInstant",
                    "subscriptionId",
                    "@context",
                    "msg_id",
                    "quality",
                    "unit",
                    "@value",
                    "name",
                    "dateObserved",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)
_topics = st.sampled_from(
    [
        "",
        "city/a/b",
        "city/batch",
        "v1.1/Datastreams(1)/Observations",
        "x.csv",
        "v1.1/Datastreams()/Observations",
        "city/a",
    ]
)
_types = st.sampled_from([None, "text/csv", "application/ld+json", "application/json"])
_formats = st.sampled_from([None, *DECODERS, "nope"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=200), topic=_topics, ctype=_types, fmt=_formats)
def test_random_bytes_raise_only_decode_error(
    payload: bytes, topic: str, ctype: str | None, fmt: str | None
) -> None:
    try:
        obs = decode(Message("f", payload, topic=topic, content_type=ctype), fmt)
    except DecodeError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert all(isinstance(o, Observation) for o in obs)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_json, topic=_topics, ctype=_types, fmt=_formats)
def test_random_json_raises_only_decode_error(
    doc: Any, topic: str, ctype: str | None, fmt: str | None
) -> None:
    payload = json.dumps(doc).encode()
    try:
        obs = decode(Message("f", payload, topic=topic, content_type=ctype), fmt)
    except DecodeError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        for o in obs:
            assert isinstance(o.entity, str) and o.entity
            assert o.value is None or isinstance(o.value, str | int | float)
            assert o.time is None or isinstance(o.time, float)


def test_deep_nesting_is_a_decode_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert "nested too deeply" in _error(_msg(deep, "in"))


_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
_any = st.recursive(
    _leaf,
    lambda x: st.lists(x, max_size=3) | st.dictionaries(st.text(max_size=4), x, max_size=3),
    max_leaves=8,
)
_times = st.one_of(
    _any,
    st.sampled_from(
        [
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00/2024-01-01T01:00:00",
            "1e400",
            "-5",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+01:00",
            "2024-01-01T00:00:00/PT5M",
        ]
    ),
)
_st_obs = st.fixed_dictionaries(
    {},
    optional={
        "result": _any,
        "phenomenonTime": _times,
        "resultTime": _times,
        "@iot.id": _any,
        "resultQuality": _any,
        "Datastream": _any
        | st.fixed_dictionaries(
            {},
            optional={
                "@iot.id": _any,
                "name": _any,
                "unitOfMeasurement": _any,
                "ObservedProperty": _any,
            },
        ),
    },
)
_st_doc = st.one_of(
    _st_obs,
    st.lists(_st_obs, max_size=3),
    st.fixed_dictionaries({"value": st.lists(_st_obs)}),
    st.fixed_dictionaries(
        {
            "Datastreams": st.lists(
                st.fixed_dictionaries(
                    {"Observations": st.lists(_st_obs, max_size=3)},
                    optional={"@iot.id": _any, "name": _any, "unitOfMeasurement": _any},
                ),
                max_size=2,
            )
        }
    ),
)
_attr = st.one_of(
    _any,
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["Property", "Relationship", "GeoProperty", "Number", "Text"])
            | _any,
            "value": _any
            | st.fixed_dictionaries(
                {}, optional={"type": _any, "value": _any, "unitCode": _any, "@value": _any}
            ),
            "observedAt": _times,
            "unitCode": _any,
            "metadata": _any
            | st.fixed_dictionaries(
                {},
                optional={
                    "TimeInstant": st.fixed_dictionaries({"value": _times}),
                    "unitCode": st.fixed_dictionaries({"value": _any}),
                },
            ),
        },
    ),
)
_entity = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=10), _any)},
    optional={
        "type": _any,
        "dateObserved": _attr | _times,
        "TimeInstant": _attr,
        "a": _attr,
        "b": _attr,
        "c": _attr,
    },
)
_ngsi_doc = st.one_of(
    _entity,
    st.lists(_entity, max_size=3),
    st.fixed_dictionaries({"type": st.just("Notification"), "data": st.lists(_entity, max_size=3)}),
    st.fixed_dictionaries({"subscriptionId": _any, "data": _any}),
)
_item = st.fixed_dictionaries(
    {},
    optional={
        "id": _any,
        "object_id": _any,
        "property": _any,
        "value": _any,
        "time": _times,
        "msg_id": _any,
        "quality": _any,
        "unit": _any,
    },
)
_json_doc = st.one_of(_leaf, _item, st.lists(_item, max_size=4))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(_st_doc, _ngsi_doc, _json_doc), topic=_topics, fmt=_formats)
def test_shaped_random_payloads_raise_only_decode_error(
    doc: Any, topic: str, fmt: str | None
) -> None:
    try:
        obs = decode(Message("f", json.dumps(doc).encode(), topic=topic), fmt)
    except DecodeError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        for o in obs:
            assert isinstance(o.entity, str) and o.entity
            assert o.value is None or isinstance(o.value, str | int | float)
            assert o.time is None or isinstance(o.time, float)
            assert o.unit is None or isinstance(o.unit, str)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(st.text(max_size=6), max_size=5), max_size=6),
    header=st.sampled_from(["id,property,value,time", "time,a,b.c", "object_id,property,value"]),
)
def test_random_csv_raises_only_decode_error(rows: list[list[str]], header: str) -> None:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    try:
        obs = decode(Message("f", (header + "\n" + buf.getvalue()).encode()), "csv")
    except DecodeError as exc:
        assert str(exc).startswith("row ") or "CSV" in str(exc)
    else:
        assert all(o.entity for o in obs)

"""Tests for ingest.networks.georef: parse, load, fit, apply and apply_georef."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.networks.georef import Georeference, apply_georef
from twin.errors import IngestError
from twin.network import Network


def test_parse_full_string() -> None:
    geo = Georeference.parse("origin=84500,447000,0;scale=0.5;rotation=30;crs=EPSG:28992")
    assert geo == Georeference(
        origin=(84500.0, 447000.0, 0.0), scale=0.5, rotation=30.0, crs="EPSG:28992"
    )


def test_parse_optional_keys_and_defaults() -> None:
    geo = Georeference.parse(" origin = 10, 20 ; plan_origin=1,2; z_scale=2; crs=none ;")
    assert geo.origin == (10.0, 20.0, 0.0)
    assert geo.plan_origin == (1.0, 2.0)
    assert geo.z_scale == 2.0
    assert geo.scale == 1.0 and geo.rotation == 0.0
    assert geo.crs is None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("origin=1,x", "origin"),
        ("origin=1", "origin"),
        ("origin=1,2,3,4", "origin"),
        ("origin=1,2;scale=-1", "scale"),
        ("origin=1,2;scale=0", "scale"),
        ("origin=1,2;scale=abc", "scale"),
        ("origin=1,2;rotation=nan", "rotation"),
        ("origin=1,2;foo=1", "foo"),
        ("origin=1,2;scale", "scale"),
        ("scale=2", "origin"),
        ("origin=1,2;origin=3,4", "origin"),
        ("origin=1,2;plan_origin=1", "plan_origin"),
    ],
)
def test_parse_bad_strings(text: str, named: str) -> None:
    with pytest.raises(IngestError) as err:
        Georeference.parse(text)
    assert named in str(err.value)


@given(st.text(max_size=60))
def test_parse_only_raises_ingest_error(text: str) -> None:
    try:
        geo = Georeference.parse(text)
    except IngestError:
        return
    assert geo.scale > 0 and all(math.isfinite(v) for v in geo.origin)


def test_load_json_and_toml(tmp_path: Path) -> None:
    js = tmp_path / "geo.json"
    js.write_text('{"origin": [100, 200], "scale": 0.3048, "crs": "EPSG:2246"}')
    assert Georeference.load(js) == Georeference(
        origin=(100.0, 200.0, 0.0), scale=0.3048, crs="EPSG:2246"
    )
    toml = tmp_path / "geo.toml"
    toml.write_text(
        '[georeference]\norigin = [1.5, 2.5, 3]\nrotation = 90\ncrs = "EPSG:28992"\n'
        "plan_origin = [10, 20]\n"
    )
    geo = Georeference.load(toml)
    assert geo.origin == (1.5, 2.5, 3.0)
    assert geo.rotation == 90.0
    assert geo.plan_origin == (10.0, 20.0)
    assert geo.crs == "EPSG:28992"


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        ("bad.json", "{not json", "bad georeference file"),
        ("list.json", "[1, 2]", "object"),
        ("key.json", '{"origin": [0, 0], "rotate": 3}', "rotate"),
        ("val.toml", 'origin = [0, 0]\nscale = "x"\n', "scale"),
        ("noorigin.toml", "scale = 2\n", "origin"),
        ("crs.json", '{"origin": [0, 0], "crs": 28992}', "crs"),
    ],
)
def test_load_bad_files(tmp_path: Path, name: str, text: str, named: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(IngestError) as err:
        Georeference.load(path)
    assert named in str(err.value)
    assert err.value.source == str(path) or err.value.where == str(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="cannot read"):
        Georeference.load(tmp_path / "nope.json")


def test_apply_rotation_90_maps_x_to_y() -> None:
    geo = Georeference(origin=(100.0, 200.0, 5.0), scale=2.0, rotation=90.0)
    out = geo.apply(np.array([[1.0, 0.0, 10.0], [0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(out, [[100.0, 202.0, 15.0], [98.0, 200.0, 5.0]], atol=1e-12)


def test_apply_plan_origin_and_z_scale() -> None:
    geo = Georeference(origin=(1000.0, 0.0, 0.0), scale=0.5, plan_origin=(10.0, 10.0), z_scale=3)
    out = geo.apply(np.array([[10.0, 10.0, 1.0], [14.0, 10.0, 2.0]]))
    np.testing.assert_allclose(out, [[1000.0, 0.0, 3.0], [1002.0, 0.0, 6.0]])
    assert geo.apply(np.zeros((0, 3))).shape == (0, 3)
    np.testing.assert_allclose(geo.apply(np.array([[12.0, 10.0]])), [[1001.0, 0.0, 0.0]])


@given(
    st.floats(-360, 360),
    st.floats(0.01, 100),
    st.lists(st.tuples(st.floats(-1e4, 1e4), st.floats(-1e4, 1e4)), min_size=2, max_size=5),
)
def test_apply_is_a_similarity(
    rotation: float, scale: float, pts: list[tuple[float, float]]
) -> None:
    geo = Georeference(origin=(5.0, -7.0, 0.0), scale=scale, rotation=rotation)
    src = np.array([(x, y, 0.0) for x, y in pts])
    out = geo.apply(src)
    d_src = np.linalg.norm(src[1:] - src[:-1], axis=1)
    d_out = np.linalg.norm(out[1:] - out[:-1], axis=1)
    np.testing.assert_allclose(d_out, d_src * scale, rtol=1e-9, atol=1e-6)


def test_fit_centres_and_scales() -> None:
    geo = Georeference.fit((0, 0, 100, 50), (1000, 2000, 1400, 2400), crs="EPSG:28992")
    assert geo.scale == pytest.approx(0.9 * 4.0)  # width is the binding side: 400/100
    assert geo.rotation == 0.0 and geo.crs == "EPSG:28992"
    corners = geo.apply(np.array([[0.0, 0.0, 0.0], [100.0, 50.0, 0.0], [50.0, 25.0, 0.0]]))
    np.testing.assert_allclose(corners[2], [1200.0, 2200.0, 0.0])
    np.testing.assert_allclose(corners[0, :2], [1020.0, 2110.0])
    np.testing.assert_allclose(corners[1, :2], [1380.0, 2290.0])


def test_fit_degenerate_source_and_margin() -> None:
    point = Georeference.fit((5, 5, 5, 5), (0, 0, 10, 10), crs=None, margin=0.0)
    assert point.scale == 1.0
    np.testing.assert_allclose(point.apply(np.array([[5.0, 5.0, 0.0]])), [[5.0, 5.0, 0.0]])
    line = Georeference.fit((0, 3, 20, 3), (0, 0, 10, 100), crs=None, margin=0.5)
    assert line.scale == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("src", "dst", "margin"),
    [
        ((0, 0, 1, 1), (0, 0, 0, 10), 0.1),
        ((0, 0, 1, 1), (10, 0, 0, 10), 0.1),
        ((0, 0, 1), (0, 0, 10, 10), 0.1),
        ((0, 0, 1, 1), (0, 0, 10, 10), 1.0),
        ((0, 0, float("inf"), 1), (0, 0, 10, 10), 0.1),
    ],
)
def test_fit_rejects_bad_input(
    src: tuple[float, ...], dst: tuple[float, ...], margin: float
) -> None:
    with pytest.raises(IngestError):
        Georeference.fit(src, dst, crs="EPSG:28992", margin=margin)


def test_apply_georef_moves_network_in_place() -> None:
    net = Network(id="w", kind="water")
    a = net.add_node("a", "Junction", (0, 0, 10))
    b = net.add_node("b", "Junction", (10, 0, 20))
    drawn = net.add_edge("e1", a, b, "Pump", coords=[(0, 0, 10), (5, 5, 15), (10, 0, 20)])
    measured = net.add_edge(
        "e2", a, b, "Pipe", {"length": 321.0, "length_source": "file", "diameter": 0.3}
    )
    drawn_len = net.edge(drawn)[2]["attributes"]["length"]
    geo = Georeference(origin=(1000.0, 2000.0, 0.0), scale=2.0, rotation=90.0, crs="EPSG:3857")
    apply_georef(net, geo)
    assert net.crs == "EPSG:3857"
    assert net.node(b)["xyz"] == pytest.approx((1000.0, 2020.0, 20.0))
    coords = net.edge(drawn)[2]["coords"]
    assert coords[1] == pytest.approx((990.0, 2010.0, 15.0))
    assert net.edge(drawn)[2]["attributes"]["length"] == pytest.approx(drawn_len * 2.0)
    e2 = net.edge(measured)[2]["attributes"]
    assert e2["length"] == 321.0  # measured lengths stay physical
    assert e2["diameter"] == 0.3  # diameters are physical
    assert net.attributes["placed"] is True
    assert net.attributes["georeference"]["origin"] == [1000.0, 2000.0, 0.0]
    assert net.attributes["georeference"] == geo.as_dict()

"""Off-screen snapshots of a real city's scene: a PNG of the asked size, drawn, highlighted."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest.cityjson import load_cityjson
from scene.service import SceneCache
from scene.snapshot import (
    BACKGROUND_COLOR,
    HIGHLIGHT_COLOR,
    Camera,
    default_camera,
    read_frame,
    render_snapshot,
)
from twin.errors import SceneError
from twin.geometry import CityModel
from twin.store.memory import MemoryStore

DELFT = "real/delft.city.json"


@pytest.fixture(scope="module")
def delft(cityjson_dir: Path) -> tuple[CityModel, bytes]:
    path = cityjson_dir / DELFT
    model = load_cityjson(path)
    store = MemoryStore()
    store.put_objects(model.twin, source="delft.city.json", source_data=path.read_bytes())
    return model, SceneCache(store).get().data


def _largest_building(model: CityModel) -> str:
    return max(
        (o for o in model.twin if o.type == "Building" and o.geometry is not None),
        key=lambda o: o.geometry.footprint_area,  # type: ignore[union-attr]
    ).id


def _camera_on(model: CityModel, glb: bytes, oid: str) -> Camera:
    """A camera 45° above the object, from the south-east, in the GLB's local frame."""
    frame = read_frame(glb)
    g = model.twin[oid].geometry
    assert g is not None
    ox, oy, oz = frame.origin
    cx, cy, cz = g.centroid
    target = (cx - ox, cz - oz, -(cy - oy))  # source (E, N, up) -> glTF (E, up, -N)
    d = 150.0
    eye = (target[0] + d * 0.5, target[1] + d * math.sqrt(0.5), target[2] + d * 0.5)
    return Camera(eye, target, fov=40.0)


def _image(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB"))


def test_snapshot_of_a_real_city_is_drawn_and_highlights_the_object(
    delft: tuple[CityModel, bytes],
) -> None:
    model, glb = delft
    oid = _largest_building(model)
    cam = _camera_on(model, glb, oid)
    img = _image(render_snapshot(glb, cam, width=320, height=200, highlight=[oid]))
    assert img.shape == (200, 320, 3)
    drawn = (img != np.array(BACKGROUND_COLOR)).any(axis=2)
    assert drawn.mean() > 0.05
    hl = (img == np.array(HIGHLIGHT_COLOR)).all(axis=2)
    # The building sits in the middle of the view: a solid patch of the highlight colour.
    assert hl.mean() > 0.01
    ys, xs = np.nonzero(hl)
    assert abs(xs.mean() - 160) < 80 and abs(ys.mean() - 100) < 60
    # Without the highlight, that colour does not occur: it marks only the object.
    plain = _image(render_snapshot(glb, cam, width=320, height=200))
    assert not (plain == np.array(HIGHLIGHT_COLOR)).all(axis=2).any()
    assert (plain != np.array(BACKGROUND_COLOR)).any(axis=2).mean() > 0.05


def test_default_camera_frames_the_whole_scene(delft: tuple[CityModel, bytes]) -> None:
    _, glb = delft
    img = _image(render_snapshot(glb, default_camera(glb), width=200, height=150))
    assert img.shape == (150, 200, 3)
    drawn = (img != np.array(BACKGROUND_COLOR)).any(axis=2)
    assert drawn.mean() > 0.05
    # Framed: nothing touches the image border.
    assert not drawn[0].any() and not drawn[-1].any()


def test_frame_converts_scene_points_back_to_source_and_wgs84(
    delft: tuple[CityModel, bytes],
) -> None:
    model, glb = delft
    frame = read_frame(glb)
    assert frame.epsg == 7415
    g = model.twin[_largest_building(model)].geometry
    assert g is not None and g.centroid_wgs84 is not None
    ox, oy, oz = frame.origin
    cx, cy, cz = g.centroid
    local = [(cx - ox, cz - oz, -(cy - oy))]
    assert frame.to_source(local)[0] == pytest.approx([cx, cy, cz])
    wgs = frame.to_wgs84(local)
    assert wgs is not None
    assert wgs[0][:2] == pytest.approx(g.centroid_wgs84[:2], abs=1e-7)


def test_bad_cameras_and_sizes_are_scene_errors(delft: tuple[CityModel, bytes]) -> None:
    _, glb = delft
    for text in ("1,2,3", "a,b,c,d,e,f", "0,0,0,0,0,0", "1,2,3,4,5,6,200", "nan,0,0,1,1,1"):
        with pytest.raises(SceneError):
            Camera.parse(text)
    assert Camera.parse("10,20,30,0,0,0,60").fov == 60
    with pytest.raises(SceneError):
        render_snapshot(glb, Camera.parse("100,100,100,0,0,0"), width=0, height=10)
    with pytest.raises(SceneError):
        render_snapshot(b"not a glb at all", Camera.parse("100,100,100,0,0,0"))

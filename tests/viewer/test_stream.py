"""The live stream (WebSocket and SSE) on a real SQLite store, and across two real workers."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import ROOT, need
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from ingest.cityjson import load_cityjson
from twin.geometry import CityModel
from viewer.app import create_app
from viewer.bootstrap import bootstrap
from viewer.deps import Services
from viewer.routes import stream
from viewer.routes.stream import StreamFilter, StreamHub, StreamMessage
from viewer.settings import Settings

DELFT = ROOT / "viewer" / "demo" / "delft.city.json"
FEED = {"Authorization": "Bearer feed-secret"}
Message = dict[str, Any]

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def delft() -> CityModel:
    return load_cityjson(DELFT)


@pytest.fixture
def env(tmp_path: Path, delft: CityModel) -> Iterator[tuple[TestClient, FastAPI, Services]]:
    settings = Settings(db=f"sqlite:///{tmp_path / 'twin.db'}", tokens="feed-secret:feed")
    services = bootstrap(settings)
    services.store.put_objects(delft.twin, source=DELFT.name, source_data=DELFT.read_bytes())
    app = create_app(services)
    if not any(getattr(r, "path", "") == "/api/stream" for r in app.routes):
        app.include_router(stream.router)  # until viewer/app.py includes it
    with TestClient(app) as client:
        yield client, app, services
    services.store.close()


def _ids(model: CityModel, kind: str, n: int) -> list[str]:
    return sorted(o.id for o in model.twin if o.type == kind)[:n]


def _post(c: TestClient, object_id: str, prop: str, value: Any, t: float | None = None) -> None:
    update: dict[str, Any] = {"id": object_id, "property": prop, "value": value}
    if t is not None:
        update["time"] = t
    r = c.post("/api/state", json={"updates": [update], "source": "test"}, headers=FEED)
    assert r.status_code == 200, r.text


def _recv(ws: Any) -> Message:
    message: Message = ws.receive_json()
    StreamMessage.model_validate(message)  # every message matches the documented schema
    return message


def _until(ws: Any, done: Callable[[Message], bool], limit: int = 500) -> list[Message]:
    """Messages up to and including the first for which ``done`` holds."""
    out = []
    for _ in range(limit):
        out.append(_recv(ws))
        if done(out[-1]):
            return out
    raise AssertionError(f"no matching message in {limit}: {out[-3:]}")


def _has(object_id: str, prop: str, value: Any) -> Callable[[Message], bool]:
    def check(m: Message) -> bool:
        return m["type"] == "delta" and any(
            u["id"] == object_id and u["property"] == prop and u["value"] == value
            for u in m["updates"]
        )

    return check


def _delta_ids(messages: list[Message]) -> set[str]:
    return {u["id"] for m in messages if m["type"] == "delta" for u in m["updates"]}


# -- WebSocket -------------------------------------------------------------------------------


def test_hello_then_a_snapshot_of_the_requested_objects(
    env: tuple[TestClient, FastAPI, Services], delft: CityModel
) -> None:
    c, _, _ = env
    a, b = _ids(delft, "Building", 2)
    _post(c, a, "pressure", 3.5, t=100.0)
    _post(c, a, "status", "ok", t=101.0)
    with c.websocket_connect(f"/api/stream?ids={a},{b},no-such-object") as ws:
        hello = _recv(ws)
        assert hello["type"] == "hello" and hello["resumed"] is False
        assert isinstance(hello["worker"], str) and hello["seq"] >= 0
        snap = _recv(ws)
    assert snap["type"] == "snapshot" and snap["seq"] == hello["seq"]
    assert snap["states"] == {
        a: {
            "pressure": {"value": 3.5, "time": 100.0, "source": "test"},
            "status": {"value": "ok", "time": 101.0, "source": "test"},
        },
        b: {},
    }
    assert snap["objects"] == 2 and snap["capped"] is False
    assert snap["unknown_ids"] == ["no-such-object"]


def test_posted_state_reaches_the_client_as_a_delta(
    env: tuple[TestClient, FastAPI, Services], delft: CityModel
) -> None:
    c, _, _ = env
    a, other = _ids(delft, "Building", 2)
    with c.websocket_connect(f"/api/stream?ids={a}") as ws:
        hello, snap = _recv(ws), _recv(ws)
        _post(c, other, "pressure", 9.0)  # not subscribed
        _post(c, a, "pressure", 2.25, t=200.0)
        got = _until(ws, _has(a, "pressure", 2.25))
    assert _delta_ids(got) == {a}
    delta = got[-1]
    assert delta["seq"] > snap["seq"] == hello["seq"]
    assert {"id": a, "property": "pressure", "value": 2.25, "time": 200.0, "source": "test"} in (
        delta["updates"]
    )


def test_a_burst_of_200_updates_is_coalesced_latest_value_wins(
    env: tuple[TestClient, FastAPI, Services], delft: CityModel
) -> None:
    c, _, services = env
    a = _ids(delft, "Building", 1)[0]
    with c.websocket_connect(f"/api/stream?ids={a}") as ws:
        _recv(ws), _recv(ws)
        for i in range(200):
            _post(c, a, "flow", i, t=1000.0 + i)
        deltas = _until(ws, _has(a, "flow", 199))
        # Each window holds one value per (id, property): never two of the same.
        for d in deltas:
            keys = [(u["id"], u["property"]) for u in d["updates"]]
            assert len(keys) == len(set(keys))
        assert len(deltas) < 100  # 200 requests, far fewer messages

        # The same burst straight onto the bus, in one go: one message carries it.
        async def publish_burst() -> None:
            for i in range(200):
                await services.bus.publish(
                    {
                        "kind": "state",
                        "updates": [
                            {
                                "id": a,
                                "property": "flow",
                                "value": 1000 + i,
                                "time": 5000.0 + i,
                                "source": "burst",
                            }
                        ],
                    }
                )

        c.portal.call(publish_burst)  # type: ignore[union-attr]
        burst_deltas = _until(ws, _has(a, "flow", 1199))
    assert len(burst_deltas) <= 2
    assert burst_deltas[-1]["updates"] == [
        {"id": a, "property": "flow", "value": 1199, "time": 5199.0, "source": "burst"}
    ]


def test_an_older_value_does_not_replace_a_newer_one_in_a_window() -> None:
    async def run() -> list[Message]:
        hub = StreamHub.__new__(StreamHub)
        client = stream.StreamClient(hub, StreamFilter(ids=frozenset({"x"})))
        new = {"id": "x", "property": "p", "value": "new", "time": 20.0, "source": "s"}
        old = {"id": "x", "property": "p", "value": "old", "time": 10.0, "source": "s"}
        client.offer(1, {"kind": "state", "updates": [new]})
        client.offer(2, {"kind": "state", "updates": [old]})
        client.offer(3, {"kind": "alert", "alert": {"object_id": "y"}})  # other object
        client.offer(4, {"kind": "alert", "alert": {"object_id": "x", "level": 2}})
        return client._flush()

    messages = asyncio.run(run())
    assert messages == [
        {
            "type": "delta",
            "seq": 2,
            "updates": [{"id": "x", "property": "p", "value": "new", "time": 20.0, "source": "s"}],
        },
        {
            "type": "event",
            "seq": 4,
            "event": {"kind": "alert", "alert": {"object_id": "x", "level": 2}},
        },
    ]


def test_other_events_pass_through_filtered_by_the_object_they_name(
    env: tuple[TestClient, FastAPI, Services], delft: CityModel
) -> None:
    c, _, services = env
    a, other = _ids(delft, "Building", 2)

    async def publish() -> None:
        await services.bus.publish({"kind": "alert", "alert": {"object_id": other}, "n": 1})
        await services.bus.publish({"kind": "alert", "alert": {"object_id": a}, "n": 2})
        await services.bus.publish({"kind": "alert", "id": other, "n": 3})
        # Session events reach every viewer: a comment's id is no object id.
        await services.bus.publish({"kind": "comment", "comment": {"id": "c9"}, "n": 4})
        await services.bus.publish({"kind": "moderation", "n": 5})

    with c.websocket_connect(f"/api/stream?ids={a}") as ws:
        _recv(ws), _recv(ws)
        c.portal.call(publish)  # type: ignore[union-attr]
        got = _until(ws, lambda m: m["type"] == "event" and m["event"].get("n") == 5)
    events = [m for m in got if m["type"] == "event"]
    assert [m["event"]["n"] for m in events] == [2, 4, 5]
    assert events[0]["event"] == {"kind": "alert", "alert": {"object_id": a}, "n": 2}
    assert events[0]["seq"] < events[1]["seq"]


def test_types_and_bbox_filters(
    env: tuple[TestClient, FastAPI, Services], delft: CityModel
) -> None:
    c, _, _ = env
    road = _ids(delft, "Road", 1)[0]
    building = _ids(delft, "Building", 1)[0]
    with c.websocket_connect("/api/stream?types=Road") as ws:
        _recv(ws)
        snap = _recv(ws)
        assert set(snap["states"]) == {o.id for o in delft.twin if o.type == "Road"}
        _post(c, building, "temp", 1.0)
        _post(c, road, "traffic", 42)
        got = _until(ws, _has(road, "traffic", 42))
    assert _delta_ids(got) == {road}

    # A small box around one building: it matches, a building far away does not.
    inside = next(o for o in delft.twin if o.id == building)
    assert inside.geometry is not None and inside.geometry.bbox_wgs84 is not None
    x0, y0, _, x1, y1, _ = inside.geometry.bbox_wgs84
    far = max(
        (o for o in delft.twin if o.type == "Building" and o.geometry and o.geometry.bbox_wgs84),
        key=lambda o: abs(o.geometry.bbox_wgs84[0] - x0) + abs(o.geometry.bbox_wgs84[1] - y0),  # type: ignore[union-attr,index]
    )
    box = f"{x0},{y0},{x1},{y1}"
    with c.websocket_connect(f"/api/stream?types=Building&bbox={box}") as ws:
        _recv(ws)
        snap = _recv(ws)
        assert building in snap["states"] and far.id not in snap["states"]
        assert all(o.type == "Building" for o in delft.twin if o.id in snap["states"])
        _post(c, far.id, "temp", 5.0)
        _post(c, road, "traffic", 43)
        _post(c, building, "temp", 21.5)
        got = _until(ws, _has(building, "temp", 21.5))
    assert _delta_ids(got) == {building}


def test_snapshot_is_capped_and_says_so(
    env: tuple[TestClient, FastAPI, Services], delft: CityModel
) -> None:
    c, app, _ = env
    with c.websocket_connect("/api/stream") as ws:  # no filter: every object
        _recv(ws)
        snap = _recv(ws)
        assert snap["objects"] == len(delft.twin) and snap["capped"] is False
        app.state.stream_hub.cap = 100
        ws.send_json({"subscribe": {"types": ["Building"]}})
        snap = _recv(ws)
    assert snap["type"] == "snapshot" and snap["objects"] == 100 and snap["capped"] is True
    assert "100" in snap["message"]


def test_the_client_can_change_its_subscription(
    env: tuple[TestClient, FastAPI, Services], delft: CityModel
) -> None:
    c, _, _ = env
    a, b = _ids(delft, "Building", 2)
    _post(c, b, "pressure", 1.0, t=50.0)
    with c.websocket_connect(f"/api/stream?ids={a}") as ws:
        _recv(ws), _recv(ws)
        ws.send_json({"subscribe": {"ids": [b]}})
        snap = _recv(ws)
        assert snap["type"] == "snapshot" and set(snap["states"]) == {b}
        assert snap["states"][b]["pressure"]["value"] == 1.0
        ws.send_json({"subscribe": {"bbox": [1, 2, 3]}})
        error = _recv(ws)
        assert error["type"] == "error" and "bbox" in error["message"]
        ws.send_text("not json")
        assert _recv(ws) == {"type": "error", "message": "message is not JSON"}
        _post(c, a, "pressure", 7.0)
        _post(c, b, "pressure", 8.0)
        got = _until(ws, _has(b, "pressure", 8.0))
    assert _delta_ids(got) == {b}


def test_a_bad_filter_is_answered_and_the_socket_closed(
    env: tuple[TestClient, FastAPI, Services],
) -> None:
    c, _, _ = env
    with c.websocket_connect("/api/stream?bbox=1,2,oops") as ws:
        error = _recv(ws)
        assert error["type"] == "error" and "bbox" in error["message"]
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
    assert info.value.code == 1008


def test_resume_with_since_replays_missed_deltas(
    env: tuple[TestClient, FastAPI, Services], delft: CityModel
) -> None:
    c, _, _ = env
    a = _ids(delft, "Building", 1)[0]
    with c.websocket_connect(f"/api/stream?ids={a}") as ws:
        hello = _recv(ws)
        _recv(ws)
        _post(c, a, "level", 1)
        last = _until(ws, _has(a, "level", 1))[-1]["seq"]
    _post(c, a, "level", 2)  # missed while disconnected
    _post(c, a, "other", "x")
    worker = hello["worker"]
    with c.websocket_connect(f"/api/stream?ids={a}&since={last}&worker={worker}") as ws:
        hello2 = _recv(ws)
        assert hello2["resumed"] is True and hello2["worker"] == worker
        first = _recv(ws)  # no snapshot: the missed values
        assert first["type"] == "delta"
        got = (
            [first] if _has(a, "other", "x")(first) else [first, *_until(ws, _has(a, "other", "x"))]
        )
    updates = {(u["property"], u["value"]) for m in got for u in m["updates"]}
    assert {("level", 2), ("other", "x")} <= updates and ("level", 1) not in updates

    # A type filter resumes too (the replayed objects' types are looked up).
    with c.websocket_connect(f"/api/stream?types=Building&since={last}&worker={worker}") as ws:
        assert _recv(ws)["resumed"] is True
        got = _until(ws, _has(a, "other", "x"))
    assert ("level", 2) in {(u["property"], u["value"]) for m in got for u in m["updates"]}

    # Not resumable: a position from the future, or from another worker -> a snapshot.
    for query in (f"since={10**9}", f"since={last}&worker=elsewhere"):
        with c.websocket_connect(f"/api/stream?ids={a}&{query}") as ws:
            assert _recv(ws)["resumed"] is False
            snap = _recv(ws)
            assert snap["type"] == "snapshot" and snap["states"][a]["level"]["value"] == 2


def test_ring_buffer_bounds_what_can_be_resumed(
    env: tuple[TestClient, FastAPI, Services],
) -> None:
    _, _, services = env

    async def run() -> tuple[list[bool], bool]:
        hub = StreamHub(services, ring_size=5)
        for i in range(10):
            await hub.dispatch({"kind": "alert", "n": i})
        resumable = [hub.can_resume(s) for s in range(12)]
        await hub.dispatch({"kind": "resync", "reason": "test"})  # a gap: nothing before
        return resumable, hub.can_resume(10)

    resumable, after_gap = asyncio.run(run())
    # seqs 6..10 are kept: since=5..10 can resume; older and future positions cannot.
    assert resumable == [False] * 5 + [True] * 6 + [False]
    assert after_gap is False


# -- Server-Sent Events ----------------------------------------------------------------------


def _parse_sse(text: str) -> list[tuple[str, str | None, Message]]:
    frames = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "data" in fields:
            frames.append((fields["event"], fields.get("id"), orjson.loads(fields["data"])))
    return frames


def test_sse_streams_the_same_messages_and_resumes_from_last_event_id(
    env: tuple[TestClient, FastAPI, Services], delft: CityModel
) -> None:
    c, app, _ = env
    a = _ids(delft, "Building", 1)[0]
    result: dict[str, httpx.Response] = {}

    def listen() -> None:
        result["r"] = c.get(f"/api/stream/sse?ids={a}&timeout=2")

    thread = threading.Thread(target=listen)
    thread.start()
    deadline = time.monotonic() + 10
    while not getattr(app.state, "stream_hub", None) or not app.state.stream_hub.clients:
        assert time.monotonic() < deadline, "SSE client never connected"
        time.sleep(0.02)
    _post(c, a, "pressure", 4.5, t=300.0)
    thread.join()
    r = result["r"]
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    frames = _parse_sse(r.text)
    for _, _, message in frames:
        StreamMessage.model_validate(message)
    (e0, id0, hello), (e1, id1, snap) = frames[:2]
    assert e0 == "hello" and id0 is None and hello["resumed"] is False
    assert e1 == "snapshot" and id1 == str(snap["seq"]) and set(snap["states"]) == {a}
    deltas = [(i, m) for e, i, m in frames if e == "delta"]
    assert deltas and deltas[-1][1]["updates"][-1]["value"] == 4.5
    assert deltas[-1][0] == str(deltas[-1][1]["seq"])

    # Reconnect as a browser does, with Last-Event-ID: the missed value is replayed.
    _post(c, a, "pressure", 5.5, t=301.0)
    r = c.get(
        f"/api/stream/sse?ids={a}&timeout=0.5",
        headers={"Last-Event-ID": deltas[-1][0]},
    )
    frames = _parse_sse(r.text)
    assert frames[0][2]["resumed"] is True
    assert [m["type"] for _, _, m in frames[:2]] == ["hello", "delta"]
    assert frames[1][2]["updates"] == [
        {"id": a, "property": "pressure", "value": 5.5, "time": 301.0, "source": "test"}
    ]


def test_sse_is_documented_and_validates_parameters(
    env: tuple[TestClient, FastAPI, Services],
) -> None:
    c, _, _ = env
    spec = c.get("/api/openapi.json").json()
    op = spec["paths"]["/api/stream/sse"]["get"]
    assert "text/event-stream" in op["responses"]["200"]["content"]
    assert {p["name"] for p in op["parameters"]} >= {"ids", "types", "bbox", "since", "timeout"}
    assert "Last-Event-ID" in op["description"]
    r = c.get("/api/stream/sse?bbox=9,9,1,1")
    assert r.status_code == 422 and r.json()["error"] == "invalid_query"


# -- two real workers ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _serve_command(db: str, port: int) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "twin"), "serve", "--db", db, "--port", str(port)]


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["nats", "redis"])
def test_a_delta_posted_to_one_worker_reaches_a_client_of_another(
    broker: str, tmp_path: Path, delft: CityModel
) -> None:
    import websockets.sync.client

    port = {"nats": 4222, "redis": 6379}[broker]
    if not _reachable(port):
        need(f"{broker} is not running on 127.0.0.1:{port}")
    unique = f"t{uuid.uuid4().hex}"
    bus = {
        "nats": f"nats://127.0.0.1:4222/{unique}",
        "redis": f"redis://127.0.0.1:6379/0?channel={unique}",
    }[broker]
    db = f"sqlite:///{tmp_path / 't.db'}"
    twin = str(ROOT / ".venv" / "bin" / "twin")
    subprocess.run([twin, "ingest", str(DELFT), "--db", db], check=True, capture_output=True)
    env = {**os.environ, "TWIN_BUS": bus, "TWIN_TOKENS": "feed-secret:feed"}
    ports = [_free_port(), _free_port()]
    procs = [
        subprocess.Popen(
            _serve_command(db, p),
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for p in ports
    ]
    try:
        for p, proc in zip(ports, procs, strict=True):
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
                try:
                    if httpx.get(f"http://127.0.0.1:{p}/api/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "worker did not start"
                time.sleep(0.1)
        worker_a, worker_b = ports
        a = _ids(delft, "Building", 1)[0]
        url = f"ws://127.0.0.1:{worker_b}/api/stream?ids={a}"
        with websockets.sync.client.connect(url, open_timeout=10) as ws:
            hello = orjson.loads(ws.recv(timeout=10))
            snap = orjson.loads(ws.recv(timeout=10))
            assert hello["type"] == "hello" and snap["type"] == "snapshot"
            assert snap["states"] == {a: {}}
            r = httpx.post(
                f"http://127.0.0.1:{worker_a}/api/state",
                json={"updates": [{"id": a, "property": "pressure", "value": 6.75}]},
                headers=FEED,
            )
            assert r.status_code == 200, r.text
            message = orjson.loads(ws.recv(timeout=10))
        assert message["type"] == "delta" and message["seq"] > hello["seq"]
        assert [(u["id"], u["property"], u["value"]) for u in message["updates"]] == [
            (a, "pressure", 6.75)
        ]
        # The other worker's hello names a different worker: sequences are per worker.
        with websockets.sync.client.connect(
            f"ws://127.0.0.1:{worker_a}/api/stream?ids={a}", open_timeout=10
        ) as ws:
            hello_a = orjson.loads(ws.recv(timeout=10))
            snap_a = orjson.loads(ws.recv(timeout=10))
        assert hello_a["worker"] != hello["worker"]
        assert snap_a["states"][a]["pressure"]["value"] == 6.75
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

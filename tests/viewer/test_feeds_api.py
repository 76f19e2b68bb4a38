"""The HTTP feed, dead letters, alerts and styles through the API (the engine really runs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from twin.objects import TwinObject
from viewer.app import create_app
from viewer.bootstrap import bootstrap
from viewer.settings import Settings

FEED = {"Authorization": "Bearer feed-secret"}
ENG = {"Authorization": "Bearer eng-secret"}
PLAN = {"Authorization": "Bearer plan-secret"}
T = 1_780_000_000.0

CONFIG = """
topic_template = "city/{object_id}/{property}"

[mapping.entities."urn:ngsi-ld:Junction:J1"]
object = "net:water:J-1"

[mapping.entities."datastream:7"]
object = "net:water:J-1"
property = "pressure"

[[alerts]]
name = "low-pressure"
rule = "pressure < 2.0 for 5m"
types = ["WaterJunction"]
severity = "critical"

[[styles]]
name = "pressure"
property = "pressure"
unit = "bar"
stops = [[0.0, "#d7191c"], [4.0, "#1a9641"]]
"""


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    cfg = tmp_path / "live.toml"
    cfg.write_text(CONFIG)
    services = bootstrap(
        Settings(
            db=f"sqlite:///{tmp_path / 't.db'}",
            tokens="feed-secret:feed,eng-secret:engineer,plan-secret:planner",
            config=str(cfg),
        )
    )
    services.store.put_objects(
        [TwinObject("net:water:J-1", "WaterJunction"), TwinObject("b1", "Building")]
    )
    with TestClient(create_app(services), raise_server_exceptions=False) as c:
        yield c
    services.store.close()


def post(c: TestClient, body: object | bytes, ctype: str = "application/json", feed: str = "http"):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return c.post(
        f"/api/feeds/{feed}/observations", content=data, headers={**FEED, "Content-Type": ctype}
    )


def test_json_batch_lands_and_reports(client: TestClient) -> None:
    r = post(
        client,
        [
            {"id": "b1", "property": "occupancy", "value": 12, "time": T},
            {"id": "b1", "property": "occupancy", "value": 14, "time": T + 60},
            {"id": "ghost", "property": "x", "value": 1, "time": T},
        ],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["stored"], body["rejected"]) == (2, 2, 1)
    obj = client.get("/api/objects/b1").json()
    assert (
        obj["state"]["occupancy"]["value"] == 14 and obj["state"]["occupancy"]["source"] == "http"
    )
    dead = client.get("/api/feeds/http/rejected").json()
    assert len(dead) == 1 and "ghost" in dead[0]["reason"]


def test_csv_ngsi_and_sensorthings_bodies(client: TestClient) -> None:
    csv = f"id,property,value,time\nb1,temp,21.5,{T}\nb1,temp,22.0,{T + 1}\n".encode()
    assert post(client, csv, "text/csv").json()["stored"] == 2
    ngsi = {
        "id": "urn:ngsi-ld:Junction:J1",
        "type": "Junction",
        "pressure": {"type": "Property", "value": 3.1, "observedAt": "2026-06-01T00:00:00Z"},
    }
    r = post(client, ngsi, "application/ld+json")
    assert r.json()["stored"] == 1, r.text
    st = {
        "result": 2.9,
        "phenomenonTime": "2026-06-01T00:05:00Z",
        "Datastream": {"@iot.id": 7},
    }
    r = post(client, st, feed="frost")
    assert r.json()["stored"] == 1, r.text
    state = client.get("/api/objects/net:water:J-1").json()["state"]
    assert state["pressure"]["value"] == 2.9


def test_feed_writes_need_the_feed_role(client: TestClient) -> None:
    url = "/api/feeds/http/observations"
    assert client.post(url, content=b"[]").status_code == 401
    assert client.post(url, content=b"[]", headers=PLAN).status_code == 403
    r = client.post(url, content=b"", headers=FEED)
    assert r.status_code == 400 and r.json()["error"]


def test_alert_fires_is_acknowledged_and_resolves(client: TestClient) -> None:
    for t, v in [(0, 1.5), (200, 1.4), (300, 1.2)]:
        post(client, [{"id": "net:water:J-1", "property": "pressure", "value": v, "time": T + t}])
    (alert,) = client.get("/api/alerts", params={"state": "open"}).json()
    assert alert["object_id"] == "net:water:J-1" and alert["severity"] == "critical"
    assert client.post(f"/api/alerts/{alert['id']}/ack").status_code == 401
    assert client.post(f"/api/alerts/{alert['id']}/ack", headers=PLAN).status_code == 403
    r = client.post(f"/api/alerts/{alert['id']}/ack", headers=ENG)
    assert r.status_code == 200 and r.json()["acknowledged_by"]
    assert client.post("/api/alerts/nope/ack", headers=ENG).status_code == 404
    post(client, [{"id": "net:water:J-1", "property": "pressure", "value": 3.0, "time": T + 400}])
    (done,) = client.get("/api/alerts", params={"state": "resolved"}).json()
    assert done["id"] == alert["id"] and done["acknowledged_by"] == r.json()["acknowledged_by"]
    assert client.get("/api/alerts", params={"state": "open"}).json() == []
    assert client.get("/api/alerts", params={"state": "bogus"}).status_code == 422


def test_styles_and_health(client: TestClient) -> None:
    rules = client.get("/api/styles").json()["rules"]
    assert rules == [
        {
            "name": "pressure",
            "property": "pressure",
            "unit": "bar",
            "stops": [[0.0, "#d7191c"], [4.0, "#1a9641"]],
        }
    ]
    post(client, [{"id": "b1", "property": "n", "value": 1, "time": T}])
    health = client.get("/api/healthz").json()
    assert health["engine"]["running"] is True and health["engine"]["updates"] >= 1
    assert health["feeds"] == []

"""Participation API: sessions, citizen tokens, comments, reactions, flags, moderation.

Runs the real app on a real SQLite store (participation tables in the same file) with the
in-process bus; checks roles on every write, closed sessions, rate limits, size limits,
unicode and XSS strings, moderation visibility, auto-hide, the public log and live events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sync.bus import InProcessBus, Subscription
from twin import participation
from viewer.app import create_app
from viewer.bootstrap import bootstrap
from viewer.deps import Services
from viewer.settings import Settings

PLAN = {"Authorization": "Bearer plan-secret"}
MOD = {"Authorization": "Bearer mod-secret"}
ENG = {"Authorization": "Bearer eng-secret"}
UNICODE = "Zu hoch! 🏢🌳👍🏽 — مرحبا، المبنى مرتفع جدا — 这栋楼太高了 — ‏עברית‏\n\tEnde"
XSS = [
    '<script>alert("xss")</script>',
    "<img src=x onerror=alert(1)>",
    "javascript:alert(1)//&lt;b&gt;",
    "\"'><svg/onload=alert`1`>",
]
CAMERA = {"position": [120.0, -40.5, 80.0], "target": [10.0, 20.0, 0.0], "fov": 50.0}
ANCHOR = {"object_id": "b1", "point": [10.25, 20.5, 31.0]}

Env = tuple[TestClient, Services]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    services = bootstrap(
        Settings(
            db=f"sqlite:///{tmp_path / 't.db'}",
            tokens="plan-secret:planner,mod-secret:moderator,eng-secret:engineer",
        )
    )
    assert services.participation is not None
    app: FastAPI = create_app(services, live=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, services
    services.participation.close()
    services.store.close()


def make_session(c: TestClient, **kw: Any) -> dict[str, Any]:
    body = {"title": "Tower at the station", **kw}
    r = c.post("/api/sessions", json=body, headers=PLAN)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def citizen(c: TestClient, sid: str) -> dict[str, str]:
    r = c.post(f"/api/sessions/{sid}/citizen")
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    return {"X-Citizen-Token": r.json()["token"]}


def comment(c: TestClient, sid: str, who: dict[str, str], **kw: Any) -> Any:
    return c.post(f"/api/sessions/{sid}/comments", json={"text": "hello", **kw}, headers=who)


def assert_error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert isinstance(body["message"], str) and body["message"]
    if code is not None:
        assert body["error"] == code
    return body


# --------------------------------------------------------------------------- sessions


def test_create_list_read_and_patch_session(env: Env) -> None:
    c, services = env
    s = make_session(
        c,
        description="A 60 m tower replaces the car park.",
        scenarios=["base", "tower"],
        opens_at="2020-01-01T00:00:00+01:00",
        closes_at=4_000_000_000,
        moderation="pre",
        categories=["height", "traffic"],
        flag_threshold=5,
    )
    assert s["status"] == "open" and s["opens_at"] == 1577833200.0
    assert (s["scenarios"], s["moderation"], s["flag_threshold"]) == (["base", "tower"], "pre", 5)
    assert s["categories"] == ["height", "traffic"]
    default = make_session(c, title="Park")
    assert default["scenarios"] == ["base"] and default["moderation"] == "post"
    assert default["categories"] == ["height", "traffic", "green space", "heritage", "other"]
    assert default["flag_threshold"] == 3 and default["closes_at"] is None
    upcoming = make_session(c, title="Later", opens_at=time.time() + 3600)
    assert upcoming["status"] == "upcoming"

    listed = c.get("/api/sessions").json()
    assert [x["id"] for x in listed] == [upcoming["id"], default["id"], s["id"]]
    assert [x["id"] for x in c.get("/api/sessions?status=upcoming").json()] == [upcoming["id"]]
    assert c.get(f"/api/sessions/{s['id']}").json() == s

    r = c.patch(f"/api/sessions/{s['id']}", json={"title": "Tower (revised)"}, headers=PLAN)
    assert r.status_code == 200 and r.json()["title"] == "Tower (revised)"
    r = c.patch(f"/api/sessions/{s['id']}", json={"close": True}, headers=PLAN)
    assert r.json()["status"] == "closed" and r.json()["closes_at"] <= time.time()
    assert c.get(f"/api/sessions/{s['id']}").json()["status"] == "closed"
    assert c.get("/api/sessions?status=closed").json()[0]["id"] == s["id"]
    audit = services.store.list_audit()
    assert [a.action for a in audit] == [
        "update_session",
        "update_session",
        "create_session",
        "create_session",
        "create_session",
    ]
    assert all(a.role == "planner" and a.actor.startswith("tok-") for a in audit)


def test_session_validation_errors(env: Env) -> None:
    c, _ = env
    for body in (
        {"title": ""},
        {"title": "x" * 201},
        {"title": "t", "opens_at": "2026-05-01T18:00:00"},  # no time zone
        {"title": "t", "opens_at": 100, "closes_at": 50},
        {"title": "t", "moderation": "sometimes"},
        {"title": "t", "flag_threshold": 0},
        {"title": "t", "scenarios": []},
        {"title": "t", "scenarios": ["bad name"]},
        {"title": "t", "unknown": 1},
        {"title": "t\x00"},
    ):
        assert_error(c.post("/api/sessions", json=body, headers=PLAN), 422)
    assert_error(c.get("/api/sessions/s-nope"), 404, "not_found")
    assert_error(c.patch("/api/sessions/s-nope", json={}, headers=PLAN), 404)
    r = c.post(
        "/api/sessions", content=b"{not json", headers={**PLAN, "Content-Type": "application/json"}
    )
    assert_error(r, 422)


# --------------------------------------------------------------------------- roles


def test_roles_enforced_on_every_write(env: Env) -> None:
    c, services = env
    s = make_session(c)
    sid = s["id"]
    who = citizen(c, sid)
    cid = comment(c, sid, who).json()["id"]
    auth_citizen = {"Authorization": "Citizen " + who["X-Citizen-Token"]}

    staff_writes = [
        ("post", "/api/sessions", {"title": "x"}),
        ("patch", f"/api/sessions/{sid}", {"title": "y"}),
        ("post", f"/api/comments/{cid}/moderation", {"action": "hide", "reason": "r"}),
    ]
    for method, url, body in staff_writes:
        assert_error(c.request(method, url, json=body), 401, "unauthorized")
        assert_error(c.request(method, url, json=body, headers=who), 403, "forbidden")
        assert_error(c.request(method, url, json=body, headers=auth_citizen), 403, "forbidden")
        assert_error(
            c.request(method, url, json=body, headers={"X-Citizen-Token": "ct_forged"}), 401
        )
        assert_error(
            c.request(method, url, json=body, headers={"Authorization": "Bearer nope"}), 401
        )
        assert_error(c.request(method, url, json=body, headers=ENG), 403, "forbidden")
    # planner may not moderate, moderator may not plan
    assert_error(c.post("/api/sessions", json={"title": "x"}, headers=MOD), 403)
    assert_error(
        c.post(
            f"/api/comments/{cid}/moderation", json={"action": "hide", "reason": "r"}, headers=PLAN
        ),
        403,
    )

    citizen_writes = [
        (f"/api/sessions/{sid}/comments", {"text": "x"}),
        (f"/api/comments/{cid}/reactions", {}),
        (f"/api/comments/{cid}/flags", {"reason": "spam"}),
    ]
    for url, body in citizen_writes:
        assert_error(c.post(url, json=body), 401, "unauthorized")
        assert_error(c.post(url, json=body, headers={"X-Citizen-Token": "ct_forged"}), 401)
        # API tokens do not comment: comments come from citizens
        assert_error(c.post(url, json=body, headers=PLAN), 403)
        assert_error(c.post(url, json=body, headers=MOD), 403)
    # Authorization: Citizen <t> works as well as the header
    r = c.post(f"/api/sessions/{sid}/comments", json={"text": "via auth"}, headers=auth_citizen)
    assert r.status_code == 201 and r.json()["author"] == comment(c, sid, who).json()["author"]

    # a token of another session is refused there
    other = make_session(c, title="Other")
    assert_error(comment(c, other["id"], who), 403)
    # nothing above reached the audit log except the planner's two sessions
    assert [a.action for a in services.store.list_audit()] == ["create_session", "create_session"]

    ok = c.post(
        f"/api/comments/{cid}/moderation", json={"action": "hide", "reason": "test"}, headers=MOD
    )
    assert ok.status_code == 200
    last = services.store.list_audit()[0]
    assert (last.action, last.role) == ("moderate_comment", "moderator")
    assert cid in last.detail and last.object_ids == ()


# --------------------------------------------------------------------------- closed sessions


def test_closed_and_upcoming_sessions_refuse_comments(env: Env) -> None:
    c, _ = env
    s = make_session(c)
    sid = s["id"]
    who = citizen(c, sid)
    cid = comment(c, sid, who).json()["id"]
    c.patch(f"/api/sessions/{sid}", json={"close": True}, headers=PLAN)
    body = assert_error(comment(c, sid, who), 403, "forbidden")
    assert "closed" in body["message"] and "accepts no more comments" in body["message"]
    assert_error(c.post(f"/api/comments/{cid}/reactions", headers=who), 403)
    assert_error(c.post(f"/api/comments/{cid}/flags", json={"reason": "x"}, headers=who), 403)
    assert_error(c.post(f"/api/sessions/{sid}/citizen"), 403)
    # reading and moderating still work after closing
    assert len(c.get(f"/api/sessions/{sid}/comments").json()) == 1
    r = c.post(
        f"/api/comments/{cid}/moderation", json={"action": "hide", "reason": "x"}, headers=MOD
    )
    assert r.status_code == 200

    later = make_session(c, title="Later", opens_at=time.time() + 3600)
    early = citizen(c, later["id"])  # tokens may be fetched before opening
    body = assert_error(comment(c, later["id"], early), 403)
    assert "not open yet" in body["message"]


# --------------------------------------------------------------------------- limits


def test_rate_limit_per_token_answers_429_with_retry_after(env: Env) -> None:
    c, _ = env
    sid = make_session(c)["id"]
    who = citizen(c, sid)
    n = participation.RATE_LIMITS["comment_per_token"][0]
    for i in range(n):
        assert comment(c, sid, who, text=f"c{i}").status_code == 201
    r = comment(c, sid, who, text="one too many")
    body = assert_error(r, 429, "rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert "retry in" in body["message"]
    # another citizen is not affected; the refused comment was not stored
    assert comment(c, sid, citizen(c, sid), text="other").status_code == 201
    texts = [x["text"] for x in c.get(f"/api/sessions/{sid}/comments").json()]
    assert "one too many" not in texts and len(texts) == n + 1


def test_rate_limit_per_ip(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    c, _ = env
    monkeypatch.setitem(participation.RATE_LIMITS, "post_per_ip", (3, 60.0))
    monkeypatch.setitem(participation.RATE_LIMITS, "citizen_per_ip", (3, 60.0))
    sid = make_session(c)["id"]
    a, b = citizen(c, sid), citizen(c, sid)
    cid = comment(c, sid, a).json()["id"]
    assert c.post(f"/api/comments/{cid}/reactions", headers=b).status_code == 200
    assert comment(c, sid, b).status_code == 201
    r = c.post(f"/api/comments/{cid}/reactions", headers=a)
    assert_error(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    citizen(c, sid)
    assert_error(c.post(f"/api/sessions/{sid}/citizen"), 429)  # token farming from one IP


def test_size_limits(env: Env) -> None:
    c, _ = env
    sid = make_session(c)["id"]
    who = citizen(c, sid)
    ok = comment(c, sid, who, text="x" * 2000)
    assert ok.status_code == 201 and len(ok.json()["text"]) == 2000
    # 2000 characters, not bytes: emoji count one each
    assert comment(c, sid, who, text="🏢" * 2000).status_code == 201
    assert_error(comment(c, sid, who, text="x" * 2001), 422, "invalid_request")
    assert_error(comment(c, sid, who, text=""), 422)
    r = c.post(
        f"/api/sessions/{sid}/comments",
        content=json.dumps({"text": "x" * 2_000_000}).encode(),
        headers={**who, "Content-Type": "application/json"},
    )
    assert_error(r, 413, "too_large")
    cid = ok.json()["id"]
    assert_error(c.post(f"/api/comments/{cid}/flags", json={"reason": "r" * 501}, headers=who), 422)
    assert_error(c.post(f"/api/comments/{cid}/flags", json={"reason": ""}, headers=who), 422)


def test_comment_validation(env: Env) -> None:
    c, _ = env
    sid = make_session(c, scenarios=["base", "tower"], categories=["height"])["id"]
    who = citizen(c, sid)
    cases: list[dict[str, Any]] = [
        {"text": "bell\x07"},
        {"text": "nul\x00"},
        {"text": "cr\r\n"},
        {"text": "   "},
        {"text": "x", "category": "traffic"},
        {"text": "x", "scenario": "park"},
        {"text": "x", "anchor": {}},
        {"text": "x", "anchor": {"point": [1, 2]}},
        {"text": "x", "anchor": {"point": [1, 2, 1e12]}},
        {"text": "x", "camera": {"position": [0, 0, 0], "target": [1, 1, 1], "fov": 0}},
        {"text": "x", "camera": {"position": [0, 0, 0]}},
        {"text": "x", "extra": True},
        {"text": 5},
    ]
    for body in cases:
        r = c.post(f"/api/sessions/{sid}/comments", json=body, headers=who)
        assert_error(r, 422)
    r = c.post(
        f"/api/sessions/{sid}/comments",
        content=b'{"text": "lone \\ud800 surrogate"}',
        headers={**who, "Content-Type": "application/json"},
    )
    assert_error(r, 422)
    assert c.get(f"/api/sessions/{sid}/comments").json() == []


# --------------------------------------------------------------------------- content


def test_unicode_round_trip(env: Env) -> None:
    c, _ = env
    sid = make_session(c, categories=["green space", "höhe ↑", "交通"])["id"]
    who = citizen(c, sid)
    r = comment(c, sid, who, text=UNICODE, category="交通", anchor=ANCHOR, camera=CAMERA)
    assert r.status_code == 201
    created = r.json()
    assert created["text"] == UNICODE and created["category"] == "交通"
    listed = c.get(f"/api/sessions/{sid}/comments").json()
    assert listed == [created]
    got = c.get(f"/api/comments/{created['id']}").json()
    assert got["text"] == UNICODE
    assert got["anchor"] == ANCHOR and got["camera"] == CAMERA
    assert got["scenario"] == "base" and got["state"] == "visible"
    assert "flags" not in got  # moderators only


def test_xss_strings_are_stored_and_returned_verbatim_as_json(env: Env) -> None:
    c, _ = env
    sid = make_session(c)["id"]
    who = citizen(c, sid)
    for payload in XSS:
        assert comment(c, sid, who, text=payload).status_code == 201
    r = c.get(f"/api/sessions/{sid}/comments")
    assert r.headers["content-type"] == "application/json"
    assert [x["text"] for x in r.json()] == XSS
    # JSON strings, not HTML: the payload is in the body exactly as json encodes it
    for payload in XSS:
        assert json.dumps(payload, ensure_ascii=False)[1:-1].encode() in r.content
    flagged = c.post(
        f"/api/comments/{r.json()[0]['id']}/flags", json={"reason": XSS[1]}, headers=who
    )
    assert flagged.status_code == 200


# --------------------------------------------------------------------------- moderation


def test_pre_moderation_visibility(env: Env) -> None:
    c, _ = env
    sid = make_session(c, moderation="pre")["id"]
    author, other = citizen(c, sid), citizen(c, sid)
    r = comment(c, sid, author, text="please review me")
    assert r.status_code == 201 and r.json()["state"] == "pending"
    cid = r.json()["id"]
    url = f"/api/sessions/{sid}/comments"
    assert c.get(url).json() == []
    assert c.get(url, headers=other).json() == []
    assert [x["id"] for x in c.get(url, headers=author).json()] == [cid]
    assert [x["state"] for x in c.get(url, headers=MOD).json()] == ["pending"]
    assert [x["id"] for x in c.get(url + "?state=pending", headers=MOD).json()] == [cid]
    assert c.get(url + "?state=visible", headers=MOD).json() == []
    assert_error(c.get(url + "?state=pending"), 403)
    assert_error(c.get(url + "?state=pending", headers=author), 403)
    assert_error(c.get(url + "?state=pending", headers=ENG), 403)  # engineer reads as public
    assert_error(c.get(f"/api/comments/{cid}"), 404)
    assert c.get(f"/api/comments/{cid}", headers=author).status_code == 200
    # nobody reacts to or flags what is not public
    assert_error(c.post(f"/api/comments/{cid}/reactions", headers=other), 404)

    r = c.post(
        f"/api/comments/{cid}/moderation", json={"action": "approve", "reason": "ok"}, headers=MOD
    )
    assert r.status_code == 200 and r.json()["state"] == "visible"
    assert [x["id"] for x in c.get(url).json()] == [cid]
    again = c.post(
        f"/api/comments/{cid}/moderation", json={"action": "approve", "reason": "x"}, headers=MOD
    )
    assert_error(again, 409, "conflict")
    assert_error(
        c.post(
            "/api/comments/c-nope/moderation", json={"action": "hide", "reason": "x"}, headers=MOD
        ),
        404,
    )


def test_post_moderation_hide_and_log_without_text(env: Env) -> None:
    c, _ = env
    sid = make_session(c)["id"]
    who = citizen(c, sid)
    secret = "SECRET-insult-text-🤬"
    r = comment(c, sid, who, text=secret)
    assert r.json()["state"] == "visible"
    cid = r.json()["id"]
    url = f"/api/sessions/{sid}/comments"
    assert [x["id"] for x in c.get(url).json()] == [cid]
    r = c.post(
        f"/api/comments/{cid}/moderation",
        json={"action": "hide", "reason": "personal attack"},
        headers=MOD,
    )
    assert r.status_code == 200
    assert c.get(url).json() == []
    assert c.get(url, headers=who).json() == []  # hidden, even for its author
    assert [x["state"] for x in c.get(url, headers=MOD).json()] == ["hidden"]
    log = c.get(f"/api/sessions/{sid}/moderation-log")
    assert log.status_code == 200
    (entry,) = log.json()
    assert entry["comment_id"] == cid and entry["action"] == "hide"
    assert entry["reason"] == "personal attack" and entry["moderator"].startswith("tok-")
    assert entry["state"] == "hidden" and isinstance(entry["time"], float)
    assert "text" not in entry
    assert secret.encode() not in log.content
    assert "SECRET" not in log.text


def test_auto_hide_after_flag_threshold(env: Env) -> None:
    c, _ = env
    sid = make_session(c, flag_threshold=2)["id"]
    author, f1, f2 = citizen(c, sid), citizen(c, sid), citizen(c, sid)
    cid = comment(c, sid, author, text="controversial").json()["id"]
    url = f"/api/sessions/{sid}/comments"
    r = c.post(f"/api/comments/{cid}/flags", json={"reason": "spam"}, headers=f1)
    assert r.json() == {"comment_id": cid, "added": True}
    r = c.post(f"/api/comments/{cid}/flags", json={"reason": "spam again"}, headers=f1)
    assert r.json() == {"comment_id": cid, "added": False}  # one flag per token
    assert len(c.get(url).json()) == 1
    c.post(f"/api/comments/{cid}/flags", json={"reason": "offensive"}, headers=f2)
    assert c.get(url).json() == []
    (held,) = c.get(url + "?state=hidden_pending_review", headers=MOD).json()
    assert held["id"] == cid and held["flags"] == 2 and held["reviewed"] is False
    (entry,) = c.get(f"/api/sessions/{sid}/moderation-log").json()
    assert (entry["action"], entry["moderator"], entry["state"]) == (
        "auto_hide",
        "system",
        "hidden_pending_review",
    )
    assert "controversial" not in json.dumps(entry)
    # the moderator reinstates it; later flags do not hide it again
    c.post(
        f"/api/comments/{cid}/moderation", json={"action": "approve", "reason": "fine"}, headers=MOD
    )
    f3 = citizen(c, sid)
    c.post(f"/api/comments/{cid}/flags", json={"reason": "still"}, headers=f3)
    assert [x["id"] for x in c.get(url).json()] == [cid]


def test_reply_threading(env: Env) -> None:
    c, _ = env
    sid = make_session(c, scenarios=["base", "tower"])["id"]
    a, b = citizen(c, sid), citizen(c, sid)
    top = comment(c, sid, a, text="too tall", scenario="tower", anchor=ANCHOR).json()
    reply = comment(c, sid, b, text="agreed", parent_id=top["id"]).json()
    nested = comment(c, sid, a, text="thanks", parent_id=reply["id"]).json()
    assert reply["parent_id"] == top["id"] and reply["scenario"] == "tower"
    assert nested["parent_id"] == reply["id"]
    listed = c.get(f"/api/sessions/{sid}/comments").json()
    assert [(x["id"], x["parent_id"]) for x in listed] == [
        (top["id"], None),
        (reply["id"], top["id"]),
        (nested["id"], reply["id"]),
    ]
    assert_error(comment(c, sid, a, parent_id="c-nope"), 422)
    other = make_session(c, title="Other")["id"]
    foreign = comment(c, other, citizen(c, other)).json()["id"]
    assert_error(comment(c, sid, a, parent_id=foreign), 422)
    c.post(
        f"/api/comments/{top['id']}/moderation", json={"action": "hide", "reason": "x"}, headers=MOD
    )
    assert_error(comment(c, sid, b, parent_id=top["id"]), 422)  # no replies to hidden ones


def test_filters_on_comment_list(env: Env) -> None:
    c, _ = env
    sid = make_session(c, scenarios=["base", "tower"])["id"]
    a, b = citizen(c, sid), citizen(c, sid)
    c1 = comment(c, sid, a, anchor={"object_id": "b1"}).json()
    c2 = comment(c, sid, b, anchor={"object_id": "b2"}, scenario="tower").json()
    url = f"/api/sessions/{sid}/comments"
    assert [x["id"] for x in c.get(url, params={"scenario": "tower"}).json()] == [c2["id"]]
    assert [x["id"] for x in c.get(url, params={"object_id": "b1"}).json()] == [c1["id"]]
    assert [x["id"] for x in c.get(url, params={"since": c1["created"]}).json()] == [c2["id"]]
    assert len(c.get(url, params={"limit": 1}).json()) == 1
    assert_error(c.get(url, params={"limit": 0}), 422)
    assert_error(c.get(url, params={"state": "deleted"}, headers=MOD), 422)
    assert_error(c.get("/api/sessions/s-nope/comments"), 404)
    assert_error(c.get(url, headers={"X-Citizen-Token": "ct_forged"}), 401)


def test_reactions_are_idempotent_per_token(env: Env) -> None:
    c, _ = env
    sid = make_session(c)["id"]
    a, b = citizen(c, sid), citizen(c, sid)
    cid = comment(c, sid, a).json()["id"]
    r1 = c.post(f"/api/comments/{cid}/reactions", json={"kind": "+1"}, headers=b)
    r2 = c.post(f"/api/comments/{cid}/reactions", headers=b)
    assert r1.json() == {"comment_id": cid, "added": True, "reactions": 1}
    assert r2.json() == {"comment_id": cid, "added": False, "reactions": 1}
    r3 = c.post(f"/api/comments/{cid}/reactions", headers=a)
    assert r3.json()["reactions"] == 2
    assert c.get(f"/api/comments/{cid}").json()["reactions"] == 2
    assert_error(c.post(f"/api/comments/{cid}/reactions", json={"kind": "-1"}, headers=a), 422)
    assert_error(c.post("/api/comments/c-nope/reactions", headers=a), 404)


# --------------------------------------------------------------------------- live events


def test_live_bus_events_for_comments_and_moderation(env: Env) -> None:
    c, services = env
    assert isinstance(services.bus, InProcessBus)
    assert c.portal is not None
    sid = make_session(c)["id"]
    pre = make_session(c, title="Pre", moderation="pre")["id"]
    who, pre_who = citizen(c, sid), citizen(c, pre)

    async def subscribe() -> Subscription:
        sub = services.bus.subscribe()
        assert isinstance(sub, Subscription)
        await sub.start()
        return sub

    sub = c.portal.call(subscribe)

    async def next_event() -> dict[str, Any]:
        return await asyncio.wait_for(sub.__anext__(), 5.0)

    try:
        secret = "live pin ✨ <b>bold</b>"
        posted = comment(c, sid, who, text=secret, anchor=ANCHOR, camera=CAMERA).json()
        ev = c.portal.call(next_event)
        assert ev["kind"] == "comment" and ev["session"] == sid
        assert ev["comment"] == posted and ev["comment"]["anchor"] == ANCHOR

        # a pending comment is not broadcast; its approval is, with the comment
        pending = comment(c, pre, pre_who, text="waiting").json()
        c.post(
            f"/api/comments/{pending['id']}/moderation",
            json={"action": "approve", "reason": "ok"},
            headers=MOD,
        )
        ev = c.portal.call(next_event)
        assert ev["kind"] == "moderation" and ev["session"] == pre
        assert ev["state"] == "visible" and ev["comment"]["text"] == "waiting"
        assert ev["entry"]["action"] == "approve"

        # hiding tells every viewer to drop the pin, without the text
        c.post(
            f"/api/comments/{posted['id']}/moderation",
            json={"action": "hide", "reason": "off topic"},
            headers=MOD,
        )
        ev = c.portal.call(next_event)
        assert ev["kind"] == "moderation" and ev["comment_id"] == posted["id"]
        assert ev["state"] == "hidden" and "comment" not in ev
        assert secret not in json.dumps(ev)
    finally:
        c.portal.call(sub.aclose)


# --------------------------------------------------------------------------- OpenAPI


def test_openapi_documents_every_route_with_errors(env: Env) -> None:
    c, _ = env
    doc = c.get("/api/openapi.json").json()
    expected = {
        ("/api/sessions", "post"): {"401", "403", "422"},
        ("/api/sessions", "get"): {"422"},
        ("/api/sessions/{session_id}", "get"): {"404"},
        ("/api/sessions/{session_id}", "patch"): {"401", "403", "404", "422"},
        ("/api/sessions/{session_id}/citizen", "post"): {"403", "404", "429"},
        ("/api/sessions/{session_id}/comments", "post"): {"401", "403", "404", "413", "422", "429"},
        ("/api/sessions/{session_id}/comments", "get"): {"401", "403", "404"},
        ("/api/comments/{comment_id}", "get"): {"404"},
        ("/api/comments/{comment_id}/reactions", "post"): {"401", "403", "404", "429"},
        ("/api/comments/{comment_id}/flags", "post"): {"401", "403", "404", "429"},
        ("/api/comments/{comment_id}/moderation", "post"): {"401", "403", "404", "409"},
        ("/api/sessions/{session_id}/moderation-log", "get"): {"404"},
    }
    for (path, method), codes in expected.items():
        op = doc["paths"][path][method]
        assert op["summary"], (path, method)
        assert codes <= set(op["responses"]), (path, method, set(op["responses"]))
        for code in codes:
            schema = op["responses"][code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    params = doc["paths"]["/api/sessions/{session_id}/comments"]["post"]["parameters"]
    assert any(p["name"] == "X-Citizen-Token" and p["in"] == "header" for p in params)

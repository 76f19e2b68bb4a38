"""Participation: the pure rules, and the ParticipationStore contract over every store.

The store suite runs over memory, SQLite (its own connection to the SqliteStore's file,
next to a live SqliteStore) and the real PostgreSQL (a throwaway schema per run; skipped
when unreachable, failed in CI).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from twin.errors import Forbidden, NotFound, TwinError
from twin.participation import (
    DEFAULT_CATEGORIES,
    Citizen,
    Comment,
    Flag,
    InvalidInput,
    InvalidTransition,
    RateLimit,
    RateLimited,
    RateLimiter,
    Reaction,
    Session,
    SessionClosed,
    after_flag,
    check_text,
    edit_session,
    hash_token,
    issue_citizen,
    moderate,
    new_comment,
    new_session,
    pseudonym,
    visible_to,
)
from twin.state import StateUpdate
from twin.store import MemoryStore, StateStore, open_store
from twin.store.participation import (
    MemoryParticipationStore,
    ParticipationStore,
    PostgresParticipationStore,
    SqliteParticipationStore,
    participation_store_for,
)
from twin.store.sqlite import SqliteStore

T0 = 1_780_000_000.0
UNICODE = "Zu hoch! 🏢🌳 مرحبا بالعالم — 太高了，挡住阳光 — ‏עברית‏\n\tfin"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'


# --------------------------------------------------------------------------- domain


def _session(**kw: object) -> Session:
    args: dict[str, object] = {"title": "Tower at the station", "now": T0}
    args.update(kw)
    return new_session(**args)  # type: ignore[arg-type]


def _citizen(s: Session, now: float = T0) -> tuple[str, Citizen]:
    return issue_citizen(s, now)


def test_new_session_defaults_and_status() -> None:
    s = _session(closes_at=T0 + 3600)
    assert s.id.startswith("s-")
    assert s.scenarios == ("base",)
    assert s.categories == DEFAULT_CATEGORIES
    assert s.moderation == "post" and s.flag_threshold == 3
    assert s.status(T0 - 1) == "upcoming"
    assert s.status(T0) == "open"
    assert s.status(T0 + 3600) == "closed"
    assert Session.from_dict(s.as_dict()) == s


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "a\x00b"}, "title"),
        ({"closes_at": T0 - 1}, "closes_at"),
        ({"moderation": "later"}, "moderation"),
        ({"flag_threshold": 0}, "flag_threshold"),
        ({"scenarios": []}, "scenarios"),
        ({"scenarios": ["a", "a"]}, "scenarios"),
        ({"categories": ["x", "x"]}, "categories"),
    ],
)
def test_new_session_refuses(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        _session(**kw)
    assert e.value.field == field


def test_edit_session_close_early_and_reschedule() -> None:
    s = _session(closes_at=T0 + 3600)
    closed = edit_session(s, close=True, now=T0 + 10)
    assert closed.closes_at == T0 + 10 and closed.status(T0 + 10) == "closed"
    assert closed.updated == T0 + 10
    reopened = edit_session(closed, closes_at=None, now=T0 + 20)
    assert reopened.closes_at is None and reopened.status(T0 + 10**6) == "open"
    titled = edit_session(s, title="New title", now=T0 + 1)
    assert titled.title == "New title" and titled.closes_at == T0 + 3600
    # An upcoming session closed early never opens.
    future = _session(opens_at=T0 + 100)
    shut = edit_session(future, close=True, now=T0)
    assert shut.status(T0) == "closed" and shut.status(T0 + 200) == "closed"


def test_check_text_bounds_and_characters() -> None:
    assert check_text(UNICODE, "text", 2000) == UNICODE  # stored as given
    assert check_text(XSS, "text", 2000) == XSS
    assert check_text("x" * 2000, "text", 2000) == "x" * 2000
    for bad in ("", "   \n", "x" * 2001, "a\x00", "a\rb", "a\x1bb", "a\ud800b", "\x7f"):
        with pytest.raises(InvalidInput):
            check_text(bad, "text", 2000)
    with pytest.raises(InvalidInput, match="U\\+0007 at position 1"):
        check_text("a\x07", "text", 10)


def test_citizen_tokens_are_random_hashed_and_pseudonymous() -> None:
    s = _session()
    t1, c1 = _citizen(s)
    t2, c2 = _citizen(s)
    assert t1 != t2 and len(t1) > 40
    assert c1.token_hash == hash_token(t1) and t1 not in c1.token_hash
    assert c1.pseudonym == pseudonym(c1.token_hash) != c2.pseudonym
    assert c1.pseudonym.startswith("citizen-") and t1[3:13] not in c1.pseudonym
    closed = edit_session(s, close=True, now=T0 + 1)
    with pytest.raises(SessionClosed):
        issue_citizen(closed, T0 + 2)


def test_new_comment_states_anchor_camera_and_rules() -> None:
    post = _session(scenarios=["base", "tower"], closes_at=T0 + 100)
    _, who = _citizen(post)
    c = new_comment(
        post,
        who,
        text=UNICODE,
        category="height",
        anchor={"object_id": "b1", "point": [1.5, 2, -3]},
        camera={"position": [10, 20, 30], "target": [0, 0, 0], "fov": 45},
        scenario="tower",
        now=T0 + 1,
    )
    assert c.state == "visible" and c.author == who.pseudonym and c.text == UNICODE
    assert c.anchor is not None and c.anchor.point == (1.5, 2.0, -3.0)
    assert c.camera is not None and c.camera.fov == 45
    assert c.object_id == "b1"
    reply = new_comment(post, who, text="agree", parent=c, now=T0 + 2)
    assert reply.parent_id == c.id and reply.scenario == "tower"  # the parent's scenario
    pre = _session(moderation="pre")
    _, who_pre = _citizen(pre)
    assert new_comment(pre, who_pre, text="hi", now=T0 + 1).state == "pending"

    bad: list[dict[str, object]] = [
        {"category": "weather"},
        {"scenario": "other"},
        {"anchor": {}},
        {"anchor": {"point": [1, 2]}},
        {"anchor": {"point": [1, 2, float("nan")]}},
        {"anchor": {"point": [1, 2, 1e300]}},
        {"camera": {"position": [0, 0, 0], "target": [0, 0, 0], "fov": 200}},
        {"camera": {"position": [0, 0, 0]}},
    ]
    for kw in bad:
        with pytest.raises(InvalidInput):
            new_comment(post, who, text="x", now=T0 + 1, **kw)  # type: ignore[arg-type]
    with pytest.raises(SessionClosed, match="closed"):
        new_comment(post, who, text="late", now=T0 + 100)
    with pytest.raises(SessionClosed, match="not open yet"):
        new_comment(post, who, text="early", now=T0 - 1)
    with pytest.raises(Forbidden):
        new_comment(pre, who, text="wrong session", now=T0 + 1)
    with pytest.raises(InvalidInput, match="parent_id"):
        new_comment(pre, who_pre, text="x", parent=c, now=T0 + 1)


def test_moderation_transitions() -> None:
    s = _session(moderation="pre")
    _, who = _citizen(s)
    c = new_comment(s, who, text="hello", now=T0)
    approved, e = moderate(c, "approve", "fine", "tok-mod", T0 + 1)
    assert approved.state == "visible" and approved.reviewed
    assert (e.action, e.state, e.moderator, e.reason) == ("approve", "visible", "tok-mod", "fine")
    with pytest.raises(InvalidTransition):
        moderate(approved, "approve", "again", "tok-mod", T0 + 2)
    hidden, e2 = moderate(approved, "hide", "insult", "tok-mod", T0 + 3)
    assert hidden.state == "hidden" and e2.state == "hidden"
    with pytest.raises(InvalidTransition):
        moderate(hidden, "hide", "again", "tok-mod", T0 + 4)
    assert moderate(hidden, "approve", "on appeal", "tok-mod", T0 + 5)[0].state == "visible"
    with pytest.raises(InvalidInput):
        moderate(c, "delete", "x", "tok-mod", T0)
    with pytest.raises(InvalidInput):
        moderate(c, "hide", "", "tok-mod", T0)


def test_after_flag_hides_at_threshold_unless_reviewed() -> None:
    s = _session()
    _, who = _citizen(s)
    c = new_comment(s, who, text="hello", now=T0)
    two, e = after_flag(replace(c, flags=2), 3, T0 + 1)
    assert two.state == "visible" and e is None
    three, e = after_flag(replace(c, flags=3), 3, T0 + 1)
    assert three.state == "hidden_pending_review"
    assert e is not None and e.action == "auto_hide" and e.moderator == "system"
    assert "hello" not in e.reason
    reviewed = replace(c, flags=10, reviewed=True)
    assert after_flag(reviewed, 3, T0)[0].state == "visible"


def test_visible_to() -> None:
    s = _session(moderation="pre")
    _, who = _citizen(s)
    c = new_comment(s, who, text="hello", now=T0)
    assert not visible_to(c, None, False)
    assert not visible_to(c, "citizen-other", False)
    assert visible_to(c, who.pseudonym, False)
    assert visible_to(c, None, True)
    hidden = replace(c, state="hidden")
    assert not visible_to(hidden, who.pseudonym, False)


def test_rate_limiter_window_and_all_or_nothing() -> None:
    rl = RateLimiter()
    tok, ip = RateLimit("tok:a", 2, 60.0), RateLimit("ip:1", 3, 60.0)
    rl.hit([tok, ip], now=0.0)
    rl.hit([tok, ip], now=10.0)
    with pytest.raises(RateLimited) as e:
        rl.hit([tok, ip], now=20.0)
    assert e.value.retry_after == pytest.approx(40.0)
    # The refused request used no IP quota: another token from the same IP still passes.
    rl.hit([RateLimit("tok:b", 2, 60.0), ip], now=20.0)
    with pytest.raises(RateLimited):
        rl.hit([RateLimit("tok:c", 2, 60.0), ip], now=21.0)
    rl.hit([tok, ip], now=61.0)  # the first hits left the window
    small = RateLimiter(max_keys=2)
    for i in range(5):
        small.hit([RateLimit(f"k{i}", 1, 60.0)], now=0.0)
    assert len(small._hits) == 2


# --------------------------------------------------------------------------- stores


def _pg_truncate(url: str) -> None:
    import psycopg

    from twin.store.postgres import _split_url

    conninfo, schema, _ = _split_url(url)
    tables = ", ".join(
        f'"{schema}".participation_{t}'
        for t in ("sessions", "citizens", "comments", "reactions", "flags", "moderation")
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY")


STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[StateStore, ParticipationStore]]:
    """A StateStore and its participation store (by the factory), both empty."""
    state: StateStore
    if request.param == "memory":
        state = MemoryStore()
    elif request.param == "sqlite":
        state = SqliteStore(f"sqlite:///{tmp_path / 'twin.db'}")
    else:
        url = request.getfixturevalue("pg_url")
        state = open_store(url)
        participation_store_for(state).close()  # the tables exist before truncating
        _pg_truncate(url)
    p = participation_store_for(state)
    yield state, p
    p.close()
    state.close()


@pytest.fixture
def ps(pair: tuple[StateStore, ParticipationStore]) -> ParticipationStore:
    return pair[1]


def test_factory_picks_the_matching_store(
    pair: tuple[StateStore, ParticipationStore],
) -> None:
    state, p = pair
    expected = {
        MemoryStore: MemoryParticipationStore,
        SqliteStore: SqliteParticipationStore,
    }.get(type(state), PostgresParticipationStore)
    assert type(p) is expected
    assert isinstance(p, ParticipationStore)

    class Other:
        url = "other://"

    with pytest.raises(TwinError, match="no participation store"):
        participation_store_for(Other())  # type: ignore[arg-type]


def _setup(ps: ParticipationStore, **kw: object) -> tuple[Session, Citizen, Citizen]:
    s = _session(**kw)
    ps.create_session(s)
    _, a = _citizen(s)
    _, b = _citizen(s)
    ps.add_citizen(a)
    ps.add_citizen(b)
    return s, a, b


def test_store_sessions_round_trip(ps: ParticipationStore) -> None:
    s1 = _session(title="First 🏗️", now=T0)
    s2 = _session(title="Second", now=T0 + 1, scenarios=["base", "tower"], moderation="pre")
    ps.create_session(s1)
    ps.create_session(s2)
    assert ps.get_session(s1.id) == s1
    assert ps.get_session("s-none") is None
    assert [s.id for s in ps.list_sessions()] == [s2.id, s1.id]
    assert [s.id for s in ps.list_sessions(limit=1)] == [s2.id]
    with pytest.raises(TwinError):
        ps.create_session(s1)
    closed = edit_session(s1, close=True, now=T0 + 5)
    ps.save_session(closed)
    assert ps.get_session(s1.id) == closed
    with pytest.raises(NotFound):
        ps.save_session(_session())


def test_store_citizens(ps: ParticipationStore) -> None:
    _, a, _ = _setup(ps)
    assert ps.get_citizen(a.token_hash) == a
    assert ps.get_citizen(hash_token("ct_guess")) is None


def test_store_comments_unicode_xss_filters_and_order(ps: ParticipationStore) -> None:
    s, a, b = _setup(ps, scenarios=["base", "tower"])
    c1 = new_comment(
        s,
        a,
        text=UNICODE,
        anchor={"object_id": "b1", "point": [1.25, 2.5, 3.75]},
        camera={"position": [1, 2, 3], "target": [4, 5, 6]},
        category="green space",
        now=T0 + 1,
    )
    c2 = new_comment(s, b, text=XSS, scenario="tower", anchor={"object_id": "b2"}, now=T0 + 2)
    c3 = new_comment(s, b, text="reply", parent=c1, now=T0 + 2)  # same time as c2
    for c in (c1, c2, c3):
        ps.add_comment(c)
    got = ps.get_comment(c1.id)
    assert got == c1 and got is not None and got.text == UNICODE
    assert ps.get_comment(c2.id) == c2 and ps.get_comment(c2.id).text == XSS  # type: ignore[union-attr]
    assert ps.get_comment("c-none") is None

    def ids(cs: list[Comment]) -> list[str]:
        return [c.id for c in cs]

    assert ids(ps.list_comments(s.id)) == [c1.id, c2.id, c3.id]
    assert ids(ps.list_comments(s.id, scenario="tower")) == [c2.id]
    assert ids(ps.list_comments(s.id, object_id="b1")) == [c1.id]
    assert ids(ps.list_comments(s.id, since=T0 + 1)) == [c2.id, c3.id]
    assert ids(ps.list_comments(s.id, limit=2)) == [c1.id, c2.id]
    assert ps.list_comments("s-other") == []
    assert ps.list_comments(s.id)[2].parent_id == c1.id


def test_store_visibility_filter_with_own_pending(ps: ParticipationStore) -> None:
    s, a, b = _setup(ps, moderation="pre")
    pa = new_comment(s, a, text="a's", now=T0 + 1)
    pb = new_comment(s, b, text="b's", now=T0 + 2)
    ps.add_comment(pa)
    ps.add_comment(pb)
    assert ps.list_comments(s.id, states=("visible",)) == []
    assert [c.id for c in ps.list_comments(s.id, states=("visible",), author=a.pseudonym)] == [
        pa.id
    ]
    assert [c.id for c in ps.list_comments(s.id, states=("pending",))] == [pa.id, pb.id]
    assert ps.list_comments(s.id, states=()) == []
    ps.moderate(pb.id, "approve", "ok", "tok-mod", T0 + 3)
    visible = ps.list_comments(s.id, states=("visible",), author=a.pseudonym)
    assert [(c.id, c.state) for c in visible] == [(pa.id, "pending"), (pb.id, "visible")]


def test_store_reactions_idempotent_per_author(ps: ParticipationStore) -> None:
    s, a, b = _setup(ps)
    c = new_comment(s, a, text="x", now=T0)
    ps.add_comment(c)
    assert ps.add_reaction(Reaction(c.id, a.pseudonym, T0))[0] is True
    added, again = ps.add_reaction(Reaction(c.id, a.pseudonym, T0 + 1))
    assert added is False and again.reactions == 1
    added, after_b = ps.add_reaction(Reaction(c.id, b.pseudonym, T0 + 2))
    assert added and after_b.reactions == 2
    assert ps.get_comment(c.id).reactions == 2  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        ps.add_reaction(Reaction("c-none", a.pseudonym, T0))


def test_store_flags_auto_hide_and_log_without_text(ps: ParticipationStore) -> None:
    s, a, b = _setup(ps, flag_threshold=2)
    secret = "the text that must never appear in the log"
    c = new_comment(s, a, text=secret, now=T0)
    ps.add_comment(c)
    first = ps.add_flag(Flag(c.id, b.pseudonym, "rude", T0 + 1), s.flag_threshold)
    assert first.added and first.entry is None and first.comment.flags == 1
    again = ps.add_flag(Flag(c.id, b.pseudonym, "rude!", T0 + 2), s.flag_threshold)
    assert not again.added and again.comment.flags == 1
    second = ps.add_flag(Flag(c.id, a.pseudonym, "spam", T0 + 3), s.flag_threshold)
    assert second.added and second.comment.state == "hidden_pending_review"
    assert second.entry is not None and second.entry.action == "auto_hide"
    stored = ps.get_comment(c.id)
    assert stored is not None and stored.state == "hidden_pending_review" and stored.flags == 2
    log = ps.moderation_log(s.id)
    assert [(e.action, e.moderator, e.state) for e in log] == [
        ("auto_hide", "system", "hidden_pending_review")
    ]
    assert all(secret not in str(e.as_dict()) for e in log)
    # A moderator reinstates it; flags no longer hide it.
    ps.moderate(c.id, "approve", "not rude", "tok-mod", T0 + 4)
    _, d = _citizen(s)
    ps.add_citizen(d)
    third = ps.add_flag(Flag(c.id, d.pseudonym, "still rude", T0 + 5), s.flag_threshold)
    assert third.added and third.comment.state == "visible" and third.comment.flags == 3
    assert [e.action for e in ps.moderation_log(s.id)] == ["approve", "auto_hide"]
    with pytest.raises(NotFound):
        ps.add_flag(Flag("c-none", a.pseudonym, "x", T0), 3)


def test_store_moderation_is_atomic_and_logged(ps: ParticipationStore) -> None:
    s, a, _ = _setup(ps, moderation="pre")
    c = new_comment(s, a, text="hello", now=T0)
    ps.add_comment(c)
    new, entry = ps.moderate(c.id, "hide", "off topic", "tok-mod", T0 + 1)
    assert new.state == "hidden" and ps.get_comment(c.id) == new
    # A refused action changes nothing and logs nothing (one transaction).
    with pytest.raises(InvalidTransition):
        ps.moderate(c.id, "hide", "again", "tok-mod", T0 + 2)
    assert ps.get_comment(c.id) == new
    assert ps.moderation_log(s.id) == [entry]
    with pytest.raises(NotFound):
        ps.moderate("c-none", "hide", "x", "tok-mod", T0)
    ps.moderate(c.id, "approve", "on appeal", "tok-mod", T0 + 3)
    log = ps.moderation_log(s.id)
    assert [e.action for e in log] == ["approve", "hide"]  # newest first
    assert [e.action for e in ps.moderation_log(s.id, before=T0 + 3)] == ["hide"]
    assert [e.action for e in ps.moderation_log(s.id, limit=1)] == ["approve"]
    assert ps.moderation_log("s-other") == []


def test_sqlite_participation_shares_the_file_with_a_busy_state_store(tmp_path: Path) -> None:
    """Two connections on one WAL file: interleaved writes from threads all land."""
    state = SqliteStore(f"sqlite:///{tmp_path / 'twin.db'}")
    ps = participation_store_for(state)
    s, a, _ = _setup(ps)
    errors: list[BaseException] = []

    def state_writer() -> None:
        try:
            for i in range(200):
                state.apply_updates([StateUpdate("b1", "occupancy", i, T0 + i, "test")])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def comment_writer() -> None:
        try:
            for i in range(200):
                ps.add_comment(new_comment(s, a, text=f"comment {i}", now=T0 + i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=state_writer), threading.Thread(target=comment_writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(ps.list_comments(s.id, limit=1000)) == 200
    assert len(state.history("b1", "occupancy")) == 200
    ps.close()
    state.close()
    # Reopened: the comments are in the file, next to the state tables.
    db = sqlite3.connect(tmp_path / "twin.db")
    assert db.execute("SELECT count(*) FROM participation_comments").fetchone()[0] == 200
    assert db.execute("SELECT count(*) FROM history").fetchone()[0] == 200
    db.close()
    again = SqliteParticipationStore(f"sqlite:///{tmp_path / 'twin.db'}")
    assert again.get_session(s.id) == s
    again.close()


def test_comment_row_round_trip_keeps_every_field() -> None:
    s = _session(scenarios=["base", "tower"])
    _, a = _citizen(s)
    c = new_comment(
        s,
        a,
        text="x",
        anchor={"point": [0.1, 0.2, 0.3]},
        camera={"position": [1, 2, 3], "target": [4, 5, 6], "fov": None},
        now=T0,
    )
    row = {k: v for k, v in c.as_dict(moderator=True).items() if k in Comment.__slots__}
    back = Comment.from_row(
        id=c.id,
        session_id=c.session_id,
        author=c.author,
        scenario=c.scenario,
        state=c.state,
        created=c.created,
        updated=c.updated,
        parent_id=c.parent_id,
        reactions=c.reactions,
        flags=c.flags,
        reviewed=c.reviewed,
        body=c.body(),
    )
    assert back == c and row["anchor"] == {"object_id": None, "point": [0.1, 0.2, 0.3]}

"""Replay feed: order, event-time pacing (fake clock), gzip, CSV, loop, stop; replay URLs."""

from __future__ import annotations

import csv
import gzip
import io
import json
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.feeds import (
    Feed,
    FeedCounters,
    ReplaySettings,
    open_feed,
    parse_feed_url,
)
from sync.model import Message
from sync.replay import ReplayFeed, parse_time
from twin.errors import FeedError


class FakeTime:
    """A clock that only moves when the feed sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 9))
        self.now += seconds


def write_jsonl(path: Path, rows: list[object]) -> list[bytes]:
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def replay_all(feed: ReplayFeed, on_message: object = None) -> list[Message]:
    got: list[Message] = []

    def collect(m: Message) -> None:
        got.append(m)
        if callable(on_message):
            on_message(m)

    feed.start(collect)
    assert feed.join(10)
    return got


def test_replay_delivers_lines_in_order_paced_by_event_time(tmp_path: Path) -> None:
    rows: list[object] = [
        {"time": 0, "id": "a"},
        {"time": 1, "id": "b"},
        {"id": "no-time"},
        {"time": 3, "id": "c"},
        {"time": 3, "id": "d"},
        {"time": 2, "id": "older"},
        b"{not json at all",
        [{"id": "list"}, {"time": 10, "id": "e"}],
    ]
    lines = write_jsonl(tmp_path / "run.jsonl", rows)
    fake = FakeTime()
    feed = ReplayFeed(
        ReplaySettings(tmp_path / "run.jsonl", speed=2.0),
        name="rp",
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert isinstance(feed, Feed)
    got = replay_all(feed)
    assert [m.payload for m in got] == lines
    assert all(m.feed == "rp" and m.topic == "" for m in got)
    assert all(m.content_type == "application/json" for m in got)
    # speed 2: event gaps 1 s and 2 s become 0.5 s and 1 s; the line without a time, the
    # equal time, the older time and the malformed line go at once; t=10 is 3.5 s after t=3.
    assert fake.sleeps == [0.5, 1.0, 3.5]
    st_ = feed.status()
    assert st_.finished and not st_.connected
    assert st_.received == len(lines) and st_.acked == 0 and st_.pending == len(lines)
    assert st_.kind == "replay"


def test_pacing_keeps_the_schedule_when_processing_takes_time(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "r.jsonl", [{"time": t} for t in (0, 1, 2, 3)])
    fake = FakeTime()
    feed = ReplayFeed(
        ReplaySettings(tmp_path / "r.jsonl", speed=1.0), clock=fake.clock, sleep=fake.sleep
    )

    def slow_consumer(m: Message) -> None:
        fake.now += 0.25  # the engine took 0.25 s on each message

    replay_all(feed, slow_consumer)
    # Due times are 1, 2, 3 s after the first message: waits shrink by the time spent.
    assert fake.sleeps == [0.75, 0.75, 0.75]


def test_speed_zero_never_waits(tmp_path: Path) -> None:
    lines = write_jsonl(tmp_path / "r.jsonl", [{"time": t * 60} for t in range(50)])
    fake = FakeTime()
    feed = ReplayFeed(
        ReplaySettings(tmp_path / "r.jsonl", speed=0.0), clock=fake.clock, sleep=fake.sleep
    )
    got = replay_all(feed)
    assert [m.payload for m in got] == lines
    assert fake.sleeps == []


def test_gzip_jsonl_and_iso_times(tmp_path: Path) -> None:
    rows = [
        {"time": "2024-05-01T12:00:00Z", "v": 1},
        {"time": "2024-05-01T12:00:10+00:00", "v": 2},
        {"time": "2024-05-01T12:01:10", "v": 3},
    ]
    lines = [json.dumps(r).encode() for r in rows]
    path = tmp_path / "run.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\r\n".join(lines) + b"\r\n\r\n")
    fake = FakeTime()
    feed = open_feed(f"replay:{path}?speed=10", name="gz")
    assert isinstance(feed, ReplayFeed)
    feed = ReplayFeed(feed.settings, name="gz", clock=fake.clock, sleep=fake.sleep)
    got = replay_all(feed)
    assert [m.payload for m in got] == lines
    assert fake.sleeps == [1.0, 6.0]


def test_csv_rows_become_header_plus_row_documents(tmp_path: Path) -> None:
    path = tmp_path / "sensors.csv"
    path.write_text(
        "\ufeffTime,sensor,value,note\n"
        "2024-05-01T12:00:00Z,p1,3.5,ok\n"
        "\n"
        '2024-05-01T12:00:04Z,p2,4.0,"quoted, with comma"\n'
        "not-a-time,p3,x,\n",
        encoding="utf-8",
    )
    fake = FakeTime()
    feed = ReplayFeed(
        ReplaySettings(path, speed=2.0, format="csv"), clock=fake.clock, sleep=fake.sleep
    )
    got = replay_all(feed)
    assert [m.content_type for m in got] == ["text/csv"] * 3
    docs = [list(csv.reader(io.StringIO(m.payload.decode()))) for m in got]
    header = ["Time", "sensor", "value", "note"]
    assert docs == [
        [header, ["2024-05-01T12:00:00Z", "p1", "3.5", "ok"]],
        [header, ["2024-05-01T12:00:04Z", "p2", "4.0", "quoted, with comma"]],
        [header, ["not-a-time", "p3", "x", ""]],
    ]
    assert fake.sleeps == [2.0]


def test_loop_replays_again_until_stopped(tmp_path: Path) -> None:
    lines = write_jsonl(tmp_path / "r.ndjson", [{"time": t, "n": t} for t in (0, 5, 6)])
    fake = FakeTime()
    feed = ReplayFeed(
        parse_feed_url(f"replay:{tmp_path / 'r.ndjson'}?loop=1&speed=1"),  # type: ignore[arg-type]
        clock=fake.clock,
        sleep=fake.sleep,
    )
    got: list[Message] = []

    def collect(m: Message) -> None:
        got.append(m)
        if len(got) == 7:
            feed.stop()  # from the replay thread itself

    feed.start(collect)
    assert feed.join(10)
    assert [m.payload for m in got] == lines * 2 + lines[:1]
    # Each pass starts its own schedule: the first line of a pass goes at once.
    assert fake.sleeps == [5.0, 1.0, 5.0, 1.0]
    assert not feed.status().finished


def test_stop_mid_way_interrupts_a_long_wait(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "r.jsonl", [{"time": 0}, {"time": 3600}, {"time": 7200}])
    feed = ReplayFeed(ReplaySettings(tmp_path / "r.jsonl", speed=1.0))  # real clock/sleep
    first = threading.Event()
    got: list[Message] = []

    def collect(m: Message) -> None:
        got.append(m)
        first.set()

    feed.start(collect)
    assert first.wait(10)
    feed.stop()
    assert feed.join(0)  # the hour-long wait ended with stop()
    feed.stop()  # idempotent
    st_ = feed.status()
    assert len(got) == 1 and st_.received == 1
    assert not st_.finished and not st_.connected


def test_ack_is_counted_once(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "r.jsonl", [{"time": 0}, {"time": 0}, {"time": 0}])
    feed = ReplayFeed(ReplaySettings(tmp_path / "r.jsonl", speed=0))
    got = replay_all(feed)
    got[0].ack()
    got[0].ack()
    got[2].ack()
    st_ = feed.status()
    assert (st_.received, st_.acked, st_.pending) == (3, 2, 1)
    d = st_.as_dict()
    assert d["finished"] is True and d["received"] == 3 and d["last_message_at"] is not None
    json.dumps(d)


def test_a_failing_consumer_does_not_end_the_replay(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "r.jsonl", [{"n": i} for i in range(3)])
    feed = ReplayFeed(ReplaySettings(tmp_path / "r.jsonl", speed=0))

    def explode(m: Message) -> None:
        raise ValueError("boom")

    replay_all(feed, explode)
    st_ = feed.status()
    assert st_.received == 3 and st_.finished
    assert st_.last_error is not None and "boom" in st_.last_error


def test_counters_rate_and_lag_with_a_fake_clock() -> None:
    now = [100.0]
    c = FeedCounters("f", "mqtt://u:secret@h/t", "mqtt", clock=lambda: now[0])
    assert c.snapshot().lag_s is None and c.snapshot().rate_per_s == 0.0
    for _ in range(20):
        now[0] += 1.0
        c.received()
    now[0] += 2.0
    s = c.snapshot()
    # Messages at t=111..120 are within 10 s of t=122 -> 9 of them (111 is 11 s old).
    assert s.rate_per_s == pytest.approx(9 / 10)
    assert s.lag_s == pytest.approx(2.0)
    c.received(event_time=now[0] - 30.0)
    assert c.snapshot().lag_s == pytest.approx(30.0)
    assert "secret" not in s.url and s.url == "mqtt://u:***@h/t"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1714564800, 1714564800.0),
        (1714564800123, 1714564800.123),
        ("1714564800.5", 1714564800.5),
        ("2024-05-01T12:00:00Z", 1714564800.0),
        ("2024-05-01T14:00:00+02:00", 1714564800.0),
        ("2024-05-01T12:00:00", 1714564800.0),
        ("yesterday", None),
        (True, None),
        (None, None),
        (float("nan"), None),
        ({"t": 1}, None),
    ],
)
def test_parse_time(value: object, expected: float | None) -> None:
    got = parse_time(value)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@given(st.one_of(st.text(), st.integers(), st.floats(), st.none(), st.booleans()))
def test_parse_time_never_raises(value: object) -> None:
    got = parse_time(value)
    assert got is None or isinstance(got, float)


def test_replay_urls(tmp_path: Path) -> None:
    (tmp_path / "a b.jsonl").write_text("{}\n")
    (tmp_path / "c.csv.gz").write_bytes(gzip.compress(b"time,x\n1,2\n"))
    (tmp_path / "d.txt").write_text("{}\n")
    s = parse_feed_url(f"replay:{tmp_path}/a%20b.jsonl?speed=0&loop=1")
    assert s == ReplaySettings(tmp_path / "a b.jsonl", speed=0.0, loop=True, format="jsonl")
    s = parse_feed_url(f"replay://{tmp_path}/c.csv.gz")
    assert s == ReplaySettings(tmp_path / "c.csv.gz", speed=1.0, loop=False, format="csv")
    s = parse_feed_url(f"replay:{tmp_path}/d.txt?format=jsonl")
    assert isinstance(s, ReplaySettings) and s.format == "jsonl"
    feed = open_feed(f"replay:{tmp_path}/c.csv.gz")
    assert feed.name == f"replay:{tmp_path}/c.csv.gz" and feed.status().kind == "replay"
    assert open_feed(f"replay:{tmp_path}/c.csv.gz?name=power&speed=0").name == "power"
    assert ReplayFeed.from_url(f"replay:{tmp_path}/c.csv.gz?name=p").name == "p"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("replay:", "no file"),
        ("replay:{tmp}/missing.jsonl", "does not exist"),
        ("replay:{tmp}/d.txt", "replay format"),
        ("replay:{tmp}/a.jsonl?speed=-1", "speed must be >= 0"),
        ("replay:{tmp}/a.jsonl?speed=fast", "not a number"),
        ("replay:{tmp}/a.jsonl?speed=inf", "speed must be >= 0"),
        ("replay:{tmp}/a.jsonl?loop=maybe", "not a boolean"),
        ("replay:{tmp}/a.jsonl?rate=2", "unknown option 'rate'"),
        ("replay:{tmp}/a.jsonl?format=xml", "replay format"),
        ("kafka://h/t", "unknown scheme 'kafka'"),
        ("/just/a/path.jsonl", "unknown scheme"),
        ("", "unknown scheme"),
    ],
)
def test_bad_replay_urls_raise_feed_error(tmp_path: Path, url: str, needle: str) -> None:
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "d.txt").write_text("{}\n")
    with pytest.raises(FeedError, match=None) as exc:
        open_feed(url.format(tmp=tmp_path))
    assert needle in str(exc.value)

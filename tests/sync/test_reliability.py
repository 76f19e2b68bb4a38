"""Reliability with real processes and a real broker: kill -9 the server mid-stream, restart
the broker mid-stream; nothing the publisher got acknowledged is lost, nothing is doubled."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from brokers import Broker, free_port, wait_until
from conftest import ROOT, need

TWIN = str(ROOT / ".venv" / "bin" / "twin")
CITY = ROOT / "viewer" / "demo" / "delft.city.json"
T0 = 1_780_000_000.0

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    import shutil

    if shutil.which("mosquitto") is None:
        need("the mosquitto binary is not installed")
    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker", free_port())
    b.start()
    yield b
    b.stop()


class Server:
    def __init__(self, tmp: Path, broker_port: int, prefix: str) -> None:
        self.db_path = tmp / "twin.db"
        self.db = f"sqlite:///{self.db_path}"
        self.port = free_port()
        self.cfg = tmp / "live.toml"
        self.cfg.write_text(f'topic_template = "{prefix}/{{object_id}}/{{property}}"\n')
        self.feed = f"mqtt://127.0.0.1:{broker_port}/{prefix}/%23?client_id=rel-{prefix}"
        subprocess.run(
            [TWIN, "ingest", str(CITY), "--db", self.db], check=True, capture_output=True
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(TWIN, "serve", "--db", self.db, "--port", str(self.port)),
                *("--config", str(self.cfg), "--feed", self.feed),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_until(self.connected, 30), "twin serve did not connect its feed"

    def connected(self) -> bool:
        try:
            h = httpx.get(f"http://127.0.0.1:{self.port}/api/healthz", timeout=1).json()
            return bool(h["feeds"] and h["feeds"][0]["connected"])
        except (httpx.HTTPError, KeyError, ValueError):
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def history(self) -> tuple[int, int]:
        """(rows, distinct (object, property, time)) straight from the SQLite file."""
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT count(*) FROM history WHERE property = 'v'").fetchone()[0]
            distinct = db.execute(
                "SELECT count(*) FROM (SELECT DISTINCT object_id, property, t FROM history "
                "WHERE property = 'v')"
            ).fetchone()[0]
            return int(rows), int(distinct)
        finally:
            db.close()

    def latest(self) -> dict[str, float]:
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return {
                o: float(orjson.loads(v))
                for o, v in db.execute("SELECT object_id, value FROM state WHERE property = 'v'")
            }
        finally:
            db.close()

    def ids(self) -> list[str]:
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return [r[0] for r in db.execute("SELECT id FROM objects ORDER BY id LIMIT 200")]
        finally:
            db.close()


class Publisher:
    """QoS 1 publisher that counts what the broker acknowledged (PUBACK)."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.acked = 0
        self.lock = threading.Lock()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}"
        )
        self.c.max_inflight_messages_set(50)
        self.c.max_queued_messages_set(0)
        self.c.reconnect_delay_set(0.2, 2)
        self.c.on_publish = self._on_publish
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_publish(self, *_: Any) -> None:
        with self.lock:
            self.acked += 1

    def publish(self, payload: bytes) -> None:
        self.c.publish(self.topic, payload, qos=1)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _batches(ids: list[str], n_messages: int, per: int) -> list[tuple[bytes, dict[str, float]]]:
    out = []
    for k in range(n_messages):
        rows = [
            {
                "id": ids[(k * per + j) % len(ids)],
                "property": "v",
                "value": float(k),
                "time": T0 + k,
            }
            for j in range(per)
        ]
        last = {r["id"]: r["value"] for r in rows}
        out.append((orjson.dumps(rows), last))
    return out


def test_kill_9_mid_stream_loses_nothing_acknowledged(broker: Broker, tmp_path: Path) -> None:
    prefix = f"rel-{uuid.uuid4().hex[:8]}"
    server = Server(tmp_path, broker.port, prefix)
    server.start()
    pub = Publisher(broker.port, f"{prefix}/batch")
    try:
        batches = _batches(server.ids(), 5000, 10)  # 50,000 updates
        total = len(batches) * 10
        done = threading.Event()

        def publish() -> None:
            for payload, _ in batches:
                pub.publish(payload)
                time.sleep(0.0005)
            done.set()

        th = threading.Thread(target=publish)
        th.start()
        assert wait_until(lambda: server.history()[0] > total // 5, 60)
        server.kill9()  # mid-stream: some batches committed, some in flight, some queued
        killed_at = server.history()[0]
        assert killed_at < total
        time.sleep(1.0)
        server.start()  # same client id: the broker redelivers what was never acked
        th.join(120)
        assert done.is_set()
        assert wait_until(lambda: pub.acked == len(batches), 60), pub.acked
        assert wait_until(lambda: server.history()[0] >= pub.acked * 10, 120), (
            server.history(),
            pub.acked,
        )
        rows, distinct = server.history()
        assert rows == distinct == pub.acked * 10 == total
    finally:
        pub.close()
        server.stop()


def test_broker_restart_mid_stream_ends_in_the_right_states(broker: Broker, tmp_path: Path) -> None:
    prefix = f"rel-{uuid.uuid4().hex[:8]}"
    server = Server(tmp_path, broker.port, prefix)
    server.start()
    pub = Publisher(broker.port, f"{prefix}/batch")
    try:
        batches = _batches(server.ids(), 2000, 10)
        want: dict[str, float] = {}
        for _, last in batches:
            want.update(last)
        for k, (payload, _) in enumerate(batches):
            pub.publish(payload)
            if k == 700:
                assert wait_until(lambda: server.history()[0] > 0, 30)
                broker.stop()  # SIGTERM: Mosquitto saves sessions and queues
                time.sleep(0.5)
                broker.start()
            time.sleep(0.001)
        assert wait_until(lambda: pub.acked >= len(batches), 90), pub.acked
        assert wait_until(lambda: server.history()[0] >= len(batches) * 10, 120), server.history()
        rows, distinct = server.history()
        assert rows == distinct == len(batches) * 10
        assert server.latest() == want
        health = httpx.get(f"http://127.0.0.1:{server.port}/api/healthz", timeout=5).json()
        assert health["feeds"][0]["reconnects"] >= 1
    finally:
        pub.close()
        server.stop()

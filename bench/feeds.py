"""Live-feed benchmark: Mosquitto's own pub->sub rate vs publisher -> MQTT -> twin -> viewer.

Same run, same broker -- a private Mosquitto started for the run, with an unlimited queue
per session (the stock configuration drops QoS 1 messages for a subscriber once 1,000 are
queued, which a publisher faster than any consumer reaches within a second) -- QoS 1
throughout, payloads of 100 values (a JSON list of ``{"id","property","value","time"}``, ~8 KB):

1. **the limit** -- a paho publisher to a paho subscriber, nothing else: values/s;
2. **persisted** -- the same publisher into ``twin serve --feed mqtt://...`` on a SQLite
   store holding the real Delft demo city: values/s from the first publish until the
   store has committed (and acked) every value (``/api/healthz``);
3. **latency** -- 5,000 values/s (50 messages/s) for ``--seconds`` s while a WebSocket
   client watches the objects on ``/api/stream``: publish -> viewer delay per value
   (the value carries its publish time), p50 / p99.

Targets (issue 5): >= 50,000 state updates/s persisted in SQLite; p99 < 100 ms at 5k/s.
Anchors: Orion-LD ~3,500 updates/s on 2 CPUs, Ditto ~800 modifies/s per instance,
FROST ~5,000 inserts/s.

Run: ``.venv/bin/python bench/feeds.py`` (``--messages N``, ``--seconds S``, ``--no-results``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "sync"))

from brokers import Broker  # noqa: E402

from bench.common import write_section  # noqa: E402

BROKER = ["127.0.0.1", 1883]  # the port is replaced by the private broker's
TWIN = str(ROOT / ".venv" / "bin" / "twin")
CITY = ROOT / "viewer" / "demo" / "delft.city.json"


def log(msg: str) -> None:
    print(f"[feeds] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client(client_id: str) -> Any:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    return c


def payloads(ids: list[str], n: int, base_t: float) -> list[bytes]:
    out = []
    for k in range(n):
        t = base_t + k
        out.append(
            orjson.dumps(
                [
                    {"id": ids[(k * 100 + j) % len(ids)], "property": "load", "value": j, "time": t}
                    for j in range(100)
                ]
            )
        )
    return out


def publish_all(topic: str, msgs: list[bytes]) -> float:
    """Publish with QoS 1; return seconds until every PUBACK arrived."""
    pub = client(f"bench-pub-{uuid.uuid4().hex[:8]}")
    done = threading.Event()
    acked = [0]

    def on_publish(*_: Any) -> None:
        acked[0] += 1
        if acked[0] == len(msgs):
            done.set()

    pub.on_publish = on_publish
    pub.connect(*BROKER)
    pub.loop_start()
    t0 = time.perf_counter()
    for m in msgs:
        pub.publish(topic, m, qos=1)
    done.wait(300)
    dt_s = time.perf_counter() - t0
    pub.loop_stop()
    pub.disconnect()
    return dt_s


def raw_limit(msgs: list[bytes]) -> float:
    """Values/s from a paho publisher to a paho subscriber through Mosquitto."""
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}/batch"
    sub = client(f"bench-sub-{uuid.uuid4().hex[:8]}")
    got = [0]
    done = threading.Event()
    first = [0.0]

    def on_message(*_: Any) -> None:
        if got[0] == 0:
            first[0] = time.perf_counter()
        got[0] += 1
        if got[0] == len(msgs):
            done.set()

    ready = threading.Event()
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: ready.set()
    sub.connect(*BROKER)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    ready.wait(10)
    t0 = time.perf_counter()
    publish_all(topic, msgs)
    done.wait(300)
    elapsed = time.perf_counter() - t0
    sub.loop_stop()
    sub.disconnect()
    return got[0] * 100 / elapsed


class Server:
    """`twin serve` on a fresh SQLite store with the Delft demo city and an MQTT feed."""

    def __init__(self, work: Path, prefix: str) -> None:
        self.port = free_port()
        self.db = f"sqlite:///{work / 'feeds.db'}"
        cfg = work / "live.toml"
        cfg.write_text(f'topic_template = "{prefix}/{{object_id}}/{{property}}"\n')
        subprocess.run(
            [TWIN, "ingest", str(CITY), "--db", self.db], check=True, capture_output=True
        )
        env = {**os.environ, "TWIN_TOKENS": ""}
        self.proc = subprocess.Popen(
            [
                TWIN,
                "serve",
                "--db",
                self.db,
                "--port",
                str(self.port),
                "--config",
                str(cfg),
                "--feed",
                f"mqtt://127.0.0.1:{BROKER[1]}/{prefix}/%23?client_id=bench-{prefix}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                h = httpx.get(f"{self.url}/api/healthz", timeout=1).json()
                if h["feeds"] and h["feeds"][0]["connected"]:
                    return
            except (httpx.HTTPError, KeyError, IndexError):
                pass
            time.sleep(0.2)
        raise RuntimeError("twin serve did not come up with a connected feed")

    def updates(self) -> int:
        return int(httpx.get(f"{self.url}/api/healthz", timeout=5).json()["engine"]["updates"])

    def ids(self) -> list[str]:
        r = httpx.get(f"{self.url}/api/objects", params={"limit": 1000}, timeout=10).json()
        return [o["id"] for o in r["items"]]

    def peak_rss_mib(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def persisted(server: Server, prefix: str, msgs: list[bytes]) -> tuple[float, float]:
    before = server.updates()
    t0 = time.perf_counter()
    publish_all(f"{prefix}/batch", msgs)
    want = before + len(msgs) * 100
    while server.updates() < want:
        if time.perf_counter() - t0 > 600:
            raise RuntimeError(f"only {server.updates() - before} of {want - before} values")
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    return len(msgs) * 100 / elapsed, elapsed


async def latency(server: Server, prefix: str, ids: list[str], seconds: float) -> list[float]:
    import websockets

    watched = ids[:100]
    lat: list[float] = []
    ws_url = server.url.replace("http", "ws") + "/api/stream?ids=" + ",".join(watched)
    async with websockets.connect(ws_url, max_size=2**24) as ws:
        for _ in range(2):  # hello + snapshot
            await asyncio.wait_for(ws.recv(), 10)
        pub = client(f"bench-lat-{uuid.uuid4().hex[:8]}")
        pub.connect(*BROKER)
        pub.loop_start()
        stop = time.time() + seconds

        def publisher() -> None:
            k = 0
            while time.time() < stop:
                now = time.time()
                batch = [{"id": i, "property": "lat", "value": now, "time": now} for i in watched]
                pub.publish(f"{prefix}/batch", orjson.dumps(batch), qos=1)
                k += 1
                time.sleep(max(0.0, 0.02 - (time.time() - now)))  # 50 msgs/s = 5,000 values/s

        th = threading.Thread(target=publisher)
        th.start()
        while time.time() < stop + 1.0:
            try:
                raw = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                continue
            got = time.time()
            msg = orjson.loads(raw)
            if msg.get("type") == "delta":
                lat += [
                    got - u["value"]
                    for u in msg["updates"]
                    if u["property"] == "lat" and isinstance(u["value"], float)
                ]
        th.join()
        pub.loop_stop()
        pub.disconnect()
    return lat


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000, help="messages of 100 values")
    ap.add_argument("--seconds", type=float, default=10.0, help="latency run length")
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    base_t = 1_780_000_000.0
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "broker").mkdir()
        broker = Broker(Path(tmp) / "broker", free_port())
        broker.start()
        BROKER[1] = broker.port
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        server = Server(Path(tmp), prefix)
        try:
            ids = server.ids()
            msgs = payloads(ids, args.messages, base_t)
            log(f"raw Mosquitto pub->sub, {len(msgs):,} messages x 100 values")
            limit = raw_limit(msgs)
            log(f"  {limit:,.0f} values/s")
            log("publisher -> MQTT -> twin serve (SQLite) committed")
            rate, elapsed = persisted(server, prefix, msgs)
            log(f"  {rate:,.0f} values/s ({elapsed:.1f} s)")
            log(f"latency at 5,000 values/s for {args.seconds:g} s")
            lat = asyncio.run(latency(server, prefix, ids, args.seconds))
            rss = server.peak_rss_mib()
        finally:
            server.stop()
            broker.stop()
    p50, p99 = pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000
    mean_ms = statistics.fmean(lat) * 1000 if lat else float("nan")
    lines = [
        "## Live feeds (`bench/feeds.py`)",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; a private Mosquitto on the "
        "same machine (unlimited session queue); QoS 1; messages of 100 values; "
        "`twin serve` (1 worker) on SQLite with the "
        f"Delft demo city ({len(ids)} objects); peak RSS of the server {rss:,.0f} MiB.",
        "",
        "| path | values/s | vs the broker's own limit |",
        "|---|---:|---:|",
        f"| Mosquitto pub -> sub (the limit) | {limit:,.0f} | 100% |",
        f"| pub -> MQTT -> twin -> SQLite committed + acked | {rate:,.0f} | {rate / limit:.0%} |",
        "",
        "| latency at 5,000 values/s (publish -> WebSocket viewer) | p50 ms | p99 ms | values |",
        "|---|---:|---:|---:|",
        f"| `/api/stream` delta (coalesced, <= 10 msgs/s) | {p50:,.1f} | {p99:,.1f} | "
        f"{len(lat):,} |",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| >= 50,000 updates/s persisted in SQLite | {rate:,.0f} | "
        f"{'PASS' if rate >= 50_000 else 'FAIL'} |",
        f"| p99 < 100 ms at 5k/s | {p99:,.1f} ms | {'PASS' if p99 < 100 else 'FAIL'} |",
        "",
        "Anchors (published, other hardware): Orion-LD ~3,500 updates/s on 2 CPUs, Ditto ~800 "
        f"modifies/s per instance, FROST ~5,000 inserts/s; ours {rate:,.0f}/s.",
        f"Mean latency over all values: {mean_ms:.1f} ms.",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_results:
        write_section("feeds", section)
        log("wrote bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Test helpers for MQTT: port checks and a private Mosquitto with on-disk persistence."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"


def port_open(port: int, host: str = HOST) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Broker:
    """A private Mosquitto with on-disk persistence, started and stopped by the test."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.port = port
        self.conf = tmp / "mosquitto.conf"
        lines = [
            f"listener {port} {HOST}",
            # Unlimited queue for offline persistent sessions (the default drops past 1000).
            "max_queued_messages 0",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {tmp}/",
            "log_dest stderr",
        ]
        if os.geteuid() == 0:
            # Mosquitto drops root for user "mosquitto", who cannot write to tmp_path.
            lines.append(f"user {getpass.getuser()}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = tmp / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(shutil.which("mosquitto")), "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_until(lambda: port_open(self.port), 10):
            raise AssertionError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        # SIGTERM: Mosquitto writes its persistence file on the way out.
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self.proc = None

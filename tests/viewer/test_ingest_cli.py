"""`twin ingest` into SQLite: bulk, idempotent, all-or-nothing per file, even under kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

TWIN = Path(sys.executable).parent / "twin"


def _twin(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    return subprocess.run(
        [str(TWIN), *map(str, args)], capture_output=True, text=True, timeout=600, env=env
    )


def _counts(db: Path) -> tuple[int, list[str]]:
    with sqlite3.connect(db) as con:
        n = con.execute("SELECT count(*) FROM objects").fetchone()[0]
        sources = [r[0] for r in con.execute("SELECT name FROM sources ORDER BY name")]
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return int(n), sources


def test_ingest_is_idempotent_and_rejects_bad_files(cityjson_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "twin.db"
    url = f"sqlite:///{db}"
    zurich = cityjson_dir / "real" / "zurich_subset_lod2.city.json"
    r = _twin("ingest", zurich, "--db", url)
    assert r.returncode == 0, r.stderr
    assert "210 objects" in r.stdout
    assert _counts(db) == (210, ["zurich_subset_lod2.city.json"])
    assert _twin("ingest", zurich, "--db", url).returncode == 0
    assert _counts(db) == (210, ["zurich_subset_lod2.city.json"])
    bad = _twin("ingest", cityjson_dir / "invalid" / "schema_invalid_2.json", "--db", url)
    assert bad.returncode == 2 and bad.stderr.startswith("error:")
    assert "Traceback" not in bad.stderr
    assert _counts(db) == (210, ["zurich_subset_lod2.city.json"])


@pytest.mark.slow
def test_sigkill_mid_file_leaves_the_store_as_before(cityjson_dir: Path, tmp_path: Path) -> None:
    """A killed ingest leaves the store as it was before that file (one transaction)."""
    big = tmp_path / "delfshaven_x4.city.jsonl"
    tiler = Path(__file__).resolve().parents[2] / "bench" / "tile_city.py"
    src = cityjson_dir / "real" / "delfshaven_3-20.city.json"
    subprocess.run(
        [sys.executable, str(tiler), str(src), "--copies", "4", "-o", str(big)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    db = tmp_path / "twin.db"
    url = f"sqlite:///{db}"
    zurich = cityjson_dir / "real" / "zurich_subset_lod2.city.json"
    assert _twin("ingest", zurich, "--db", url).returncode == 0
    before = _counts(db)
    after = (before[0] + 4 * 853, sorted([*before[1], big.name]))
    killed = 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    for delay in (0.3, 0.6, 0.9, 1.2, 1.5, 2.0):
        proc = subprocess.Popen(
            [str(TWIN), "ingest", str(big), "--db", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        state = _counts(db)
        assert state in (before, after), f"partial store after kill at {delay}s: {state}"
        if state == after:
            break
    assert killed >= 1, "the ingest finished before any kill: the test proved nothing"

"""Shared fixtures: the real data in ../shared/data and the Khronos glTF-Validator."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find_shared_data() -> Path | None:
    """Locate ../shared/data (or $TWIN_SHARED_DATA) from the project root."""
    env = os.environ.get("TWIN_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [p / "shared" / "data" for p in (ROOT.parent, *ROOT.parents)]
    for c in candidates:
        if (c / "cityjson").is_dir():
            return c
    return None


def need(reason: str) -> None:
    """Skip outside CI; fail in CI (a missing prerequisite there is a broken CI)."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test data folder; skipped (locally) when absent."""
    path = find_shared_data()
    if path is None:
        need("../shared/data not found (set TWIN_SHARED_DATA)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def cityjson_dir(shared_data: Path) -> Path:
    return shared_data / "cityjson"


class GltfValidator:
    """Runs the Khronos glTF-Validator (npm) on GLB files."""

    script = ROOT / "tests" / "gltf_validate.mjs"

    def validate(self, *files: Path) -> list[dict[str, Any]]:
        out = subprocess.run(
            ["node", str(self.script), *map(str, files)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        reports = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        if len(reports) != len(files):
            raise AssertionError(f"validator failed: {out.stderr[-2000:]}")
        return reports


@pytest.fixture(scope="session")
def gltf_validator() -> GltfValidator:
    if shutil.which("node") is None:
        need("node is not installed")
    if not (ROOT / "node_modules" / "gltf-validator").is_dir():
        need("node_modules/gltf-validator missing: run `make setup`")
    return GltfValidator()


PG_CANDIDATES = (
    [os.environ["TWIN_TEST_PG_URL"]]
    if os.environ.get("TWIN_TEST_PG_URL")
    else ["postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test"]
)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL store URL in a schema of its own (tables created), dropped after the run.

    Skips outside CI when the server or psycopg is missing (fails in CI).
    """
    try:
        import psycopg
    except ImportError:
        need("psycopg is not installed: pip install 'citytwin[postgres]'")
        raise
    from twin.store.postgres import PostgresStore, _split_url

    base = None
    errors = []
    for url in PG_CANDIDATES:
        try:
            with psycopg.connect(_split_url(url)[0], connect_timeout=3):
                base = url
                break
        except psycopg.Error as exc:
            errors.append(" ".join(str(exc).split())[:200])
    if base is None:
        need(f"PostgreSQL not reachable at {PG_CANDIDATES[0]}: {errors[0]}")
        raise AssertionError("unreachable")
    schema = f"twin_test_{os.getpid()}_{secrets.token_hex(4)}"
    url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    PostgresStore(url).close()
    yield url
    with psycopg.connect(_split_url(base)[0], autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

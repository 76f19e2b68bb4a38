"""Settings from ``TWIN_*`` environment variables (and CLI flags), in one class."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Everything configurable; ``TWIN_DB=postgresql://...`` etc."""

    model_config = SettingsConfigDict(env_prefix="TWIN_", extra="ignore")

    db: str = "sqlite:///twin.db"
    host: str = "127.0.0.1"
    port: int = 8000
    # "<token>:<role>,<token>:<role>"; roles: planner, moderator, engineer, feed.
    tokens: str = ""
    max_body_bytes: int = 1_048_576
    max_query_bytes: int = 4096
    max_batch: int = 10_000
    history_retention_days: float | None = None
    scenario: str = "base"
    # Event bus for several workers: memory:// (one process), nats://127.0.0.1:4222,
    # redis://127.0.0.1:6379/0.
    bus: str = "memory://"
    # Feeds to run in the server, whitespace- or comma-separated URLs:
    # mqtt://127.0.0.1:1883/city/# , replay:FILE?speed=10
    feeds: str = ""
    # A TOML/JSON file with [mapping], [[alerts]] and [styles] sections.
    config: str | None = None
    # A tileset folder written by `twin tiles` (e.g. a whole city streamed from files),
    # served as the base scenario's /api/tiles/base/tileset.json instead of tiling the store.
    tileset: str | None = None
    # From this many objects the browser viewer streams 3D Tiles instead of one GLB.
    tiles_threshold: int = 20_000

"""Stores for twin objects and state: the protocol, the in-memory store, and URL wiring.

Concrete SQL stores live beside it (``twin.store.sqlite``, ``twin.store.postgres``) and
are imported only when chosen by URL, so the core imports no database driver.
"""

from twin.store.base import ObjectStore, Page, StateStore
from twin.store.memory import MemoryStore

__all__ = ["MemoryStore", "ObjectStore", "Page", "StateStore", "open_store"]


def open_store(url: str) -> StateStore:
    """Open a store chosen by URL: ``memory://``, ``sqlite:///path.db``, ``postgresql://``.

    Raises:
        twin.errors.TwinError: unknown scheme, or the store cannot be opened.
    """
    from twin.errors import TwinError

    if url.startswith("memory:"):
        return MemoryStore(url)
    if url.startswith("sqlite:"):
        from twin.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql:", "postgres:")):
        from twin.store.postgres import PostgresStore

        return PostgresStore(url)
    raise TwinError(
        f"unknown store URL {url!r}: use memory://, sqlite:///FILE.db or postgresql://..."
    )

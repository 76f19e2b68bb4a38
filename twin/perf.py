"""Performance helpers with no I/O."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building big acyclic structures.

    Parsing a city allocates millions of lists and dicts; each allocation burst makes
    the collector rescan every live container (quadratic-ish). Parsed JSON has no
    cycles, so reference counting frees it all the same.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

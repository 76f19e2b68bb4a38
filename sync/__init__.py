"""Feeds -> state updates -> change events (live data into the twin)."""

__all__: list[str] = []

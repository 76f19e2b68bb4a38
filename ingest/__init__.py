"""Readers that turn city and network files into twin objects."""

from ingest.cityjson import load_cityjson, parse_cityjson

__all__ = ["load_cityjson", "parse_cityjson"]

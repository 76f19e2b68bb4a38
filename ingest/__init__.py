"""Readers that turn city and network files into twin objects."""

from ingest.cityjson import load_cityjson, parse_cityjson
from ingest.cityjsonseq import SequenceStats, write_sequence

__all__ = ["SequenceStats", "load_cityjson", "parse_cityjson", "write_sequence"]

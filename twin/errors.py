"""The one exception root of CityTwin and its hierarchy.

    TwinError
    ├── IngestError      input that cannot be read (bad JSON, schema, index out of range...)
    ├── SceneError       a scene that cannot be built or written (e.g. nothing to draw)
    ├── FeedError        a feed message that cannot be decoded
    ├── NotFound         an object, session or resource that does not exist
    ├── Forbidden        a caller without the role for an action
    └── MissingExtra     an optional dependency that is not installed

Exceptions carry their data as attributes; the CLI maps them to one line and an exit
code, the API maps them to an HTTP status in one handler.
"""

from __future__ import annotations

__all__ = [
    "FeedError",
    "Forbidden",
    "IngestError",
    "MissingExtra",
    "NotFound",
    "SceneError",
    "TwinError",
]


class TwinError(Exception):
    """Root of every error CityTwin raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class IngestError(TwinError):
    """Input that cannot be read as a city model.

    Attributes:
        source: the file (or stream name) being read.
        where: a location inside it: ``line 3:7``, ``object 'b1'``, ``vertex index 12``.
        problem: what is wrong, in a few words.
    """

    exit_code = 2

    def __init__(self, problem: str, *, source: str = "", where: str = "") -> None:
        self.source = source
        self.where = where
        self.problem = problem
        parts = [p for p in (source, where) if p]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


class SceneError(TwinError):
    """A scene that cannot be built or written."""

    exit_code = 2


class FeedError(TwinError):
    """A feed message that cannot be decoded."""

    exit_code = 2


class NotFound(TwinError):
    """A requested object or resource does not exist."""

    exit_code = 3


class Forbidden(TwinError):
    """The caller lacks the role for this action."""

    exit_code = 4


class MissingExtra(TwinError):
    """An optional dependency is needed but not installed; the message names the extra."""

    exit_code = 2

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"this needs the optional package {module!r}: pip install 'citytwin[{extra}]'"
        )

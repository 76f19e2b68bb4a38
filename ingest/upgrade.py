"""Upgrade legacy CityJSON (0.6 .. 1.1) to 2.0 with cjio's upgrade path."""

from __future__ import annotations

import io
import os
import tempfile
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import orjson

from twin.errors import IngestError

__all__ = ["upgrade_cityjson"]


def _import_cjio() -> Any:
    """Import cjio without its process-wide side effect.

    cjio replaces the stdlib JSON float encoder (``json.encoder.float``, and disables the C
    encoder) on import, which rounds every later ``json.dumps`` in the process. We never
    use cjio's encoder (files are written with orjson), so the stdlib one is put back.
    """
    import json.encoder as enc

    names = ("c_make_encoder", "float")
    saved = {n: enc.__dict__[n] for n in names if n in enc.__dict__}
    from cjio import cityjson

    for n in names:
        if n in saved:
            enc.__dict__[n] = saved[n]
        else:
            enc.__dict__.pop(n, None)
    return cityjson


def upgrade_cityjson(src: str | Path, out: str | Path, *, digits: int = 3) -> str:
    """Upgrade ``src`` to CityJSON 2.0 and write it to ``out`` atomically.

    Args:
        src: a CityJSON file of version 0.6 to 2.0.
        out: where to write the 2.0 file.
        digits: decimal digits kept when cjio has to add a transform (1.0 -> 1.1).

    Returns:
        The version the file had.

    Raises:
        IngestError: the file cannot be read or upgraded (cjio's reasons included).
    """
    cityjson = _import_cjio()
    source = str(src)
    try:
        doc = orjson.loads(Path(src).read_bytes())
    except FileNotFoundError:
        raise IngestError("no such file", source=source) from None
    except orjson.JSONDecodeError as exc:
        raise IngestError(
            f"JSON syntax error: {exc.msg}", source=source, where=f"line {exc.lineno}:{exc.colno}"
        ) from None
    if not isinstance(doc, dict) or doc.get("type") not in ("CityJSON", "CityModel"):
        raise IngestError("not a CityJSON document", source=source)
    old = str(doc.get("version", "?"))
    try:
        with redirect_stdout(io.StringIO()):  # cjio prints progress to stdout
            cm = cityjson.CityJSON(j=doc)
            ok, reasons = cm.upgrade_version("2.0", digits)
    except Exception as exc:  # cjio raises bare exceptions on shapes it cannot handle
        raise IngestError(f"cjio could not upgrade version {old}: {exc}", source=source) from None
    if not ok:
        raise IngestError(f"cjio could not upgrade version {old}: {reasons}", source=source)
    if cm.j.get("version") != "2.0" or cm.j.get("type") != "CityJSON":
        # cjio knows 0.6 and later; older files (e.g. "CityModel" 0.2) pass through as is.
        raise IngestError(
            f"cjio cannot upgrade version {old} (it upgrades 0.6 and later)", source=source
        )
    target = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(cm.j))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return old

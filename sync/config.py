"""The live-data configuration file: id mapping, alert rules, style rules, feed formats.

One TOML (or JSON) file, named by ``TWIN_CONFIG`` / ``twin serve --config``::

    topic_template = "city/{object_id}/{property}"

    [formats]                 # feed name -> decoder (json, sensorthings, ngsi-ld, ngsi-v2, csv)
    frost = "sensorthings"

    [mapping.entities."datastream:1"]
    object = "net:water:J-10"
    property = "pressure"

    [[alerts]]
    name = "low-pressure"
    rule = "pressure < 2.0 for 5m"
    types = ["WaterJunction"]
    severity = "critical"

    [[styles]]
    name = "pressure"
    property = "pressure"
    types = ["WaterJunction", "WaterPipe"]
    unit = "bar"
    stops = [[0.0, "#d7191c"], [2.0, "#fdae61"], [4.0, "#1a9641"]]

    [[styles]]
    name = "status"
    property = "status"
    categories = { ok = "#1a9641", alarm = "#d7191c" }
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sync.mapping import Mapping
from twin.alerts import AlertRule, parse_rule
from twin.errors import TwinError

__all__ = ["DEFAULT_STYLES", "LiveConfig", "load_config", "parse_styles"]

_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")

DEFAULT_STYLES: list[dict[str, Any]] = [
    {
        "name": "pressure",
        "property": "pressure",
        "types": ["WaterJunction", "WaterPipe", "WaterTank", "WaterReservoir"],
        "unit": "bar",
        "stops": [[0.0, "#d7191c"], [2.0, "#fdae61"], [3.0, "#a6d96a"], [5.0, "#1a9641"]],
    },
    {
        "name": "flow",
        "property": "flow",
        "types": ["WaterPipe", "WaterPump"],
        "unit": "L/s",
        "stops": [[0.0, "#f7fbff"], [20.0, "#6baed6"], [100.0, "#08306b"]],
    },
    {
        "name": "line loading",
        "property": "loading_percent",
        "types": ["PowerLine", "PowerTransformer"],
        "unit": "%",
        "stops": [[0.0, "#1a9641"], [60.0, "#fdae61"], [90.0, "#d7191c"]],
    },
    {
        "name": "status",
        "property": "status",
        "categories": {
            "ok": "#1a9641",
            "open": "#1a9641",
            "closed": "#7f7f7f",
            "alarm": "#d7191c",
            "fault": "#d7191c",
        },
    },
]


@dataclass
class LiveConfig:
    """Everything the live path is configured with."""

    mapping: Mapping | None = None
    rules: list[AlertRule] = field(default_factory=list)
    styles: list[dict[str, Any]] = field(default_factory=lambda: list(DEFAULT_STYLES))
    formats: dict[str, str] = field(default_factory=dict)
    topic_template: str = "city/{object_id}/{property}"


def parse_styles(raw: Any, where: str = "styles") -> list[dict[str, Any]]:
    """Check style rules: a property, and either ascending numeric ``stops`` or ``categories``.

    Raises:
        TwinError: naming the bad rule and key.
    """
    if not isinstance(raw, list):
        raise TwinError(f"{where}: must be a list of style rules")
    out = []
    for i, r in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(r, dict) or not isinstance(r.get("property"), str):
            raise TwinError(f"{at}: needs a 'property'")
        rule = {"name": str(r.get("name", r["property"])), "property": r["property"]}
        if "types" in r:
            if not isinstance(r["types"], list) or not all(isinstance(t, str) for t in r["types"]):
                raise TwinError(f"{at}.types: must be a list of object types")
            rule["types"] = r["types"]
        if "unit" in r:
            rule["unit"] = str(r["unit"])
        if "stops" in r:
            stops = r["stops"]
            ok = isinstance(stops, list) and len(stops) >= 2
            ok = ok and all(
                isinstance(s, list)
                and len(s) == 2
                and isinstance(s[0], int | float)
                and isinstance(s[1], str)
                and _COLOR.match(s[1])
                for s in stops
            )
            if not ok or [s[0] for s in stops] != sorted(s[0] for s in stops):
                raise TwinError(f"{at}.stops: need >= 2 [value, '#rrggbb'] pairs, ascending")
            rule["stops"] = [[float(a), b] for a, b in stops]
        elif "categories" in r:
            cats = r["categories"]
            if not isinstance(cats, dict) or not all(
                isinstance(v, str) and _COLOR.match(v) for v in cats.values()
            ):
                raise TwinError(f"{at}.categories: must map values to '#rrggbb' colors")
            rule["categories"] = dict(cats)
        else:
            raise TwinError(f"{at}: needs 'stops' (numbers) or 'categories' (values)")
        out.append(rule)
    return out


def load_config(path: str | Path | None) -> LiveConfig:
    """Read the live configuration; None gives the defaults.

    Raises:
        TwinError: unreadable file or a bad section (named).
    """
    if path is None:
        return LiveConfig()
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TwinError(f"config {p}: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(data.decode()) if p.suffix == ".toml" else orjson.loads(data)
    except (tomllib.TOMLDecodeError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TwinError(f"config {p}: {exc}") from None
    if not isinstance(doc, dict):
        raise TwinError(f"config {p}: must be a table/object")
    cfg = LiveConfig()
    if "mapping" in doc:
        cfg.mapping = Mapping.from_dict(doc["mapping"])
    for i, a in enumerate(doc.get("alerts") or []):
        if not isinstance(a, dict) or not isinstance(a.get("rule"), str):
            raise TwinError(f"config {p}: alerts[{i}] needs a 'rule'")
        cfg.rules.append(
            parse_rule(
                str(a.get("name", f"rule-{i}")),
                a["rule"],
                types=list(a.get("types") or []),
                ids=list(a.get("ids") or []),
                severity=str(a.get("severity", "warning")),
            )
        )
    if "styles" in doc:
        cfg.styles = parse_styles(doc["styles"], f"config {p}: styles")
    formats = doc.get("formats") or {}
    if not isinstance(formats, dict):
        raise TwinError(f"config {p}: formats must map feed names to decoders")
    cfg.formats = {str(k): str(v) for k, v in formats.items()}
    if "topic_template" in doc:
        cfg.topic_template = str(doc["topic_template"])
    return cfg

"""A session's comments as CSV, GeoJSON and a printable HTML report, from any comment source.

The exports are written against :class:`CommentSource`, a one-method protocol, so they do
not depend on how sessions and comments are stored. Comments may come as mappings (flat
``object_id``/``point`` or nested ``anchor``) or as objects with ``as_dict()``.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import orjson

from scene.snapshot import Camera, SceneFrame

__all__ = [
    "HIDDEN_STATES",
    "MAX_COMMENTS",
    "MAX_VIEWPOINTS",
    "CommentRow",
    "CommentSource",
    "comments_csv",
    "comments_geojson",
    "normalize_comments",
    "report_html",
]

MAX_COMMENTS = 10_000
MAX_VIEWPOINTS = 12
HIDDEN_STATES = frozenset({"hidden", "hidden_pending_review", "rejected"})
"""States whose text a report does not show (the moderation log says why, not what)."""
# Spreadsheets run cells that start with these as formulas (OWASP "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

FrameOf = Callable[[str], SceneFrame | None]
SnapshotOf = Callable[[str, Camera, Sequence[str]], bytes | None]
CentroidOf = Callable[[str, str], tuple[float, float, float] | None]


@runtime_checkable
class CommentSource(Protocol):
    """Where a session's comments come from (the participation store, or a test list)."""

    def list_comments(self, session_id: str, *, limit: int = ...) -> Sequence[Any]:
        """The session's comments, oldest first: mappings or objects with ``as_dict()``.

        Each has ``id``, ``text``, ``category``, ``object_id`` and ``point`` (or an
        ``anchor`` holding them), ``camera`` ({position, target, up?, fov?} in scene
        coordinates), ``scenario``, ``state`` and ``created`` (Unix seconds).
        """
        ...


@dataclass(frozen=True)
class CommentRow:
    """One comment, normalized."""

    id: str
    text: str
    category: str | None
    object_id: str | None
    point: tuple[float, float, float] | None
    camera: Camera | None
    scenario: str
    state: str
    created: float


def _vec(v: Any) -> tuple[float, float, float] | None:
    try:
        x, y, z = (float(a) for a in v)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(a) for a in (x, y, z)):
        return None
    return (x, y, z)


def normalize_comments(items: Sequence[Any]) -> list[CommentRow]:
    """Read comments of any supported shape; camera poses that cannot render become None.

    Args:
        items: mappings or objects with ``as_dict()``.

    Returns:
        The rows, in the given order.
    """
    rows: list[CommentRow] = []
    for item in items:
        d: Mapping[str, Any] = item if isinstance(item, Mapping) else item.as_dict()
        anchor = d.get("anchor") or {}
        object_id = d.get("object_id", anchor.get("object_id"))
        point = d.get("point", anchor.get("point"))
        camera: Camera | None = None
        if isinstance(d.get("camera"), Mapping):
            try:
                camera = Camera.from_dict(dict(d["camera"]))
            except Exception:  # a bad stored pose must not sink the report
                camera = None
        rows.append(
            CommentRow(
                id=str(d["id"]),
                text=str(d.get("text") or ""),
                category=str(d["category"]) if d.get("category") else None,
                object_id=str(object_id) if object_id else None,
                point=_vec(point) if point is not None else None,
                camera=camera,
                scenario=str(d.get("scenario") or "base"),
                state=str(d.get("state") or ""),
                created=float(d.get("created") or 0.0),
            )
        )
    return rows


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _cell(text: str | None) -> str:
    if not text:
        return ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _anchors(
    rows: Sequence[CommentRow], frame_of: FrameOf
) -> list[tuple[tuple[float, ...] | None, tuple[float, ...] | None, str | None]]:
    """(source-CRS point, WGS84 point, CRS) per row, converted per scenario in one batch."""
    out: list[tuple[tuple[float, ...] | None, tuple[float, ...] | None, str | None]] = [
        (None, None, None)
    ] * len(rows)
    by_scenario: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.point is not None:
            by_scenario.setdefault(r.scenario, []).append(i)
    for scenario, idx in by_scenario.items():
        frame = frame_of(scenario)
        if frame is None:
            continue
        pts = [p for i in idx if (p := rows[i].point) is not None]
        src = frame.to_source(pts)
        wgs = frame.to_wgs84(pts)
        for k, i in enumerate(idx):
            out[i] = (
                tuple(float(v) for v in src[k]),
                tuple(float(v) for v in wgs[k]) if wgs is not None else None,
                frame.crs,
            )
    return out


def comments_csv(rows: Sequence[CommentRow], frame_of: FrameOf) -> str:
    """The comments as CSV (RFC 4180), one row per comment.

    Text cells that a spreadsheet would run as a formula get a leading ``'`` (OWASP CSV
    injection); everything else is exported as stored.

    Args:
        rows: the comments.
        frame_of: the scene frame of a scenario (None when it has no scene).

    Returns:
        The CSV text with a header row.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(
        [
            "id",
            "created",
            "state",
            "category",
            "scenario",
            "object_id",
            "x",
            "y",
            "z",
            "crs",
            "source_x",
            "source_y",
            "source_z",
            "lon",
            "lat",
            "height",
            "camera",
            "text",
        ]
    )
    for r, (src, wgs, crs) in zip(rows, _anchors(rows, frame_of), strict=True):
        w.writerow(
            [
                r.id,
                _iso(r.created),
                r.state,
                _cell(r.category),
                r.scenario,
                _cell(r.object_id),
                *(r.point if r.point is not None else ("", "", "")),
                crs or "",
                *(src if src is not None else ("", "", "")),
                *(wgs if wgs is not None else ("", "", "")),
                orjson.dumps(r.camera.as_dict()).decode() if r.camera is not None else "",
                _cell(r.text),
            ]
        )
    return buf.getvalue()


def comments_geojson(
    rows: Sequence[CommentRow], frame_of: FrameOf, centroid_of: CentroidOf
) -> dict[str, Any]:
    """The comments as a GeoJSON FeatureCollection (RFC 7946, WGS84 lon/lat/height).

    A comment with a 3D point is placed there; one anchored to an object only, at the
    object's centroid (``anchor: "object"``); one whose place is unknown (no CRS) has a
    null geometry (RFC 7946 §3.2). Source-CRS and scene coordinates are in properties.

    Args:
        rows: the comments.
        frame_of: the scene frame of a scenario.
        centroid_of: an object's WGS84 centroid in a scenario, ``centroid_of(scenario, id)``.

    Returns:
        The FeatureCollection.
    """
    features: list[dict[str, Any]] = []
    for r, (src, wgs, crs) in zip(rows, _anchors(rows, frame_of), strict=True):
        geometry: dict[str, Any] | None = None
        anchor = None
        if wgs is not None:
            geometry = {"type": "Point", "coordinates": list(wgs)}
            anchor = "point"
        elif r.object_id is not None:
            c = centroid_of(r.scenario, r.object_id)
            if c is not None:
                geometry = {"type": "Point", "coordinates": list(c)}
                anchor = "object"
        features.append(
            {
                "type": "Feature",
                "id": r.id,
                "geometry": geometry,
                "properties": {
                    "id": r.id,
                    "text": r.text,
                    "category": r.category,
                    "object_id": r.object_id,
                    "scenario": r.scenario,
                    "state": r.state,
                    "created": _iso(r.created),
                    "anchor": anchor,
                    "point_scene": list(r.point) if r.point is not None else None,
                    "point_source": list(src) if src is not None else None,
                    "crs": crs,
                    "camera": r.camera.as_dict() if r.camera is not None else None,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _viewpoints(rows: Sequence[CommentRow]) -> list[tuple[str, Camera, list[CommentRow]]]:
    """Distinct (scenario, camera) poses, most comments first, at most MAX_VIEWPOINTS."""
    groups: dict[tuple[Any, ...], tuple[str, Camera, list[CommentRow]]] = {}
    for r in rows:
        if r.camera is None:
            continue
        # Poses a centimetre apart are the same viewpoint (a restored camera, re-saved).
        key = (
            r.scenario,
            *(round(v, 2) for v in (*r.camera.position, *r.camera.target)),
            round(r.camera.fov, 1),
        )
        groups.setdefault(key, (r.scenario, r.camera, []))[2].append(r)
    ordered = sorted(groups.values(), key=lambda g: (-len(g[2]), g[2][0].created))
    return ordered[:MAX_VIEWPOINTS]


def report_html(
    session_id: str,
    rows: Sequence[CommentRow],
    snapshot_of: SnapshotOf,
    *,
    title: str | None = None,
    now: float | None = None,
) -> str:
    """A printable HTML report: counts per category, state and object; snapshots.

    Every user-supplied string (text, category, object id, scenario, title) is escaped,
    so an XSS payload shows literally. Texts of comments in :data:`HIDDEN_STATES` are
    not shown. Each commented viewpoint (at most :data:`MAX_VIEWPOINTS`) gets a PNG
    snapshot as a data URI, with its commented objects highlighted.

    Args:
        session_id: the session.
        rows: its comments.
        snapshot_of: renders ``(scenario, camera, highlight ids)`` to PNG (None: skip).
        title: the session's title, if known.
        now: the report's time (default: now).

    Returns:
        A self-contained HTML document.
    """
    e = html.escape
    when = _iso(now if now is not None else dt.datetime.now(tz=dt.UTC).timestamp())
    cats = Counter(r.category or "(none)" for r in rows)
    states = Counter(r.state or "(none)" for r in rows)
    objs = Counter(r.object_id for r in rows if r.object_id)
    obj_cats: dict[str, Counter[str]] = {}
    for r in rows:
        if r.object_id:
            obj_cats.setdefault(r.object_id, Counter())[r.category or "(none)"] += 1

    def table(head: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
        th = "".join(f"<th>{e(h)}</th>" for h in head)
        trs = "".join(
            "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in body
        )
        return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

    def text_of(r: CommentRow) -> str:
        if r.state in HIDDEN_STATES:
            return '<em class="hidden">[hidden by moderation]</em>'
        return f'<span class="text">{e(r.text)}</span>'

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Participation report: {e(title or session_id)}</title>",
        "<style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "td,th{border:1px solid #bbb;padding:.25em .6em;text-align:left}"
        ".text{white-space:pre-wrap}.hidden{color:#888}"
        "figure{margin:0 0 2em;page-break-inside:avoid}img{max-width:100%;border:1px solid #ccc}"
        "@media print{body{margin:0}a{color:inherit}}</style></head><body>",
        f"<h1>Participation report: {e(title or session_id)}</h1>",
        f"<p>Session <code>{e(session_id)}</code>, generated {e(when)}: "
        f"{len(rows)} comments on {len(objs)} objects.</p>",
        "<h2>Comments per category</h2>",
        table(["category", "comments"], [(k, v) for k, v in cats.most_common()]),
        "<h2>Comments per moderation state</h2>",
        table(["state", "comments"], [(k, v) for k, v in states.most_common()]),
        "<h2>Most-commented objects</h2>",
        table(
            ["object", "comments", "categories"],
            [
                (
                    oid,
                    n,
                    ", ".join(f"{c} ({k})" for c, k in obj_cats[oid].most_common()),
                )
                for oid, n in objs.most_common(10)
            ],
        ),
        "<h2>Comments per object</h2>",
        table(["object", "comments"], sorted(objs.items())),
        "<h2>Viewpoints</h2>",
    ]
    views = _viewpoints(rows)
    n_posed = sum(1 for r in rows if r.camera is not None)
    if not views:
        parts.append("<p>No comment recorded a camera pose.</p>")
    for i, (scenario, cam, group) in enumerate(views, start=1):
        ids = sorted({r.object_id for r in group if r.object_id})
        png = snapshot_of(scenario, cam, ids)
        img = (
            f'<img alt="viewpoint {i}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode()}">'
            if png is not None
            else "<p><em>(no snapshot: the scenario has no scene)</em></p>"
        )
        items = "".join(
            f"<li>{e(r.category or '')}{' · ' if r.category else ''}"
            f"{e(r.object_id or '')}: {text_of(r)}</li>"
            for r in group
        )
        parts.append(
            f"<figure><h3>Viewpoint {i}: scenario {e(scenario)}, {len(group)} comments</h3>"
            f"{img}<figcaption><ul>{items}</ul></figcaption></figure>"
        )
    if n_posed > sum(len(g) for _, _, g in views):
        parts.append(f"<p>Only the {len(views)} most-commented viewpoints are shown.</p>")
    parts.append("<h2>All comments</h2><ol>")
    parts.extend(
        f"<li><small>{e(_iso(r.created))} · {e(r.scenario)} · {e(r.category or '')} · "
        f"{e(r.object_id or '')}</small><br>{text_of(r)}</li>"
        for r in rows
    )
    parts.append("</ol></body></html>")
    return "\n".join(parts)

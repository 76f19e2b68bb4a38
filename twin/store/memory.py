"""In-memory StateStore: the test fake and the reference semantics for the SQL stores."""

from __future__ import annotations

import bisect
import hashlib
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from twin.alerts import Alert
from twin.objects import TwinObject
from twin.query import ObjectQuery, compare, encode_cursor
from twin.state import (
    ApplyResult,
    AuditEntry,
    DeadLetter,
    HistoryBucket,
    HistoryPoint,
    StateUpdate,
    StateValue,
)
from twin.store.base import Page, SourceInfo, searchable_text, sort_value

__all__ = ["MemoryStore"]


class MemoryStore:
    """Dicts and sorted lists; not persistent."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._objects: dict[tuple[str, str], TwinObject] = {}
        self._latest: dict[str, dict[str, StateValue]] = {}
        # (object, property) -> sorted list of (time, value, source, quality)
        self._history: dict[tuple[str, str], list[tuple[float, Any, str, str | None]]] = {}
        # message id -> event time of its point, so pruning the point forgets the id too
        self._msg_ids: dict[str, float] = {}
        self._audit: list[AuditEntry] = []
        self._rejected: list[DeadLetter] = []
        self._alerts: dict[str, Alert] = {}
        self._sources: dict[tuple[str, str], tuple[SourceInfo, bytes]] = {}

    # -- objects -----------------------------------------------------------------------

    def put_objects(
        self,
        objects: Iterable[TwinObject],
        *,
        scenario: str = "base",
        source: str = "",
        source_data: bytes | None = None,
    ) -> int:
        # Copies, built first: all-or-nothing, and later edits by the caller do not
        # reach into the store (as with the SQL stores, which serialize).
        batch = {o.id: TwinObject.from_dict(o.as_dict()) for o in objects}
        for oid, o in batch.items():
            o.scenario = scenario
            self._objects[(scenario, oid)] = o
        if source_data is not None:
            old = self._sources.get((scenario, source))
            info = SourceInfo(
                name=source,
                sha256=hashlib.sha256(source_data).hexdigest(),
                size=len(source_data),
                added=old[0].added if old else time.time(),
            )
            self._sources[(scenario, source)] = (info, source_data)
        return len(batch)

    def sources(self, scenario: str = "base") -> list[SourceInfo]:
        infos = [i for (sc, _), (i, _) in self._sources.items() if sc == scenario]
        return sorted(infos, key=lambda i: (i.added, i.name))

    def get_source(self, name: str, scenario: str = "base") -> bytes | None:
        entry = self._sources.get((scenario, name))
        return entry[1] if entry else None

    def get_object(self, object_id: str, scenario: str = "base") -> TwinObject | None:
        obj = self._objects.get((scenario, object_id))
        return TwinObject.from_dict(obj.as_dict()) if obj is not None else None

    def query_objects(self, query: ObjectQuery) -> Page:
        if query.ids:
            wanted = set(query.ids)
            items = [
                o
                for (sc, oid), o in self._objects.items()
                if sc == query.scenario and oid in wanted
            ]
        else:
            items = [o for (sc, _), o in self._objects.items() if sc == query.scenario]
        items = [o for o in items if self._match(o, query)]

        def key(o: TwinObject) -> tuple[int, Any, str]:
            v = sort_value(o, query.sort)
            return (v is None, v if v is not None else 0, o.id)

        items.sort(key=key, reverse=query.descending)
        if query.cursor is not None:
            cv, cid = query.cursor
            marker = (cv is None, cv if cv is not None else 0, cid)
            if query.descending:
                items = [o for o in items if key(o) < marker]
            else:
                items = [o for o in items if key(o) > marker]
        page = items[: query.limit]
        nxt = None
        if len(items) > query.limit and page:
            last = page[-1]
            nxt = encode_cursor(sort_value(last, query.sort), last.id)
        return Page(items=page, next_cursor=nxt)

    def _match(self, o: TwinObject, q: ObjectQuery) -> bool:
        if q.types and o.type not in q.types:
            return False
        if q.text and q.text.lower() not in searchable_text(o).lower():
            return False
        if q.bbox is not None:
            g = o.geometry
            if g is None:
                return False
            b = g.bbox_wgs84 if q.bbox_crs == "wgs84" else g.bbox
            if b is None:
                return False
            minx, miny, maxx, maxy = q.bbox
            if b[3] < minx or b[0] > maxx or b[4] < miny or b[1] > maxy:
                return False
        for c in q.conditions:
            if c.scope == "attr":
                actual = o.attributes.get(c.name)
            elif c.scope == "state":
                sv = self._latest.get(o.id, {}).get(c.name)
                actual = sv.value if sv else None
            else:
                g = o.geometry
                actual = (
                    None
                    if g is None
                    else {"height": g.height, "footprint": g.footprint_area, "lod": g.lod}[c.name]
                )
            if not compare(actual, c):
                return False
        return True

    def count(self, scenario: str = "base") -> int:
        return sum(1 for (sc, _) in self._objects if sc == scenario)

    def counts_by_type(self, scenario: str = "base") -> dict[str, int]:
        c = Counter(o.type for (sc, _), o in self._objects.items() if sc == scenario)
        return dict(c.most_common())

    # -- state -------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[StateUpdate]) -> ApplyResult:
        res = ApplyResult()
        for u in updates:
            key = (u.object_id, u.property)
            hist = self._history.setdefault(key, [])
            i = bisect.bisect_left(hist, (u.time,), key=lambda r: (r[0],))
            if (i < len(hist) and hist[i][0] == u.time) or (
                u.msg_id is not None and u.msg_id in self._msg_ids
            ):
                res.duplicates += 1
                continue
            hist.insert(i, (u.time, u.value, u.source, u.quality))
            if u.msg_id is not None:
                self._msg_ids[u.msg_id] = u.time
            res.stored += 1
            cur = self._latest.setdefault(u.object_id, {}).get(u.property)
            if cur is None or u.time > cur.time:
                self._latest[u.object_id][u.property] = StateValue(
                    u.value, u.time, u.source, u.quality
                )
                res.latest.append(u)
            else:
                res.late += 1
        return res

    def latest(self, object_id: str) -> dict[str, StateValue]:
        return dict(self._latest.get(object_id, {}))

    def _range(
        self, object_id: str, prop: str, since: float | None, until: float | None
    ) -> list[tuple[float, Any, str, str | None]]:
        hist = self._history.get((object_id, prop), [])
        lo = 0 if since is None else bisect.bisect_left(hist, since, key=lambda r: r[0])
        hi = len(hist) if until is None else bisect.bisect_left(hist, until, key=lambda r: r[0])
        return hist[lo:hi]

    def history(
        self,
        object_id: str,
        prop: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[HistoryPoint]:
        rows = self._range(object_id, prop, since, until)[:limit]
        return [HistoryPoint(t, v, s, q) for t, v, s, q in rows]

    def history_buckets(
        self,
        object_id: str,
        prop: str,
        every: float,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[HistoryBucket]:
        buckets: dict[float, list[Any]] = {}
        for t, v, _, _ in self._range(object_id, prop, since, until):
            start = math.floor(t / every) * every
            buckets.setdefault(start, []).append(v)
        out = []
        for start in sorted(buckets)[:limit]:
            vals = buckets[start]
            nums = [
                float(v) for v in vals if isinstance(v, int | float) and not isinstance(v, bool)
            ]
            out.append(
                HistoryBucket(
                    start=start,
                    count=len(vals),
                    min=min(nums) if nums else None,
                    mean=sum(nums) / len(nums) if nums else None,
                    max=max(nums) if nums else None,
                )
            )
        return out

    def prune_history(self, before: float) -> int:
        n = 0
        for key, hist in self._history.items():
            i = bisect.bisect_left(hist, before, key=lambda r: r[0])
            n += i
            self._history[key] = hist[i:]
        self._msg_ids = {m: t for m, t in self._msg_ids.items() if t >= before}
        return n

    # -- dead letters, alerts ------------------------------------------------------------

    def append_rejected(self, records: Sequence[DeadLetter]) -> None:
        self._rejected.extend(records)

    def list_rejected(
        self, feed: str | None = None, *, limit: int = 100, before: float | None = None
    ) -> list[DeadLetter]:
        rows = [
            (i, r)
            for i, r in enumerate(self._rejected)
            if (feed is None or r.feed == feed) and (before is None or r.time < before)
        ]
        rows.sort(key=lambda ir: (ir[1].time, ir[0]), reverse=True)
        return [r for _, r in rows[:limit]]

    def put_alert(self, alert: Alert) -> None:
        self._alerts.pop(alert.id, None)
        self._alerts[alert.id] = alert

    def get_alert(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    def list_alerts(
        self, *, state: str | None = None, object_id: str | None = None, limit: int = 100
    ) -> list[Alert]:
        rows = [
            (i, a)
            for i, a in enumerate(self._alerts.values())
            if (state is None or a.state == state)
            and (object_id is None or a.object_id == object_id)
        ]
        rows.sort(key=lambda ia: (ia[1].updated, ia[0]), reverse=True)
        return [a for _, a in rows[:limit]]

    # -- audit ---------------------------------------------------------------------------

    def append_audit(self, entry: AuditEntry) -> None:
        self._audit.append(entry)

    def list_audit(self, *, limit: int = 100, before: float | None = None) -> list[AuditEntry]:
        rows = [a for a in self._audit if before is None or a.time < before]
        # Newest first; among equal times the later appended first (as the SQL stores).
        order = sorted(enumerate(rows), key=lambda ia: (-ia[1].time, -ia[0]))
        return [a for _, a in order][:limit]

    def stats(self) -> dict[str, int]:
        return {
            "objects": len(self._objects),
            "state": sum(len(v) for v in self._latest.values()),
            "history": sum(len(v) for v in self._history.values()),
            "audit": len(self._audit),
        }

    def close(self) -> None:
        return None

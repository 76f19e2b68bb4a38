"""Alert rules on live state: a condition on a property, optionally held for a duration.

Pure: the engine feeds new latest values in (:meth:`RuleEngine.observe`) and a clock
(:meth:`RuleEngine.tick`); the rule engine answers with alerts to store and announce.

Rule syntax (one string, the same comparison language as list filters)::

    pressure < 2.0 for 5m
    loading_percent > 90
    status == "fault"

scoped by object ``types`` and/or ``ids``. A rule *fires* when its condition has held
(by event time) for its duration: an alert opens. An ``engineer`` acknowledges it; it
resolves itself when the condition clears.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from twin.errors import TwinError
from twin.query import Condition, QueryError, compare, parse_duration, parse_where
from twin.state import StateUpdate

__all__ = ["Alert", "AlertRule", "RuleEngine", "parse_rule"]

_FOR = re.compile(r"^(?P<cond>.+?)\s+for\s+(?P<dur>\S+)\s*$", re.IGNORECASE)
ALERT_STATES = ("open", "acknowledged", "resolved")


@dataclass(frozen=True)
class AlertRule:
    """A named condition on one property, scoped to object types and/or ids."""

    name: str
    condition: Condition
    hold: float = 0.0
    types: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    severity: str = "warning"
    text: str = ""

    def applies(self, object_id: str, object_type: str | None) -> bool:
        """Whether the rule watches this object."""
        if self.ids and object_id not in self.ids:
            return False
        return not (self.types and object_type not in self.types)

    @property
    def property(self) -> str:
        """The watched property."""
        return self.condition.name

    def holds(self, value: Any) -> bool:
        """Whether a value meets the condition (same semantics as list filters)."""
        return compare(value, self.condition)


def parse_rule(
    name: str,
    text: str,
    *,
    types: Sequence[str] = (),
    ids: Sequence[str] = (),
    severity: str = "warning",
) -> AlertRule:
    """Parse ``"pressure < 2.0 for 5m"`` into a rule.

    Raises:
        TwinError: bad syntax (naming the bad part).
    """
    m = _FOR.match(text.strip())
    try:
        cond, hold = (m.group("cond"), parse_duration(m.group("dur"))) if m else (text, 0.0)
        # `==` reads naturally in rules; the filter language writes `=`.
        cond = re.sub(r"(?<![<>!=])==(?!=)", "=", cond.strip())
        conds = parse_where(cond)
        if len(conds) != 1:
            raise QueryError("one condition per rule", cond)
        c = conds[0]
    except QueryError as exc:
        raise TwinError(f"alert rule {name!r}: cannot read {text!r} ({exc})") from None
    if c.scope == "geom":
        raise TwinError(f"alert rule {name!r}: rules watch live state, not geometry")
    if severity not in ("info", "warning", "critical"):
        raise TwinError(f"alert rule {name!r}: severity must be info, warning or critical")
    return AlertRule(
        name=name,
        condition=c,
        hold=hold,
        types=tuple(types),
        ids=tuple(ids),
        severity=severity,
        text=text.strip(),
    )


@dataclass(frozen=True)
class Alert:
    """One firing of a rule on one object."""

    id: str
    rule: str
    object_id: str
    property: str
    state: str
    severity: str
    value: Any
    opened: float
    message: str = ""
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    resolved_at: float | None = None
    updated: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        """Inverse of :meth:`as_dict`."""
        return cls(**d)

    def acknowledge(self, who: str, when: float) -> Alert:
        """The alert acknowledged by ``who``.

        Raises:
            TwinError: it is already resolved.
        """
        if self.state == "resolved":
            raise TwinError(f"alert {self.id} is resolved; nothing to acknowledge")
        return replace(
            self, state="acknowledged", acknowledged_by=who, acknowledged_at=when, updated=when
        )


@dataclass
class _Watch:
    since: float | None = None  # event time the condition started holding
    alert: Alert | None = None  # the open/acknowledged alert, if any


@dataclass
class RuleEngine:
    """Evaluates rules on every new latest value; remembers what is pending and open."""

    rules: list[AlertRule] = field(default_factory=list)
    _watch: dict[tuple[str, str], _Watch] = field(default_factory=dict)

    def load_open(self, alerts: Iterable[Alert]) -> None:
        """Adopt alerts still open in the store (after a restart)."""
        for a in alerts:
            if a.state != "resolved":
                self._watch[(a.rule, a.object_id)] = _Watch(since=a.opened, alert=a)

    def observe(self, updates: Sequence[StateUpdate], types: dict[str, str | None]) -> list[Alert]:
        """Feed new latest values; return alerts opened or resolved by them.

        Args:
            updates: new latest values (in event-time order per property).
            types: object id -> object type, for rules scoped by type.
        """
        changed: list[Alert] = []
        for u in updates:
            for rule in self.rules:
                if rule.property != u.property or not rule.applies(
                    u.object_id, types.get(u.object_id)
                ):
                    continue
                key = (rule.name, u.object_id)
                w = self._watch.setdefault(key, _Watch())
                if rule.holds(u.value):
                    if w.since is None:
                        w.since = u.time
                    if w.alert is None and u.time - w.since >= rule.hold:
                        w.alert = self._open(rule, u, w.since)
                        changed.append(w.alert)
                else:
                    w.since = None
                    if w.alert is not None:
                        changed.append(
                            replace(w.alert, state="resolved", resolved_at=u.time, updated=u.time)
                        )
                        w.alert = None
        return changed

    def acknowledged(self, alert: Alert) -> None:
        """Record an acknowledgement so a later resolve keeps it."""
        w = self._watch.get((alert.rule, alert.object_id))
        if w is not None and w.alert is not None and w.alert.id == alert.id:
            w.alert = alert

    @staticmethod
    def _open(rule: AlertRule, u: StateUpdate, since: float) -> Alert:
        held = f" for {u.time - since:g} s" if rule.hold else ""
        return Alert(
            id=uuid.uuid4().hex,
            rule=rule.name,
            object_id=u.object_id,
            property=u.property,
            state="open",
            severity=rule.severity,
            value=u.value,
            opened=u.time,
            message=f"{u.object_id}: {rule.text} ({u.property} = {u.value!r}{held})",
            updated=u.time,
        )

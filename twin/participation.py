"""Participatory planning: sessions, 3D-anchored comments, reactions, flags and moderation.

Pure domain (no web framework, no database): the records, their validation, and the
rules that move a comment between states. The stores (:mod:`twin.store.participation`)
persist these records; the API (``viewer/routes/sessions.py``) calls these functions.

Comment states::

    pre-moderation:   pending --approve--> visible --hide--> hidden
                         \\--hide--> hidden --approve--> visible
    post-moderation:  visible --N flags--> hidden_pending_review --approve--> visible
                                                  \\--hide--> hidden

A moderator's approval is final against flags: an approved (``reviewed``) comment is
not hidden automatically again; its flags are still recorded for the moderators.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from twin.errors import Forbidden, TwinError

__all__ = [
    "COMMENT_STATES",
    "DEFAULT_CATEGORIES",
    "DEFAULT_FLAG_THRESHOLD",
    "MAX_REASON",
    "MAX_TEXT",
    "MODERATION_ACTIONS",
    "PUBLIC_STATES",
    "RATE_LIMITS",
    "Anchor",
    "CameraPose",
    "Citizen",
    "Comment",
    "Flag",
    "FlagOutcome",
    "InvalidInput",
    "InvalidTransition",
    "ModerationEntry",
    "ParticipationError",
    "RateLimit",
    "RateLimited",
    "RateLimiter",
    "Reaction",
    "Session",
    "SessionClosed",
    "after_flag",
    "check_text",
    "edit_session",
    "hash_token",
    "issue_citizen",
    "moderate",
    "new_comment",
    "new_session",
    "pseudonym",
]

ModerationMode = Literal["pre", "post"]
CommentState = Literal["pending", "visible", "hidden", "hidden_pending_review"]

MODERATION_MODES: tuple[str, ...] = ("pre", "post")
COMMENT_STATES: tuple[str, ...] = ("pending", "visible", "hidden", "hidden_pending_review")
PUBLIC_STATES: tuple[str, ...] = ("visible",)
MODERATION_ACTIONS: tuple[str, ...] = ("approve", "hide", "auto_hide")
DEFAULT_CATEGORIES: tuple[str, ...] = ("height", "traffic", "green space", "heritage", "other")
DEFAULT_FLAG_THRESHOLD = 3
REACTION_KINDS: tuple[str, ...] = ("+1",)

MAX_TITLE = 200
MAX_DESCRIPTION = 10_000
MAX_TEXT = 2000
MAX_REASON = 500
MAX_CATEGORY = 40
MAX_CATEGORIES = 30
MAX_SCENARIOS = 20
MAX_OBJECT_ID = 512
MAX_FLAG_THRESHOLD = 1000
# Scene coordinates are metres around the scene origin; anything beyond this is a bug
# (or an attempt to store garbage), not a place in a city.
MAX_COORD = 1.0e7

# Requests per window (seconds). Per-process: with several API workers each counts its
# own share (a shared limiter would go through Redis).
RATE_LIMITS: dict[str, tuple[int, float]] = {
    "comment_per_token": (5, 60.0),
    "reaction_per_token": (30, 60.0),
    "flag_per_token": (10, 60.0),
    "post_per_ip": (30, 60.0),
    "citizen_per_ip": (10, 60.0),
}
RATE_LIMITER_MAX_KEYS = 100_000

TOKEN_PREFIX = "ct_"


class ParticipationError(TwinError):
    """Root of the participation errors that have no general TwinError counterpart."""


class InvalidInput(ParticipationError):
    """A value that breaks a rule (length, characters, category, scenario...) (HTTP 422).

    Attributes:
        field: the offending field (``text``, ``anchor.point``...).
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


class InvalidTransition(ParticipationError):
    """A moderation action that does not apply to the comment's state (HTTP 409)."""


class RateLimited(ParticipationError):
    """Too many requests in a window (HTTP 429).

    Attributes:
        retry_after: seconds until the request would be admitted.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class SessionClosed(Forbidden):
    """A session that accepts no comments now (not yet open, or closed) (HTTP 403)."""


# --------------------------------------------------------------------------- records


Vec3 = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class CameraPose:
    """Where the commenter's camera was, in scene coordinates (to restore the view)."""

    position: Vec3
    target: Vec3
    fov: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"position": list(self.position), "target": list(self.target), "fov": self.fov}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> CameraPose:
        """Inverse of :meth:`as_dict` (validated).

        Raises:
            InvalidInput: a malformed vector or field of view.
        """
        fov = d.get("fov")
        if fov is not None:
            fov = _finite(fov, "camera.fov")
            if not 0.0 < fov < 180.0:
                raise InvalidInput("camera.fov", "must be between 0 and 180 degrees")
        return CameraPose(
            _vec3(d.get("position"), "camera.position"),
            _vec3(d.get("target"), "camera.target"),
            fov,
        )


@dataclass(frozen=True, slots=True)
class Anchor:
    """What a comment points at: an object id, a 3D point, or both."""

    object_id: str | None = None
    point: Vec3 | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "object_id": self.object_id,
            "point": list(self.point) if self.point is not None else None,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Anchor:
        """Inverse of :meth:`as_dict` (validated).

        Raises:
            InvalidInput: neither an object nor a point, or a malformed one.
        """
        oid = d.get("object_id")
        point = d.get("point")
        if oid is None and point is None:
            raise InvalidInput("anchor", "give an object_id, a point, or both")
        if oid is not None:
            if not isinstance(oid, str) or not oid or len(oid) > MAX_OBJECT_ID:
                raise InvalidInput("anchor.object_id", f"1 to {MAX_OBJECT_ID} characters")
            check_text(oid, "anchor.object_id", MAX_OBJECT_ID, multiline=False)
        return Anchor(oid, _vec3(point, "anchor.point") if point is not None else None)


@dataclass(frozen=True, slots=True)
class Session:
    """A public participation session on one or more scenarios.

    Attributes:
        opens_at: epoch seconds from which comments are accepted.
        closes_at: epoch seconds from which they are refused again (None: until closed).
        moderation: ``pre`` (comments wait for a moderator) or ``post`` (shown at once).
        flag_threshold: flags that hide a visible comment pending review.
        created_by: the planner token's name (never the token).
    """

    id: str
    title: str
    description: str
    scenarios: tuple[str, ...]
    opens_at: float
    closes_at: float | None
    moderation: str
    categories: tuple[str, ...]
    flag_threshold: int
    created: float
    updated: float
    created_by: str = ""

    def status(self, now: float) -> Literal["upcoming", "open", "closed"]:
        """``upcoming``, ``open`` or ``closed`` at time ``now``."""
        if now < self.opens_at:
            return "upcoming"
        if self.closes_at is not None and now >= self.closes_at:
            return "closed"
        return "open"

    def ensure_open(self, now: float) -> None:
        """Raise unless the session accepts comments at ``now``.

        Raises:
            SessionClosed: not yet open, or closed.
        """
        status = self.status(now)
        if status == "upcoming":
            raise SessionClosed(
                f"session {self.id!r} is not open yet: comments are accepted from "
                f"{_iso(self.opens_at)}"
            )
        if status == "closed":
            assert self.closes_at is not None
            raise SessionClosed(
                f"session {self.id!r} closed at {_iso(self.closes_at)}: "
                "it accepts no more comments, reactions or flags"
            )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the stores keep)."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "scenarios": list(self.scenarios),
            "opens_at": self.opens_at,
            "closes_at": self.closes_at,
            "moderation": self.moderation,
            "categories": list(self.categories),
            "flag_threshold": self.flag_threshold,
            "created": self.created,
            "updated": self.updated,
            "created_by": self.created_by,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Session:
        """Inverse of :meth:`as_dict`."""
        return Session(
            id=d["id"],
            title=d["title"],
            description=d["description"],
            scenarios=tuple(d["scenarios"]),
            opens_at=float(d["opens_at"]),
            closes_at=None if d.get("closes_at") is None else float(d["closes_at"]),
            moderation=d["moderation"],
            categories=tuple(d["categories"]),
            flag_threshold=int(d["flag_threshold"]),
            created=float(d["created"]),
            updated=float(d["updated"]),
            created_by=d.get("created_by", ""),
        )


@dataclass(frozen=True, slots=True)
class Citizen:
    """A pseudonymous participant of one session; the store keeps only the token's hash."""

    token_hash: str
    session_id: str
    pseudonym: str
    created: float


@dataclass(frozen=True, slots=True)
class Comment:
    """A citizen's comment, anchored in 3D, with its moderation state and counters.

    Attributes:
        author: the citizen's pseudonym (never the token).
        state: one of :data:`COMMENT_STATES`.
        reviewed: a moderator approved it (flags no longer hide it automatically).
        reactions: number of +1 reactions; flags: number of flags.
    """

    id: str
    session_id: str
    author: str
    text: str
    scenario: str
    state: str
    created: float
    updated: float
    category: str | None = None
    anchor: Anchor | None = None
    camera: CameraPose | None = None
    parent_id: str | None = None
    reactions: int = 0
    flags: int = 0
    reviewed: bool = False

    @property
    def object_id(self) -> str | None:
        """The anchored object, if any."""
        return self.anchor.object_id if self.anchor is not None else None

    def body(self) -> dict[str, Any]:
        """The parts the stores keep as one JSON document (text, category, anchor, camera)."""
        return {
            "text": self.text,
            "category": self.category,
            "anchor": self.anchor.as_dict() if self.anchor is not None else None,
            "camera": self.camera.as_dict() if self.camera is not None else None,
        }

    def as_dict(self, *, moderator: bool = False) -> dict[str, Any]:
        """JSON-ready form; ``flags`` and ``reviewed`` only for moderators."""
        d: dict[str, Any] = {
            "id": self.id,
            "session_id": self.session_id,
            "parent_id": self.parent_id,
            "author": self.author,
            **self.body(),
            "scenario": self.scenario,
            "state": self.state,
            "created": self.created,
            "updated": self.updated,
            "reactions": self.reactions,
        }
        if moderator:
            d["flags"] = self.flags
            d["reviewed"] = self.reviewed
        return d

    @staticmethod
    def from_row(
        *,
        id: str,
        session_id: str,
        author: str,
        scenario: str,
        state: str,
        created: float,
        updated: float,
        parent_id: str | None,
        reactions: int,
        flags: int,
        reviewed: bool,
        body: dict[str, Any],
    ) -> Comment:
        """A comment from stored columns and its :meth:`body` document."""
        anchor = body.get("anchor")
        camera = body.get("camera")
        return Comment(
            id=id,
            session_id=session_id,
            author=author,
            text=body["text"],
            scenario=scenario,
            state=state,
            created=float(created),
            updated=float(updated),
            category=body.get("category"),
            anchor=Anchor.from_dict(anchor) if anchor else None,
            camera=CameraPose.from_dict(camera) if camera else None,
            parent_id=parent_id,
            reactions=int(reactions),
            flags=int(flags),
            reviewed=bool(reviewed),
        )


@dataclass(frozen=True, slots=True)
class Reaction:
    """A +1 by one citizen on one comment (one per citizen and kind)."""

    comment_id: str
    author: str
    time: float
    kind: str = "+1"


@dataclass(frozen=True, slots=True)
class Flag:
    """A citizen's report that a comment breaks the rules (one per citizen)."""

    comment_id: str
    author: str
    reason: str
    time: float


@dataclass(frozen=True, slots=True)
class ModerationEntry:
    """One line of the public moderation log: what happened to which comment and why.

    Never holds the comment's text. ``moderator`` is the moderator token's name, or
    ``system`` for an automatic hide after flags.
    """

    session_id: str
    comment_id: str
    action: str
    reason: str
    moderator: str
    time: float
    state: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "time": self.time,
            "session_id": self.session_id,
            "comment_id": self.comment_id,
            "action": self.action,
            "reason": self.reason,
            "moderator": self.moderator,
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class FlagOutcome:
    """What a flag did: ``added`` False for a repeated flag; ``entry`` set on auto-hide."""

    added: bool
    comment: Comment
    entry: ModerationEntry | None = None


# --------------------------------------------------------------------------- validation


def check_text(
    value: str, field: str, max_len: int, *, min_len: int = 1, multiline: bool = True
) -> str:
    """Check a user-supplied text and return it unchanged (stored as given).

    Control characters are refused except newline and tab (where ``multiline``): they
    have no business in a comment and some (NUL) cannot be stored in PostgreSQL. Lone
    surrogates (invalid UTF-16 smuggled in JSON ``\\ud800`` escapes) are refused too.

    Raises:
        InvalidInput: too short, too long, blank, or a forbidden character.
    """
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if len(value) < min_len:
        raise InvalidInput(field, f"at least {min_len} character(s)")
    if len(value) > max_len:
        raise InvalidInput(field, f"at most {max_len} characters ({len(value)} given)")
    if min_len > 0 and not value.strip():
        raise InvalidInput(field, "must not be blank")
    allowed = ("\n", "\t") if multiline else ()
    for i, ch in enumerate(value):
        cat = unicodedata.category(ch)
        if (cat == "Cc" and ch not in allowed) or cat == "Cs":
            raise InvalidInput(
                field, f"control character U+{ord(ch):04X} at position {i} is not allowed"
            )
    return value


def _finite(v: Any, field: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidInput(field, "must be a number")
    f = float(v)
    if not math.isfinite(f) or abs(f) > MAX_COORD:
        raise InvalidInput(field, f"must be finite and within ±{MAX_COORD:g}")
    return f


def _vec3(v: Any, field: str) -> Vec3:
    if not isinstance(v, list | tuple) or len(v) != 3:
        raise InvalidInput(field, "must be [x, y, z]")
    x, y, z = (_finite(c, field) for c in v)
    return (x, y, z)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _check_scenarios(scenarios: Sequence[str]) -> tuple[str, ...]:
    out = tuple(scenarios)
    if not 1 <= len(out) <= MAX_SCENARIOS:
        raise InvalidInput("scenarios", f"1 to {MAX_SCENARIOS} scenario names")
    if len(set(out)) != len(out):
        raise InvalidInput("scenarios", "names must be unique")
    for s in out:
        check_text(s, "scenarios", 100, multiline=False)
    return out


def _check_categories(categories: Sequence[str]) -> tuple[str, ...]:
    out = tuple(categories)
    if len(out) > MAX_CATEGORIES:
        raise InvalidInput("categories", f"at most {MAX_CATEGORIES}")
    if len(set(out)) != len(out):
        raise InvalidInput("categories", "names must be unique")
    for c in out:
        check_text(c, "categories", MAX_CATEGORY, multiline=False)
    return out


def _check_times(opens_at: float, closes_at: float | None, *, empty_ok: bool = False) -> None:
    for name, t in (("opens_at", opens_at), ("closes_at", closes_at)):
        if t is not None and (not math.isfinite(t) or t < 0):
            raise InvalidInput(name, "must be a time (epoch seconds >= 0)")
    if closes_at is not None and (closes_at < opens_at or (closes_at == opens_at and not empty_ok)):
        raise InvalidInput("closes_at", "must be after opens_at")


def _new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(8)}"


# --------------------------------------------------------------------------- rules


def new_session(
    *,
    title: str,
    description: str = "",
    scenarios: Sequence[str] = ("base",),
    opens_at: float | None = None,
    closes_at: float | None = None,
    moderation: str = "post",
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    flag_threshold: int = DEFAULT_FLAG_THRESHOLD,
    created_by: str = "",
    now: float | None = None,
) -> Session:
    """A new, validated session (opening at ``now`` unless ``opens_at`` is given).

    Raises:
        InvalidInput: a value breaks a rule.
    """
    now = time.time() if now is None else now
    opens = now if opens_at is None else float(opens_at)
    _check_times(opens, closes_at)
    if moderation not in MODERATION_MODES:
        raise InvalidInput("moderation", "one of pre, post")
    if not 1 <= flag_threshold <= MAX_FLAG_THRESHOLD:
        raise InvalidInput("flag_threshold", f"1 to {MAX_FLAG_THRESHOLD}")
    return Session(
        id=_new_id("s-"),
        title=check_text(title, "title", MAX_TITLE, multiline=False),
        description=check_text(description, "description", MAX_DESCRIPTION, min_len=0),
        scenarios=_check_scenarios(scenarios),
        opens_at=opens,
        closes_at=None if closes_at is None else float(closes_at),
        moderation=moderation,
        categories=_check_categories(categories),
        flag_threshold=flag_threshold,
        created=now,
        updated=now,
        created_by=created_by,
    )


_UNSET: Any = object()


def edit_session(
    session: Session,
    *,
    title: str | None = None,
    description: str | None = None,
    opens_at: float | None = None,
    closes_at: float | None = _UNSET,
    close: bool = False,
    now: float | None = None,
) -> Session:
    """A session with planner edits applied; ``close`` ends it now (if still open).

    ``closes_at=None`` removes a scheduled close; leaving it out keeps it.

    Raises:
        InvalidInput: a value breaks a rule.
    """
    now = time.time() if now is None else now
    changes: dict[str, Any] = {"updated": now}
    if title is not None:
        changes["title"] = check_text(title, "title", MAX_TITLE, multiline=False)
    if description is not None:
        changes["description"] = check_text(description, "description", MAX_DESCRIPTION, min_len=0)
    opens = session.opens_at if opens_at is None else float(opens_at)
    closes = session.closes_at if closes_at is _UNSET else closes_at
    if close:
        # Closing early: now, or the scheduled close if that already passed. A session
        # that has not opened yet closes at its opening (it never accepts anything).
        closes = now if closes is None else min(closes, now)
        opens = min(opens, closes)
    _check_times(opens, closes, empty_ok=close)
    changes["opens_at"] = opens
    changes["closes_at"] = closes
    return replace(session, **changes)


def hash_token(token: str) -> str:
    """The stored form of a citizen token (SHA-256: tokens are 256-bit random)."""
    return hashlib.sha256(token.encode()).hexdigest()


def pseudonym(token_hash: str) -> str:
    """The public name of a citizen: stable per token, reveals nothing of it."""
    return "citizen-" + hashlib.sha256(("pseudonym:" + token_hash).encode()).hexdigest()[:10]


def issue_citizen(session: Session, now: float | None = None) -> tuple[str, Citizen]:
    """A fresh citizen token for ``session`` and the record to store (only its hash).

    Tokens may be issued while a session is upcoming or open, not once it closed.

    Raises:
        SessionClosed: the session is closed.
    """
    now = time.time() if now is None else now
    if session.status(now) == "closed":
        session.ensure_open(now)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    h = hash_token(token)
    return token, Citizen(h, session.id, pseudonym(h), now)


def new_comment(
    session: Session,
    citizen: Citizen,
    *,
    text: str,
    category: str | None = None,
    anchor: dict[str, Any] | None = None,
    camera: dict[str, Any] | None = None,
    scenario: str | None = None,
    parent: Comment | None = None,
    now: float | None = None,
) -> Comment:
    """A new comment by ``citizen`` in ``session``, in its first moderation state.

    A reply (``parent`` given) must be in the same session; it defaults to the parent's
    scenario. Pre-moderation: ``pending``; post-moderation: ``visible``.

    Raises:
        SessionClosed: the session does not accept comments now.
        Forbidden: the citizen belongs to another session.
        InvalidInput: a value breaks a rule.
    """
    now = time.time() if now is None else now
    if citizen.session_id != session.id:
        raise Forbidden("this citizen token belongs to another session")
    session.ensure_open(now)
    check_text(text, "text", MAX_TEXT)
    if category is not None and category not in session.categories:
        raise InvalidInput(
            "category", f"{category!r} is not one of {', '.join(session.categories)}"
        )
    if parent is not None and parent.session_id != session.id:
        raise InvalidInput("parent_id", "the parent comment is in another session")
    if scenario is None:
        scenario = parent.scenario if parent is not None else session.scenarios[0]
    if scenario not in session.scenarios:
        raise InvalidInput(
            "scenario",
            f"{scenario!r} is not shown in this session ({', '.join(session.scenarios)})",
        )
    return Comment(
        id=_new_id("c-"),
        session_id=session.id,
        author=citizen.pseudonym,
        text=text,
        scenario=scenario,
        state="pending" if session.moderation == "pre" else "visible",
        created=now,
        updated=now,
        category=category,
        anchor=Anchor.from_dict(anchor) if anchor is not None else None,
        camera=CameraPose.from_dict(camera) if camera is not None else None,
        parent_id=parent.id if parent is not None else None,
    )


def moderate(
    comment: Comment, action: str, reason: str, moderator: str, now: float | None = None
) -> tuple[Comment, ModerationEntry]:
    """Apply a moderator's ``approve`` or ``hide`` with a reason.

    ``approve`` makes a pending or hidden comment visible (or confirms a visible one:
    it is then ``reviewed`` and flags no longer hide it); ``hide`` hides any comment
    that is not hidden already.

    Raises:
        InvalidInput: an unknown action or a bad reason.
        InvalidTransition: the action does not apply to the comment's state.
    """
    now = time.time() if now is None else now
    check_text(reason, "reason", MAX_REASON)
    if action == "approve":
        if comment.state == "visible" and comment.reviewed:
            raise InvalidTransition(f"comment {comment.id!r} is already approved")
        new = replace(comment, state="visible", reviewed=True, updated=now)
    elif action == "hide":
        if comment.state == "hidden":
            raise InvalidTransition(f"comment {comment.id!r} is already hidden")
        new = replace(comment, state="hidden", updated=now)
    else:
        raise InvalidInput("action", "one of approve, hide")
    entry = ModerationEntry(
        comment.session_id, comment.id, action, reason, moderator, now, new.state
    )
    return new, entry


def after_flag(
    comment: Comment, threshold: int, now: float | None = None
) -> tuple[Comment, ModerationEntry | None]:
    """Hide a visible, not yet reviewed comment pending review once it has ``threshold`` flags.

    ``comment.flags`` is the count including the new flag.
    """
    now = time.time() if now is None else now
    if comment.state == "visible" and not comment.reviewed and comment.flags >= threshold:
        new = replace(comment, state="hidden_pending_review", updated=now)
        entry = ModerationEntry(
            comment.session_id,
            comment.id,
            "auto_hide",
            f"{comment.flags} flags (threshold {threshold}): hidden pending review",
            "system",
            now,
            new.state,
        )
        return new, entry
    return comment, None


def visible_to(comment: Comment, author: str | None, privileged: bool) -> bool:
    """Whether a comment is shown to a caller: public ones, the author's own, moderators."""
    return (
        privileged
        or comment.state in PUBLIC_STATES
        or (author is not None and comment.author == author and comment.state == "pending")
    )


# --------------------------------------------------------------------------- rate limits


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` hits per ``window`` seconds for one key."""

    key: str
    limit: int
    window: float


@dataclass
class RateLimiter:
    """Sliding-window request counting, in memory (per process), bounded in keys.

    :meth:`hit` checks every limit of a request first and counts it against all of them
    only when all admit it, so a refused request uses up no quota.
    """

    max_keys: int = RATE_LIMITER_MAX_KEYS
    _hits: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def hit(self, limits: Iterable[RateLimit], now: float | None = None) -> None:
        """Count one request against ``limits``.

        Raises:
            RateLimited: one of the limits is used up; nothing is counted.
        """
        now = time.monotonic() if now is None else now
        limits = list(limits)
        wait = 0.0
        worst = ""
        for lim in limits:
            q = self._hits.get(lim.key)
            if q is None:
                continue
            while q and q[0] <= now - lim.window:
                q.popleft()
            if len(q) >= lim.limit:
                w = q[len(q) - lim.limit] + lim.window - now
                if w > wait:
                    wait, worst = w, lim.key.split(":", 1)[0]
        if wait > 0:
            raise RateLimited(f"too many requests ({worst}): retry in {math.ceil(wait)} s", wait)
        for lim in limits:
            q = self._hits.get(lim.key)
            if q is None:
                q = self._hits[lim.key] = deque()
            else:
                self._hits.move_to_end(lim.key)
            q.append(now)
        while len(self._hits) > self.max_keys:
            self._hits.popitem(last=False)

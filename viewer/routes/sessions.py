"""Participation: sessions, citizen tokens, 3D-anchored comments, reactions, flags, moderation.

Who may do what:

* planners (``Authorization: Bearer``, role ``planner``) create and edit sessions;
* citizens need no account: ``POST /api/sessions/{id}/citizen`` issues a pseudonymous
  token, returned once and stored only as a hash; it is sent back as
  ``X-Citizen-Token: <t>`` (or ``Authorization: Citizen <t>``) to comment, react, flag;
* moderators (role ``moderator``) approve or hide comments with a reason; the public
  moderation log lists what happened and why, never the text.

Comment text is stored exactly as given and returned as a JSON string: the API never
renders HTML, the client shows it as text. Closed (or not yet open) sessions answer 403
with a message; too many posts answer 429 with ``Retry-After`` (RFC 9110 §10.2.3).
Visible comments and moderation changes are published on the event bus (``comment`` and
``moderation`` events), so every viewer of the session sees pins appear and disappear.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from starlette.responses import Response

from twin.errors import Forbidden, NotFound, TwinError
from twin.participation import (
    DEFAULT_CATEGORIES,
    DEFAULT_FLAG_THRESHOLD,
    MAX_CATEGORY,
    MAX_DESCRIPTION,
    MAX_FLAG_THRESHOLD,
    MAX_OBJECT_ID,
    MAX_REASON,
    MAX_TEXT,
    MAX_TITLE,
    PUBLIC_STATES,
    RATE_LIMITS,
    Citizen,
    Comment,
    Flag,
    InvalidInput,
    InvalidTransition,
    ModerationEntry,
    RateLimit,
    RateLimited,
    RateLimiter,
    Reaction,
    Session,
    edit_session,
    hash_token,
    issue_citizen,
    new_comment,
    new_session,
    visible_to,
)
from twin.store.participation import ParticipationStore
from viewer.auth import Caller, Unauthorized, authorize
from viewer.deps import Services, ServicesDep
from viewer.routes.common import ERRORS, WRITE_ERRORS, ErrorBody, JSONBody

__all__ = ["CITIZEN_HEADER", "get_limiter", "get_participation", "router"]

log = logging.getLogger(__name__)

CITIZEN_HEADER = "X-Citizen-Token"
PLANNER = ("planner",)
MODERATOR = ("moderator",)
# Who reads comments in every state (``?state=``): the moderators, and the planner who
# owns the session (the report counts what was hidden).
PRIVILEGED = frozenset({"moderator", "planner"})


# --------------------------------------------------------------------------- errors


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Any:
    return JSONBody(
        {"error": code, "message": message, "detail": None}, status_code=status, headers=headers
    )


class ParticipationRoute(APIRoute):
    """Maps the participation errors that the app-wide handler does not know.

    ``InvalidInput`` -> 422, ``InvalidTransition`` -> 409, ``RateLimited`` -> 429 with
    ``Retry-After``; everything else (NotFound, Forbidden, Unauthorized...) goes to the
    app's one handler. Dependencies run inside the route handler, so their errors are
    mapped too.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except InvalidInput as exc:
                return _error(422, "invalid_input", exc.message)  # type: ignore[no-any-return]
            except InvalidTransition as exc:
                return _error(409, "conflict", exc.message)  # type: ignore[no-any-return]
            except RateLimited as exc:
                retry = str(max(1, math.ceil(exc.retry_after)))
                return _error(  # type: ignore[no-any-return]
                    429, "rate_limited", exc.message, {"Retry-After": retry}
                )

        return route


router = APIRouter(prefix="/api", tags=["participation"], route_class=ParticipationRoute)

_E = {"model": ErrorBody}
PUBLIC_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {**_E, "description": "unknown token"},
    404: {**_E, "description": "no such session or comment"},
    422: {**_E, "description": "invalid parameter"},
}
CITIZEN_ERRORS: dict[int | str, dict[str, Any]] = {
    **WRITE_ERRORS,
    401: {**_E, "description": "missing or unknown citizen token"},
    403: {
        **_E,
        "description": "session closed or not yet open, or the token is of another session",
    },
    422: {**_E, "description": "invalid body: text length, characters, category, scenario..."},
    429: {**_E, "description": "rate limit: see the Retry-After header"},
}
STAFF_ERRORS: dict[int | str, dict[str, Any]] = {
    **WRITE_ERRORS,
    403: {**_E, "description": "the token's role (or a citizen token) may not do this"},
    409: {**_E, "description": "the action does not apply to the comment's state"},
    422: {**_E, "description": "invalid body"},
}


# --------------------------------------------------------------------------- schemas

Text1 = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REASON)]
Title = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE)]
Description = Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION)]
ScenarioName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
]
CategoryName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CATEGORY)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Vec3 = tuple[Finite, Finite, Finite]
Instant = Annotated[
    Finite | AwareDatetime,
    Field(description="epoch seconds, or ISO 8601 with a time zone (2026-05-01T18:00:00+02:00)"),
]
Id = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def _epoch(v: float | datetime | None) -> float | None:
    return v.timestamp() if isinstance(v, datetime) else v


class SessionIn(BaseModel):
    """A new participation session (role planner)."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    description: Description = ""
    scenarios: list[ScenarioName] = Field(
        default_factory=lambda: ["base"], min_length=1, max_length=20
    )
    opens_at: Instant | None = Field(None, description="default: now")
    closes_at: Instant | None = Field(None, description="default: open until closed")
    moderation: Literal["pre", "post"] = Field(
        "post", description="pre: comments wait for a moderator; post: shown at once"
    )
    categories: list[CategoryName] = Field(
        default_factory=lambda: list(DEFAULT_CATEGORIES), max_length=30
    )
    flag_threshold: int = Field(DEFAULT_FLAG_THRESHOLD, ge=1, le=MAX_FLAG_THRESHOLD)


class SessionPatch(BaseModel):
    """Planner edits: text, times, or ``close: true`` to close the session now."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    description: Description | None = None
    opens_at: Instant | None = None
    closes_at: Instant | None = Field(None, description="null removes a scheduled close")
    close: bool = False


class SessionOut(BaseModel):
    """A session with its status at the time of the answer."""

    id: str
    title: str
    description: str
    scenarios: list[str]
    opens_at: float
    closes_at: float | None
    moderation: Literal["pre", "post"]
    categories: list[str]
    flag_threshold: int
    status: Literal["upcoming", "open", "closed"]
    created: float
    updated: float


class CitizenOut(BaseModel):
    """A new citizen token: shown once, never stored in clear."""

    token: str = Field(description=f"send as {CITIZEN_HEADER}: <token>")
    pseudonym: str = Field(description="the public name of this citizen's comments")
    session_id: str
    header: str = CITIZEN_HEADER


class AnchorIn(BaseModel):
    """What a comment points at: an object, a point in scene coordinates, or both."""

    model_config = ConfigDict(extra="forbid")

    object_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_OBJECT_ID)] | None = (
        None
    )
    point: Vec3 | None = None


class CameraIn(BaseModel):
    """The camera the comment was written from (scene coordinates; fov in degrees)."""

    model_config = ConfigDict(extra="forbid")

    position: Vec3
    target: Vec3
    fov: Annotated[float, Field(gt=0, lt=180)] | None = None


class CommentIn(BaseModel):
    """A citizen's comment (or a reply, with ``parent_id``)."""

    model_config = ConfigDict(extra="forbid")

    text: Text1 = Field(description="stored as given; control characters except \\n \\t refused")
    category: CategoryName | None = None
    anchor: AnchorIn | None = None
    camera: CameraIn | None = None
    scenario: ScenarioName | None = Field(
        None, description="one of the session's scenarios (default: the first, or the parent's)"
    )
    parent_id: Annotated[str, StringConstraints(max_length=64)] | None = None


class AnchorOut(BaseModel):
    """The anchor of a comment."""

    object_id: str | None
    point: list[float] | None


class CameraOut(BaseModel):
    """The camera pose of a comment."""

    position: list[float]
    target: list[float]
    fov: float | None


class CommentOut(BaseModel):
    """A comment; ``flags`` and ``reviewed`` only for moderators and planners."""

    id: str
    session_id: str
    parent_id: str | None
    author: str
    text: str
    category: str | None
    anchor: AnchorOut | None
    camera: CameraOut | None
    scenario: str
    state: Literal["pending", "visible", "hidden", "hidden_pending_review"]
    created: float
    updated: float
    reactions: int
    flags: int | None = None
    reviewed: bool | None = None


class ReactionIn(BaseModel):
    """A reaction; only +1 exists."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["+1"] = "+1"


class ReactionOut(BaseModel):
    """The comment's reaction count; ``added`` is false when this token had reacted."""

    comment_id: str
    added: bool
    reactions: int


class FlagIn(BaseModel):
    """Why a comment breaks the rules."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason


class FlagOut(BaseModel):
    """``added`` is false when this token had flagged the comment already."""

    comment_id: str
    added: bool


class ModerationIn(BaseModel):
    """A moderator's decision and its (public) reason."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "hide"]
    reason: Reason


class ModerationEntryOut(BaseModel):
    """A line of the public moderation log (never the comment's text)."""

    time: float
    session_id: str
    comment_id: str
    action: Literal["approve", "hide", "auto_hide"]
    reason: str
    moderator: str = Field(description="the moderator token's name, or 'system'")
    state: str = Field(description="the comment's state after the action")


# --------------------------------------------------------------------------- dependencies


async def get_participation(services: ServicesDep) -> ParticipationStore:
    """The participation store wired into the services.

    Raises:
        TwinError: none is wired (``services.participation`` unset).
    """
    store: ParticipationStore | None = getattr(services, "participation", None)
    if store is None:
        raise TwinError("participation is not enabled on this server (no participation store)")
    return store


ParticipationDep = Annotated[ParticipationStore, Depends(get_participation)]


def get_limiter(request: Request) -> RateLimiter:
    """The app's rate limiter (one per app, created on first use)."""
    limiter: RateLimiter | None = getattr(request.app.state, "participation_limiter", None)
    if limiter is None:
        limiter = request.app.state.participation_limiter = RateLimiter()
    return limiter


def _limits(kind: str, citizen: Citizen | None, ip: str) -> list[RateLimit]:
    per_ip = "citizen_per_ip" if kind == "citizen" else "post_per_ip"
    n, window = RATE_LIMITS[per_ip]
    out = [RateLimit(f"{per_ip}:{ip}", n, window)]
    if citizen is not None:
        n, window = RATE_LIMITS[f"{kind}_per_token"]
        out.append(RateLimit(f"{kind}_per_token:{citizen.token_hash}", n, window))
    return out


def _client_ip(request: Request) -> str:
    # The peer address: behind a reverse proxy, run uvicorn with --proxy-headers so this
    # is the client's (uvicorn reads X-Forwarded-For from trusted proxies only).
    return request.client.host if request.client is not None else "unknown"


def _citizen_token(authorization: str | None, x_citizen_token: str | None) -> str | None:
    if x_citizen_token:
        return x_citizen_token.strip()
    if authorization and authorization.lower().startswith("citizen "):
        return authorization[8:].strip()
    return None


def _lookup_citizen(store: ParticipationStore, token: str) -> Citizen:
    citizen = store.get_citizen(hash_token(token)) if len(token) <= 200 else None
    if citizen is None:
        raise Unauthorized("unknown citizen token: get one from POST /api/sessions/{id}/citizen")
    return citizen


CitizenHeader = Annotated[
    str | None,
    Header(
        alias=CITIZEN_HEADER,
        max_length=200,
        description="a citizen token from POST /api/sessions/{id}/citizen",
    ),
]
AuthHeader = Annotated[str | None, Header(include_in_schema=False)]


async def citizen(
    store: ParticipationDep,
    authorization: AuthHeader = None,
    x_citizen_token: CitizenHeader = None,
) -> Citizen:
    """The citizen sending a request (``X-Citizen-Token`` or ``Authorization: Citizen``).

    Raises:
        Unauthorized: no or an unknown citizen token.
    """
    token = _citizen_token(authorization, x_citizen_token)
    if token is None:
        if authorization and authorization.lower().startswith("bearer "):
            raise Forbidden(
                "comments, reactions and flags are posted with a citizen token "
                f"({CITIZEN_HEADER}), not an API token"
            )
        raise Unauthorized(
            f"this needs a citizen token: POST /api/sessions/{{id}}/citizen, then send "
            f"{CITIZEN_HEADER}: <token>"
        )
    return _lookup_citizen(store, token)


CitizenDep = Annotated[Citizen, Depends(citizen)]


def staff(*roles: str) -> Callable[..., Coroutine[Any, Any, Caller]]:
    """A dependency admitting API tokens with one of ``roles``; citizens get 403."""
    allowed = frozenset(roles)

    async def dependency(
        services: ServicesDep,
        store: ParticipationDep,
        authorization: AuthHeader = None,
        x_citizen_token: CitizenHeader = None,
    ) -> Caller:
        token = _citizen_token(authorization, x_citizen_token)
        if token is not None and not (authorization or "").lower().startswith("bearer "):
            _lookup_citizen(store, token)  # an unknown one is a 401, a real one a 403
            raise Forbidden(f"citizens may not do this (needs role {', '.join(sorted(allowed))})")
        return authorize(services.tokens, authorization, allowed)

    return dependency


PlannerDep = Annotated[Caller, Depends(staff(*PLANNER))]
ModeratorDep = Annotated[Caller, Depends(staff(*MODERATOR))]


async def viewer_identity(
    services: ServicesDep,
    store: ParticipationDep,
    authorization: AuthHeader = None,
    x_citizen_token: CitizenHeader = None,
) -> tuple[Caller | None, Citizen | None]:
    """Who reads: a privileged API token, a citizen (sees their pending comments), or nobody.

    Raises:
        Unauthorized: a token was sent but is unknown.
    """
    caller = None
    if authorization and authorization.lower().startswith("bearer "):
        try:
            caller = authorize(services.tokens, authorization, PRIVILEGED)
        except Forbidden:
            caller = None  # engineer/feed tokens read what the public reads
    token = _citizen_token(authorization, x_citizen_token)
    return caller, (_lookup_citizen(store, token) if token is not None else None)


IdentityDep = Annotated[tuple[Caller | None, Citizen | None], Depends(viewer_identity)]


# --------------------------------------------------------------------------- helpers


def _session_out(s: Session, now: float) -> dict[str, Any]:
    d = s.as_dict()
    d.pop("created_by", None)
    d["status"] = s.status(now)
    return d


def _get_session(store: ParticipationStore, session_id: str) -> Session:
    s = store.get_session(session_id)
    if s is None:
        raise NotFound(f"no session {session_id!r}")
    return s


def _visible_comment(
    store: ParticipationStore, comment_id: str, author: str | None, privileged: bool
) -> Comment:
    c = store.get_comment(comment_id)
    # Not visible to this caller is "not found": a hidden comment's existence is not news.
    if c is None or not visible_to(c, author, privileged):
        raise NotFound(f"no comment {comment_id!r}")
    return c


async def _publish(services: Services, event: dict[str, Any]) -> None:
    """Publish after the write committed; a bus that is down does not undo the write."""
    try:
        await services.bus.publish(event)
    except TwinError as exc:
        log.warning("event bus: %s (the comment is stored)", exc)


def _moderation_event(comment: Comment, entry: ModerationEntry) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "moderation",
        "session": comment.session_id,
        "comment_id": comment.id,
        "entry": entry.as_dict(),
        "state": comment.state,
    }
    if comment.state in PUBLIC_STATES:
        event["comment"] = comment.as_dict()  # shown now: viewers add the pin
    return event


# --------------------------------------------------------------------------- sessions


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionOut,
    responses=STAFF_ERRORS,
    summary="Open a participation session on one or more scenarios (role planner)",
)
async def create_session(
    body: SessionIn,
    services: ServicesDep,
    store: ParticipationDep,
    caller: PlannerDep,
) -> JSONBody:
    now = time.time()
    s = new_session(
        title=body.title,
        description=body.description,
        scenarios=body.scenarios,
        opens_at=_epoch(body.opens_at),
        closes_at=_epoch(body.closes_at),
        moderation=body.moderation,
        categories=body.categories,
        flag_threshold=body.flag_threshold,
        created_by=caller.name,
        now=now,
    )
    store.create_session(s)
    services.audit(caller, "create_session", [], f"session {s.id}: {s.title}")
    return JSONBody(_session_out(s, now), status_code=201)


@router.get(
    "/sessions",
    response_model=list[SessionOut],
    responses=PUBLIC_ERRORS,
    summary="Participation sessions (open, upcoming and closed), newest first",
)
def list_sessions(
    store: ParticipationDep,
    status: Annotated[Literal["upcoming", "open", "closed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONBody:
    now = time.time()
    sessions = store.list_sessions(limit=limit if status is None else 10_000)
    out = [_session_out(s, now) for s in sessions if status is None or s.status(now) == status]
    return JSONBody(out[:limit])


@router.get(
    "/sessions/{session_id}",
    response_model=SessionOut,
    responses=PUBLIC_ERRORS,
    summary="One participation session",
)
def read_session(session_id: Id, store: ParticipationDep) -> JSONBody:
    return JSONBody(_session_out(_get_session(store, session_id), time.time()))


@router.patch(
    "/sessions/{session_id}",
    response_model=SessionOut,
    responses=STAFF_ERRORS,
    summary="Edit a session's text or times, or close it now (role planner)",
)
async def update_session(
    session_id: Id,
    body: SessionPatch,
    services: ServicesDep,
    store: ParticipationDep,
    caller: PlannerDep,
) -> JSONBody:
    now = time.time()
    s = _get_session(store, session_id)
    kwargs: dict[str, Any] = {}
    if "closes_at" in body.model_fields_set:
        kwargs["closes_at"] = _epoch(body.closes_at)
    edited = edit_session(
        s,
        title=body.title,
        description=body.description,
        opens_at=_epoch(body.opens_at),
        close=body.close,
        now=now,
        **kwargs,
    )
    store.save_session(edited)
    what = "closed" if body.close else "edited " + ", ".join(sorted(body.model_fields_set))
    services.audit(caller, "update_session", [], f"session {s.id}: {what}")
    return JSONBody(_session_out(edited, now))


@router.post(
    "/sessions/{session_id}/citizen",
    status_code=201,
    response_model=CitizenOut,
    responses={
        **PUBLIC_ERRORS,
        403: {**_E, "description": "the session is closed"},
        429: {**_E, "description": "too many tokens from this address: see Retry-After"},
    },
    summary="Get a pseudonymous citizen token for a session (no account; shown once)",
)
async def issue_citizen_token(
    session_id: Id,
    request: Request,
    store: ParticipationDep,
) -> JSONBody:
    s = _get_session(store, session_id)
    get_limiter(request).hit(_limits("citizen", None, _client_ip(request)))
    token, c = issue_citizen(s, time.time())
    store.add_citizen(c)
    return JSONBody(
        {"token": token, "pseudonym": c.pseudonym, "session_id": s.id, "header": CITIZEN_HEADER},
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


# --------------------------------------------------------------------------- comments


@router.post(
    "/sessions/{session_id}/comments",
    status_code=201,
    response_model=CommentOut,
    responses=CITIZEN_ERRORS,
    summary="Comment on a scenario in 3D: anchored to an object and/or a point (citizen)",
)
async def create_comment(
    session_id: Id,
    body: CommentIn,
    request: Request,
    services: ServicesDep,
    store: ParticipationDep,
    who: CitizenDep,
) -> JSONBody:
    now = time.time()
    s = _get_session(store, session_id)
    if who.session_id != s.id:
        raise Forbidden("this citizen token belongs to another session")
    s.ensure_open(now)
    parent = None
    if body.parent_id is not None:
        parent = store.get_comment(body.parent_id)
        if (
            parent is None
            or parent.session_id != s.id
            or not visible_to(parent, who.pseudonym, False)
        ):
            raise InvalidInput("parent_id", f"no comment {body.parent_id!r} in this session")
    c = new_comment(
        s,
        who,
        text=body.text,
        category=body.category,
        anchor=body.anchor.model_dump() if body.anchor is not None else None,
        camera=body.camera.model_dump() if body.camera is not None else None,
        scenario=body.scenario,
        parent=parent,
        now=now,
    )
    # Counted once the comment is known to be acceptable: a typo costs no quota.
    get_limiter(request).hit(_limits("comment", who, _client_ip(request)))
    store.add_comment(c)
    if c.state in PUBLIC_STATES:
        await _publish(services, {"kind": "comment", "session": s.id, "comment": c.as_dict()})
    return JSONBody(c.as_dict(), status_code=201)


@router.get(
    "/sessions/{session_id}/comments",
    response_model=list[CommentOut],
    responses={**PUBLIC_ERRORS, 403: {**_E, "description": "state= needs a moderator token"}},
    summary="Comments of a session, oldest first (public: visible ones; moderators: all)",
)
def list_comments(
    session_id: Id,
    store: ParticipationDep,
    identity: IdentityDep,
    scenario: Annotated[str | None, Query(max_length=100)] = None,
    object_id: Annotated[str | None, Query(max_length=MAX_OBJECT_ID)] = None,
    since: Annotated[
        float | None, Query(description="created after (epoch seconds)", allow_inf_nan=False)
    ] = None,
    state: Annotated[
        Literal["pending", "visible", "hidden", "hidden_pending_review"] | None,
        Query(description="moderators and planners only"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> JSONBody:
    caller, who = identity
    _get_session(store, session_id)
    privileged = caller is not None
    if state is not None and not privileged:
        raise Forbidden("state= needs a moderator token (the public sees visible comments)")
    if privileged:
        states: tuple[str, ...] | None = (state,) if state is not None else None
    else:
        states = PUBLIC_STATES
    comments = store.list_comments(
        session_id,
        states=states,
        author=who.pseudonym if who is not None and not privileged else None,
        scenario=scenario,
        object_id=object_id,
        since=since,
        limit=limit,
    )
    return JSONBody([c.as_dict(moderator=privileged) for c in comments])


@router.get(
    "/comments/{comment_id}",
    response_model=CommentOut,
    responses=PUBLIC_ERRORS,
    summary="One comment (hidden ones only for moderators; pending ones for their author)",
)
def read_comment(comment_id: Id, store: ParticipationDep, identity: IdentityDep) -> JSONBody:
    caller, who = identity
    c = _visible_comment(
        store, comment_id, who.pseudonym if who is not None else None, caller is not None
    )
    return JSONBody(c.as_dict(moderator=caller is not None))


def _open_for(store: ParticipationStore, c: Comment, who: Citizen, now: float) -> Session:
    s = _get_session(store, c.session_id)
    if who.session_id != s.id:
        raise Forbidden("this citizen token belongs to another session")
    s.ensure_open(now)
    return s


@router.post(
    "/comments/{comment_id}/reactions",
    response_model=ReactionOut,
    responses=CITIZEN_ERRORS,
    summary="+1 a comment (citizen; once per token: repeating it changes nothing)",
)
async def react(
    comment_id: Id,
    request: Request,
    store: ParticipationDep,
    who: CitizenDep,
    body: ReactionIn | None = None,
) -> JSONBody:
    now = time.time()
    c = _visible_comment(store, comment_id, None, False)
    _open_for(store, c, who, now)
    get_limiter(request).hit(_limits("reaction", who, _client_ip(request)))
    kind = body.kind if body is not None else "+1"
    added, c = store.add_reaction(Reaction(c.id, who.pseudonym, now, kind))
    return JSONBody({"comment_id": c.id, "added": added, "reactions": c.reactions})


@router.post(
    "/comments/{comment_id}/flags",
    response_model=FlagOut,
    responses=CITIZEN_ERRORS,
    summary="Flag a comment with a reason (citizen; enough flags hide it pending review)",
)
async def flag(
    comment_id: Id,
    body: FlagIn,
    request: Request,
    services: ServicesDep,
    store: ParticipationDep,
    who: CitizenDep,
) -> JSONBody:
    now = time.time()
    c = _visible_comment(store, comment_id, None, False)
    s = _open_for(store, c, who, now)
    get_limiter(request).hit(_limits("flag", who, _client_ip(request)))
    outcome = store.add_flag(Flag(c.id, who.pseudonym, body.reason, now), s.flag_threshold)
    if outcome.entry is not None:
        log.info("comment %s hidden pending review: %s", c.id, outcome.entry.reason)
        await _publish(services, _moderation_event(outcome.comment, outcome.entry))
    return JSONBody({"comment_id": c.id, "added": outcome.added})


# --------------------------------------------------------------------------- moderation


@router.post(
    "/comments/{comment_id}/moderation",
    response_model=ModerationEntryOut,
    responses={**STAFF_ERRORS, 404: {**_E, "description": "no such comment"}},
    summary="Approve or hide a comment with a public reason (role moderator)",
)
async def moderate_comment(
    comment_id: Id,
    body: ModerationIn,
    services: ServicesDep,
    store: ParticipationDep,
    caller: ModeratorDep,
) -> JSONBody:
    comment, entry = store.moderate(comment_id, body.action, body.reason, caller.name, time.time())
    services.audit(
        caller,
        "moderate_comment",
        [comment.object_id] if comment.object_id else [],
        f"{body.action} {comment.id} in session {comment.session_id}: {body.reason}",
    )
    await _publish(services, _moderation_event(comment, entry))
    return JSONBody(entry.as_dict())


@router.get(
    "/sessions/{session_id}/moderation-log",
    response_model=list[ModerationEntryOut],
    responses=PUBLIC_ERRORS,
    summary="The public moderation log of a session: what was hidden or approved, and why",
)
def moderation_log(
    session_id: Id,
    store: ParticipationDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[float | None, Query(allow_inf_nan=False)] = None,
) -> JSONBody:
    _get_session(store, session_id)
    entries = store.moderation_log(session_id, limit=limit, before=before)
    return JSONBody([e.as_dict() for e in entries])

"""Proposals as scenarios (upload, list, diff, snapshot) and a session's report and exports."""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from scene.proposal import (
    SCENARIO_NAME,
    ScenarioExists,
    add_proposal,
    list_scenarios,
    scenario_diff,
)
from scene.snapshot import Camera, SceneFrame, default_camera, read_frame, render_snapshot
from twin.errors import NotFound, TwinError
from viewer.auth import Caller
from viewer.deps import Services, ServicesDep, require
from viewer.report import (
    MAX_COMMENTS,
    CommentRow,
    CommentSource,
    comments_csv,
    comments_geojson,
    normalize_comments,
    report_html,
)
from viewer.routes.common import ERRORS, WRITE_ERRORS, ErrorBody, JSONBody

router = APIRouter(prefix="/api", tags=["scenarios"])

ScenarioName = Annotated[str, Path(max_length=64, pattern=SCENARIO_NAME.pattern)]
SessionId = Annotated[str, Path(max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
_REPORT_ROLES = ("planner", "moderator")
_REPORT_SIZE = (960, 600)


class SizeChange(BaseModel):
    """A quantity before and after (null: the object is not there or has no shape)."""

    before: float | None
    after: float | None
    change: float


class VolumeChange(SizeChange):
    """A volume change; ``method`` is ``solid`` (measured enclosed volume of closed or
    floorless surfaces) or ``prism`` (footprint × height)."""

    method: str | None


class ObjectChangeOut(BaseModel):
    """How one object differs."""

    id: str
    type: str
    change: str = Field(description="added, removed or changed")
    fields: list[str] = Field(description="what changed: type, attributes, bbox, height...")
    height: SizeChange
    footprint: SizeChange
    volume: VolumeChange


class DiffOut(BaseModel):
    """A scenario's differences from another, with totals (CRS units: m, m², m³)."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    totals: dict[str, float]
    objects: list[ObjectChangeOut]


class ProposalOut(BaseModel):
    """The stored proposal and its diff against its base."""

    scenario: str
    base: str
    diff: DiffOut


class ScenarioOut(BaseModel):
    """A scenario with its object counts; proposals with their change counts."""

    name: str
    base: str | None
    objects: int
    types: dict[str, int]
    added: int | None = None
    replaced: int | None = None
    removed: int | None = None
    totals: dict[str, float] | None = None
    created: float | None = None


@router.post(
    "/scenarios/{name}",
    status_code=201,
    response_model=ProposalOut,
    responses={**WRITE_ERRORS, 409: {"model": ErrorBody, "description": "name taken"}},
    summary="Upload a proposal (role planner): a CityJSON variant of a base scenario",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/city+json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def create_scenario(
    name: ScenarioName,
    request: Request,
    services: ServicesDep,
    caller: Annotated[Caller, Depends(require("planner"))],
    base: Annotated[str, Query(max_length=64, pattern=SCENARIO_NAME.pattern)] = "base",
    remove: Annotated[
        list[str] | None,
        Query(max_length=512, description="base object ids to remove (repeat or comma-separate)"),
    ] = None,
) -> JSONBody:
    """Objects with a base id replace it; new ids are added; objects with the attribute
    ``"proposal_action": "remove"`` and ``remove=`` ids remove base objects."""
    body = await request.body()
    if not body.strip():
        raise TwinError("empty body: post the proposal as a CityJSON file")
    removes = [r.strip() for item in (remove or []) for r in item.split(",") if r.strip()]
    try:
        diff = await run_in_threadpool(
            add_proposal, services.store, name, body, base=base, removes=removes
        )
    except ScenarioExists as exc:
        return JSONBody({"error": "conflict", "message": exc.message}, status_code=409)
    services.audit(
        caller,
        "add_proposal",
        [*diff.added, *diff.removed, *diff.changed][:1000],
        f"scenario {name} on {base}: +{len(diff.added)} -{len(diff.removed)} ~{len(diff.changed)}",
    )
    with contextlib.suppress(TwinError):  # stored already; viewers see it on their next list
        await services.bus.publish({"kind": "scenario", "name": name, "base": base})
    return JSONBody({"scenario": name, "base": base, "diff": diff.as_dict()}, status_code=201)


@router.get(
    "/scenarios",
    response_model=list[ScenarioOut],
    responses=ERRORS,
    summary="Scenarios: the base and every proposal, with object and change counts",
)
async def read_scenarios(services: ServicesDep) -> JSONBody:
    return JSONBody(await run_in_threadpool(list_scenarios, services.store))


@router.get(
    "/scenarios/{name}/diff",
    response_model=DiffOut,
    responses=ERRORS,
    summary="What a scenario adds, removes and changes against another (height, footprint, volume)",
)
async def read_diff(
    name: ScenarioName,
    services: ServicesDep,
    against: Annotated[str, Query(max_length=64, pattern=SCENARIO_NAME.pattern)] = "base",
) -> JSONBody:
    diff = await run_in_threadpool(scenario_diff, services.store, name, against)
    return JSONBody(diff.as_dict())


@router.get(
    "/scenarios/{name}/snapshot.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the PNG"}, **ERRORS},
    summary="A server-side PNG of a scenario's scene from a camera (scene coordinates)",
)
async def read_snapshot(
    name: ScenarioName,
    services: ServicesDep,
    camera: Annotated[
        str | None,
        Query(
            max_length=300,
            description="px,py,pz,tx,ty,tz[,fov] in the GLB's local frame (Y up); "
            "default: a bird's-eye view of the scene",
        ),
    ] = None,
    width: Annotated[int, Query(ge=16, le=2048)] = 800,
    height: Annotated[int, Query(ge=16, le=2048)] = 600,
    highlight: Annotated[
        list[str] | None, Query(max_length=512, description="object ids to highlight")
    ] = None,
) -> Response:
    ids = [h.strip() for item in (highlight or []) for h in item.split(",") if h.strip()]
    cam = Camera.parse(camera) if camera is not None else None

    def render() -> bytes:
        glb = services.scenes.get(name).data
        return render_snapshot(
            glb, cam or default_camera(glb), width=width, height=height, highlight=ids
        )

    png = await run_in_threadpool(render)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


# -- report and exports ------------------------------------------------------------------


def _source(services: Services) -> CommentSource:
    participation = getattr(services, "participation", None)
    if participation is None:
        raise NotFound("participation is not enabled on this server: no sessions or comments")
    if not isinstance(participation, CommentSource):
        raise NotFound("this server's participation service cannot list comments")
    return participation


def _rows(services: Services, session_id: str) -> list[CommentRow]:
    return normalize_comments(_source(services).list_comments(session_id, limit=MAX_COMMENTS))


class _Frames:
    """Scene frames per scenario, read once per request."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._frames: dict[str, SceneFrame | None] = {}

    def __call__(self, scenario: str) -> SceneFrame | None:
        if scenario not in self._frames:
            try:
                self._frames[scenario] = read_frame(self.services.scenes.get(scenario).data)
            except TwinError:
                self._frames[scenario] = None
        return self._frames[scenario]


ReportCaller = Annotated[Caller, Depends(require(*_REPORT_ROLES))]


@router.get(
    "/sessions/{session_id}/comments.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "CSV"}, **WRITE_ERRORS},
    summary="A session's comments as CSV (roles planner, moderator)",
)
async def export_csv(session_id: SessionId, services: ServicesDep, _: ReportCaller) -> Response:
    def build() -> str:
        return comments_csv(_rows(services, session_id), _Frames(services))

    text = await run_in_threadpool(build)
    return Response(
        text.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{session_id}-comments.csv"'},
    )


@router.get(
    "/sessions/{session_id}/comments.geojson",
    response_class=Response,
    responses={
        200: {"content": {"application/geo+json": {}}, "description": "GeoJSON"},
        **WRITE_ERRORS,
    },
    summary="A session's comments as a GeoJSON FeatureCollection in WGS84 (roles planner, "
    "moderator)",
)
async def export_geojson(session_id: SessionId, services: ServicesDep, _: ReportCaller) -> JSONBody:
    def centroid(scenario: str, object_id: str) -> tuple[float, float, float] | None:
        obj = services.store.get_object(object_id, scenario)
        g = obj.geometry if obj is not None else None
        return g.centroid_wgs84 if g is not None else None

    def build() -> dict[str, Any]:
        return comments_geojson(_rows(services, session_id), _Frames(services), centroid)

    doc = await run_in_threadpool(build)
    return JSONBody(doc, media_type="application/geo+json")


@router.get(
    "/sessions/{session_id}/report",
    responses={200: {"content": {"text/html": {}}, "description": "the report"}, **WRITE_ERRORS},
    summary="A printable HTML report of a session: counts, most-commented objects, a snapshot "
    "per viewpoint (roles planner, moderator)",
)
async def read_report(
    session_id: SessionId, services: ServicesDep, _: ReportCaller
) -> HTMLResponse:
    def snapshot(scenario: str, camera: Camera, ids: list[str] | Any) -> bytes | None:
        try:
            glb = services.scenes.get(scenario).data
        except NotFound:
            return None
        w, h = _REPORT_SIZE
        return render_snapshot(glb, camera, width=w, height=h, highlight=ids)

    def build() -> str:
        rows = _rows(services, session_id)
        title = _session_title(services, session_id)
        return report_html(session_id, rows, snapshot, title=title, now=time.time())

    return HTMLResponse(await run_in_threadpool(build))


def _session_title(services: Services, session_id: str) -> str | None:
    """The session's title when the participation service can tell it (optional)."""
    get = getattr(getattr(services, "participation", None), "get_session", None)
    if get is None:
        return None
    try:
        session = get(session_id)
    except TwinError:
        return None
    title = getattr(session, "title", None)
    if title is None and isinstance(session, dict):
        title = session.get("title")
    return str(title) if title else None

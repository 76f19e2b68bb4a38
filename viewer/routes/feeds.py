"""Live data by HTTP: post observations to a feed, read its dead letters; alerts; styles."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from sync.model import Message
from twin.errors import NotFound, TwinError
from viewer.auth import Caller
from viewer.deps import ServicesDep, require
from viewer.routes.common import ERRORS, WRITE_ERRORS, ErrorBody, JSONBody

router = APIRouter(prefix="/api", tags=["feeds"])

FeedName = Annotated[str, Path(max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]


class FeedPostOut(BaseModel):
    """What the posted observations did (after their transaction committed)."""

    accepted: int = Field(description="values that passed validation")
    stored: int = Field(description="new history points")
    duplicates: int
    late: int = Field(description="older than the latest value: stored in history only")
    rejected: int = Field(description="values refused; see GET /api/feeds/{feed}/rejected")
    reasons: list[str]


class DeadLetterOut(BaseModel):
    """A refused value or message, with the reason."""

    feed: str
    reason: str
    payload: str
    time: float
    entity: str | None
    property: str | None


class AlertOut(BaseModel):
    """One firing of an alert rule on one object."""

    id: str
    rule: str
    object_id: str
    property: str
    state: str
    severity: str
    value: Any
    opened: float
    message: str
    acknowledged_by: str | None
    acknowledged_at: float | None
    resolved_at: float | None
    updated: float


@router.post(
    "/feeds/{feed}/observations",
    response_model=FeedPostOut,
    responses={**WRITE_ERRORS, 503: {"model": ErrorBody, "description": "no sync engine"}},
    summary="Post observations to a feed (role feed): JSON batches, SensorThings, NGSI, CSV",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {}},
                "application/ld+json": {"schema": {}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
async def post_observations(
    feed: FeedName,
    request: Request,
    services: ServicesDep,
    caller: Annotated[Caller, Depends(require("feed", "engineer"))],
) -> JSONBody:
    engine = services.engine
    if engine is None:
        return JSONBody(
            {"error": "unavailable", "message": "the sync engine is not running"},
            status_code=503,
        )
    body = await request.body()
    if not body:
        raise TwinError("empty body: post JSON, SensorThings, NGSI or CSV observations")
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    # The decoder picks the format from the feed's configured format, the content type
    # (text/csv, application/ld+json) or the content itself.
    msg = Message(feed=feed, payload=body, content_type=ctype or None, received=time.time())
    result = await asyncio.wrap_future(engine.submit_wait(msg))
    services.audit(caller, "post_observations", [], f"feed {feed}: {result.accepted} values")
    return JSONBody(
        {
            "accepted": result.accepted,
            "stored": result.stored,
            "duplicates": result.duplicates,
            "late": result.late,
            "rejected": result.rejected,
            "reasons": result.reasons,
        }
    )


@router.get(
    "/feeds/{feed}/rejected",
    response_model=list[DeadLetterOut],
    responses=ERRORS,
    summary="Dead letters of a feed: what was refused and why, newest first",
)
def list_rejected(
    feed: FeedName,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: float | None = None,
) -> JSONBody:
    rows = services.store.list_rejected(feed, limit=limit, before=before)
    return JSONBody(
        [
            {
                "feed": r.feed,
                "reason": r.reason,
                "payload": r.payload,
                "time": r.time,
                "entity": r.entity,
                "property": r.property,
            }
            for r in rows
        ]
    )


@router.get("/feeds", responses=ERRORS, summary="Feeds: status, rates, lag; the sync engine")
def list_feeds(services: ServicesDep) -> JSONBody:
    return JSONBody(services.feed_status())


@router.get(
    "/alerts",
    response_model=list[AlertOut],
    responses=ERRORS,
    summary="Alerts, most recently changed first (state: open, acknowledged, resolved)",
)
def list_alerts(
    services: ServicesDep,
    state: Annotated[str | None, Query(pattern="^(open|acknowledged|resolved)$")] = None,
    object_id: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONBody:
    alerts = services.store.list_alerts(state=state, object_id=object_id, limit=limit)
    return JSONBody([a.as_dict() for a in alerts])


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=AlertOut,
    responses=WRITE_ERRORS,
    summary="Acknowledge an alert (role engineer)",
)
async def ack_alert(
    alert_id: Annotated[str, Path(max_length=100)],
    services: ServicesDep,
    caller: Annotated[Caller, Depends(require("engineer"))],
) -> JSONBody:
    alert = services.store.get_alert(alert_id)
    if alert is None:
        raise NotFound(f"no alert {alert_id!r}")
    acked = alert.acknowledge(caller.name, time.time())
    services.store.put_alert(acked)
    if services.engine is not None:
        services.engine.acknowledge(acked)
    services.audit(caller, "ack_alert", [acked.object_id], acked.id)
    await services.bus.publish({"kind": "alert", "id": acked.object_id, "alert": acked.as_dict()})
    return JSONBody(acked.as_dict())


@router.get("/styles", responses=ERRORS, summary="Style rules: color objects by live state")
def read_styles(services: ServicesDep) -> JSONBody:
    return JSONBody({"rules": services.live.styles})

"""Writing live state by API (engineers and feeds), all-or-nothing per request."""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from twin.errors import TwinError
from twin.query import ObjectQuery
from twin.state import StateUpdate
from viewer.auth import Caller
from viewer.deps import ServicesDep, require
from viewer.routes.common import WRITE_ERRORS, JSONBody

router = APIRouter(prefix="/api/state", tags=["state"])

Scalar = float | int | str | bool | None


class UpdateIn(BaseModel):
    """One observation; ``time`` defaults to now (epoch seconds, UTC)."""

    id: str = Field(min_length=1, max_length=512)
    property: str = Field(min_length=1, max_length=200)
    value: Scalar
    time: float | None = None
    quality: str | None = Field(default=None, max_length=64)
    msg_id: str | None = Field(default=None, max_length=200)


class UpdatesIn(BaseModel):
    """A batch of observations."""

    updates: list[UpdateIn] = Field(min_length=1, max_length=10_000)
    source: str = Field(default="api", max_length=200)


class ApplyOut(BaseModel):
    """What the batch did."""

    stored: int
    duplicates: int
    late: int
    latest: int


@router.post(
    "",
    response_model=ApplyOut,
    responses=WRITE_ERRORS,
    summary="Apply a batch of state updates (roles: engineer, feed)",
)
async def post_state(
    body: UpdatesIn,
    services: ServicesDep,
    caller: Annotated[Caller, Depends(require("engineer", "feed"))],
) -> JSONBody:
    now = time.time()
    updates: list[StateUpdate] = []
    unknown: list[str] = []
    ids = sorted({u.id for u in body.updates})
    # One query for the whole batch's ids, not one per id.
    known_ids = {
        o.id
        for o in services.store.query_objects(ObjectQuery(ids=tuple(ids), limit=len(ids))).items
    }
    for u in body.updates:
        if isinstance(u.value, float) and not math.isfinite(u.value):
            raise TwinError(f"value of {u.id!r}.{u.property} is not a finite number")
        if u.time is not None and not (math.isfinite(u.time) and abs(u.time) < 1e11):
            raise TwinError(f"time of {u.id!r}.{u.property} is out of range")
        if u.id not in known_ids:
            unknown.append(u.id)
            continue
        updates.append(
            StateUpdate(
                u.id,
                u.property,
                u.value,
                u.time if u.time is not None else now,
                body.source,
                u.quality,
                u.msg_id,
            )
        )
    if unknown:
        raise TwinError(f"unknown object id(s): {', '.join(sorted(set(unknown))[:10])}")
    result = services.store.apply_updates(updates)
    services.audit(caller, "post_state", ids, f"{len(updates)} updates")
    await services.publish_latest(result.latest)
    return JSONBody(
        {
            "stored": result.stored,
            "duplicates": result.duplicates,
            "late": result.late,
            "latest": len(result.latest),
        }
    )

"""Objects: one by id (attributes, geometry, family, live state), lists, history, edits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from twin.errors import NotFound, TwinError
from twin.objects import TwinObject
from twin.query import (
    SORT_FIELDS,
    ObjectQuery,
    QueryError,
    decode_cursor,
    parse_bbox,
    parse_duration,
    parse_time,
    parse_where,
)
from twin.state import StateValue
from viewer.auth import Caller
from viewer.deps import Services, ServicesDep, require
from viewer.routes.common import ERRORS, WRITE_ERRORS, JSONBody

router = APIRouter(prefix="/api/objects", tags=["objects"])

Scalar = float | int | str | bool | None


class GeometryOut(BaseModel):
    """Geometry summary (source CRS, and WGS84 lon/lat/h when the CRS is known)."""

    lod: str | None
    geometry_types: list[str]
    bbox: list[float]
    centroid: list[float]
    height: float
    footprint_area: float
    bbox_wgs84: list[float] | None
    centroid_wgs84: list[float] | None


class StateOut(BaseModel):
    """The latest value of one property."""

    value: Scalar
    time: float
    source: str
    quality: str | None


class ObjectOut(BaseModel):
    """One twin object with its live state."""

    id: str
    type: str
    scenario: str
    parent: str | None
    parents: list[str]
    children: list[str]
    attributes: dict[str, Any]
    members: dict[str, Any] = Field(
        description="other CityJSON members kept as they were (address, Extension members)"
    )
    geometry: GeometryOut | None
    state: dict[str, StateOut]
    relations: dict[str, Any] | None = Field(
        default=None,
        description="network relations: for a network asset its network, neighbours and "
        "served buildings; for a building the network nodes serving it",
    )


class ObjectSummary(BaseModel):
    """An object in a list."""

    id: str
    type: str
    parent: str | None
    attributes: dict[str, Any]
    geometry: GeometryOut | None


class ObjectPage(BaseModel):
    """A page of objects; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[ObjectSummary]
    next_cursor: str | None


class HistoryPointOut(BaseModel):
    """One raw value."""

    time: float
    value: Scalar
    source: str
    quality: str | None


class HistoryBucketOut(BaseModel):
    """Aggregates over ``[start, start + every)``."""

    start: float
    count: int
    min: float | None
    mean: float | None
    max: float | None


class HistoryOut(BaseModel):
    """A property's history: raw points, or buckets when ``every`` is given."""

    object_id: str
    property: str
    every: float | None
    points: list[HistoryPointOut] | None
    buckets: list[HistoryBucketOut] | None


class AttributesPatch(BaseModel):
    """Attributes to set (null removes one)."""

    attributes: dict[str, Any] = Field(max_length=200)


def _summary(o: TwinObject) -> dict[str, Any]:
    return {
        "id": o.id,
        "type": o.type,
        "parent": o.parent,
        "attributes": o.attributes,
        "geometry": o.geometry.as_dict() if o.geometry else None,
    }


def full_object(
    o: TwinObject, state: dict[str, StateValue], relations: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The body of ``GET /api/objects/{id}`` (also built by :mod:`viewer.fastpath`)."""
    return {
        **_summary(o),
        "scenario": o.scenario,
        "parents": o.parents,
        "children": o.children,
        "members": o.extra,
        "state": {k: v.as_dict() for k, v in state.items()},
        "relations": relations,
    }


Id = Annotated[str, Query(max_length=512)]


@router.get(
    "/{object_id}",
    response_model=ObjectOut,
    responses=ERRORS,
    summary="One object: attributes, geometry summary, parent/children, latest state",
)
async def read_object(
    object_id: str,
    request: Request,
    scenario: Annotated[str, Query(max_length=100)] = "base",
) -> JSONBody:
    # The hottest route: services straight from the app (no dependency resolution).
    services: Services = request.app.state.services
    obj = services.store.get_object(object_id, scenario)
    if obj is None:
        raise NotFound(f"no object with id {object_id!r} in scenario {scenario!r}")
    return JSONBody(
        full_object(
            obj,
            services.store.latest(object_id),
            services.networks.relations(object_id, scenario),
        )
    )


@router.get(
    "",
    response_model=ObjectPage,
    responses=ERRORS,
    summary="List objects: filter by type, attributes, state, bbox, text; sort; paginate",
)
def list_objects(
    services: ServicesDep,
    type: Annotated[
        list[str] | None, Query(max_length=100, description="object type(s), e.g. Building")
    ] = None,
    where: Annotated[
        list[str] | None,
        Query(
            max_length=2000,
            description="filters ANDed: yearOfConstruction>1990, function=residential, "
            "state.pressure<2.5, geom.height>=20, name~kerk",
        ),
    ] = None,
    bbox: Annotated[str | None, Query(max_length=200, description="minx,miny,maxx,maxy")] = None,
    bbox_crs: Annotated[
        Literal["wgs84", "source", "scene"],
        Query(
            description="bbox in WGS84 lon/lat, the source CRS, or scene coordinates "
            "(glTF x, z of the served scene: minx,minz,maxx,maxz)"
        ),
    ] = "wgs84",
    q: Annotated[str | None, Query(max_length=200, description="text in id/name/address")] = None,
    sort: Annotated[str, Query(max_length=20, description="id, type, height or footprint")] = "id",
    desc: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    scenario: Annotated[str, Query(max_length=100)] = "base",
) -> JSONBody:
    if sort not in SORT_FIELDS:
        raise QueryError(f"cannot sort by {sort!r} (one of {', '.join(sorted(SORT_FIELDS))})", sort)
    box = parse_bbox(bbox) if bbox else None
    crs: Literal["wgs84", "source"] = "source" if bbox_crs != "wgs84" else "wgs84"
    if box is not None and bbox_crs == "scene":
        # Scene frame (glTF 2.0, Y up): x = east - ox, z = -(north - oy).
        ox, oy, _ = services.scenes.get(scenario).origin
        box = (box[0] + ox, oy - box[3], box[2] + ox, oy - box[1])
    query = ObjectQuery(
        scenario=scenario,
        types=tuple(type or ()),
        conditions=parse_where(*(where or [])),
        bbox=box,
        bbox_crs=crs,
        text=q or None,
        sort=sort,
        descending=desc,
        limit=limit,
        cursor=decode_cursor(cursor) if cursor else None,
    )
    page = services.store.query_objects(query)
    return JSONBody({"items": [_summary(o) for o in page.items], "next_cursor": page.next_cursor})


@router.get(
    "/{object_id}/history",
    response_model=HistoryOut,
    responses=ERRORS,
    summary="A property's history: raw points, or min/mean/max/count per `every` bucket",
)
def read_history(
    object_id: str,
    services: ServicesDep,
    property: Annotated[str, Query(min_length=1, max_length=200)],
    since: Annotated[str | None, Query(max_length=64, description="ISO 8601 or epoch s")] = None,
    until: Annotated[str | None, Query(max_length=64, description="ISO 8601 or epoch s")] = None,
    every: Annotated[str | None, Query(max_length=32, description="bucket: 30s, 5m, 1h")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> JSONBody:
    if services.store.get_object(object_id) is None:
        raise NotFound(f"no object with id {object_id!r}")
    t0 = parse_time(since) if since else None
    t1 = parse_time(until) if until else None
    body: dict[str, Any] = {"object_id": object_id, "property": property}
    if every:
        width = parse_duration(every)
        buckets = services.store.history_buckets(
            object_id, property, width, since=t0, until=t1, limit=limit
        )
        body |= {
            "every": width,
            "points": None,
            "buckets": [
                {"start": b.start, "count": b.count, "min": b.min, "mean": b.mean, "max": b.max}
                for b in buckets
            ],
        }
    else:
        points = services.store.history(object_id, property, since=t0, until=t1, limit=limit)
        body |= {
            "every": None,
            "buckets": None,
            "points": [
                {"time": p.time, "value": p.value, "source": p.source, "quality": p.quality}
                for p in points
            ],
        }
    return JSONBody(body)


@router.patch(
    "/{object_id}",
    response_model=ObjectOut,
    responses=WRITE_ERRORS,
    summary="Set or remove attributes (roles: engineer, planner)",
)
async def patch_object(
    object_id: str,
    patch: AttributesPatch,
    services: ServicesDep,
    caller: Annotated[Caller, Depends(require("engineer", "planner"))],
    scenario: Annotated[str, Query(max_length=100)] = "base",
) -> JSONBody:
    obj = services.store.get_object(object_id, scenario)
    if obj is None:
        raise NotFound(f"no object with id {object_id!r} in scenario {scenario!r}")
    for key, value in patch.attributes.items():
        if not key or len(key) > 200:
            raise TwinError(f"attribute name {key[:40]!r} must be 1-200 characters")
        if value is None:
            obj.attributes.pop(key, None)
        else:
            obj.attributes[key] = value
    services.store.put_objects([obj], scenario=scenario, source="api")
    services.audit(caller, "patch_object", [object_id], ",".join(sorted(patch.attributes)))
    return JSONBody(
        full_object(
            obj,
            services.store.latest(object_id),
            services.networks.relations(object_id, scenario),
        )
    )

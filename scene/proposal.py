"""A proposal as a scenario: an uploaded CityJSON variant of a base city, stored and drawn.

A proposal scenario holds, as stored source documents (:class:`twin.store.base.StateStore`):

* a copy of every source of its base scenario (cities and ``network:*`` documents);
* the uploaded CityJSON file, as ``proposal.city.json``;
* ``scenario:changes``, a small JSON marker: the base, which base objects are hidden
  (removed or replaced) and which were removed on purpose.

Conventions of the uploaded file: an object whose id exists in the base *replaces* it
(with its parts: base children the file does not repeat are hidden too); any other object
is *added*; an object with the attribute ``"proposal_action": "remove"`` is a tombstone
that *removes* the base object of the same id (plain CityJSON 2.0, which allows objects
without geometry, §3.2, so the file stays valid for every CityJSON tool). The ``removes``
argument (``remove=`` in the API) removes base objects too.

:func:`scene_view` tells :class:`scene.service.SceneCache` which stored documents to skip
and which objects to leave out of each; a proposal is drawn in its base's frame (same
origin), so the two scenes line up in the viewer and share camera coordinates.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from twin.errors import IngestError, NotFound, TwinError
from twin.geometry import CityModel
from twin.network_index import NETWORK_SOURCE_PREFIX
from twin.objects import Twin, TwinObject
from twin.query import ObjectQuery, decode_cursor
from twin.scenario import ScenarioDiff, diff_scenarios
from twin.store.base import StateStore

__all__ = [
    "MARKER_SOURCE",
    "META_PREFIX",
    "PROPOSAL_SOURCE",
    "REGISTRY_SCENARIO",
    "REMOVE_ATTRIBUTE",
    "SCENARIO_NAME",
    "ScenarioExists",
    "SceneView",
    "add_proposal",
    "drop_objects",
    "list_scenarios",
    "scenario_diff",
    "scenario_models",
    "scenario_objects",
    "scene_view",
    "solid_volumes",
]

META_PREFIX = "scenario:"
"""Stored documents whose name starts with this describe a scenario; they are never drawn."""
MARKER_SOURCE = META_PREFIX + "changes"
PROPOSAL_SOURCE = "proposal.city.json"
REGISTRY_SCENARIO = "_proposals"
"""A reserved scenario whose documents (one per proposal, named by it) list the proposals."""
REMOVE_ATTRIBUTE = "proposal_action"
SCENARIO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MARKER_TYPE = "CityTwinProposal"
_PAGE = 1000
_lock = threading.Lock()


class ScenarioExists(TwinError):
    """A scenario of that name exists already (proposals are immutable: the store keeps
    no way to delete objects, so a second upload could leave stale ones behind)."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        super().__init__(f"scenario {scenario!r} exists already; upload under a new name")


@dataclass(frozen=True)
class SceneView:
    """How to draw one scenario from its stored documents (identity for a plain one).

    Attributes:
        base: the scenario a proposal is based on (its frame is reused), or None.
        removed: base ids the proposal removes (tombstones are left out of its file).
        hidden: base ids not drawn: removed or replaced objects and their parts.
    """

    base: str | None = None
    removed: frozenset[str] = frozenset()
    hidden: frozenset[str] = frozenset()

    def skips(self, name: str) -> bool:
        """True for stored documents that are not geometry (the marker)."""
        return name.startswith(META_PREFIX)

    def apply(self, name: str, model: CityModel) -> CityModel:
        """Leave hidden base objects out of a base document, tombstones out of the proposal.

        Args:
            name: the stored document's name.
            model: the document, parsed.

        Returns:
            The model to draw.
        """
        if self.base is None:
            return model
        return drop_objects(model, self.removed if name == PROPOSAL_SOURCE else self.hidden)


def scene_view(store: StateStore, scenario: str, names: Iterable[str] | None = None) -> SceneView:
    """The view of ``scenario``: read its ``scenario:changes`` marker if it has one.

    Args:
        store: the store.
        scenario: the scenario.
        names: the scenario's stored document names, if already at hand (saves a query).

    Returns:
        The view (identity for scenarios that are not proposals).
    """
    if names is None:
        names = [i.name for i in store.sources(scenario)]
    if MARKER_SOURCE not in set(names):
        return SceneView()
    data = store.get_source(MARKER_SOURCE, scenario)
    if data is None:
        return SceneView()
    marker = orjson.loads(data)
    return SceneView(
        base=str(marker["base"]),
        removed=frozenset(marker["removed"]),
        hidden=frozenset(marker["hidden"]),
    )


def drop_objects(model: CityModel, ids: Iterable[str]) -> CityModel:
    """A copy of ``model`` without the objects ``ids`` (their geometry and their rows).

    Works on the flattened arrays (surfaces of a feature are contiguous, see
    :class:`twin.geometry.CityModel`), so any source format is handled alike.

    Args:
        model: the model.
        ids: object ids to leave out; ids not in the model are ignored.

    Returns:
        The model itself when nothing is dropped, else a filtered copy.
    """
    drop = set(ids) & {o.id for o in model.twin}
    if not drop:
        return model
    keep_feat = np.array([fid not in drop for fid in model.feature_ids], dtype=bool)
    return _select(model, keep_feat, drop)


def _select(model: CityModel, keep_feat: np.ndarray, drop: set[str]) -> CityModel:
    def remap(keep: np.ndarray) -> np.ndarray:
        return np.cumsum(keep) - 1

    new_feat = remap(keep_feat)
    keep_surf = keep_feat[model.surf_feature] if model.n_surfaces else np.zeros(0, dtype=bool)
    nrings = np.diff(model.surface_rings)
    rlen = np.diff(model.ring_offsets)
    keep_ring = np.repeat(keep_surf, nrings)
    keep_rv = np.repeat(keep_ring, rlen)

    def offsets(counts: np.ndarray) -> np.ndarray:
        out = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=out[1:])
        return out

    # Solids: group -> feature, solid -> group, shell -> solid (CityJSON 2.0 §3.3.3).
    keep_group = (
        keep_feat[model.group_feature] if model.group_feature.size else np.zeros(0, dtype=bool)
    )
    keep_solid = (
        keep_group[model.solid_group] if model.solid_group.size else np.zeros(0, dtype=bool)
    )
    keep_shell = (
        keep_solid[model.shell_solid] if model.shell_solid.size else np.zeros(0, dtype=bool)
    )
    surf_shell = model.surf_shell[keep_surf] if model.surf_shell.size else model.surf_shell
    if surf_shell.size and keep_shell.size:
        shell_map = remap(keep_shell)
        surf_shell = np.where(surf_shell >= 0, shell_map[np.maximum(surf_shell, 0)], -1)
    keep_pt = keep_feat[model.point_feature] if model.point_feature.size else keep_feat[:0]
    keep_ln = keep_feat[model.line_feature] if model.line_feature.size else keep_feat[:0]
    return dataclasses.replace(
        model,
        twin=Twin(o for o in model.twin if o.id not in drop),
        ring_vertices=model.ring_vertices[keep_rv],
        ring_offsets=offsets(rlen[keep_ring]),
        surface_rings=offsets(nrings[keep_surf]),
        surf_feature=new_feat[model.surf_feature[keep_surf]],
        surf_semantic=model.surf_semantic[keep_surf],
        surf_material=model.surf_material[keep_surf],
        point_vertices=model.point_vertices[keep_pt],
        point_feature=new_feat[model.point_feature[keep_pt]],
        line_segments=model.line_segments[keep_ln],
        line_feature=new_feat[model.line_feature[keep_ln]],
        surf_shell=surf_shell,
        shell_solid=remap(keep_solid)[model.shell_solid[keep_shell]]
        if keep_shell.size
        else model.shell_solid,
        solid_group=remap(keep_group)[model.solid_group[keep_solid]]
        if keep_solid.size
        else model.solid_group,
        group_type=[t for t, k in zip(model.group_type, keep_group, strict=True) if k],
        group_feature=new_feat[model.group_feature[keep_group]]
        if keep_group.size
        else model.group_feature,
        feature_ids=[f for f, k in zip(model.feature_ids, keep_feat, strict=True) if k],
        warnings=[w for w in model.warnings if w.object_id not in drop],
    )


def solid_volumes(model: CityModel, ids: Iterable[str] | None = None) -> dict[str, float]:
    """Enclosed volumes of objects whose drawn surfaces bound a volume.

    The volume is the divergence-theorem sum of signed tetrahedra over the object's
    triangles, from an apex on its lowest level. An object is measured when its surfaces
    are consistently oriented (no edge used twice in one direction, vertices matched by
    position) and either closed (every edge shared by two triangles) or open only along
    a boundary at its lowest z: an LoD1/LoD2 block without a floor (3dfier's output), whose
    missing floor lies in the apex's plane and adds no volume. Inner shells of a Solid
    are oriented inward (CityJSON 2.0 §3.3.3) and count negative. Anything else (gaps,
    T-junctions, open sides) is left out, so callers fall back to footprint × height.

    Args:
        model: the model.
        ids: the objects to measure (all drawn objects by default).

    Returns:
        Volume per object id, in cubic CRS units.
    """
    from scene.triangulate import triangulate

    wanted = set(model.feature_ids if ids is None else ids)
    keep = np.array([f in wanted for f in model.feature_ids], dtype=bool)
    if not keep.any() or model.n_surfaces == 0:
        return {}
    sub = _select(model, keep, set()) if not keep.all() else model
    origin = sub.vertices[sub.ring_vertices].mean(axis=0)
    tri = triangulate(sub, origin=origin)
    if tri.triangles.size == 0:
        return {}
    verts = sub.vertices - origin
    # One id per distinct position (0.1 mm): files may repeat a vertex under two indices.
    _, canon = np.unique(
        np.round(sub.vertices / 1e-4).astype(np.int64), axis=0, return_inverse=True
    )
    canon = canon.reshape(-1)
    tri_feat = sub.surf_feature[tri.tri_surface]
    drawn = np.zeros(sub.n_surfaces, dtype=bool)
    drawn[tri.tri_surface] = True
    out: dict[str, float] = {}
    for f, oid in enumerate(sub.feature_ids):
        surfs = sub.surf_feature == f
        sel = tri_feat == f
        if not sel.any() or not drawn[surfs].all():
            continue  # a degenerate surface was dropped: a hole
        t = tri.triangles[sel]
        tt = canon[t]
        directed = np.concatenate([tt[:, [0, 1]], tt[:, [1, 2]], tt[:, [2, 0]]])
        _, n_dir = np.unique(directed, axis=0, return_counts=True)
        und, n_und = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
        if (n_dir != 1).any() or (n_und > 2).any():
            continue
        zmin = float(verts[t, 2].min())
        open_edges = und[n_und == 1].reshape(-1)
        if open_edges.size:
            z_open = sub.vertices[np.isin(canon, open_edges), 2] - origin[2]
            if np.abs(z_open - zmin).max() > 1e-3:
                continue
        apex = np.array([verts[t, 0].mean(), verts[t, 1].mean(), zmin])
        a, b, c = (verts[t[:, k]] - apex for k in range(3))
        v = abs(float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)
        if v > 0:
            out[oid] = v
    return out


def _load_objects(store: StateStore, scenario: str) -> list[TwinObject]:
    out: list[TwinObject] = []
    cursor: str | None = None
    while True:
        page = store.query_objects(
            ObjectQuery(
                scenario=scenario,
                limit=_PAGE,
                cursor=decode_cursor(cursor) if cursor is not None else None,
            )
        )
        out.extend(page.items)
        if page.next_cursor is None or not page.items:
            return out
        cursor = page.next_cursor


def scenario_objects(store: StateStore, scenario: str) -> list[TwinObject]:
    """Every object of a scenario (paged out of the store).

    Args:
        store: the store.
        scenario: the scenario.

    Returns:
        The objects, in id order.
    """
    return _load_objects(store, scenario)


def scenario_models(
    store: StateStore,
    scenario: str,
    *,
    names: Sequence[str] | None = None,
    view: SceneView | None = None,
    wgs84: bool = True,
) -> list[CityModel]:
    """The city models a scenario's scene is drawn from (proposal filtering applied).

    Args:
        store: the store.
        scenario: the scenario.
        names: only these stored documents (default: all of the scenario's).
        view: the scenario's view, if already at hand (saves reading its marker).
        wgs84: also compute WGS84 summaries (as for ``parse_cityjson``).

    Returns:
        One model per stored city document (networks are not included).

    Raises:
        NotFound: the scenario has no stored documents.
    """
    from ingest.cityjson import parse_cityjson

    if names is None:
        names = [i.name for i in store.sources(scenario)]
        if not names:
            raise NotFound(f"scenario {scenario!r} has no scene (nothing ingested)")
    if view is None:
        view = scene_view(store, scenario, names)
    models = []
    for name in names:
        if view.skips(name) or name.startswith(NETWORK_SOURCE_PREFIX):
            continue
        data = store.get_source(name, scenario)
        if data is not None:
            models.append(view.apply(name, parse_cityjson(data, source=name, wgs84=wgs84)))
    return models


def _volumes(models: Sequence[CityModel], ids: set[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in models:
        out.update(solid_volumes(m, ids & set(m.feature_ids)))
    return out


def scenario_diff(store: StateStore, scenario: str, against: str = "base") -> ScenarioDiff:
    """Diff two stored scenarios, measuring closed solids (see :func:`solid_volumes`).

    Args:
        store: the store.
        scenario: the proposal (or any scenario).
        against: the scenario to compare with.

    Returns:
        The diff of ``scenario`` relative to ``against``.

    Raises:
        NotFound: either scenario has no stored documents.
    """
    for name in (scenario, against):
        if not store.sources(name):
            raise NotFound(f"no scenario {name!r}")
    base_objects = _load_objects(store, against)
    prop_objects = _load_objects(store, scenario)
    first = diff_scenarios(base_objects, prop_objects)
    ids = {o.id for o in first.objects}
    if not ids:
        return first
    return diff_scenarios(
        base_objects,
        prop_objects,
        base_volumes=_volumes(scenario_models(store, against), ids),
        proposal_volumes=_volumes(scenario_models(store, scenario), ids),
    )


def _descendants(objects: dict[str, TwinObject], roots: Iterable[str]) -> set[str]:
    out: set[str] = set()
    todo = list(roots)
    while todo:
        oid = todo.pop()
        if oid in out:
            continue
        out.add(oid)
        obj = objects.get(oid)
        if obj is not None:
            todo.extend(obj.children)
    return out


@dataclass(frozen=True)
class _Plan:
    model: CityModel
    added: list[str]
    replaced: list[str]
    removed: list[str]
    hidden: list[str]
    keep_base: list[TwinObject] = field(default_factory=list)


def _plan(
    store: StateStore, base: str, data: bytes, removes: Sequence[str]
) -> tuple[_Plan, list[CityModel]]:
    from ingest.cityjson import parse_cityjson

    model = parse_cityjson(data, source=PROPOSAL_SOURCE)
    base_models = scenario_models(store, base)
    base_epsg = next((m.epsg for m in base_models if m.epsg is not None), None)
    if model.epsg is not None and base_epsg is not None and model.epsg != base_epsg:
        raise IngestError(
            f"the proposal is in EPSG:{model.epsg}, its base {base!r} in EPSG:{base_epsg}; "
            "a proposal must use its base's CRS",
            source=PROPOSAL_SOURCE,
        )
    base_objects = {o.id: o for o in _load_objects(store, base)}
    tombstones = [o.id for o in model.twin if o.attributes.get(REMOVE_ATTRIBUTE) == "remove"]
    removed = sorted(set(tombstones) | set(removes))
    for oid in removed:
        if oid not in base_objects:
            raise IngestError(
                f"cannot remove {oid!r}: no such object in scenario {base!r}",
                source=PROPOSAL_SOURCE,
                where=f"object {oid!r}",
            )
    drop = set(tombstones)
    new_ids = [o.id for o in model.twin if o.id not in drop]
    replaced = sorted(i for i in new_ids if i in base_objects)
    added = sorted(i for i in new_ids if i not in base_objects)
    if not new_ids and not removed:
        raise IngestError(
            "the proposal changes nothing: no objects, no removals", source=PROPOSAL_SOURCE
        )
    hidden = _descendants(base_objects, [*removed, *replaced]) - set(new_ids)
    hidden |= set(replaced)
    keep_base = [o for oid, o in base_objects.items() if oid not in hidden]
    plan = _Plan(
        model=model,
        added=added,
        replaced=replaced,
        removed=removed,
        hidden=sorted(hidden),
        keep_base=keep_base,
    )
    return plan, base_models


def add_proposal(
    store: StateStore,
    scenario: str,
    cityjson_bytes: bytes,
    *,
    base: str = "base",
    removes: Sequence[str] = (),
) -> ScenarioDiff:
    """Store a CityJSON proposal as the scenario ``scenario`` and diff it against ``base``.

    Args:
        store: the store.
        scenario: the new scenario's name (letters, digits, ``_.-``; not ``base``).
        cityjson_bytes: the uploaded CityJSON (document, sequence or feature).
        base: the scenario the proposal varies (a plain scenario, not a proposal).
        removes: base object ids to remove, besides the file's tombstones.

    Returns:
        The diff of the new scenario against its base.

    Raises:
        IngestError: the file cannot be read, is in another CRS, changes nothing, or
            removes an object the base does not have.
        NotFound: the base has no stored documents.
        ScenarioExists: ``scenario`` exists already.
        TwinError: a bad scenario name or a base that is itself a proposal.
    """
    if not SCENARIO_NAME.match(scenario) or scenario == base:
        raise TwinError(
            f"bad scenario name {scenario!r}: 1-64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit, and not its base"
        )
    base_infos = store.sources(base)
    if not base_infos:
        raise NotFound(f"no scenario {base!r} to base a proposal on")
    if any(i.name == MARKER_SOURCE for i in base_infos):
        raise TwinError(f"scenario {base!r} is a proposal; base proposals on a plain scenario")
    with _lock:  # two uploads of one name in this process: one wins, one gets 409
        if store.sources(scenario):
            raise ScenarioExists(scenario)
        plan, _ = _plan(store, base, cityjson_bytes, removes)
        marker = {
            "type": _MARKER_TYPE,
            "base": base,
            "source": PROPOSAL_SOURCE,
            "added": plan.added,
            "replaced": plan.replaced,
            "removed": plan.removed,
            "hidden": plan.hidden,
        }
        # The marker goes first: a scenario whose copy is cut short is never drawn with
        # its hidden objects. The registry entry goes last: only complete proposals list.
        store.put_objects(
            [], scenario=scenario, source=MARKER_SOURCE, source_data=orjson.dumps(marker)
        )
        store.put_objects(plan.keep_base, scenario=scenario)
        for info in base_infos:
            data = store.get_source(info.name, base)
            if data is not None:
                store.put_objects([], scenario=scenario, source=info.name, source_data=data)
        store.put_objects(
            [o for o in plan.model.twin if o.id not in set(plan.removed)],
            scenario=scenario,
            source=PROPOSAL_SOURCE,
            source_data=cityjson_bytes,
        )
        diff = scenario_diff(store, scenario, base)
        entry = {**marker, "totals": diff.totals}
        store.put_objects(
            [], scenario=REGISTRY_SCENARIO, source=scenario, source_data=orjson.dumps(entry)
        )
    return diff


def list_scenarios(store: StateStore) -> list[dict[str, Any]]:
    """The base scenario and every stored proposal, with object counts.

    Args:
        store: the store.

    Returns:
        One dict per scenario: name, base (None for ``base``), objects, types, and for
        proposals the added/replaced/removed counts and diff totals at upload.
    """
    out: list[dict[str, Any]] = []
    if store.sources("base"):
        out.append(
            {
                "name": "base",
                "base": None,
                "objects": store.count("base"),
                "types": store.counts_by_type("base"),
            }
        )
    for info in store.sources(REGISTRY_SCENARIO):
        data = store.get_source(info.name, REGISTRY_SCENARIO)
        if data is None:
            continue
        entry = orjson.loads(data)
        out.append(
            {
                "name": info.name,
                "base": entry["base"],
                "objects": store.count(info.name),
                "types": store.counts_by_type(info.name),
                "added": len(entry["added"]),
                "replaced": len(entry["replaced"]),
                "removed": len(entry["removed"]),
                "totals": entry.get("totals", {}),
                "created": info.added,
            }
        )
    return out

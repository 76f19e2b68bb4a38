// Streaming a large city as OGC 3D Tiles 1.1 (npm 3d-tiles-renderer) inside the Viewer, with
// the same feature interface as a single scene GLB, so picking, the panel, styles, layers
// and the test hooks work in both modes.
// https://docs.ogc.org/cs/22-025r4/22-025r4.html (3D Tiles 1.1)
//
// What works in tiles mode, and what is limited:
// - Refinement by screen-space error (`errorTarget` pixels, `?sse=` overrides), ancestors
//   shown while their children load; only visible tiles are drawn and picked.
// - Every loaded tile gets a FeatureIndex + BatchedPainter (features.js) over its
//   EXT_mesh_features ids; its EXT_structural_metadata property table `id` column maps them
//   to one global feature numbering (a registry that grows as tiles load), so the Viewer's
//   f-indexed API (indexOf, pick, highlight, setStyleColors, setHidden, setOverlay,
//   screenPosition, flyTo) works unchanged.
// - Selection (tint + outline), live-state colouring and type layers apply to every tile
//   holding the feature, including tiles that load later (the Viewer's style and
//   visibility functions are re-run for newly seen features).
// - Flying to an object whose tile is not loaded goes to its API bounding box
//   (`boxOfWgs84`); its tiles then load there.
// - Limited: an impact/scenario overlay built from ids covers only features loaded when it
//   was applied (others are dimmed); attribute ramps (height, year...) need every
//   feature's value up front, so only the live-state rules are offered; networks come as
//   one tile of the tileset (toggled by asset type, not per network); the "both" scenario
//   mode (a ghost from the base's single GLB) is not offered.

import * as THREE from 'three';
import { TilesRenderer } from '3d-tiles-renderer';
import { GLTFExtensionsPlugin, ImplicitTilingPlugin, UpdateOnChangePlugin } from '3d-tiles-renderer/plugins';
import { BatchedPainter, FEATURE_ATTRIBUTE, FeatureIndex } from './features.js';

/** Default target screen-space error in pixels (CesiumJS' maximumScreenSpaceError is 16). */
export const DEFAULT_ERROR_TARGET = 16;

// The tileset's local east-north-up frame (z up) -> the viewer's frame (x east, y up,
// z south), the axes of the scene GLB (glTF 2.0 § 3.4: y up).
const ENU_TO_VIEW = new THREE.Matrix4().makeRotationX(-Math.PI / 2);

/**
 * TilesRenderer without its console warning on every 1.1 tileset ("limited support"):
 * what our tilesets use (explicit or implicit quadtrees, region volumes, GLB content with
 * EXT_mesh_features, EXT_structural_metadata, KHR_mesh_quantization) is supported, and a
 * page that loads cleanly has no console warnings.
 */
class CityTilesRenderer extends TilesRenderer {
  preprocessTileset(json, url, parent = null) {
    super.preprocessTileset({ ...json, asset: { ...json.asset, version: '1.0' } }, url, parent);
  }
}

/** One loaded tile's content: its meshes, per-tile features and their global numbers. */
class TileContent {
  constructor(tile, scene, meshes, ids, types, attribute, nullFeatureId) {
    this.tile = tile;
    this.scene = scene;
    this.ids = ids;
    this.types = types;
    this.attribute = attribute;
    this.nullFeatureId = nullFeatureId;
    this.index = new FeatureIndex(meshes, ids.length);
    this.painter = new BatchedPainter(this.index);
    /** Global feature number of each row of the tile's property table. */
    this.global = new Int32Array(ids.length).fill(-1);
  }
}

/**
 * A tileset streamed into a Viewer. The Viewer creates it (`Viewer.loadTiles`) and delegates
 * its feature methods to `features` (same shape as a GLB scene's) and `featureOfHit`.
 */
export class TilesLayer {
  /**
   * @param {import('./viewer.js').Viewer} viewer
   * @param {string} url the tileset JSON
   * @param {{errorTarget?: number}} [options]
   */
  constructor(viewer, url, { errorTarget = DEFAULT_ERROR_TARGET } = {}) {
    this.viewer = viewer;
    this.url = url;
    /** Load failures reported by the renderer ('load-error'): {url, message}. */
    this.errors = [];
    /** tile -> TileContent, for loaded tiles with pickable content. */
    this.contents = new Map();
    /** The object types seen in loaded tiles so far. */
    this.seenTypes = new Set();
    this.sceneLoadedAt = NaN;
    this.firstFrameAt = NaN;

    // The global feature registry: features are numbered in the order tiles reveal them.
    const ids = [];
    const types = [];
    this.holders = []; // f -> [TileContent, local row][]
    this.box = null;
    const self = this;
    const table = {
      strings: { id: ids, type: types },
      numbers: {},
      get count() {
        return ids.length;
      },
    };
    this._dirty = new Set();
    this._only = null;
    this._current = null;
    this.features = {
      ids,
      indexOfId: new Map(),
      table,
      extras: {},
      style: [],
      hidden: [],
      overlay: null,
      pickables: [],
      index: {
        hasGeometry: (f) => self._holders(f).length > 0,
        centroid: (f, target) => self._centroid(f, target),
        box: (f, target) => self._box(f, target),
      },
      painter: {
        paint: (f, colorOf) => self._paint(f, colorOf),
        baseColor: (m) => self._current.painter.baseColor(m),
        flush: () => self._flush(),
        dispose: () => {},
      },
    };

    const tiles = new CityTilesRenderer(url);
    this.tiles = tiles;
    tiles.errorTarget = errorTarget;
    // EXT_mesh_features + EXT_structural_metadata on every tile's meshes and scene.
    // (autoDispose: false, as no DRACO/KTX2 loader is given to dispose of.)
    tiles.registerPlugin(new GLTFExtensionsPlugin({ metadata: true, autoDispose: false }));
    // 3D Tiles 1.1 § Implicit tiling (subtree files), should a tileset use it.
    tiles.registerPlugin(new ImplicitTilingPlugin());
    // update() does nothing unless the camera moved or a tile arrived.
    tiles.registerPlugin(new UpdateOnChangePlugin());
    tiles.registerPlugin({ name: 'CITYTWIN_FEATURES', processTileModel: (scene, tile) => this._prepare(scene, tile) });
    tiles.setCamera(viewer.camera);
    tiles.setResolutionFromRenderer(viewer.camera, viewer.renderer);
    this.features.pickables.push(tiles.group);
    viewer.scene.add(tiles.group);

    this.ready = new Promise((resolve, reject) => {
      tiles.addEventListener('load-root-tileset', () => {
        try {
          this.box = this._place();
          resolve(this.box);
        } catch (err) {
          reject(err);
        }
      });
      tiles.addEventListener('load-error', ({ tile, error, url: where }) => {
        this.errors.push({ url: String(where ?? ''), message: String(error?.message ?? error) });
        if (!tile) reject(new Error(`cannot load the tileset: ${error?.message ?? error}`));
      });
    });
    this.ready.catch(() => {});
    this.firstFrame = new Promise((resolve, reject) => {
      this._resolveFirstFrame = resolve;
      // A tile failed, nothing is shown and nothing else is on its way: no first frame is
      // coming. (Checked after the failure settles: the renderer counts it then.)
      this.tiles.addEventListener('load-error', ({ tile }) => {
        if (!tile) return;
        setTimeout(() => {
          const { stats } = this.tiles;
          const busy = stats.queued + stats.downloading + stats.parsing > 0;
          const e = this.errors[0];
          if (!busy && !this.contents.size && e) reject(new Error(`cannot load the tiles: ${e.message} (${e.url})`));
        }, 0);
      });
    });
    this.firstFrame.catch(() => {});
    tiles.addEventListener('load-model', ({ scene }) => this._attach(scene));
    tiles.addEventListener('dispose-model', ({ tile }) => this._detach(tile));
    tiles.addEventListener('tile-visibility-change', ({ tile }) => {
      viewer.needsRender = true;
      const c = this.contents.get(tile);
      if (c && viewer.selectedIndex >= 0 && c.global.includes(viewer.selectedIndex)) this._outlineStale = true;
    });
    this._onRender = () => {
      if (Number.isNaN(this.firstFrameAt) && this._visibleContents().length) {
        this.firstFrameAt = performance.now();
        this._resolveFirstFrame(this.firstFrameAt);
      }
    };
    viewer.addEventListener('render', this._onRender);
  }

  // -- placement ------------------------------------------------------------------------

  /** Put the tileset's centre at the origin, up = +y; returns its box in the viewer frame. */
  _place() {
    const { tiles } = this;
    const { ellipsoid, group } = tiles;
    const region = tiles.root?.boundingVolume?.region;
    const corners = [];
    let lat;
    let lon;
    let height;
    if (region) {
      // 3D Tiles 1.1 § Bounding volumes: [west, south, east, north, minHeight, maxHeight].
      const [w, s, e, n, h0, h1] = region;
      lat = (s + n) / 2;
      lon = (w + e) / 2;
      height = h0;
      for (const la of [s, lat, n]) {
        for (const lo of [w, lon, e]) {
          for (const h of [h0, h1]) corners.push(ellipsoid.getCartographicToPosition(la, lo, h, new THREE.Vector3()));
        }
      }
    } else {
      // A box or sphere volume: its oriented box corners, the centre on the ellipsoid.
      const obb = new THREE.Box3();
      const m = new THREE.Matrix4();
      if (!tiles.getOrientedBoundingBox(obb, m)) throw new Error('the tileset root has no bounding volume');
      for (const x of [obb.min.x, obb.max.x]) {
        for (const y of [obb.min.y, obb.max.y]) {
          for (const z of [obb.min.z, obb.max.z]) corners.push(new THREE.Vector3(x, y, z).applyMatrix4(m));
        }
      }
      const center = corners.reduce((a, c) => a.add(c), new THREE.Vector3()).divideScalar(corners.length);
      const cart = {};
      ellipsoid.getPositionToCartographic(center, cart);
      lat = cart.lat;
      lon = cart.lon;
      height = Math.min(...corners.map((c) => ellipsoid.getPositionToCartographic(c, {}).height));
    }
    const enu = ellipsoid.getEastNorthUpFrame(lat, lon, height, new THREE.Matrix4());
    const toView = ENU_TO_VIEW.clone().multiply(enu.invert());
    toView.decompose(group.position, group.quaternion, group.scale);
    group.updateMatrixWorld(true);
    const box = new THREE.Box3();
    for (const c of corners) box.expandByPoint(c.applyMatrix4(toView));
    return box;
  }

  // -- tile contents --------------------------------------------------------------------

  /** processTileModel: index a tile's features and give its meshes vertex colors. */
  _prepare(scene, tile) {
    const meshes = [];
    scene.traverse((o) => {
      if ((o.isMesh || o.isLine || o.isPoints) && o.geometry.getAttribute(FEATURE_ATTRIBUTE)) meshes.push(o);
    });
    const metadata = scene.userData.structuralMetadata;
    const info = meshes.find((m) => m.userData.meshFeatures)?.userData.meshFeatures.getFeatureInfo()[0];
    if (!meshes.length || !metadata || !info || info.propertyTable === null || info.propertyTable === undefined) {
      return; // nothing pickable (e.g. an empty parent): drawn as it is
    }
    this.viewer.prepareMeshes(meshes);
    // EXT_structural_metadata: the row of feature id i holds the CityJSON id of object i.
    const t = info.propertyTable;
    const count = metadata.tableAccessors[t].count;
    const ids = new Array(count);
    const types = new Array(count);
    const row = {};
    for (let i = 0; i < count; i++) {
      metadata.getPropertyTableData(t, i, row);
      ids[i] = String(row.id);
      types[i] = row.type ? String(row.type) : '';
    }
    // Boxes and centroids in the viewer frame: the scene hangs under the (placed) group.
    const parent = scene.parent;
    scene.parent = this.tiles.group;
    scene.updateMatrixWorld(true);
    const content = new TileContent(tile, scene, meshes, ids, types, info.attribute ?? 0, info.nullFeatureId ?? null);
    scene.parent = parent;
    scene.userData.citytwin = content;
  }

  /** load-model: number the tile's features globally and paint the ones not at base color. */
  _attach(scene) {
    const c = scene.userData.citytwin;
    if (!c) return;
    const F = this.features;
    const v = this.viewer;
    this.contents.set(c.tile, c);
    if (Number.isNaN(this.sceneLoadedAt)) this.sceneLoadedAt = performance.now();
    const typesBefore = this.seenTypes.size;
    const paint = [];
    for (let i = 0; i < c.ids.length; i++) {
      const f = this.register(c.ids[i], c.types[i]);
      c.global[i] = f;
      this.holders[f].push([c, i]);
      if (!Number.isNaN(F.style[f * 3]) || F.hidden[f] || F.overlay || f === v.selectedIndex) paint.push(f);
    }
    this._only = c;
    for (const f of paint) v._paint(f);
    this._only = null;
    if (paint.includes(v.selectedIndex)) this._outlineStale = true;
    v.needsRender = true;
    // New object types: the page adds them to its layers.
    if (this.seenTypes.size > typesBefore) v.dispatchEvent(new Event('features'));
  }

  /** dispose-model: forget the tile's content (its GPU resources are freed by the renderer). */
  _detach(tile) {
    const c = this.contents.get(tile);
    if (!c) return;
    this.contents.delete(tile);
    this._dirty.delete(c);
    for (const f of c.global) {
      if (f < 0) continue;
      this.holders[f] = this.holders[f].filter(([x]) => x !== c);
      if (f === this.viewer.selectedIndex) this._outlineStale = true;
    }
    c.painter.dispose();
  }

  /**
   * The global number of an object id, allocated if no loaded tile has shown it yet (so a
   * selection or a style made before its tile loads applies once it does).
   * @param {string} id
   * @param {string} [type] its CityObject type, when known
   */
  register(id, type = '') {
    const F = this.features;
    let f = F.indexOfId.get(id);
    if (f !== undefined) {
      if (type && !F.table.strings.type[f]) {
        F.table.strings.type[f] = type;
        this._evaluate(f);
      }
      return f;
    }
    f = F.ids.length;
    F.ids.push(id);
    F.table.strings.type.push(type);
    F.indexOfId.set(id, f);
    F.style.push(NaN, NaN, NaN);
    F.hidden.push(0);
    this.holders.push([]);
    this._evaluate(f);
    return f;
  }

  /** Run the Viewer's current style and visibility functions for feature `f`. */
  _evaluate(f) {
    const F = this.features;
    const v = this.viewer;
    const type = F.table.strings.type[f];
    if (type) this.seenTypes.add(type);
    const c = v.styleOf?.(f) ?? null;
    F.style[f * 3] = c ? c[0] : NaN;
    F.style[f * 3 + 1] = c ? c[1] : NaN;
    F.style[f * 3 + 2] = c ? c[2] : NaN;
    F.hidden[f] = v.hiddenOf?.(f) ? 1 : 0;
  }

  _holders(f) {
    return (f >= 0 && this.holders[f]) || [];
  }

  /** Holders on visible tiles (what is drawn), else every loaded holder. */
  _shown(f) {
    const all = this._holders(f);
    const vis = all.filter(([c]) => this.tiles.visibleTiles.has(c.tile));
    return vis.length ? vis : all;
  }

  _visibleContents() {
    const out = [];
    for (const tile of this.tiles.visibleTiles) {
      const c = this.contents.get(tile);
      if (c) out.push(c);
    }
    return out;
  }

  _centroid(f, target = new THREE.Vector3()) {
    const hs = this._shown(f);
    target.set(0, 0, 0);
    if (!hs.length) return target;
    const p = new THREE.Vector3();
    for (const [c, i] of hs) target.add(c.index.centroid(i, p));
    return target.divideScalar(hs.length);
  }

  _box(f, target = new THREE.Box3()) {
    target.makeEmpty();
    const b = new THREE.Box3();
    for (const [c, i] of this._shown(f)) target.union(c.index.box(i, b));
    return target;
  }

  /** BatchedPainter.paint over every tile holding `f` (or only the one being attached). */
  _paint(f, colorOf) {
    for (const [c, i] of this._holders(f)) {
      if (this._only && c !== this._only) continue;
      this._current = c;
      c.painter.paint(i, colorOf);
      this._dirty.add(c);
    }
    this._current = null;
  }

  _flush() {
    let any = false;
    for (const c of this._dirty) any = c.painter.flush() || any;
    this._dirty.clear();
    return any;
  }

  /**
   * A WGS84 box in the viewer frame, e.g. GET /api/objects/{id} `geometry.bbox_wgs84`: where
   * an object is before its tile has loaded (heights as the tiles have them: source heights).
   * @param {number[]} b [lon0, lat0, h0, lon1, lat1, h1], degrees and metres
   */
  boxOfWgs84(b) {
    const { ellipsoid, group } = this.tiles;
    group.updateMatrixWorld();
    const box = new THREE.Box3();
    const p = new THREE.Vector3();
    const rad = THREE.MathUtils.DEG2RAD;
    for (const lon of [b[0], b[3]]) {
      for (const lat of [b[1], b[4]]) {
        for (const h of [b[2], b[5]]) {
          box.expandByPoint(ellipsoid.getCartographicToPosition(lat * rad, lon * rad, h, p).applyMatrix4(group.matrixWorld));
        }
      }
    }
    return box;
  }

  // -- picking and outline ----------------------------------------------------------------

  /**
   * The global feature of a raycast hit on a visible tile, or -1. The feature id is the
   * hit vertex's EXT_mesh_features attribute value (read here rather than through
   * MeshFeatures.getFeatures, which opens a second WebGL context for texture ids).
   */
  featureOfHit(hit) {
    const c = this.contents.get(hit.object.userData.tile);
    if (!c || !this.tiles.visibleTiles.has(c.tile)) return -1;
    const v = hit.face ? hit.face.a : hit.index;
    if (v === undefined || v === null) return -1;
    const attr = hit.object.geometry.getAttribute(`_feature_id_${c.attribute}`);
    if (!attr) return -1;
    const local = Math.round(attr.getX(v));
    if (local === c.nullFeatureId || local < 0 || local >= c.global.length) return -1;
    return c.global[local];
  }

  /** [mesh, mesh number, FeatureIndex, local feature] of `f` in the tiles drawn now. */
  outlineSources(f) {
    const out = [];
    for (const [c, i] of this._shown(f)) {
      c.index.meshes.forEach((mesh, m) => out.push([mesh, m, c.index, i]));
    }
    return out;
  }

  // -- per frame ------------------------------------------------------------------------

  /** Called by the Viewer every animation frame, before it renders. */
  update() {
    const { camera, renderer } = this.viewer;
    camera.updateMatrixWorld();
    this.tiles.setResolutionFromRenderer(camera, renderer);
    this.tiles.update();
    if (this._outlineStale) {
      this._outlineStale = false;
      this.viewer._buildOutline(this.viewer.selectedIndex);
    }
  }

  /** Loading and display counts, for tests and the benchmark. */
  info() {
    const { stats } = this.tiles;
    const visible = this._visibleContents();
    const shown = new Set();
    for (const c of visible) for (const f of c.global) shown.add(f);
    return {
      mode: 'tiles',
      url: this.url,
      errorTarget: this.tiles.errorTarget,
      loadedTiles: stats.loaded,
      contentTiles: this.contents.size,
      visibleTiles: visible.length,
      visibleFeatures: shown.size,
      features: this.features.ids.length,
      queued: stats.queued,
      downloading: stats.downloading,
      parsing: stats.parsing,
      failed: stats.failed,
      errors: this.errors.slice(),
      sceneLoaded: this.sceneLoadedAt,
      firstFrame: this.firstFrameAt,
    };
  }

  /** Stop streaming and free every tile. */
  dispose() {
    this.viewer.removeEventListener('render', this._onRender);
    this.viewer.scene.remove(this.tiles.group);
    this.contents.clear();
    this._dirty.clear();
    this.tiles.dispose();
  }
}

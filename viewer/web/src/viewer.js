// The Viewer: one object owning the renderer, scene, camera and controls (after
// donmccurdy/three-gltf-viewer src/viewer.js). Methods are verbs; every load has a dispose.

import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { fetchGlb, readGlb, readPropertyTable } from './glb.js';
import { BatchedPainter, FEATURE_ATTRIBUTE, FeatureIndex, NaivePainter } from './features.js';
import { linearOf } from './styles.js';

const HIGHLIGHT = linearOf('#ffc400');
const DIMMED = linearOf('#e4e4e4');
const OUTLINE = 0xff7a00;
const KEY_ORBIT_DEG = 7.5;
const DEG = Math.PI / 180;

/** Renders a city scene GLB (or streams a 3D Tiles tileset) and answers questions about its features. */
export class Viewer extends EventTarget {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{antialias?: boolean, lite?: boolean}} [options] `lite`: Lambert instead of
   *   physically based shading (a software rasterizer pays per fragment for PBR).
   */
  constructor(canvas, { antialias = true, lite = false } = {}) {
    super();
    this.canvas = canvas;
    this.lite = lite;
    this.renderer = new THREE.WebGLRenderer({
      canvas,
      antialias,
      // The test/bench hook `pixel()` reads back the last frame.
      preserveDrawingBuffer: true,
      powerPreference: 'high-performance',
    });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color('#dfe7ee');
    this.camera = new THREE.PerspectiveCamera(45, 1, 0.5, 5000);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.enableDamping = true;
    this.controls.dampingFactor = 0.15;
    // Pan across the ground like a map, and never look from below it.
    this.controls.screenSpacePanning = false;
    this.controls.maxPolarAngle = Math.PI / 2 - 0.03;
    this.controls.addEventListener('change', () => this._cameraChanged());

    const hemi = new THREE.HemisphereLight(0xffffff, 0x8d8270, 2.4);
    const sun = new THREE.DirectionalLight(0xffffff, 1.9);
    sun.position.set(-0.45, 1, 0.35);
    this.scene.add(hemi, sun);

    this.raycaster = new THREE.Raycaster();
    this.raycaster.params.Line.threshold = 0.5;
    this.raycaster.params.Points.threshold = 0.75;

    this.loader = new GLTFLoader();
    this.root = null;
    /** The streamed tileset (tiles3d.js TilesLayer) in tiles mode, else null. */
    this.tiles = null;
    /** The last style / visibility functions given: re-run for features tiles reveal later. */
    this.styleOf = null;
    this.hiddenOf = null;
    this.naiveGroup = null;
    this.grid = null;
    this.outline = null;
    this.features = null;
    this.home = null;
    this.selectedIndex = -1;
    /** CSS pixels of the view covered by UI (a bottom sheet), which flyTo() avoids. */
    this.insets = { bottom: 0 };
    this.needsRender = true;
    this.frameTimes = [];
    this.flight = null;
    this.abort = null;

    this._onKey = (e) => this._key(e);
    canvas.addEventListener('keydown', this._onKey);
    this._resizeObserver = new ResizeObserver(() => this.resize());
    this._resizeObserver.observe(canvas.parentElement ?? canvas);
    this.resize();
    this.renderer.setAnimationLoop(() => this._tick());
  }

  // -- loading ------------------------------------------------------------------------

  /**
   * Load a scene GLB (replacing the current one).
   * @param {string} url
   * @param {{onProgress?: (loaded: number, total: number|null) => void,
   *          response?: Promise<Response>,
   *          naive?: (scene: THREE.Object3D, ids: string[]) => THREE.Object3D,
   *          keepView?: boolean}} [opts] keepView: keep the camera (a scenario switch)
   * @returns {Promise<{table: any, json: any}>}
   */
  async load(url, { onProgress, naive, response, keepView = false } = {}) {
    this.abort?.abort();
    const abort = (this.abort = new AbortController());
    const buffer = await fetchGlb(url, { onProgress, signal: abort.signal, response });
    const { json, bin } = readGlb(buffer);
    const table = readPropertyTable(json, bin);
    const gltf = await this.loader.parseAsync(buffer, '');
    if (abort.signal.aborted) throw new DOMException('superseded by a newer load', 'AbortError');
    this.disposeScene();
    const root = gltf.scene;
    const meshes = [];
    root.traverse((o) => {
      if ((o.isMesh || o.isLine || o.isPoints) && o.geometry.getAttribute(FEATURE_ATTRIBUTE)) {
        meshes.push(o);
      }
    });
    if (this.lite) liteMaterials(meshes);
    const ids = table.strings.id;
    const indexOfId = new Map(ids.map((id, i) => [id, i]));
    const index = new FeatureIndex(meshes, table.count);
    let painter;
    let pickables;
    if (naive) {
      this.naiveGroup = naive(root, ids);
      painter = new NaivePainter(this.naiveGroup, indexOfId, table.count);
      pickables = painter.pickables;
      this.scene.add(this.naiveGroup);
    } else {
      painter = new BatchedPainter(index);
      pickables = meshes;
      this.scene.add(root);
    }
    this.root = root;
    const n = table.count;
    this.features = {
      ids,
      indexOfId,
      index,
      painter,
      pickables,
      table,
      extras: json.asset?.extras?.citytwin ?? {},
      style: new Float32Array(n * 3).fill(NaN),
      hidden: new Uint8Array(n),
      overlay: null,
    };
    this.selectedIndex = -1;
    const keep = keepView ? this.getView() : null;
    this._frame(index);
    if (keep) this.setView(keep.position, keep.target);
    this.needsRender = true;
    return { table, json };
  }

  /**
   * Stream an OGC 3D Tiles 1.1 tileset instead of one GLB (replacing the current scene):
   * tiles refine by screen-space error as the camera moves (tiles3d.js).
   * @param {string} url the tileset JSON (GET /api/tiles/{scenario}/tileset.json)
   * @param {{errorTarget?: number, keepView?: boolean}} [opts] errorTarget: pixels
   * @returns {Promise<{table: any, tiles: any}>} once the root tileset is placed and framed;
   *   `table` grows as tiles reveal features
   */
  async loadTiles(url, { errorTarget, keepView = false } = {}) {
    this.abort?.abort();
    const abort = (this.abort = new AbortController());
    const { TilesLayer } = await import('./tiles3d.js');
    if (abort.signal.aborted) throw new DOMException('superseded by a newer load', 'AbortError');
    const keep = keepView ? this.getView() : null;
    this.disposeScene();
    const layer = new TilesLayer(this, url, { errorTarget });
    this.tiles = layer;
    this.features = layer.features;
    this.selectedIndex = -1;
    let box;
    try {
      box = await layer.ready;
    } catch (err) {
      if (this.tiles === layer) this.disposeScene();
      throw err;
    }
    if (abort.signal.aborted || this.tiles !== layer) {
      throw new DOMException('superseded by a newer load', 'AbortError');
    }
    this._frameBox(box);
    if (keep) this.setView(keep.position, keep.target);
    this.needsRender = true;
    return { table: layer.features.table, tiles: layer };
  }

  /** Prepare meshes a tile brought (Lambert materials on a software rasterizer). */
  prepareMeshes(meshes) {
    if (this.lite) liteMaterials(meshes);
  }

  /**
   * Load the scene of another scenario (GET /api/scene.glb?scenario=).
   * @param {string} scenario
   * @param {object} [opts] as for load()
   */
  setScenario(scenario, opts = {}) {
    this.scenario = scenario;
    return this.load(`/api/scene.glb?scenario=${encodeURIComponent(scenario)}`, opts);
  }

  /** Remove the loaded scene and free its GPU resources. */
  disposeScene() {
    this._clearOutline();
    for (const obj of [this.root, this.naiveGroup, this.grid]) {
      if (!obj) continue;
      this.scene.remove(obj);
      obj.traverse((o) => {
        o.geometry?.dispose();
        for (const m of [o.material].flat()) {
          if (!m) continue;
          for (const v of Object.values(m)) if (v && v.isTexture) v.dispose();
          m.dispose();
        }
      });
    }
    this.features?.painter.dispose();
    this.tiles?.dispose();
    this.root = this.naiveGroup = this.grid = this.features = this.tiles = null;
    this.needsRender = true;
  }

  /** Stop rendering and free everything. */
  dispose() {
    this.abort?.abort();
    this.disposeScene();
    this.renderer.setAnimationLoop(null);
    this._resizeObserver.disconnect();
    this.canvas.removeEventListener('keydown', this._onKey);
    this.controls.dispose();
    this.renderer.dispose();
  }

  // -- camera -------------------------------------------------------------------------

  /** Frame the whole scene, size the grid and the clipping planes. */
  _frame(index) {
    const box = new THREE.Box3();
    const fb = new THREE.Box3();
    for (let f = 0; f < index.count; f++) if (index.hasGeometry(f)) box.union(index.box(f, fb));
    this._frameBox(box);
  }

  /** Frame a box (scene coordinates), size the grid and the clipping planes. */
  _frameBox(box) {
    if (box.isEmpty()) box.set(new THREE.Vector3(-50, 0, -50), new THREE.Vector3(50, 10, 50));
    this.sceneBox = box;
    const size = box.getSize(new THREE.Vector3());
    const radius = Math.max(10, 0.5 * size.length());
    this.sceneRadius = radius;
    // y = 0 is the scene origin's height (the city's lowest point); networks may lie below.
    const groundY = (box.min.y < 0 && box.max.y > 0 ? 0 : box.min.y) - 0.05;
    this._buildGrid(box, groundY);
    this.controls.maxDistance = radius * 8;
    this.controls.minDistance = 1;
    const center = box.getCenter(new THREE.Vector3());
    center.y = groundY + Math.min(size.y * 0.15, 10);
    const vfov = this.camera.fov * DEG;
    const hfov = 2 * Math.atan(Math.tan(vfov / 2) * this.camera.aspect);
    // Seen from 52° off vertical the ground's extent shrinks on screen: 0.75 fills the view.
    const dist = ((Math.max(size.x, size.z) * 0.5 + size.y * 0.3) / Math.tan(Math.min(vfov, hfov) / 2)) * 0.75;
    const offset = new THREE.Vector3().setFromSphericalCoords(Math.max(dist, 20), 52 * DEG, 20 * DEG);
    this.home = { position: center.clone().add(offset), target: center };
    this.setView(this.home.position, this.home.target);
  }

  _buildGrid(box, y) {
    const span = Math.max(box.max.x - box.min.x, box.max.z - box.min.z) * 1.3;
    const step = niceStep(span / 16);
    const size = Math.ceil(span / step / 2) * 2 * step;
    const grid = new THREE.GridHelper(size, size / step, 0x8a97a3, 0xb5c0ca);
    for (const m of [grid.material].flat()) {
      m.transparent = true;
      m.opacity = 0.6;
      m.depthWrite = false;
    }
    const c = box.getCenter(new THREE.Vector3());
    grid.position.set(c.x, y, c.z);
    grid.renderOrder = -1;
    grid.name = 'grid';
    this.grid = grid;
    this.gridStep = step;
    this.scene.add(grid);
  }

  /** Put the camera at `position` looking at `target` (scene coordinates). */
  setView(position, target) {
    this._cancelFlight();
    this.camera.position.copy(position);
    this.controls.target.copy(target);
    this.camera.lookAt(target);
    this.controls.update();
    this._cameraChanged();
  }

  /** The camera position and target. */
  getView() {
    return { position: this.camera.position.clone(), target: this.controls.target.clone() };
  }

  /**
   * Fly to a stored camera pose (a comment's), optionally with its field of view.
   * @param {{x,y,z}} position
   * @param {{x,y,z}} target
   * @param {{fov?: number|null, duration?: number}} [opts]
   */
  flyToView(position, target, { fov = null, duration = 700 } = {}) {
    if (fov && Math.abs(fov - this.camera.fov) > 1e-6) {
      this.camera.fov = fov;
      this.camera.updateProjectionMatrix();
    }
    const p = new THREE.Vector3(position.x, position.y, position.z);
    const t = new THREE.Vector3(target.x, target.y, target.z);
    return this._fly(p, t, duration);
  }

  /** Fly back to the initial framing of the whole scene. */
  resetView() {
    if (!this.home) return Promise.resolve();
    return this._fly(this.home.position, this.home.target, 600);
  }

  /** Turn the view to face north, keeping distance and tilt. */
  faceNorth() {
    const t = this.controls.target;
    const off = this.camera.position.clone().sub(t);
    const s = new THREE.Spherical().setFromVector3(off);
    s.theta = 0;
    return this._fly(t.clone().add(new THREE.Vector3().setFromSpherical(s)), t.clone(), 400);
  }

  /**
   * Fly to a feature and frame it.
   * @param {number} f feature index
   */
  flyTo(f, { duration = 700 } = {}) {
    const { index } = this.features;
    // Nothing to frame (no geometry, or its tile is not loaded).
    if (!index.hasGeometry(f)) return Promise.resolve();
    return this.flyToBox(index.box(f), { duration });
  }

  /**
   * Fly to a box (scene coordinates) and frame it.
   * @param {THREE.Box3} box
   */
  flyToBox(box, { duration = 700 } = {}) {
    const center = box.getCenter(new THREE.Vector3());
    const radius = Math.max(box.getSize(new THREE.Vector3()).length() * 0.5, 4);
    const vfov = this.camera.fov * DEG;
    const dist = THREE.MathUtils.clamp((radius / Math.sin(vfov / 2)) * 1.6, 15, this.controls.maxDistance);
    const dir = this.camera.position.clone().sub(this.controls.target).normalize();
    // Keep the current heading but look down at least a little.
    if (dir.y < 0.35) {
      dir.y = 0.35;
      dir.normalize();
    }
    const position = center.clone().addScaledVector(dir, dist);
    const target = center.clone();
    if (this.insets.bottom > 0) {
      // A bottom sheet covers the lower part of the view: aim below the object so it sits
      // in the middle of what stays visible.
      const h = this.canvas.getBoundingClientRect().height || 1;
      const shift = ((this.insets.bottom / 2) * 2 * dist * Math.tan(vfov / 2)) / h;
      const forward = dir.clone().negate();
      const right = new THREE.Vector3().crossVectors(forward, this.camera.up).normalize();
      const up = new THREE.Vector3().crossVectors(right, forward).normalize();
      position.addScaledVector(up, -shift);
      target.addScaledVector(up, -shift);
    }
    return this._fly(position, target, duration);
  }

  _fly(position, target, duration) {
    this._cancelFlight();
    if (duration <= 0) {
      this.setView(position, target);
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.flight = {
        from: this.camera.position.clone(),
        fromTarget: this.controls.target.clone(),
        to: position.clone(),
        toTarget: target.clone(),
        start: performance.now(),
        duration,
        resolve,
      };
      this.needsRender = true;
    });
  }

  _cancelFlight() {
    if (this.flight) {
      const { resolve } = this.flight;
      this.flight = null;
      resolve();
    }
  }

  _stepFlight(now) {
    const fl = this.flight;
    const t = Math.min(1, (now - fl.start) / fl.duration);
    const k = t < 0.5 ? 4 * t * t * t : 1 - Math.pow(-2 * t + 2, 3) / 2;
    this.camera.position.lerpVectors(fl.from, fl.to, k);
    this.controls.target.lerpVectors(fl.fromTarget, fl.toTarget, k);
    this.controls.update();
    this._cameraChanged();
    if (t >= 1) {
      this.flight = null;
      fl.resolve();
    }
  }

  /** Rotate the camera around its target about the vertical axis, then render. */
  orbit(degrees) {
    const t = this.controls.target;
    const off = this.camera.position.clone().sub(t);
    off.applyAxisAngle(new THREE.Vector3(0, 1, 0), degrees * DEG);
    this.camera.position.copy(t).add(off);
    this.camera.lookAt(t);
    this.controls.update();
    this._cameraChanged();
    this.render();
  }

  /** Tilt the camera (positive: look more from above). */
  tilt(degrees) {
    const t = this.controls.target;
    const s = new THREE.Spherical().setFromVector3(this.camera.position.clone().sub(t));
    s.phi = THREE.MathUtils.clamp(s.phi - degrees * DEG, 0.05, this.controls.maxPolarAngle);
    this.camera.position.copy(t).add(new THREE.Vector3().setFromSpherical(s));
    this.controls.update();
    this._cameraChanged();
  }

  /** Move the camera toward (factor < 1) or away from its target. */
  zoom(factor) {
    const t = this.controls.target;
    const off = this.camera.position.clone().sub(t);
    const d = THREE.MathUtils.clamp(off.length() * factor, this.controls.minDistance, this.controls.maxDistance);
    this.camera.position.copy(t).add(off.setLength(d));
    this.controls.update();
    this._cameraChanged();
  }

  /** Camera heading in radians: 0 when looking north (glTF -z), growing clockwise. */
  azimuth() {
    return this.controls.getAzimuthalAngle();
  }

  _key(e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const step = e.shiftKey ? KEY_ORBIT_DEG * 3 : KEY_ORBIT_DEG;
    switch (e.key) {
      case 'ArrowLeft':
        this.orbit(-step);
        break;
      case 'ArrowRight':
        this.orbit(step);
        break;
      case 'ArrowUp':
        this.tilt(step);
        break;
      case 'ArrowDown':
        this.tilt(-step);
        break;
      case '+':
      case '=':
      case 'PageUp':
        this.zoom(0.8);
        break;
      case '-':
      case '_':
      case 'PageDown':
        this.zoom(1.25);
        break;
      default:
        return;
    }
    e.preventDefault();
  }

  _cameraChanged() {
    // Clipping planes follow the distance so close-ups and the whole city both stay sharp.
    const d = this.camera.position.distanceTo(this.controls.target);
    const near = THREE.MathUtils.clamp(d / 500, 0.05, 20);
    const far = d + (this.sceneRadius ?? 1000) * 4;
    if (near !== this.camera.near || far !== this.camera.far) {
      this.camera.near = near;
      this.camera.far = far;
      this.camera.updateProjectionMatrix();
    }
    this.needsRender = true;
    this.dispatchEvent(new Event('camera'));
  }

  resize() {
    const el = this.canvas.parentElement ?? this.canvas;
    const w = Math.max(1, el.clientWidth);
    const h = Math.max(1, el.clientHeight);
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.needsRender = true;
    this.render();
  }

  // -- rendering ----------------------------------------------------------------------

  _tick() {
    const now = performance.now();
    if (this.flight) this._stepFlight(now);
    else if (this.controls.update()) this.needsRender = true;
    // Tiles mode: refine by screen-space error for this camera (tiles arriving mark a render).
    this.tiles?.update();
    if (this.features?.painter.flush()) this.needsRender = true;
    if (this.needsRender) this.render();
  }

  /** Render one frame now. */
  render() {
    this.features?.painter.flush();
    this.renderer.render(this.scene, this.camera);
    this.needsRender = false;
    const now = performance.now();
    this.frameTimes.push(now);
    while (this.frameTimes.length && this.frameTimes[0] < now - 1000) this.frameTimes.shift();
    this.dispatchEvent(new Event('render'));
  }

  /** Feature count, draw calls and triangles of the last frame, frames in the last second. */
  stats() {
    const now = performance.now();
    while (this.frameTimes.length && this.frameTimes[0] < now - 1000) this.frameTimes.shift();
    const info = this.renderer.info.render;
    return {
      features: this.features ? this.features.table.count : 0,
      drawCalls: info.calls,
      triangles: info.triangles,
      fps: this.frameTimes.length,
    };
  }

  /** The rendered RGBA at CSS coordinates (page viewport). */
  pixel(x, y) {
    if (this.needsRender) this.render();
    const rect = this.canvas.getBoundingClientRect();
    const gl = this.renderer.getContext();
    const sx = this.canvas.width / rect.width;
    const sy = this.canvas.height / rect.height;
    const px = Math.floor((x - rect.left) * sx);
    const py = this.canvas.height - 1 - Math.floor((y - rect.top) * sy);
    const out = new Uint8Array(4);
    if (px < 0 || py < 0 || px >= this.canvas.width || py >= this.canvas.height) return [0, 0, 0, 0];
    gl.readPixels(px, py, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, out);
    return Array.from(out);
  }

  // -- features -----------------------------------------------------------------------

  /** The feature index of an id, or -1. */
  indexOf(id) {
    const i = this.features?.indexOfId.get(id);
    return i === undefined ? -1 : i;
  }

  /** Where a feature's centroid is on the page (CSS pixels), or null for an unknown id. */
  screenPosition(id) {
    const f = this.indexOf(id);
    if (f < 0 || !this.features.index.hasGeometry(f)) return null;
    const p = this.features.index.centroid(f).project(this.camera);
    const rect = this.canvas.getBoundingClientRect();
    const x = rect.left + ((p.x + 1) / 2) * rect.width;
    const y = rect.top + ((1 - p.y) / 2) * rect.height;
    const inside = p.z > -1 && p.z < 1 && Math.abs(p.x) <= 1 && Math.abs(p.y) <= 1;
    return { x, y, visible: inside && !this.features.hidden[f] };
  }

  /** The visible feature under CSS coordinates (page viewport), or -1. */
  pick(x, y) {
    return this.pickHit(x, y)?.f ?? -1;
  }

  /**
   * The visible feature under CSS coordinates and the hit point on it.
   * @returns {{f: number, point: THREE.Vector3} | null} point in scene coordinates
   */
  pickHit(x, y) {
    if (!this.features) return null;
    this._rayAt(x, y);
    const hits = this.raycaster.intersectObjects(this.features.pickables, false);
    for (const hit of hits) {
      const f = this._featureOfHit(hit);
      if (f >= 0 && !this.features.hidden[f]) return { f, point: hit.point.clone() };
    }
    return null;
  }

  /**
   * Raycast other objects (pins...) under CSS coordinates, nearest first.
   * @param {THREE.Object3D[]} objects
   */
  intersect(x, y, objects) {
    this._rayAt(x, y);
    return this.raycaster.intersectObjects(objects, false);
  }

  _rayAt(x, y) {
    const rect = this.canvas.getBoundingClientRect();
    const ndc = new THREE.Vector2(((x - rect.left) / rect.width) * 2 - 1, -((y - rect.top) / rect.height) * 2 + 1);
    this.raycaster.setFromCamera(ndc, this.camera);
  }

  /** Where a scene point is on the page (CSS pixels) and whether it is in the view. */
  project(point) {
    const p = new THREE.Vector3(point.x, point.y, point.z).project(this.camera);
    const rect = this.canvas.getBoundingClientRect();
    const x = rect.left + ((p.x + 1) / 2) * rect.width;
    const y = rect.top + ((1 - p.y) / 2) * rect.height;
    return { x, y, visible: p.z > -1 && p.z < 1 && Math.abs(p.x) <= 1 && Math.abs(p.y) <= 1 };
  }

  _featureOfHit(hit) {
    if (this.tiles) return this.tiles.featureOfHit(hit);
    const obj = hit.object;
    if (Number.isInteger(obj.userData.featureIndex)) return obj.userData.featureIndex;
    const v = hit.face ? hit.face.a : hit.index;
    if (v === undefined || v === null) return -1;
    return this.features.index.featureOfVertex(obj, v);
  }

  /** Repaint one feature from its style color, overlay, visibility and selection. */
  _paint(f) {
    const F = this.features;
    const alpha = F.hidden[f] ? 0 : 1;
    const selected = f === this.selectedIndex;
    let rgb = null;
    let dim = false;
    if (F.overlay) {
      rgb = F.overlay.get(f) ?? null;
      dim = rgb === null;
    }
    if (!rgb) {
      const r = F.style[f * 3];
      if (!Number.isNaN(r)) rgb = [r, F.style[f * 3 + 1], F.style[f * 3 + 2]];
    }
    const out = [0, 0, 0, alpha];
    F.painter.paint(f, (m) => {
      let c = rgb;
      if (!c) {
        const b = F.painter.baseColor(m, f);
        c = [b.r, b.g, b.b];
      }
      out[0] = c[0];
      out[1] = c[1];
      out[2] = c[2];
      if (dim) mix(out, DIMMED, 0.75);
      if (selected) mix(out, HIGHLIGHT, 0.55);
      return out;
    });
    this.needsRender = true;
  }

  /**
   * Set every feature's style color at once.
   * @param {(f: number) => number[] | null} colorOf linear RGB, or null for the base color
   */
  setStyleColors(colorOf) {
    this.styleOf = colorOf;
    const F = this.features;
    if (!F) return;
    for (let f = 0; f < F.table.count; f++) {
      const c = colorOf(f);
      F.style[f * 3] = c ? c[0] : NaN;
      F.style[f * 3 + 1] = c ? c[1] : NaN;
      F.style[f * 3 + 2] = c ? c[2] : NaN;
      this._paint(f);
    }
  }

  /** Set one feature's style color (linear RGB, or null for its base color). */
  setFeatureColor(f, c) {
    const F = this.features;
    if (!F || f < 0) return;
    F.style[f * 3] = c ? c[0] : NaN;
    F.style[f * 3 + 1] = c ? c[1] : NaN;
    F.style[f * 3 + 2] = c ? c[2] : NaN;
    this._paint(f);
  }

  /** Hide the features whose `hidden(f)` is true (no geometry is rebuilt). */
  setHidden(hidden) {
    this.hiddenOf = hidden;
    const F = this.features;
    if (!F) return;
    for (let f = 0; f < F.table.count; f++) {
      const h = hidden(f) ? 1 : 0;
      if (h !== F.hidden[f]) {
        F.hidden[f] = h;
        this._paint(f);
      }
    }
    if (this.selectedIndex >= 0) this._buildOutline(this.selectedIndex);
  }

  /**
   * Emphasize some features (e.g. a failure's impact) and dim the rest; null clears it.
   * @param {Map<number, number[]> | null} colors
   */
  setOverlay(colors) {
    const F = this.features;
    if (!F) return;
    F.overlay = colors;
    for (let f = 0; f < F.table.count; f++) this._paint(f);
  }

  /** Highlight one feature (tint and outline); -1 clears. */
  highlight(f) {
    const prev = this.selectedIndex;
    this.selectedIndex = f;
    if (prev >= 0) this._paint(prev);
    if (f >= 0) this._paint(f);
    this._buildOutline(f);
  }

  _clearOutline() {
    if (!this.outline) return;
    this.scene.remove(this.outline);
    this.outline.traverse((o) => {
      o.geometry?.dispose();
      o.material?.dispose();
    });
    this.outline = null;
    this.needsRender = true;
  }

  _buildOutline(f) {
    this._clearOutline();
    const F = this.features;
    if (!F || f < 0 || F.hidden[f]) return;
    const group = new THREE.Group();
    group.name = 'selection-outline';
    const material = new THREE.LineBasicMaterial({ color: OUTLINE });
    // [mesh, mesh number, its FeatureIndex, the feature's number there] (tiles: per tile).
    const sources = this.naiveGroup
      ? (F.painter.meshesOf[f] ?? []).map((o) => [o, null, null, f])
      : this.tiles
        ? this.tiles.outlineSources(f)
        : F.index.meshes.map((o, m) => [o, m, F.index, f]);
    for (const [mesh, m, index, lf] of sources) {
      if (!mesh.isMesh) continue;
      const geom = mesh.geometry;
      const pos = geom.getAttribute('position');
      let tri;
      if (m === null) {
        tri = geom;
      } else {
        if (index.offsets[m][lf] === index.offsets[m][lf + 1]) continue;
        const fid = geom.getAttribute(FEATURE_ATTRIBUTE);
        const idx = geom.index;
        const n = idx ? idx.count : pos.count;
        const out = [];
        for (let t = 0; t < n; t += 3) {
          const a = idx ? idx.getX(t) : t;
          if (Math.round(fid.getX(a)) !== lf) continue;
          for (let k = 0; k < 3; k++) {
            const v = idx ? idx.getX(t + k) : t + k;
            out.push(pos.getX(v), pos.getY(v), pos.getZ(v));
          }
        }
        if (!out.length) continue;
        tri = new THREE.BufferGeometry();
        tri.setAttribute('position', new THREE.Float32BufferAttribute(out, 3));
      }
      const edges = new THREE.LineSegments(new THREE.EdgesGeometry(tri, 25), material);
      if (tri !== geom) tri.dispose();
      mesh.updateWorldMatrix(true, false);
      edges.applyMatrix4(mesh.matrixWorld);
      edges.renderOrder = 10;
      group.add(edges);
    }
    this.outline = group;
    this.scene.add(group);
    this.needsRender = true;
  }
}

function mix(out, c, t) {
  out[0] += (c[0] - out[0]) * t;
  out[1] += (c[1] - out[1]) * t;
  out[2] += (c[2] - out[2]) * t;
}

function niceStep(x) {
  const p = Math.pow(10, Math.floor(Math.log10(Math.max(x, 1e-6))));
  const m = x / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

/**
 * Swap glTF PBR materials for Lambert ones with the same color, side and transparency
 * (same look under the scene's hemisphere + sun lights, a fraction of the fragment cost).
 * @param {THREE.Object3D[]} meshes
 */
function liteMaterials(meshes) {
  const swapped = new Map();
  for (const mesh of meshes) {
    if (!mesh.isMesh) continue;
    const swap = (m) => {
      if (!m?.isMeshStandardMaterial) return m;
      if (!swapped.has(m)) {
        swapped.set(
          m,
          new THREE.MeshLambertMaterial({
            name: m.name,
            color: m.color,
            emissive: m.emissive,
            side: m.side,
            transparent: m.transparent,
            opacity: m.opacity,
          }),
        );
        m.dispose();
      }
      return swapped.get(m);
    };
    mesh.material = Array.isArray(mesh.material) ? mesh.material.map(swap) : swap(mesh.material);
  }
}

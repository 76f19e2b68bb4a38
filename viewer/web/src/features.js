// Per-feature bookkeeping over the batched meshes: which vertices belong to which feature
// (EXT_mesh_features `_FEATURE_ID_0`, read by three.js as `_feature_id_0`), centroids and
// boxes, and a per-vertex RGBA color attribute written one feature at a time.
// https://github.com/CesiumGS/glTF/tree/3d-tiles-next/extensions/2.0/Vendor/EXT_mesh_features

import * as THREE from 'three';

export const FEATURE_ATTRIBUTE = '_feature_id_0';

/** Vertex ranges, centroids and bounding boxes of every feature, over a set of meshes. */
export class FeatureIndex {
  /**
   * @param {THREE.Object3D[]} meshes meshes, lines or points carrying `_feature_id_0`
   * @param {number} count number of features (property table rows)
   */
  constructor(meshes, count) {
    this.count = count;
    this.meshes = meshes;
    /** Per mesh: vertex indices sorted by feature (a counting sort), and offsets per feature. */
    this.order = [];
    this.offsets = [];
    this.centroids = new Float64Array(count * 3);
    this.boxes = new Float32Array(count * 6);
    this.boxes.fill(Infinity);
    for (let f = 0; f < count; f++) {
      this.boxes[f * 6 + 3] = this.boxes[f * 6 + 4] = this.boxes[f * 6 + 5] = -Infinity;
    }
    const nverts = new Float64Array(count);
    const p = new THREE.Vector3();
    for (const mesh of meshes) {
      mesh.updateWorldMatrix(true, false);
      const geom = mesh.geometry;
      const fid = geom.getAttribute(FEATURE_ATTRIBUTE);
      const pos = geom.getAttribute('position');
      const n = pos.count;
      const offsets = new Uint32Array(count + 1);
      const ids = new Uint32Array(n);
      for (let v = 0; v < n; v++) {
        // Feature ids are stored as float32: round to the nearest integer.
        const f = Math.min(count - 1, Math.max(0, Math.round(fid.getX(v))));
        ids[v] = f;
        offsets[f + 1]++;
      }
      for (let f = 0; f < count; f++) offsets[f + 1] += offsets[f];
      const fill = offsets.slice(0, count);
      const order = new Uint32Array(n);
      const world = mesh.matrixWorld;
      const identity = world.equals(new THREE.Matrix4());
      for (let v = 0; v < n; v++) {
        const f = ids[v];
        order[fill[f]++] = v;
        p.fromBufferAttribute(pos, v);
        if (!identity) p.applyMatrix4(world);
        this.centroids[f * 3] += p.x;
        this.centroids[f * 3 + 1] += p.y;
        this.centroids[f * 3 + 2] += p.z;
        nverts[f]++;
        const b = f * 6;
        if (p.x < this.boxes[b]) this.boxes[b] = p.x;
        if (p.y < this.boxes[b + 1]) this.boxes[b + 1] = p.y;
        if (p.z < this.boxes[b + 2]) this.boxes[b + 2] = p.z;
        if (p.x > this.boxes[b + 3]) this.boxes[b + 3] = p.x;
        if (p.y > this.boxes[b + 4]) this.boxes[b + 4] = p.y;
        if (p.z > this.boxes[b + 5]) this.boxes[b + 5] = p.z;
      }
      this.order.push(order);
      this.offsets.push(offsets);
    }
    for (let f = 0; f < count; f++) {
      const k = nverts[f] || 1;
      this.centroids[f * 3] /= k;
      this.centroids[f * 3 + 1] /= k;
      this.centroids[f * 3 + 2] /= k;
    }
    this.vertexCounts = nverts;
  }

  /** Whether feature `f` has any geometry. */
  hasGeometry(f) {
    return this.vertexCounts[f] > 0;
  }

  /** The centroid of feature `f` (mean of its vertices), in scene coordinates. */
  centroid(f, target = new THREE.Vector3()) {
    return target.set(this.centroids[f * 3], this.centroids[f * 3 + 1], this.centroids[f * 3 + 2]);
  }

  /** The bounding box of feature `f`. */
  box(f, target = new THREE.Box3()) {
    const b = this.boxes;
    const i = f * 6;
    target.min.set(b[i], b[i + 1], b[i + 2]);
    target.max.set(b[i + 3], b[i + 4], b[i + 5]);
    return target;
  }

  /** The feature of vertex `v` of mesh number `m`. */
  featureOfVertex(mesh, v) {
    const fid = mesh.geometry.getAttribute(FEATURE_ATTRIBUTE);
    return Math.round(fid.getX(v));
  }
}

/**
 * Writes feature colors into one RGBA (uint8, normalized) vertex color attribute per mesh;
 * alpha 0 hides a feature (the materials use alphaTest), so hiding never rebuilds geometry.
 * Uploads only the changed vertex range of each mesh per frame (BufferAttribute.addUpdateRange).
 */
export class BatchedPainter {
  /** @param {FeatureIndex} index */
  constructor(index) {
    this.index = index;
    this.base = [];
    this.colors = [];
    this.dirty = index.meshes.map(() => [Infinity, -Infinity]);
    // Read every base color before touching materials: one material may serve several meshes.
    for (const mesh of index.meshes) {
      const mat = Array.isArray(mesh.material) ? mesh.material[0] : mesh.material;
      this.base.push(mat.color ? mat.color.clone() : new THREE.Color(1, 1, 1));
    }
    index.meshes.forEach((mesh, m) => {
      const n = mesh.geometry.getAttribute('position').count;
      const arr = new Uint8Array(n * 4);
      const c = this.base[m];
      const r = toByte(c.r);
      const g = toByte(c.g);
      const b = toByte(c.b);
      for (let v = 0; v < n; v++) {
        arr[v * 4] = r;
        arr[v * 4 + 1] = g;
        arr[v * 4 + 2] = b;
        arr[v * 4 + 3] = 255;
      }
      const attr = new THREE.BufferAttribute(arr, 4, true);
      attr.setUsage(THREE.DynamicDrawUsage);
      mesh.geometry.setAttribute('color', attr);
      this.colors.push(attr);
      for (const mat of Array.isArray(mesh.material) ? mesh.material : [mesh.material]) {
        // The vertex color replaces the base color (a thematic color must read true).
        if (mat.color) mat.color.setRGB(1, 1, 1);
        mat.vertexColors = true;
        mat.alphaTest = 0.5;
        mat.needsUpdate = true;
      }
    });
  }

  /** The base (material) color of mesh number `m`, linear RGB. */
  baseColor(m) {
    return this.base[m];
  }

  /**
   * Write feature `f`'s color in every mesh that holds it.
   * @param {number} f
   * @param {(m: number) => [number, number, number, number]} colorOf linear RGBA 0..1 per mesh
   */
  paint(f, colorOf) {
    const { order, offsets } = this.index;
    for (let m = 0; m < order.length; m++) {
      const start = offsets[m][f];
      const end = offsets[m][f + 1];
      if (start === end) continue;
      const [r, g, b, a] = colorOf(m);
      const R = toByte(r);
      const G = toByte(g);
      const B = toByte(b);
      const A = a >= 0.5 ? 255 : 0;
      const arr = this.colors[m].array;
      const ord = order[m];
      const d = this.dirty[m];
      for (let k = start; k < end; k++) {
        const v = ord[k];
        const o = v * 4;
        arr[o] = R;
        arr[o + 1] = G;
        arr[o + 2] = B;
        arr[o + 3] = A;
        if (v < d[0]) d[0] = v;
        if (v > d[1]) d[1] = v;
      }
    }
  }

  /** Upload what changed since the last flush; true when anything did. */
  flush() {
    let any = false;
    this.dirty.forEach((d, m) => {
      if (d[0] > d[1]) return;
      const attr = this.colors[m];
      attr.clearUpdateRanges();
      attr.addUpdateRange(d[0] * 4, (d[1] - d[0] + 1) * 4);
      attr.needsUpdate = true;
      d[0] = Infinity;
      d[1] = -Infinity;
      any = true;
    });
    return any;
  }

  dispose() {
    this.colors = [];
  }
}

/**
 * The same interface for the benchmark's naive scene (one mesh per feature, built by
 * naive.js): a color is a material color, hiding is `visible = false`.
 */
export class NaivePainter {
  /**
   * @param {THREE.Object3D} group the group buildNaive returned
   * @param {Map<string, number>} indexOfId
   * @param {number} count
   */
  constructor(group, indexOfId, count) {
    this.meshesOf = Array.from({ length: count }, () => []);
    this.base = [];
    this.pickables = [];
    const seen = new Set();
    group.traverse((obj) => {
      if (!obj.isMesh && !obj.isLine && !obj.isPoints) return;
      const f = naiveFeature(obj, indexOfId);
      if (f < 0 || f >= count) return;
      const mat = Array.isArray(obj.material) ? obj.material[0] : obj.material;
      // Own material per mesh, so recoloring one object never recolors another.
      obj.material = seen.has(mat) ? mat.clone() : mat;
      seen.add(obj.material);
      obj.userData.featureIndex = f;
      this.meshesOf[f].push(obj);
      this.pickables.push(obj);
    });
    this.baseOf = this.meshesOf.map((ms) => ms.map((o) => o.material.color?.clone() ?? new THREE.Color(1, 1, 1)));
  }

  baseColor(m, f) {
    return this.baseOf[f]?.[m] ?? new THREE.Color(1, 1, 1);
  }

  paint(f, colorOf) {
    this.meshesOf[f].forEach((obj, m) => {
      const [r, g, b, a] = colorOf(m);
      obj.visible = a >= 0.5;
      obj.material.color?.setRGB(r, g, b);
    });
  }

  flush() {
    return false;
  }

  dispose() {
    for (const list of this.meshesOf) for (const obj of list) obj.material.dispose();
    this.meshesOf = [];
  }
}

function naiveFeature(obj, indexOfId) {
  const u = obj.userData ?? {};
  for (const key of ['featureIndex', 'feature', 'featureId']) {
    if (Number.isInteger(u[key])) return u[key];
  }
  for (const key of ['id', 'featureId', 'objectId']) {
    if (typeof u[key] === 'string' && indexOfId.has(u[key])) return indexOfId.get(u[key]);
  }
  if (obj.name && indexOfId.has(obj.name)) return indexOfId.get(obj.name);
  const fid = obj.geometry?.getAttribute?.(FEATURE_ATTRIBUTE);
  return fid && fid.count ? Math.round(fid.getX(0)) : -1;
}

function toByte(x) {
  return x <= 0 ? 0 : x >= 1 ? 255 : Math.round(x * 255);
}

// The naive one-object-per-feature scene: the baseline bench/viewer.py measures the batched
// viewer against (issue 6, "Benchmark": "record the same figures for a naive
// one-mesh-per-object scene in the same run, as the ratio to beat").
//
// The batched GLB (scene/gltf.py) has one primitive per material and a per-vertex feature id
// (`_FEATURE_ID_0`, EXT_mesh_features; three.js' GLTFLoader lower-cases custom attribute
// names to `_feature_id_0`). This module splits it into what a straightforward viewer would
// build: one THREE.Mesh per feature, each with its own BufferGeometry holding only that
// feature's triangles and its own material clone, so every feature is its own draw call.
//
// To keep the baseline fair (not a straw man), a feature whose triangles come from several
// batched materials (roof, wall, ground) still gets ONE mesh and ONE material: the source
// materials' colours are baked into a vertex `color` attribute. Network segments and points
// become one THREE.LineSegments / THREE.Points per feature the same way. Loaded only with
// `?naive=1` (`const {buildNaive} = await import('./naive.js')` in main.js).

import * as THREE from 'three';

const FEATURE_ID = '_feature_id_0';
const KINDS = /** @type {const} */ (['mesh', 'lines', 'points']);
const CORNERS = { mesh: 3, lines: 2, points: 1 };

/**
 * The primitive kind of a batched object, or null when it is not split per feature.
 * @param {THREE.Object3D} o
 * @returns {'mesh' | 'lines' | 'points' | null}
 */
function kindOf(o) {
  if (o.isMesh) return 'mesh';
  if (o.isLineSegments) return 'lines';
  if (o.isPoints) return 'points';
  return null;
}

/**
 * One batched source object, read once.
 * @typedef {{
 *   object: THREE.Object3D, kind: 'mesh' | 'lines' | 'points', material: THREE.Material,
 *   index: ArrayLike<number> | null, start: number, count: number,
 *   position: THREE.BufferAttribute,
 *   normal: THREE.BufferAttribute | undefined, color: THREE.BufferAttribute | undefined,
 *   fid: THREE.BufferAttribute, matrix: THREE.Matrix4 | null, normalMatrix: THREE.Matrix3 | null,
 *   local: Int32Array,
 * }} Source
 */

/**
 * Split a batched, feature-id-tagged glTF scene into one object per feature.
 *
 * @param {THREE.Object3D} gltfScene `gltf.scene` from GLTFLoader (meshes carry `_feature_id_0`).
 * @param {ArrayLike<string> | null | undefined} featureIds feature id -> object id (the
 *   property table's `id` column); names the objects (`object.name`, `userData.id`).
 * @returns {THREE.Group} one Mesh / LineSegments / Points per feature and kind, in the
 *   coordinate frame of `gltfScene` (add it where `gltfScene` was); objects without a
 *   feature id attribute are copied as they are. `group.userData.dispose()` frees it.
 */
export function buildNaive(gltfScene, featureIds) {
  gltfScene.updateMatrixWorld(true);
  const rootInverse = gltfScene.matrixWorld.clone().invert();
  const group = new THREE.Group();
  group.name = 'naive';

  /** @type {Source[]} */
  const sources = [];
  let maxFid = -1;
  gltfScene.traverse((o) => {
    const kind = kindOf(o);
    const geometry = /** @type {THREE.BufferGeometry | undefined} */ (o.geometry);
    if (!kind || !geometry) return;
    const fid = geometry.getAttribute(FEATURE_ID);
    const position = geometry.getAttribute('position');
    if (!fid || !position) {
      if (o !== gltfScene) group.add(o.clone());
      return;
    }
    const rel = new THREE.Matrix4().multiplyMatrices(rootInverse, o.matrixWorld);
    const identity = rel.equals(new THREE.Matrix4());
    const index = geometry.getIndex();
    const range = geometry.drawRange;
    const count = index ? index.count : position.count;
    for (let i = 0; i < fid.count; i++) if (fid.getX(i) > maxFid) maxFid = fid.getX(i);
    const material = Array.isArray(o.material) ? o.material[0] : o.material;
    sources.push({
      object: o,
      kind,
      material,
      index: index ? index.array : null,
      count: Math.min(count, range.start + range.count) - range.start,
      start: range.start,
      position,
      normal: geometry.getAttribute('normal'),
      color: geometry.getAttribute('color'),
      fid,
      matrix: identity ? null : rel,
      normalMatrix: identity ? null : new THREE.Matrix3().getNormalMatrix(rel),
      local: new Int32Array(position.count).fill(-1),
    });
  });

  const nFeatures = maxFid + 1;
  /** @type {THREE.Material[]} */
  const materials = [];
  /** @type {THREE.BufferGeometry[]} */
  const geometries = [];

  for (const kind of KINDS) {
    const mine = sources.filter((s) => s.kind === kind);
    if (!mine.length || nFeatures <= 0) continue;
    const corners = CORNERS[kind];

    // Counting sort of the primitives by feature: one pass to count, one to place.
    const counts = new Int32Array(nFeatures + 1);
    let total = 0;
    for (const s of mine) {
      const prims = Math.floor(s.count / corners);
      for (let p = 0; p < prims; p++) {
        const v0 = s.index ? s.index[s.start + p * corners] : s.start + p * corners;
        counts[s.fid.getX(v0) + 1]++;
      }
      total += prims;
    }
    const offsets = new Int32Array(nFeatures + 1);
    for (let f = 0; f < nFeatures; f++) offsets[f + 1] = offsets[f] + counts[f + 1];
    const cursor = offsets.slice(0, nFeatures);
    const primSource = new Uint16Array(total);
    const primFirst = new Uint32Array(total); // the primitive's first corner in its source
    mine.forEach((s, si) => {
      const prims = Math.floor(s.count / corners);
      for (let p = 0; p < prims; p++) {
        const first = s.start + p * corners;
        const v0 = s.index ? s.index[first] : first;
        const slot = cursor[s.fid.getX(v0)]++;
        primSource[slot] = si;
        primFirst[slot] = first;
      }
    });

    const _v = new THREE.Vector3();
    for (let f = 0; f < nFeatures; f++) {
      const lo = offsets[f];
      const hi = offsets[f + 1];
      if (hi === lo) continue;
      // Which source materials this feature uses: one -> clone it; several -> bake colours.
      const firstSource = primSource[lo];
      let mixed = false;
      for (let k = lo + 1; k < hi; k++) if (primSource[k] !== firstSource) mixed = true;
      const nCorners = (hi - lo) * corners;
      const index = new Uint32Array(nCorners);
      const pos = new Float32Array(nCorners * 3);
      const nrm = new Float32Array(nCorners * 3);
      const fids = new Float32Array(nCorners);
      const col = new Float32Array(nCorners * 4);
      let hasNormal = true;
      let colorSize = 0;
      let nv = 0;
      let ni = 0;
      for (let k = lo; k < hi; k++) {
        const s = mine[primSource[k]];
        if (!s.normal) hasNormal = false;
        if (s.color) colorSize = Math.max(colorSize, s.color.itemSize);
        for (let c = 0; c < corners; c++) {
          const corner = primFirst[k] + c;
          const v = s.index ? s.index[corner] : corner;
          let local = s.local[v];
          if (local < 0) {
            local = s.local[v] = nv++;
            _v.fromBufferAttribute(s.position, v);
            if (s.matrix) _v.applyMatrix4(s.matrix);
            _v.toArray(pos, local * 3);
            if (s.normal) {
              _v.fromBufferAttribute(s.normal, v);
              if (s.normalMatrix) _v.applyMatrix3(s.normalMatrix).normalize();
              _v.toArray(nrm, local * 3);
            }
            fids[local] = f;
            const m = /** @type {THREE.MeshStandardMaterial} */ (s.material);
            const base = mixed && m.color ? m.color : null;
            col[local * 4] = (s.color ? s.color.getX(v) : 1) * (base ? base.r : 1);
            col[local * 4 + 1] = (s.color ? s.color.getY(v) : 1) * (base ? base.g : 1);
            col[local * 4 + 2] = (s.color ? s.color.getZ(v) : 1) * (base ? base.b : 1);
            col[local * 4 + 3] = s.color && s.color.itemSize === 4 ? s.color.getW(v) : 1;
          }
          index[ni++] = local;
        }
      }
      const geometry = new THREE.BufferGeometry();
      geometry.setAttribute('position', new THREE.BufferAttribute(pos.slice(0, nv * 3), 3));
      if (hasNormal) {
        geometry.setAttribute('normal', new THREE.BufferAttribute(nrm.slice(0, nv * 3), 3));
      }
      geometry.setAttribute(FEATURE_ID, new THREE.BufferAttribute(fids.slice(0, nv), 1));
      const vertexColors = mixed || colorSize > 0;
      if (vertexColors) {
        const size = colorSize === 4 ? 4 : 3;
        const packed = new Float32Array(nv * size);
        for (let i = 0; i < nv; i++) {
          for (let j = 0; j < size; j++) packed[i * size + j] = col[i * 4 + j];
        }
        geometry.setAttribute('color', new THREE.BufferAttribute(packed, size));
      }
      geometry.setIndex(new THREE.BufferAttribute(nv > 65535 ? index : new Uint16Array(index), 1));
      geometry.computeBoundingBox();
      geometry.computeBoundingSphere();

      const material = mine[firstSource].material.clone();
      if (mixed) {
        material.vertexColors = true;
        if (/** @type {any} */ (material).color) /** @type {any} */ (material).color.set(0xffffff);
      }
      const id = featureIds && f < featureIds.length ? String(featureIds[f]) : String(f);
      /** @type {THREE.Object3D} */
      let object;
      if (kind === 'mesh') object = new THREE.Mesh(geometry, material);
      else if (kind === 'lines') object = new THREE.LineSegments(geometry, material);
      else object = new THREE.Points(geometry, material);
      object.name = id;
      object.userData.featureId = f;
      object.userData.id = id;
      const src = mine[firstSource].object;
      object.castShadow = src.castShadow;
      object.receiveShadow = src.receiveShadow;
      object.renderOrder = src.renderOrder;
      group.add(object);
      geometries.push(geometry);
      materials.push(material);
    }
  }

  group.userData.naive = true;
  group.userData.features = group.children.length;
  group.userData.dispose = () => {
    for (const g of geometries) g.dispose();
    for (const m of materials) m.dispose();
    group.clear();
  };
  return group;
}

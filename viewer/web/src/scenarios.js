// Scenario modes (existing / a proposal / both), the proposal's diff summary, and the
// "both" view: the proposal drawn with its added and changed objects tinted and everything
// else dimmed, plus a translucent ghost of the base objects it removes or changes.

import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { fetchGlb, readGlb, readPropertyTable } from './glb.js';
import { FEATURE_ATTRIBUTE } from './features.js';
import { formatNumber, linearOf } from './styles.js';

export const DIFF_COLORS = { added: '#1a9641', changed: '#ff8c00', removed: '#c0392b', before: '#5d6b78' };
const MAX_LISTED = 30;

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function signed(v, unit) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  if (Math.abs(v) < 0.005) v = 0; // float noise of equal shapes measured twice
  const s = v > 0 ? '+' : v < 0 ? '−' : '±';
  return `${s}${formatNumber(Math.abs(v))}${unit ? ` ${unit}` : ''}`;
}

function beforeAfter(q, unit) {
  const f = (x) => (x === null || x === undefined ? '—' : formatNumber(x));
  return `${f(q.before)} → ${f(q.after)} ${unit} (${signed(q.change, '')})`;
}

/**
 * The modes a viewer offers: "base" (existing), each proposal, and "both:<proposal>".
 * @param {string[]} scenarios scenario names on offer (the session's, or every known one)
 * @param {Map<string, string|null>} bases proposal -> its base scenario
 */
export function scenarioModes(scenarios, bases) {
  const modes = [];
  const proposals = scenarios.filter((s) => s !== 'base' && bases.get(s) !== null);
  if (scenarios.includes('base') || !scenarios.length) modes.push({ key: 'base', scenario: 'base', both: false, label: 'Existing' });
  for (const p of scenarios) {
    if (p === 'base') continue;
    modes.push({ key: p, scenario: p, both: false, label: proposals.length > 1 || p !== 'proposal' ? `Proposal: ${p}` : 'Proposal' });
  }
  for (const p of proposals) {
    const base = bases.get(p) ?? 'base';
    modes.push({ key: `both:${p}`, scenario: p, base, both: true, label: `Both (${base === 'base' ? 'existing' : base} + ${p})` });
  }
  return modes;
}

/** The diff card and the "both" overlay and ghost for one Viewer. */
export class ScenarioView {
  /**
   * @param {import('./viewer.js').Viewer} viewer
   * @param {HTMLElement} card the diff panel (a <details>)
   * @param {{select: (id: string, opts?: any) => void}} app
   */
  constructor(viewer, card, app) {
    this.viewer = viewer;
    this.card = card;
    this.app = app;
    this.diffs = new Map();
    this.mode = null;
    this.ghost = null;
    this.overlayColors = null;
    this.request = 0;
  }

  /** The diff of a proposal against its base (cached). */
  async diff(scenario, against = 'base') {
    const key = `${scenario}|${against}`;
    if (!this.diffs.has(key)) {
      const p = fetch(`/api/scenarios/${encodeURIComponent(scenario)}/diff?against=${encodeURIComponent(against)}`).then(async (r) => {
        const body = await r.json();
        if (!r.ok) throw new Error(body.message ?? r.statusText);
        return body;
      });
      this.diffs.set(key, p);
      p.catch(() => this.diffs.delete(key));
    }
    return this.diffs.get(key);
  }

  /** The overlay the current mode wants (the impact view restores it when cleared). */
  overlay() {
    return this.overlayColors;
  }

  /**
   * Apply a mode after its scene is loaded: diff card, tint, ghost.
   * @param {{scenario: string, both: boolean, base?: string}} mode
   */
  async apply(mode) {
    const req = ++this.request;
    this.mode = mode;
    this._clearGhost();
    this.overlayColors = null;
    this.viewer.setOverlay(null);
    if (mode.scenario === 'base') {
      this.card.hidden = true;
      return;
    }
    let diff;
    try {
      diff = await this.diff(mode.scenario, mode.base ?? 'base');
    } catch (err) {
      if (req !== this.request) return;
      this.card.hidden = false;
      this.card.querySelector('.diff-body').replaceChildren(h('p', { class: 'error', text: `No diff: ${err.message}` }));
      return;
    }
    if (req !== this.request) return;
    this._render(mode, diff);
    if (!mode.both) return;
    const colors = new Map();
    const put = (ids, hex) => {
      const c = linearOf(hex);
      for (const id of ids) {
        const f = this.viewer.indexOf(id);
        if (f >= 0) colors.set(f, c);
      }
    };
    put(diff.added, DIFF_COLORS.added);
    put(diff.changed, DIFF_COLORS.changed);
    this.overlayColors = colors;
    this.viewer.setOverlay(colors);
    try {
      await this._buildGhost(mode.base ?? 'base', diff, req);
    } catch (err) {
      if (req === this.request) {
        this.card.querySelector('.diff-body').append(h('p', { class: 'error', text: `Cannot draw the existing objects: ${err.message}` }));
      }
    }
  }

  _render(mode, diff) {
    const t = diff.totals ?? {};
    const byId = new Map((diff.objects ?? []).map((o) => [o.id, o]));
    this.card.hidden = false;
    this.card.querySelector('.diff-summary').textContent =
      `Changes: +${diff.added.length} added · −${diff.removed.length} removed · ~${diff.changed.length} changed`;
    const body = [];
    body.push(
      h('p', { class: 'muted', text: `${mode.scenario} against ${mode.base ?? 'base'}${mode.both ? ' (tinted: added green, changed orange; red ghosts: removed, grey: before)' : ''}` }),
      h(
        'dl',
        { class: 'diff-totals' },
        h('dt', { text: 'Footprint' }),
        h('dd', { 'data-total': 'footprint', text: signed(t.footprint_change, 'm²') }),
        h('dt', { text: 'Volume' }),
        h('dd', { 'data-total': 'volume', text: signed(t.volume_change, 'm³') }),
      ),
    );
    const list = h('ul', { class: 'diff-list' });
    const ids = [...diff.changed.map((id) => ['changed', id]), ...diff.added.map((id) => ['added', id]), ...diff.removed.map((id) => ['removed', id])];
    for (const [kind, id] of ids.slice(0, MAX_LISTED)) {
      const o = byId.get(id);
      const li = h('li', { 'data-change': kind, 'data-id': id });
      const sw = h('span', { class: 'swatch', 'aria-hidden': 'true' });
      sw.style.background = DIFF_COLORS[kind];
      const name = kind === 'removed'
        ? h('span', { class: 'diff-id', text: id })
        : h('button', { type: 'button', class: 'link diff-id', text: id, onclick: () => this.app.select(id, { fly: true }) });
      li.append(sw, h('span', { class: 'diff-kind', text: ` ${kind} ` }), name);
      if (o) {
        const details = [];
        if (o.height && (o.height.change || kind !== 'changed')) details.push(`height ${beforeAfter(o.height, 'm')}`);
        if (o.footprint && Math.abs(o.footprint.change) > 1e-6) details.push(`footprint ${signed(o.footprint.change, 'm²')}`);
        if (o.volume && Math.abs(o.volume.change) > 1e-6) details.push(`volume ${signed(o.volume.change, 'm³')}`);
        if (details.length) li.append(h('div', { class: 'diff-detail muted', text: details.join(' · ') }));
      }
      list.append(li);
    }
    body.push(list);
    if (ids.length > MAX_LISTED) body.push(h('p', { class: 'muted', text: `… and ${ids.length - MAX_LISTED} more` }));
    this.card.querySelector('.diff-body').replaceChildren(...body);
  }

  /** Translucent base geometry of the removed and changed objects (their "before"). */
  async _buildGhost(base, diff, req) {
    const wanted = new Map();
    for (const id of diff.removed) wanted.set(id, 'removed');
    for (const id of diff.changed) wanted.set(id, 'before');
    if (!wanted.size) return;
    const buffer = await fetchGlb(`/api/scene.glb?scenario=${encodeURIComponent(base)}`);
    if (req !== this.request) return;
    const { json, bin } = readGlb(buffer);
    const table = readPropertyTable(json, bin);
    const kindOf = table.strings.id.map((id) => wanted.get(id) ?? null);
    const gltf = await new GLTFLoader().parseAsync(buffer, '');
    if (req !== this.request) {
      disposeTree(gltf.scene);
      return;
    }
    const out = { removed: [], before: [] };
    gltf.scene.updateMatrixWorld(true);
    gltf.scene.traverse((mesh) => {
      if (!mesh.isMesh) return;
      const geom = mesh.geometry;
      const fid = geom.getAttribute(FEATURE_ATTRIBUTE);
      if (!fid) return;
      const pos = geom.getAttribute('position');
      const idx = geom.index;
      const n = idx ? idx.count : pos.count;
      const v = new THREE.Vector3();
      for (let t = 0; t < n; t += 3) {
        const a = idx ? idx.getX(t) : t;
        const kind = kindOf[Math.round(fid.getX(a))];
        if (!kind) continue;
        for (let k = 0; k < 3; k++) {
          const i = idx ? idx.getX(t + k) : t + k;
          v.fromBufferAttribute(pos, i).applyMatrix4(mesh.matrixWorld);
          out[kind].push(v.x, v.y, v.z);
        }
      }
    });
    disposeTree(gltf.scene);
    const group = new THREE.Group();
    group.name = 'scenario-ghost';
    for (const [kind, xs] of Object.entries(out)) {
      if (!xs.length) continue;
      const geom = new THREE.BufferGeometry();
      geom.setAttribute('position', new THREE.Float32BufferAttribute(xs, 3));
      geom.computeVertexNormals();
      const color = DIFF_COLORS[kind];
      const mesh = new THREE.Mesh(
        geom,
        new THREE.MeshLambertMaterial({ color, transparent: true, opacity: 0.3, depthWrite: false, side: THREE.DoubleSide }),
      );
      mesh.renderOrder = 5;
      const edges = new THREE.LineSegments(new THREE.EdgesGeometry(geom, 25), new THREE.LineBasicMaterial({ color, transparent: true, opacity: 0.8 }));
      edges.renderOrder = 6;
      group.add(mesh, edges);
    }
    this.ghost = group;
    this.viewer.scene.add(group);
    this.viewer.needsRender = true;
  }

  _clearGhost() {
    if (!this.ghost) return;
    this.viewer.scene.remove(this.ghost);
    disposeTree(this.ghost);
    this.ghost = null;
    this.viewer.needsRender = true;
  }
}

function disposeTree(root) {
  root.traverse((o) => {
    o.geometry?.dispose();
    for (const m of [o.material].flat()) {
      if (!m) continue;
      for (const v of Object.values(m)) if (v && v.isTexture) v.dispose();
      m.dispose();
    }
  });
}

// "Color by" rules: live-state rules from GET /api/styles (numeric stops -> interpolated
// ramp, categories -> colors) and attribute ramps over property-table columns.

import * as THREE from 'three';

export const NO_DATA = '#b8b8b8';
const RAMP = ['#440154', '#3b528b', '#21918c', '#5ec962', '#fde725']; // viridis, 5 stops

/** "#rrggbb" (sRGB) -> [r, g, b] in 0..255. */
function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** sRGB 0..255 triple -> linear RGB 0..1 (three.js' working color space). */
function toLinear(rgb) {
  const c = new THREE.Color().setRGB(rgb[0] / 255, rgb[1] / 255, rgb[2] / 255, THREE.SRGBColorSpace);
  return [c.r, c.g, c.b];
}

/** A "#rrggbb" color as linear RGB. */
export function linearOf(hex) {
  return toLinear(hexToRgb(hex));
}

function rgbToHex(rgb) {
  return '#' + rgb.map((x) => Math.round(x).toString(16).padStart(2, '0')).join('');
}

/** Interpolate between numeric stops (in sRGB, as a legend gradient does). */
function rampColor(stops, value) {
  if (value <= stops[0][0]) return hexToRgb(stops[0][1]);
  const last = stops[stops.length - 1];
  if (value >= last[0]) return hexToRgb(last[1]);
  for (let i = 1; i < stops.length; i++) {
    const [v1, c1] = stops[i];
    if (value <= v1) {
      const [v0, c0] = stops[i - 1];
      const t = v1 > v0 ? (value - v0) / (v1 - v0) : 0;
      const a = hexToRgb(c0);
      const b = hexToRgb(c1);
      return a.map((x, k) => x + (b[k] - x) * t);
    }
  }
  return hexToRgb(last[1]);
}

/**
 * One way to color features.
 * kind: "none" (materials), "live" (a state property) or "attribute" (a table column).
 */
export class ColorRule {
  constructor({ key, label, kind, property = null, types = null, unit = '', stops = null, categories = null, column = null, scope = null }) {
    Object.assign(this, { key, label, kind, property, unit, stops, categories, column, scope });
    this.types = types && types.length ? new Set(types) : null;
    this.cache = new Map();
  }

  /** Whether this rule colors features of this type (and scope: "city" or "network"). */
  applies(type, isNetwork) {
    if (this.kind === 'none') return false;
    if (this.scope === 'city' && isNetwork) return false;
    if (this.scope === 'network' && !isNetwork) return false;
    return !this.types || this.types.has(type);
  }

  /** The linear RGB color of a value, or null for no data. */
  colorOf(value) {
    if (value === undefined || value === null) return null;
    if (this.categories) {
      const key = String(value);
      let c = this.cache.get(key);
      if (c === undefined) {
        const hex = this.categories[key];
        c = hex ? linearOf(hex) : null;
        this.cache.set(key, c);
      }
      return c;
    }
    if (this.stops) {
      const x = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
      if (!Number.isFinite(x)) return null;
      return toLinear(rampColor(this.stops, x));
    }
    return null;
  }

  /** The legend of this rule, as a DOM element. */
  legend() {
    const box = document.createElement('div');
    box.className = 'legend';
    if (this.kind === 'none') {
      box.textContent = 'Colors by object type and surface (materials of the scene).';
      return box;
    }
    const title = document.createElement('div');
    title.className = 'legend-title';
    title.textContent = `${this.label}${this.unit ? ` (${this.unit})` : ''}`;
    box.append(title);
    if (this.stops) {
      const bar = document.createElement('div');
      bar.className = 'legend-ramp';
      const lo = this.stops[0][0];
      const hi = this.stops[this.stops.length - 1][0];
      const span = hi - lo || 1;
      bar.style.background = `linear-gradient(to right, ${this.stops
        .map(([v, c]) => `${c} ${(((v - lo) / span) * 100).toFixed(1)}%`)
        .join(', ')})`;
      const ticks = document.createElement('div');
      ticks.className = 'legend-ticks';
      let shown = -Infinity;
      this.stops.forEach(([v], i) => {
        // Each stop's label sits under its place on the ramp, unless it would overlap.
        const pct = ((v - lo) / span) * 100;
        const last = i === this.stops.length - 1;
        if (pct - shown < 22 && !(last && pct - shown >= 12)) return;
        shown = pct;
        const t = document.createElement('span');
        t.style.left = `${pct}%`;
        t.style.transform = `translateX(-${pct}%)`;
        t.textContent = formatNumber(v);
        ticks.append(t);
      });
      box.append(bar, ticks);
    } else if (this.categories) {
      const list = document.createElement('ul');
      list.className = 'legend-cats';
      for (const [name, hex] of Object.entries(this.categories)) {
        list.append(swatch(hex, name));
      }
      box.append(list);
    }
    const extra = document.createElement('ul');
    extra.className = 'legend-cats';
    extra.append(swatch(NO_DATA, 'no data'));
    box.append(extra);
    if (this.types) {
      const note = document.createElement('div');
      note.className = 'legend-note';
      note.textContent = `Applies to ${[...this.types].join(', ')}; other objects keep their colors.`;
      box.append(note);
    }
    return box;
  }
}

function swatch(hex, label) {
  const li = document.createElement('li');
  const s = document.createElement('span');
  s.className = 'swatch';
  s.style.background = hex;
  li.append(s, document.createTextNode(label));
  return li;
}

export function formatNumber(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1000 || Number.isInteger(v)) return v.toLocaleString('en', { maximumFractionDigits: 0 });
  if (a >= 10) return v.toFixed(1);
  if (a >= 0.1) return v.toFixed(2);
  return v.toPrecision(2);
}

/** Quantile of the finite values of `values` selected by `keep`. */
function quantiles(values, keep, qs) {
  const xs = [];
  for (let i = 0; i < values.length; i++) if (keep(i) && Number.isFinite(values[i])) xs.push(values[i]);
  if (!xs.length) return null;
  xs.sort((a, b) => a - b);
  return qs.map((q) => xs[Math.min(xs.length - 1, Math.max(0, Math.round(q * (xs.length - 1))))]);
}

function rampStops(qs) {
  const out = [];
  qs.forEach((v, i) => {
    if (!out.length || v > out[out.length - 1][0]) out.push([v, RAMP[i]]);
  });
  if (out.length === 1) out.push([out[0][0] + 1, RAMP[RAMP.length - 1]]);
  return out;
}

/**
 * Every rule the "color by" menu offers.
 * @param {any[]} apiRules GET /api/styles rules
 * @param {{numbers: Record<string, Float64Array>}} table the property table
 * @param {(i: number) => boolean} isNetwork
 */
export function buildRules(apiRules, table, isNetwork) {
  const rules = [new ColorRule({ key: 'none', label: 'Object type', kind: 'none' })];
  for (const r of apiRules) {
    rules.push(
      new ColorRule({
        key: `live:${r.name}`,
        label: r.name,
        kind: 'live',
        property: r.property,
        types: r.types ?? null,
        unit: r.unit ?? '',
        stops: r.stops ?? null,
        categories: r.categories ?? null,
      }),
    );
  }
  const QS = [0.02, 0.25, 0.5, 0.75, 0.98];
  // Heights and years describe buildings; ground surfaces would flatten the ramp.
  const typeCol = table.strings.type ?? [];
  const buildingTypes = [...new Set(typeCol)].filter((t) => /^Building/.test(t));
  const types = buildingTypes.length ? new Set(buildingTypes) : null;
  const attr = (key, label, column, unit, scope) => {
    const values = table.numbers[column];
    if (!values) return;
    const keep = (i) =>
      scope === 'network' ? isNetwork(i) : !isNetwork(i) && (!types || types.has(typeCol[i]));
    const qs = quantiles(values, keep, QS);
    if (!qs) return;
    const ruleTypes = scope === 'city' && types ? [...types] : null;
    rules.push(new ColorRule({ key, label, kind: 'attribute', column, unit, stops: rampStops(qs), scope, types: ruleTypes }));
  };
  attr('attr:height', 'Height', 'height', 'm', 'city');
  attr('attr:year', 'Year of construction', 'attr_yearOfConstruction', '', 'city');
  attr('attr:storeys', 'Storeys above ground', 'attr_storeysAboveGround', '', 'city');
  attr('attr:size', 'Pipe / line size', 'height', 'm', 'network');
  return rules;
}

export { rgbToHex };

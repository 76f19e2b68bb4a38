// A small history chart as inline SVG: the mean per bucket as a line, min..max as a band.

import { formatNumber } from './styles.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 300;
const H = 70;
const PAD = { l: 4, r: 4, t: 6, b: 6 };

function el(name, attrs) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/**
 * Chart history buckets ({start, count, min, mean, max}) or raw points ({time, value}).
 * @param {{start?: number, time?: number, min?: number, mean?: number, max?: number, value?: any}[]} rows
 * @param {{unit?: string, label?: string}} [opts]
 * @returns {HTMLElement} a figure with the chart and its range
 */
export function historyChart(rows, { unit = '', label = '' } = {}) {
  const pts = [];
  for (const r of rows) {
    const t = r.start ?? r.time;
    const mean = r.mean ?? (typeof r.value === 'number' ? r.value : null);
    if (t === undefined || mean === null || !Number.isFinite(mean)) continue;
    pts.push({ t, mean, min: r.min ?? mean, max: r.max ?? mean });
  }
  const fig = document.createElement('figure');
  fig.className = 'chart';
  if (pts.length === 0) {
    fig.textContent = 'No history yet.';
    return fig;
  }
  const t0 = pts[0].t;
  const t1 = pts[pts.length - 1].t;
  let lo = Math.min(...pts.map((p) => p.min));
  let hi = Math.max(...pts.map((p) => p.max));
  if (hi === lo) {
    hi += 1;
    lo -= 1;
  }
  const x = (t) => PAD.l + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r) : (W - PAD.l - PAD.r) / 2);
  const y = (v) => PAD.t + (1 - (v - lo) / (hi - lo)) * (H - PAD.t - PAD.b);
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${label} history: ${formatNumber(lo)} to ${formatNumber(hi)} ${unit}` });
  const band = pts.map((p) => `${x(p.t).toFixed(1)},${y(p.max).toFixed(1)}`).concat(
    pts.slice().reverse().map((p) => `${x(p.t).toFixed(1)},${y(p.min).toFixed(1)}`),
  );
  svg.append(el('polygon', { points: band.join(' '), class: 'chart-band' }));
  if (pts.length === 1) {
    svg.append(el('circle', { cx: x(pts[0].t), cy: y(pts[0].mean), r: 3, class: 'chart-dot' }));
  } else {
    svg.append(el('polyline', { points: pts.map((p) => `${x(p.t).toFixed(1)},${y(p.mean).toFixed(1)}`).join(' '), class: 'chart-line' }));
  }
  const cap = document.createElement('figcaption');
  const when = (t) => new Date(t * 1000).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });
  cap.textContent = `${formatNumber(lo)}–${formatNumber(hi)}${unit ? ` ${unit}` : ''} · ${when(t0)} – ${when(t1)}`;
  fig.append(svg, cap);
  return fig;
}

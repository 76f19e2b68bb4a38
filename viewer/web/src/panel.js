// The object panel: id, type, live state, history charts, attributes, network relations,
// and "What if this fails?" (POST /api/networks/{net}/impact).

import { historyChart } from './chart.js';
import { formatNumber } from './styles.js';

const HISTORY_WINDOW_S = 24 * 3600;
const HISTORY_EVERY = '15m';
const MAX_LISTED = 40;

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

function formatValue(v) {
  if (typeof v === 'number') return formatNumber(v);
  if (v === null || v === undefined) return '—';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function formatTime(t) {
  return new Date(t * 1000).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

/** The side panel (a bottom sheet on phones) for the selected object. */
export class ObjectPanel {
  /**
   * @param {HTMLElement} root the panel element
   * @param {{select: (id: string, opts?: any) => void, flyTo: (id: string) => void,
   *          close: () => void, impact: (net: string, id: string) => Promise<any>,
   *          clearImpact: () => void, unitOf: (p: string) => string,
   *          networkLabel: (net: string) => string, scenario: string}} app
   */
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.title = root.querySelector('#panel-title');
    this.typeEl = root.querySelector('#panel-type');
    this.body = root.querySelector('#panel-body');
    root.querySelector('#panel-close').addEventListener('click', () => app.close());
    root.querySelector('#panel-fly').addEventListener('click', () => this.id && app.flyTo(this.id));
    this.id = null;
    this.stateRows = new Map();
    this.request = 0;
  }

  /** Open the panel on an object; `hint` ({type}) shows something before the API answers. */
  async open(id, hint = {}) {
    const req = ++this.request;
    this.id = id;
    this.root.hidden = false;
    this.root.dataset.id = id;
    this.title.textContent = id;
    this.typeEl.textContent = hint.type ?? '';
    this.body.replaceChildren(h('p', { class: 'muted', text: 'Loading…' }));
    this.stateRows.clear();
    let obj;
    try {
      const r = await fetch(`/api/objects/${encodeURIComponent(id)}?scenario=${encodeURIComponent(this.app.scenario)}`);
      obj = await r.json();
      if (!r.ok) throw new Error(obj.message ?? r.statusText);
    } catch (err) {
      if (req === this.request) this.body.replaceChildren(h('p', { class: 'error', text: `Cannot load ${id}: ${err.message}` }));
      return;
    }
    if (req !== this.request) return;
    this.typeEl.textContent = obj.type;
    const sections = [
      this._stateSection(obj),
      this._relationsSection(obj),
      this._attributesSection(obj),
      this._familySection(obj),
    ];
    this.body.replaceChildren(...sections.filter(Boolean));
    this._loadHistory(obj, req);
  }

  /** Close the panel. */
  hide() {
    this.request++;
    this.id = null;
    this.root.hidden = true;
    delete this.root.dataset.id;
  }

  /** A live value of the shown object changed. */
  updateState(property, s) {
    const row = this.stateRows.get(property);
    if (row) {
      row.value.textContent = `${formatValue(s.value)}${this._unit(property)}`;
      row.time.textContent = formatTime(s.time);
      row.source.textContent = s.source ?? '';
      row.tr.classList.remove('flash');
      void row.tr.offsetWidth; // restart the highlight animation
      row.tr.classList.add('flash');
    } else if (this.stateTable) {
      this._addStateRow(property, s);
      this.stateEmpty?.remove();
    }
  }

  _unit(property) {
    const u = this.app.unitOf(property);
    return u ? ` ${u}` : '';
  }

  _section(title, ...content) {
    return h('section', { class: 'panel-section' }, h('h3', { text: title }), ...content);
  }

  _idButton(id, label = id) {
    return h('button', { type: 'button', class: 'link', title: `Show ${id}`, onclick: () => this.app.select(id, { fly: true }) }, label);
  }

  _idList(ids) {
    const ul = h('ul', { class: 'id-list' });
    for (const id of ids.slice(0, MAX_LISTED)) ul.append(h('li', {}, this._idButton(id)));
    if (ids.length > MAX_LISTED) ul.append(h('li', { class: 'muted', text: `… and ${ids.length - MAX_LISTED} more` }));
    return ul;
  }

  _stateSection(obj) {
    const tbody = h('tbody');
    this.stateTable = tbody;
    const table = h('table', { class: 'kv state' }, h('thead', {}, h('tr', {}, h('th', { text: 'property' }), h('th', { text: 'value' }), h('th', { text: 'time' }), h('th', { text: 'source' }))), tbody);
    const entries = Object.entries(obj.state ?? {});
    for (const [p, s] of entries) this._addStateRow(p, s);
    this.stateEmpty = entries.length ? null : h('p', { class: 'muted', text: 'No live state yet; values appear here as they arrive.' });
    this.charts = h('div', { class: 'charts' });
    return this._section('Live state', table, this.stateEmpty, this.charts);
  }

  _addStateRow(p, s) {
    const value = h('td', { text: `${formatValue(s.value)}${this._unit(p)}` });
    const time = h('td', { class: 'time', text: formatTime(s.time) });
    const source = h('td', { class: 'source', text: s.source ?? '' });
    const tr = h('tr', { 'data-property': p }, h('th', { scope: 'row', text: p }), value, time, source);
    this.stateTable.append(tr);
    this.stateRows.set(p, { tr, value, time, source });
  }

  async _loadHistory(obj, req) {
    const numeric = Object.entries(obj.state ?? {}).filter(([, s]) => typeof s.value === 'number');
    for (const [p, s] of numeric) {
      const q = new URLSearchParams({ property: p, since: String(s.time - HISTORY_WINDOW_S), every: HISTORY_EVERY });
      let body;
      try {
        const r = await fetch(`/api/objects/${encodeURIComponent(obj.id)}/history?${q}`);
        if (!r.ok) continue;
        body = await r.json();
      } catch {
        continue;
      }
      if (req !== this.request) return;
      const fig = historyChart(body.buckets ?? body.points ?? [], { unit: this.app.unitOf(p), label: p });
      fig.prepend(h('div', { class: 'chart-title', text: `${p} · last 24 h (15 min means)` }));
      this.charts.append(fig);
    }
  }

  _attributesSection(obj) {
    const rows = [];
    const g = obj.geometry;
    if (g) {
      rows.push(['height', `${formatNumber(g.height)} m`]);
      if (g.footprint_area) rows.push(['footprint area', `${formatNumber(g.footprint_area)} m²`]);
      if (g.lod) rows.push(['LoD', g.lod]);
      if (g.centroid_wgs84) rows.push(['lon, lat', `${g.centroid_wgs84[0].toFixed(6)}, ${g.centroid_wgs84[1].toFixed(6)}`]);
    }
    for (const [k, v] of Object.entries(obj.attributes ?? {})) {
      if (v === '' || v === null) continue;
      rows.push([k, formatValue(v)]);
    }
    for (const [k, v] of Object.entries(obj.members ?? {})) rows.push([k, formatValue(v)]);
    const tbody = h('tbody');
    for (const [k, v] of rows) tbody.append(h('tr', {}, h('th', { scope: 'row', text: k }), h('td', { text: v })));
    return this._section('Attributes', h('table', { class: 'kv' }, tbody));
  }

  _familySection(obj) {
    const parts = [];
    if (obj.parent) parts.push(h('p', {}, 'Part of ', this._idButton(obj.parent)));
    if (obj.children?.length) parts.push(h('p', { text: `${obj.children.length} parts:` }), this._idList(obj.children));
    return parts.length ? this._section('Parent and parts', ...parts) : null;
  }

  _relationsSection(obj) {
    const rel = obj.relations;
    if (!rel) return null;
    const out = [];
    if (rel.network) {
      out.push(h('p', {}, 'Network: ', h('strong', { text: this.app.networkLabel(rel.network) })));
      if (rel.from) out.push(h('p', {}, 'From ', this._idButton(rel.from), ' to ', this._idButton(rel.to)));
      const nb = rel.neighbours ?? {};
      const neighbours = [...(nb.nodes ?? []), ...(nb.edges ?? [])];
      out.push(h('h4', { text: `Neighbours (${neighbours.length})` }), neighbours.length ? this._idList(neighbours) : h('p', { class: 'muted', text: 'none' }));
      const serves = rel.serves ?? [];
      out.push(h('h4', { text: `Serves ${serves.length} building${serves.length === 1 ? '' : 's'}` }));
      if (serves.length) out.push(this._idList(serves));
      const result = h('div', { class: 'impact', 'aria-live': 'polite' });
      const button = h('button', { type: 'button', class: 'danger', id: 'impact-button' }, 'What if this fails?');
      button.addEventListener('click', async () => {
        button.disabled = true;
        result.replaceChildren(h('p', { class: 'muted', text: 'Computing…' }));
        try {
          const imp = await this.app.impact(rel.network, obj.id);
          result.replaceChildren(this._impactView(imp));
        } catch (err) {
          result.replaceChildren(h('p', { class: 'error', text: err.message }));
        } finally {
          button.disabled = false;
        }
      });
      out.push(button, result);
    }
    if (rel.served_by?.length) {
      const ul = h('ul', { class: 'id-list' });
      for (const s of rel.served_by) ul.append(h('li', {}, this._idButton(s.node), ` (${this.app.networkLabel(s.network)})`));
      out.push(h('h4', { text: 'Served by' }), ul);
    }
    return out.length ? this._section('Network', ...out) : null;
  }

  _impactView(imp) {
    const c = imp.counts;
    const dl = h(
      'dl',
      { class: 'counts' },
      h('dt', { text: 'buildings' }),
      h('dd', { 'data-count': 'buildings', text: String(c.buildings) }),
      h('dt', { text: 'nodes' }),
      h('dd', { 'data-count': 'nodes', text: String(c.nodes) }),
      h('dt', { text: 'edges' }),
      h('dd', { 'data-count': 'edges', text: String(c.edges) }),
    );
    const clear = h('button', { type: 'button', onclick: () => this.app.clearImpact() }, 'Clear impact');
    const lost = [...imp.buildings];
    return h(
      'div',
      {},
      h('p', { text: c.buildings || c.nodes || c.edges ? 'Cut off from every source (highlighted in the view):' : 'Nothing loses supply: the network has another way round.' }),
      dl,
      lost.length ? this._idList(lost) : null,
      clear,
    );
  }
}

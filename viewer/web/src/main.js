// The viewer page: wires the Viewer, the live stream, the panel, search, layers and deep
// links, and exposes the test/bench hooks as `window.citytwin`.

import { Viewer } from './viewer.js';
import { LiveStream } from './stream.js';
import { ObjectPanel } from './panel.js';
import { NO_DATA, buildRules, formatNumber, linearOf } from './styles.js';
import { Participation } from './participation.js';
import { ScenarioView, scenarioModes } from './scenarios.js';

const params = new URLSearchParams(location.search);
let scenario = params.get('scenario') || 'base';
let bothMode = params.get('both') === '1';
const sessionId = params.get('session');
const naiveMode = params.get('naive') === '1';
const NO_DATA_RGB = linearOf(NO_DATA);
const IMPACT = { failed: linearOf('#5b0f8a'), building: linearOf('#d7191c'), asset: linearOf('#ff6a00') };
const HASH_DELAY_MS = 250;
const PHONE = window.matchMedia('(max-width: 640px)');
// A big city streams as 3D Tiles: the server says so in /api/stats (`tiles`, from
// TWIN_TILES_THRESHOLD objects or a prebuilt TWIN_TILESET; index.html asks first, so the
// scene download starts early); `?tiles=1|0` forces a mode, `?sse=` the tiles' target
// screen-space error in pixels.
const SSE = Number(params.get('sse')) > 0 ? Number(params.get('sse')) : undefined;
// `?tileset=/path/tileset.json` streams another tileset of this city (same origin), e.g. one
// written by `twin tiles` with other tile sizes.
const TILESET = /^\/(?!\/)/.test(params.get('tileset') ?? '') ? params.get('tileset') : null;
let tilesMode = false;

const $ = (sel) => document.querySelector(sel);

// -- the hooks exist before anything loads, so a test can await `citytwin.ready` ---------

let resolveReady;
let rejectReady;
const ready = new Promise((resolve, reject) => {
  resolveReady = resolve;
  rejectReady = reject;
});
ready.catch(() => {}); // reported on the page; awaiting callers still see the rejection
const timings = { navigationStart: 0, sceneLoaded: NaN, firstFrame: NaN };

/** True on a software rasterizer (SwiftShader, llvmpipe), where MSAA costs most of a frame. */
function softwareRendering() {
  try {
    const gl = document.createElement('canvas').getContext('webgl2');
    if (!gl) return false;
    let name = String(gl.getParameter(gl.RENDERER));
    if (/^WebKit WebGL$/i.test(name)) {
      // Chrome masks RENDERER; the unmasked name is behind this extension.
      const ext = gl.getExtension('WEBGL_debug_renderer_info');
      if (ext) name = String(gl.getParameter(ext.UNMASKED_RENDERER_WEBGL));
    }
    return /swiftshader|llvmpipe|softpipe|software/i.test(name);
  } catch {
    return false;
  }
}

const aa = params.get('aa');
const software = softwareRendering();
// `?lite=0|1` overrides: Lambert shading on software rasterizers, PBR on GPUs.
const lite = params.get('lite');
const viewer = new Viewer($('#canvas'), {
  antialias: aa === null ? !software : aa !== '0',
  lite: lite === null ? software : lite !== '0',
});
const stream = new LiveStream('/api/stream');

const state = {
  table: null,
  types: [],
  networks: [],
  netOf: null, // Int16Array: network index per feature, -1 for city objects
  rules: [],
  rule: null,
  states: new Map(), // id -> {property: {value, time, source}}
  selectedId: null,
  objectCount: null, // tiles mode: the city's object count (GET /api/stats)
  typeCounts: null, // tiles mode: objects per type (GET /api/stats), as tiles load only some
  hiddenTypes: new Set(),
  hiddenNetworks: new Set(),
  impact: null,
  loaded: false,
};

const panel = new ObjectPanel($('#panel'), {
  scenario,
  select: (id, opts) => select(id, opts),
  flyTo: (id) => flyTo(id),
  close: () => deselect(),
  impact: (net, id) => showImpact(net, id),
  clearImpact: () => clearImpact(),
  unitOf: (p) => state.rules.find((r) => r.property === p && r.unit)?.unit ?? '',
  networkLabel: (net) => {
    const n = state.networks.find((x) => x.id === net);
    return n ? `${n.id}${n.attributes?.stand_in ? ' (stand-in)' : ''}` : net;
  },
});

const scenarioView = new ScenarioView(viewer, $('#diff-panel'), { select: (id, opts) => select(id, opts) });
const participation = sessionId
  ? new Participation(sessionId, {
      viewer,
      stream,
      select: (id, opts) => select(id, opts),
      scenario: () => scenario,
      switchTo: (name) => switchScenario(name, { both: bothMode && name === scenario }),
      featureIds: () => state.table?.strings.id ?? null,
    })
  : null;
let modes = [];

window.citytwin = {
  ready,
  timings,
  stats: () => viewer.stats(),
  screenPosition: (id) => viewer.screenPosition(id),
  // Extra (not in the contract): the display mode, and in tiles mode the streaming counts
  // (tiles loaded and visible, visible features, errorTarget, load errors).
  get tiles() {
    return viewer.tiles ? viewer.tiles.info() : { mode: 'glb' };
  },
  select: (id) => select(id),
  selected: () => state.selectedId,
  flyTo: (id) => flyTo(id),
  orbit: (degrees) => viewer.orbit(degrees),
  recolor: (map) => {
    for (const [id, hex] of Object.entries(map)) viewer.setFeatureColor(viewer.indexOf(id), linearOf(hex));
  },
  pixel: (x, y) => viewer.pixel(x, y),
  streamState: () => stream.state,
  // Participation (?session=): the comments listed, and where a comment's pin is.
  comments: () => participation?.list() ?? [],
  pinPosition: (commentId) => participation?.pins.position(commentId) ?? null,
  // Extras (not in the contract): scenario modes ("base", a proposal, "both:<proposal>"),
  // and the camera pose (scene coordinates) for tests that compare views.
  setScenario: (key) => setMode(key),
  scenarioMode: () => (bothMode ? `both:${scenario}` : scenario),
  camera: () => {
    const { position: p, target: t } = viewer.getView();
    return { position: [p.x, p.y, p.z], target: [t.x, t.y, t.z], fov: viewer.camera.fov };
  },
  // Extra (not in the contract): the feature id under a point, for tests that check occlusion.
  pick: (x, y) => {
    const f = viewer.pick(x, y);
    return f < 0 ? null : state.table.strings.id[f];
  },
};

// -- selection, fly-to, impact -------------------------------------------------------------

async function select(id, { fly = false } = {}) {
  // Tiles mode: an object whose tile is not loaded yet gets its number now, so it shows
  // highlighted when the tile arrives.
  const f = tilesMode && viewer.tiles ? viewer.tiles.register(id) : viewer.indexOf(id);
  state.selectedId = id;
  viewer.highlight(f);
  scheduleHash();
  const opened = panel.open(id, { type: (f >= 0 && state.types[f]) || undefined });
  // On a phone the panel is a bottom sheet (at most 45% of the view): fly above it.
  viewer.insets.bottom = PHONE.matches ? $('#stage').clientHeight * 0.45 : 0;
  if (fly) await flyToObject(id, f);
  await opened;
}

function deselect() {
  if (state.selectedId === null && $('#panel').hidden) return;
  state.selectedId = null;
  viewer.highlight(-1);
  panel.hide();
  scheduleHash();
}

function flyTo(id) {
  return flyToObject(id, viewer.indexOf(id));
}

/** Fly to feature `f` of `id`; in tiles mode to where the API places it if its tile is not loaded. */
async function flyToObject(id, f) {
  if (f >= 0 && viewer.features?.index.hasGeometry(f)) return viewer.flyTo(f);
  if (!tilesMode || !viewer.tiles) return undefined;
  const tiles = viewer.tiles;
  const r = await fetch(`/api/objects/${encodeURIComponent(id)}?scenario=${encodeURIComponent(scenario)}`);
  if (!r.ok || viewer.tiles !== tiles) return undefined;
  const b = (await r.json()).geometry?.bbox_wgs84;
  if (!Array.isArray(b) || b.length !== 6 || !b.every(Number.isFinite)) return undefined;
  return viewer.flyToBox(tiles.boxOfWgs84(b));
}

async function showImpact(network, id) {
  const r = await fetch(`/api/networks/${encodeURIComponent(network)}/impact?scenario=${encodeURIComponent(scenario)}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ failed: [id] }),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(body.message ?? r.statusText);
  const overlay = new Map();
  const put = (ids, color) => {
    for (const x of ids) {
      const f = viewer.indexOf(x);
      if (f >= 0) overlay.set(f, color);
    }
  };
  put(body.nodes, IMPACT.asset);
  put(body.edges, IMPACT.asset);
  put(body.buildings, IMPACT.building);
  put(body.failed, IMPACT.failed);
  state.impact = body;
  viewer.setOverlay(overlay);
  return body;
}

function clearImpact() {
  state.impact = null;
  viewer.setOverlay(scenarioView.overlay());
  panel.root.querySelector('.impact')?.replaceChildren();
}

// -- coloring ------------------------------------------------------------------------------

function isNetwork(f) {
  return state.netOf[f] >= 0;
}

function colorOf(f) {
  const rule = state.rule;
  if (!rule || rule.kind === 'none' || !rule.applies(state.types[f], isNetwork(f))) return null;
  let value;
  if (rule.kind === 'attribute') {
    value = state.table.numbers[rule.column]?.[f];
  } else {
    value = state.states.get(state.table.strings.id[f])?.[rule.property]?.value;
  }
  return rule.colorOf(value) ?? NO_DATA_RGB;
}

function applyRule(rule) {
  state.rule = rule;
  viewer.setStyleColors(colorOf);
  $('#legend').replaceChildren(rule.legend());
  const sel = $('#color-by');
  if (sel.value !== rule.key) sel.value = rule.key;
}

function ruleFromParam(value) {
  if (!value) return state.rules[0];
  return (
    state.rules.find((r) => r.key === value) ??
    state.rules.find((r) => r.kind === 'live' && r.label === value) ??
    state.rules.find((r) => r.label.toLowerCase() === value.toLowerCase()) ??
    state.rules[0]
  );
}

// -- live state ----------------------------------------------------------------------------

function applyUpdate(id, property, s) {
  let entry = state.states.get(id);
  if (!entry) {
    entry = {};
    state.states.set(id, entry);
  }
  entry[property] = s;
  const rule = state.rule;
  if (rule && rule.kind === 'live' && rule.property === property) {
    const f = viewer.indexOf(id);
    if (f >= 0) viewer.setFeatureColor(f, colorOf(f));
  }
  if (id === state.selectedId) panel.updateState(property, s);
}

stream.addEventListener('snapshot', (ev) => {
  state.states = new Map(Object.entries(ev.detail.states ?? {}));
  if (state.loaded && state.rule?.kind === 'live') viewer.setStyleColors(colorOf);
  const sel = state.selectedId && state.states.get(state.selectedId);
  if (sel) for (const [p, s] of Object.entries(sel)) panel.updateState(p, s);
});
stream.addEventListener('delta', (ev) => {
  for (const u of ev.detail.updates) applyUpdate(u.id, u.property, { value: u.value, time: u.time, source: u.source });
  $('#stream-status').title = `last update ${new Date().toLocaleTimeString()}`;
});
stream.addEventListener('event', (ev) => {
  const event = ev.detail.event;
  if (event?.kind === 'comment' || event?.kind === 'moderation') participation?.onEvent(event);
  else if (event?.kind === 'scenario') loadModes().catch(() => {});
});
stream.addEventListener('state', (ev) => {
  const el = $('#stream-status');
  const labels = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', closed: 'Offline' };
  el.dataset.state = ev.detail;
  el.querySelector('.label').textContent = labels[ev.detail] ?? ev.detail;
  if (stream.lastError) el.title = stream.lastError;
});

// -- deep links: #cam=x,y,z,tx,ty,tz&sel=<id> -----------------------------------------------

function parseHash() {
  const out = { cam: null, sel: null };
  for (const part of location.hash.replace(/^#/, '').split('&')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const key = part.slice(0, eq);
    const value = part.slice(eq + 1);
    if (key === 'cam') {
      const xs = value.split(',').map(Number);
      if (xs.length === 6 && xs.every(Number.isFinite)) out.cam = xs;
    } else if (key === 'sel' && value) {
      try {
        out.sel = decodeURIComponent(value);
      } catch {
        out.sel = null;
      }
    }
  }
  return out;
}

function currentHash() {
  const { position: p, target: t } = viewer.getView();
  const cam = [p.x, p.y, p.z, t.x, t.y, t.z].map((x) => x.toFixed(2)).join(',');
  return `#cam=${cam}${state.selectedId ? `&sel=${encodeURIComponent(state.selectedId)}` : ''}`;
}

let hashTimer = null;
let lastHash = '';
function scheduleHash() {
  if (!state.loaded) return;
  clearTimeout(hashTimer);
  hashTimer = setTimeout(() => {
    const hash = currentHash();
    if (hash !== location.hash) {
      lastHash = hash;
      history.replaceState(history.state, '', `${location.pathname}${location.search}${hash}`);
    }
  }, HASH_DELAY_MS);
}

function applyHash() {
  const { cam, sel } = parseHash();
  if (cam) viewer.setView({ x: cam[0], y: cam[1], z: cam[2] }, { x: cam[3], y: cam[4], z: cam[5] });
  if (sel && sel !== state.selectedId) select(sel);
  else if (!sel && state.selectedId) deselect();
}

window.addEventListener('hashchange', () => {
  if (location.hash !== lastHash && state.loaded) applyHash();
});

// -- search --------------------------------------------------------------------------------

const WHERE = /^\s*[A-Za-z_][\w.:-]*\s*(>=|<=|!=|=|>|<|~)\s*\S.*$/;
let searchTimer = null;
let searchSeq = 0;
let results = [];

async function runSearch(text) {
  const seq = ++searchSeq;
  const box = $('#search-results');
  text = text.trim();
  if (!text) {
    results = [];
    box.replaceChildren();
    box.hidden = true;
    return results;
  }
  const q = new URLSearchParams({ limit: '20', scenario });
  if (WHERE.test(text)) for (const w of text.split(/\s*,\s*/)) q.append('where', w);
  else q.set('q', text);
  let items = [];
  let error = null;
  try {
    const r = await fetch(`/api/objects?${q}`);
    const body = await r.json();
    if (r.ok) items = body.items;
    else error = body.message ?? r.statusText;
  } catch (err) {
    error = err.message;
  }
  if (seq !== searchSeq) return results;
  const exact = viewer.indexOf(text);
  if (exact >= 0 && !items.some((o) => o.id === text)) items.unshift({ id: text, type: state.types[exact], attributes: {} });
  results = items;
  const nodes = items.map((o) => {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'result';
    const name = o.attributes?.name ? ` · ${o.attributes.name}` : '';
    b.innerHTML = '<span class="rid"></span><span class="rtype"></span>';
    b.querySelector('.rid').textContent = o.id;
    b.querySelector('.rtype').textContent = `${o.type}${name}`;
    b.addEventListener('click', () => chooseResult(o.id));
    li.append(b);
    return li;
  });
  if (!nodes.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = error ? `Search failed: ${error}` : 'No match.';
    nodes.push(li);
  }
  box.replaceChildren(...nodes);
  box.hidden = false;
  return results;
}

function chooseResult(id) {
  closeResults();
  select(id, { fly: true });
  // Keyboard users continue in the panel (and a phone's keyboard closes).
  $('#panel-title').focus();
}

function closeResults() {
  searchSeq++;
  $('#search-results').hidden = true;
}

$('#search-input').addEventListener('input', (e) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => runSearch(e.target.value), 200);
});
$('#search').addEventListener('submit', async (e) => {
  e.preventDefault();
  clearTimeout(searchTimer);
  const found = await runSearch($('#search-input').value);
  if (found.length) chooseResult(found[0].id);
});
$('#search').addEventListener('keydown', (e) => {
  const buttons = [...document.querySelectorAll('#search-results button')];
  const i = buttons.indexOf(document.activeElement);
  if (e.key === 'ArrowDown' && buttons.length) {
    buttons[Math.min(buttons.length - 1, i + 1)].focus();
    e.preventDefault();
  } else if (e.key === 'ArrowUp' && buttons.length) {
    if (i <= 0) $('#search-input').focus();
    else buttons[i - 1].focus();
    e.preventDefault();
  } else if (e.key === 'Escape' && !$('#search-results').hidden) {
    closeResults();
    $('#search-input').focus();
    e.stopPropagation();
  }
});

// -- layers --------------------------------------------------------------------------------

function checkbox(label, checked, onChange, badge) {
  const wrap = document.createElement('label');
  wrap.className = 'check';
  const input = document.createElement('input');
  input.type = 'checkbox';
  input.checked = checked;
  input.addEventListener('change', () => onChange(input.checked));
  const text = document.createElement('span');
  text.textContent = label;
  wrap.append(input, text);
  if (badge) {
    const b = document.createElement('span');
    b.className = 'badge';
    b.textContent = badge;
    b.title = 'a real network from elsewhere, placed on this city as a stand-in';
    wrap.append(b);
  }
  return wrap;
}

function applyVisibility() {
  viewer.setHidden((f) => {
    const n = state.netOf[f];
    return n >= 0 ? state.hiddenNetworks.has(n) : state.hiddenTypes.has(state.types[f]);
  });
}

function buildTypeLayers() {
  const counts = new Map();
  if (tilesMode) {
    // Only the types of the tiles loaded so far are known; their counts are the city's.
    for (const t of viewer.tiles?.seenTypes ?? []) counts.set(t, state.typeCounts?.[t] ?? 0);
  } else {
    state.types.forEach((t, f) => {
      if (!isNetwork(f)) counts.set(t, (counts.get(t) ?? 0) + 1);
    });
  }
  const types = [...counts.entries()].sort((a, b) => b[1] - a[1]);
  $('#layer-types').replaceChildren(
    ...types.map(([t, n]) =>
      checkbox(`${t}${n ? ` (${n.toLocaleString('en')})` : ''}`, !state.hiddenTypes.has(t), (on) => {
        if (on) state.hiddenTypes.delete(t);
        else state.hiddenTypes.add(t);
        applyVisibility();
      }),
    ),
  );
}

let typeLayersTimer = null;
// Tiles mode: loaded tiles brought object types the layers do not list yet.
viewer.addEventListener('features', () => {
  clearTimeout(typeLayersTimer);
  typeLayersTimer = setTimeout(buildTypeLayers, 200);
});

function buildLayers() {
  buildTypeLayers();
  // Tiles mode: the networks are one tile of the tileset; their assets are toggled by
  // type (the type layers), not per network.
  const nets = state.networks.map((net, i) =>
    checkbox(
      `${net.id} · ${net.kind} (${(net.nodes + net.edges).toLocaleString('en')})`,
      true,
      (on) => {
        if (on) state.hiddenNetworks.delete(i);
        else state.hiddenNetworks.add(i);
        applyVisibility();
      },
      net.attributes?.stand_in ? 'stand-in' : null,
    ),
  );
  $('#layer-networks').replaceChildren(...(nets.length ? nets : [Object.assign(document.createElement('p'), { className: 'muted', textContent: 'No networks.' })]));
  $('#layer-networks-set').hidden = !nets.length || tilesMode;
  const sel = $('#color-by');
  sel.replaceChildren(
    ...state.rules.map((r) => {
      const o = document.createElement('option');
      o.value = r.key;
      o.textContent = r.kind === 'live' ? `${r.label} (live)` : r.label;
      return o;
    }),
  );
  $('#grid-note').textContent = `Grid squares: ${formatNumber(viewer.gridStep)} m`;
}

$('#color-by').addEventListener('change', (e) => {
  const rule = state.rules.find((r) => r.key === e.target.value);
  if (!rule) return;
  applyRule(rule);
  const q = new URLSearchParams(location.search);
  if (rule.kind === 'none') q.delete('style');
  else q.set('style', rule.kind === 'live' ? rule.label : rule.key);
  const qs = q.toString();
  history.replaceState(history.state, '', `${location.pathname}${qs ? `?${qs}` : ''}${location.hash}`);
});

// -- controls ------------------------------------------------------------------------------

function toggleLayers(open) {
  const card = $('#layers');
  const show = open ?? card.hidden;
  card.hidden = !show;
  $('#btn-layers').setAttribute('aria-expanded', String(show));
}

$('#btn-layers').addEventListener('click', () => toggleLayers());
$('#btn-reset').addEventListener('click', () => viewer.resetView());
$('#north').addEventListener('click', () => viewer.faceNorth());
$('#btn-help').addEventListener('click', () => $('#help').showModal());
$('#help-close').addEventListener('click', () => $('#help').close());

viewer.addEventListener('camera', () => {
  $('#north-arrow').style.transform = `rotate(${viewer.azimuth()}rad)`;
  scheduleHash();
});

// A click (not a drag) on the canvas picks.
const canvas = $('#canvas');
let down = null;
canvas.addEventListener('pointerdown', (e) => {
  down = e.isPrimary && e.button === 0 ? { x: e.clientX, y: e.clientY, t: performance.now() } : null;
});
canvas.addEventListener('pointerup', (e) => {
  if (!down || !state.loaded) return;
  const moved = Math.hypot(e.clientX - down.x, e.clientY - down.y);
  const quick = performance.now() - down.t < 800;
  down = null;
  if (moved > 5 || !quick) return;
  if (participation?.handleCanvasClick(e.clientX, e.clientY)) return;
  const pin = participation?.pinAt(e.clientX, e.clientY);
  if (pin) {
    participation.focusComment(pin);
    return;
  }
  const f = viewer.pick(e.clientX, e.clientY);
  if (f >= 0) select(state.table.strings.id[f]);
  else deselect();
});

document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') {
    if ($('#help').open) return; // the dialog closes itself
    if (!$('#search-results').hidden) closeResults();
    else if (state.selectedId !== null || !$('#panel').hidden) {
      deselect();
      canvas.focus();
    }
  } else if (e.key === '/' && !/^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement?.tagName ?? '')) {
    e.preventDefault();
    $('#search-input').focus();
  }
});

if (PHONE.matches) {
  toggleLayers(false);
  $('#diff-panel').open = false;
}
// A session's comments column takes the left side: the layers start closed there.
if (sessionId) toggleLayers(false);

// -- boot ----------------------------------------------------------------------------------

function showProgress(loaded, total) {
  const bar = $('#progress');
  const mb = (x) => (x / 1e6).toFixed(1);
  if (total) {
    const pct = Math.min(100, (loaded / total) * 100);
    bar.setAttribute('aria-valuenow', pct.toFixed(0));
    bar.querySelector('.bar').style.width = `${pct}%`;
    bar.querySelector('.text').textContent = `Loading the city… ${mb(loaded)} / ${mb(total)} MB`;
  } else {
    bar.removeAttribute('aria-valuenow');
    bar.querySelector('.text').textContent = `Loading the city… ${mb(loaded)} MB`;
  }
}

async function json(responseP, url) {
  const r = await (responseP ?? fetch(url));
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

/**
 * Load a scenario's scene and rebuild what depends on its feature table.
 * @param {string} name
 * @param {{response?: Promise<Response>, naive?: any, keepView?: boolean}} [opts]
 */
async function loadScene(name, opts = {}) {
  const netsP = json(opts.networks, `/api/networks?scenario=${encodeURIComponent(name)}`).catch(() => []);
  const { table } = tilesMode
    ? await viewer.loadTiles(TILESET && name === 'base' ? TILESET : `/api/tiles/${encodeURIComponent(name)}/tileset.json`, {
        errorTarget: SSE,
        keepView: opts.keepView,
      })
    : await viewer.setScenario(name, { onProgress: showProgress, ...opts });
  scenario = name;
  panel.app.scenario = name;
  state.table = table;
  state.types = table.strings.type ?? new Array(table.count).fill('');
  state.networks = await netsP;
  state.netOf = new Int16Array(table.count).fill(-1);
  state.hiddenNetworks.clear();
  state.impact = null;
  const prefixes = state.networks.map((n) => `net:${n.id}:`);
  table.strings.id.forEach((id, f) => {
    if (!id.startsWith('net:')) return;
    const i = prefixes.findIndex((p) => id.startsWith(p));
    state.netOf[f] = i >= 0 ? i : state.networks.length;
  });
  return table;
}

/** The scenario modes on offer: the session's scenarios, or the base and every proposal. */
async function loadModes() {
  let known = [];
  try {
    known = await json(null, '/api/scenarios');
  } catch {
    known = [];
  }
  const bases = new Map(known.map((x) => [x.name, x.base ?? null]));
  const names = participation?.session ? participation.session.scenarios : known.map((x) => x.name);
  if (!names.includes(scenario)) names.push(scenario);
  // "Both" draws the base's removed objects from its single GLB: not for a tiled city.
  modes = names.length > 1 ? scenarioModes(names, bases).filter((m) => !(tilesMode && m.both)) : [];
  renderModes();
}

function renderModes() {
  const sel = $('#scenario-mode');
  sel.replaceChildren(
    ...modes.map((m) => {
      const o = document.createElement('option');
      o.value = m.key;
      o.textContent = m.label;
      return o;
    }),
  );
  $('#scenario-switch').hidden = modes.length < 2;
  // Without a session the control lives in the layers card.
  const home = participation ? $('#session-strip') : $('#layers');
  if ($('#scenario-switch').parentElement !== home) home.append($('#scenario-switch'));
  sel.value = bothMode ? `both:${scenario}` : scenario;
}

let switching = Promise.resolve();

/** Switch to a mode key ("base", a proposal, "both:<proposal>"). */
function setMode(key) {
  const m = modes.find((x) => x.key === key);
  const both = key.startsWith('both:');
  const name = m ? m.scenario : both ? key.slice(5) : key;
  return switchScenario(name, { both });
}

function switchScenario(name, { both = false } = {}) {
  switching = switching.catch(() => {}).then(() => doSwitch(name, both));
  return switching;
}

async function doSwitch(name, both) {
  if (name === scenario && both === bothMode && state.loaded) return;
  const sel = $('#scenario-mode');
  sel.disabled = true;
  $('#progress').hidden = false;
  const keepSel = state.selectedId;
  try {
    if (name !== scenario) {
      state.loaded = false;
      await loadScene(name, { keepView: true });
      buildLayers();
      applyRule(ruleFromParam(state.rule?.key));
      applyVisibility();
      state.loaded = true;
    }
    bothMode = both;
    await applyMode();
    // (Tiles mode: the other scenario's tiles are still loading; the selection waits for them.)
    if (keepSel && (tilesMode || viewer.indexOf(keepSel) >= 0)) select(keepSel);
    else if (keepSel) deselect();
    const q = new URLSearchParams(location.search);
    if (name === 'base') q.delete('scenario');
    else q.set('scenario', name);
    if (both) q.set('both', '1');
    else q.delete('both');
    const qs = q.toString();
    history.replaceState(history.state, '', `${location.pathname}${qs ? `?${qs}` : ''}${location.hash}`);
  } finally {
    sel.disabled = false;
    sel.value = bothMode ? `both:${scenario}` : scenario;
    $('#progress').hidden = true;
    viewer.render();
  }
}

/** Apply the current mode's diff card, tint and ghost, and put the pins on the scene. */
async function applyMode() {
  const m = modes.find((x) => x.key === (bothMode ? `both:${scenario}` : scenario));
  const p = scenarioView.apply(m ?? { scenario, both: bothMode, base: 'base' });
  participation?.refreshPins();
  await p;
}

$('#scenario-mode').addEventListener('change', (e) => {
  setMode(e.target.value).catch((err) => {
    $('#scenario-error').textContent = `Cannot switch: ${err.message}`;
  });
});

/**
 * "tiles" (stream 3D Tiles) or "glb" (one scene GLB): `?tiles=1|0`, else by the city's size.
 * @param {{mode?: Promise<string>}} pre what index.html started for this scenario
 */
async function chooseMode(pre) {
  const forced = params.get('tiles');
  if (forced === '1' || forced === '0') return forced === '1' ? 'tiles' : 'glb';
  if (pre.mode) return pre.mode;
  try {
    const stats = await json(null, `/api/stats?scenario=${encodeURIComponent(scenario)}`);
    return stats.tiles ? 'tiles' : 'glb';
  } catch {
    return 'glb';
  }
}

async function boot() {
  if (participation) {
    const session = await participation.loadSession();
    if (!params.get('scenario')) scenario = session.scenarios.includes('base') ? 'base' : session.scenarios[0];
  }
  // index.html started these downloads before the modules loaded.
  const pre = window.__citytwinPrefetch?.scenario === scenario ? window.__citytwinPrefetch : {};
  tilesMode = (await chooseMode(pre)) === 'tiles';
  // Tiles mode: the city's counts label the layers (the tiles reveal only some objects).
  const countsP = tilesMode
    ? (pre.stats ?? json(null, `/api/stats?scenario=${encodeURIComponent(scenario)}`)).catch(() => null)
    : null;
  const stylesP = json(pre.styles, '/api/styles').catch(() => ({ rules: [] }));
  const modesP = loadModes();
  let naive;
  if (naiveMode) {
    const { buildNaive } = await import('./naive.js');
    naive = buildNaive;
  }
  const table = await loadScene(scenario, { naive, response: tilesMode ? undefined : pre.scene, networks: pre.networks });
  timings.sceneLoaded = performance.now();
  if (countsP) {
    const counts = await countsP;
    state.typeCounts = counts?.counts_by_type ?? {};
    state.objectCount = counts?.objects ?? null;
  }
  const styles = await stylesP;
  state.rules = buildRules(styles.rules ?? [], table, isNetwork);
  buildLayers();
  applyRule(ruleFromParam(params.get('style')));
  state.loaded = true;
  const link = parseHash();
  if (link.cam || link.sel) applyHash();
  viewer.render();
  if (tilesMode) {
    // The first frame that shows tile content, and when that content had loaded.
    timings.firstFrame = await viewer.tiles.firstFrame;
    timings.sceneLoaded = viewer.tiles.sceneLoadedAt;
  } else {
    timings.firstFrame = performance.now();
  }
  $('#progress').hidden = true;
  const count = tilesMode ? (state.objectCount ?? table.count) : table.count;
  if (!participation) document.title = `CityTwin · ${count.toLocaleString('en')} objects${tilesMode ? ' (3D Tiles)' : ''}`;
  resolveReady();
  stream.start();
  await modesP;
  if (bothMode && !modes.some((m) => m.key === `both:${scenario}`)) bothMode = false;
  const comments = participation?.loadComments().catch((err) => {
    const box = $('#comments-empty');
    box.hidden = false;
    box.classList.add('error');
    box.textContent = `Cannot load the comments: ${err.message}`;
  });
  await Promise.all([applyMode(), comments]);
}

boot().catch((err) => {
  const box = $('#progress');
  box.hidden = false;
  box.classList.add('failed');
  box.querySelector('.text').textContent = err.message;
  rejectReady(err);
});

window.addEventListener('pagehide', () => stream.close());

// A participation session in the viewer (?session=<id>): header strip, comments list with
// category filter, threads and +1, 3D pins, "Comment here" (anchor = the raycast hit), the
// citizen token, live comments and moderation over the stream (API: viewer/routes/sessions.py).
// Every user-written string goes into the page with textContent, never as HTML.

import { Pins } from './pins.js';

const CATEGORY_PALETTE = ['#d7191c', '#2c7bb6', '#1a9641', '#7b3294', '#e66101', '#008080', '#c51b7d', '#8c510a'];
const NO_CATEGORY = '#5d6b78';
const MAX_TEXT = 2000;
const STATUS_LABEL = { open: 'Open', closed: 'Closed', upcoming: 'Upcoming' };
const HIDDEN_STATES = new Set(['hidden', 'hidden_pending_review']);

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

function when(t) {
  return new Date(t * 1000).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** An API error's message (the server's JSON `message`), with Retry-After for 429. */
async function apiError(r) {
  let message = `${r.status} ${r.statusText}`;
  try {
    const body = await r.json();
    if (body?.message) message = body.message;
  } catch {
    // not JSON
  }
  if (r.status === 429) {
    const retry = r.headers.get('Retry-After');
    return `Too many posts: ${message}${retry ? ` Try again in ${retry} s.` : ''}`;
  }
  if (r.status === 403) return `Not accepted: ${message}`;
  return message;
}

/** The participation UI of one session. */
export class Participation {
  /**
   * @param {string} sessionId
   * @param {{viewer: import('./viewer.js').Viewer, stream: EventTarget,
   *          select: (id: string, opts?: any) => Promise<void>,
   *          scenario: () => string, switchTo: (scenario: string) => Promise<void>,
   *          featureIds: () => string[] | null}} app
   */
  constructor(sessionId, app) {
    this.id = sessionId;
    this.app = app;
    this.viewer = app.viewer;
    this.session = null;
    /** @type {Map<string, any>} id -> comment */
    this.comments = new Map();
    /** @type {Map<string, HTMLLIElement>} */
    this.items = new Map();
    this.pins = new Pins(app.viewer);
    this.picking = false;
    this.anchor = null;
    this.filter = '';
    this.focused = null;
    this.citizen = this._storedCitizen();
    this.el = {
      strip: document.querySelector('#session-strip'),
      title: document.querySelector('#session-title'),
      status: document.querySelector('#session-status'),
      panel: document.querySelector('#session-panel'),
      description: document.querySelector('#session-description'),
      closedNote: document.querySelector('#session-closed'),
      commentHere: document.querySelector('#btn-comment-here'),
      hint: document.querySelector('#pick-hint'),
      form: document.querySelector('#comment-form'),
      anchor: document.querySelector('#comment-anchor'),
      text: document.querySelector('#comment-text'),
      counter: document.querySelector('#comment-count'),
      category: document.querySelector('#comment-category'),
      submit: document.querySelector('#comment-submit'),
      cancel: document.querySelector('#comment-cancel'),
      error: document.querySelector('#comment-error'),
      who: document.querySelector('#citizen-name'),
      filter: document.querySelector('#comment-filter'),
      count: document.querySelector('#comments-count'),
      list: document.querySelector('#comments'),
      empty: document.querySelector('#comments-empty'),
      toggle: document.querySelector('#btn-comments'),
    };
    this._wire();
  }

  // -- loading -------------------------------------------------------------------------

  /** Fetch the session (before the scene: it may choose the scenario). */
  async loadSession() {
    const r = await fetch(`/api/sessions/${encodeURIComponent(this.id)}`);
    if (!r.ok) throw new Error(`session ${this.id}: ${await apiError(r)}`);
    this.session = await r.json();
    this._renderSession();
    return this.session;
  }

  /** Fetch the comments (own pending ones too, with the citizen token) and draw them. */
  async loadComments() {
    const headers = this.citizen ? { 'X-Citizen-Token': this.citizen.token } : {};
    let r = await fetch(`/api/sessions/${encodeURIComponent(this.id)}/comments?limit=1000`, { headers });
    if (r.status === 401 && this.citizen) {
      // A token from an older database: forget it and read as the public.
      this._forgetCitizen();
      r = await fetch(`/api/sessions/${encodeURIComponent(this.id)}/comments?limit=1000`);
    }
    if (!r.ok) throw new Error(await apiError(r));
    for (const c of await r.json()) this.comments.set(c.id, c);
    this._renderList();
    this.refreshPins();
  }

  // -- session header ------------------------------------------------------------------

  _status() {
    const s = this.session;
    const now = Date.now() / 1000;
    if (s.status === 'closed' && !(s.closes_at && s.closes_at > now)) return 'closed';
    if (now < s.opens_at) return 'upcoming';
    if (s.closes_at !== null && now >= s.closes_at) return 'closed';
    return 'open';
  }

  _renderSession() {
    const s = this.session;
    document.body.classList.add('with-session');
    this.el.strip.hidden = false;
    this.el.panel.hidden = false;
    this.el.title.textContent = s.title;
    this.el.description.textContent = s.description;
    this.el.description.hidden = !s.description;
    this._renderStatus();
    clearInterval(this.statusTimer);
    this.statusTimer = setInterval(() => this._renderStatus(), 15000);
    const cats = s.categories ?? [];
    this.el.category.replaceChildren(
      h('option', { value: '', text: 'No category' }),
      ...cats.map((c) => h('option', { value: c, text: c })),
    );
    this.el.filter.replaceChildren(
      h('option', { value: '', text: 'All categories' }),
      ...cats.map((c) => h('option', { value: c, text: c })),
    );
    this._renderWho();
    document.title = `${s.title} · CityTwin`;
  }

  _renderStatus() {
    const status = this._status();
    const s = this.session;
    this.el.status.dataset.status = status;
    let label = STATUS_LABEL[status];
    if (status === 'open' && s.closes_at) label += ` until ${when(s.closes_at)}`;
    if (status === 'upcoming') label += `: opens ${when(s.opens_at)}`;
    this.el.status.textContent = label;
    const open = status === 'open';
    this.el.commentHere.disabled = !open;
    this.el.closedNote.hidden = open;
    this.el.closedNote.textContent =
      status === 'closed' ? 'This session is closed: comments are read-only.' : status === 'upcoming' ? `Comments open ${when(s.opens_at)}.` : '';
    if (!open) this._stopPicking();
    for (const li of this.items.values()) {
      for (const b of li.querySelectorAll(':scope > article > .comment-actions button')) b.disabled = !open;
    }
  }

  _renderWho() {
    this.el.who.textContent = this.citizen ? `You comment as ${this.citizen.pseudonym}` : 'No account needed: you get a pseudonym.';
  }

  // -- citizen token -------------------------------------------------------------------

  _key() {
    return `citytwin.citizen.${this.id}`;
  }

  _storedCitizen() {
    try {
      const v = JSON.parse(localStorage.getItem(this._key()) ?? 'null');
      return v && typeof v.token === 'string' ? v : null;
    } catch {
      return null;
    }
  }

  _forgetCitizen() {
    this.citizen = null;
    try {
      localStorage.removeItem(this._key());
    } catch {
      // storage disabled: the token lived in memory only
    }
    this._renderWho();
  }

  /** The citizen token, asking the API for one on first use (kept per session). */
  async citizenToken() {
    if (this.citizen) return this.citizen.token;
    const r = await fetch(`/api/sessions/${encodeURIComponent(this.id)}/citizen`, { method: 'POST' });
    if (!r.ok) throw new Error(await apiError(r));
    const body = await r.json();
    this.citizen = { token: body.token, pseudonym: body.pseudonym };
    try {
      localStorage.setItem(this._key(), JSON.stringify(this.citizen));
    } catch {
      // storage disabled: keep it for this page only
    }
    this._renderWho();
    return body.token;
  }

  async _post(url, body) {
    const token = await this.citizenToken();
    const send = (t) =>
      fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Citizen-Token': t },
        body: JSON.stringify(body),
      });
    let r = await send(token);
    if (r.status === 401) {
      this._forgetCitizen();
      r = await send(await this.citizenToken());
    }
    if (!r.ok) throw new Error(await apiError(r));
    return r.json();
  }

  // -- comment form --------------------------------------------------------------------

  _wire() {
    const el = this.el;
    el.commentHere.addEventListener('click', () => (this.picking ? this._stopPicking() : this._startPicking()));
    el.text.maxLength = MAX_TEXT;
    el.text.addEventListener('input', () => this._count());
    el.cancel.addEventListener('click', () => this._closeForm());
    el.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this._submit();
    });
    el.form.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        e.stopPropagation();
        this._closeForm();
      }
    });
    el.filter.addEventListener('change', () => {
      this.filter = el.filter.value;
      this._applyFilter();
    });
    el.toggle?.addEventListener('click', () => {
      const open = el.panel.classList.toggle('collapsed');
      el.toggle.setAttribute('aria-expanded', String(!open));
    });
    document.addEventListener(
      'keydown',
      (e) => {
        if (e.key === 'Escape' && this.picking) {
          e.stopPropagation();
          this._stopPicking();
          el.commentHere.focus();
        }
      },
      true,
    );
  }

  _count() {
    // Code points, as the server counts (an emoji is one character, two UTF-16 units).
    const n = [...this.el.text.value].length;
    this.el.counter.textContent = `${n} / ${MAX_TEXT}`;
    this.el.counter.classList.toggle('error', n > MAX_TEXT * 0.95);
  }

  _startPicking() {
    this.picking = true;
    this.el.commentHere.setAttribute('aria-pressed', 'true');
    this.el.commentHere.textContent = 'Cancel placing';
    this.el.hint.hidden = false;
    this.viewer.canvas.classList.add('picking');
    this.el.panel.classList.remove('collapsed');
  }

  _stopPicking() {
    if (!this.picking) return;
    this.picking = false;
    this.el.commentHere.setAttribute('aria-pressed', 'false');
    this.el.commentHere.textContent = 'Comment here';
    this.el.hint.hidden = true;
    this.viewer.canvas.classList.remove('picking');
  }

  /**
   * A click on the canvas while placing: the hit point and object become the anchor.
   * @returns {boolean} true when the click was used for this
   */
  handleCanvasClick(x, y) {
    if (!this.picking) return false;
    const hit = this.viewer.pickHit(x, y);
    if (!hit) {
      this.el.hint.textContent = 'Nothing there: click a building, the ground or a network.';
      return true;
    }
    this._stopPicking();
    this.el.hint.textContent = 'Click the place you mean in the 3D view (Esc cancels).';
    const objectId = this.app.featureIds()?.[hit.f] ?? null;
    this.anchor = { object_id: objectId, point: [hit.point.x, hit.point.y, hit.point.z] };
    this.pins.setDraft(hit.point);
    this._openForm();
    return true;
  }

  /** The comment whose pin is under a canvas click, or null. */
  pinAt(x, y) {
    return this.pins.hit(x, y);
  }

  _openForm() {
    const el = this.el;
    el.form.hidden = false;
    el.error.textContent = '';
    const a = this.anchor;
    el.anchor.textContent = a?.object_id ? `On ${a.object_id} (${this.app.scenario()})` : `At a point (${this.app.scenario()})`;
    this._count();
    el.text.focus();
  }

  _closeForm() {
    this.el.form.hidden = true;
    this.anchor = null;
    this.pins.setDraft(null);
    this.el.error.textContent = '';
    this.el.commentHere.focus();
  }

  _scenarioForComment() {
    const current = this.app.scenario();
    return this.session.scenarios.includes(current) ? current : null;
  }

  _camera() {
    const { position: p, target: t } = this.viewer.getView();
    return { position: [p.x, p.y, p.z], target: [t.x, t.y, t.z], fov: this.viewer.camera.fov };
  }

  async _submit() {
    const el = this.el;
    const text = el.text.value;
    if (!text.trim()) {
      el.error.textContent = 'Write something first.';
      el.text.focus();
      return;
    }
    el.submit.disabled = true;
    el.error.textContent = '';
    const body = { text, camera: this._camera() };
    if (el.category.value) body.category = el.category.value;
    if (this.anchor) body.anchor = this.anchor;
    const scenario = this._scenarioForComment();
    if (scenario) body.scenario = scenario;
    try {
      const c = await this._post(`/api/sessions/${encodeURIComponent(this.id)}/comments`, body);
      this.upsert(c);
      el.text.value = '';
      el.form.hidden = true;
      this.anchor = null;
      this.pins.setDraft(null);
      this.focusItem(c.id);
    } catch (err) {
      el.error.textContent = err.message;
    } finally {
      el.submit.disabled = false;
    }
  }

  // -- comments list -------------------------------------------------------------------

  colorOf(category) {
    const i = this.session?.categories?.indexOf(category) ?? -1;
    return i >= 0 ? CATEGORY_PALETTE[i % CATEGORY_PALETTE.length] : NO_CATEGORY;
  }

  /** Add or update a comment (from the API, the stream or our own post). */
  upsert(c) {
    if (c.session_id !== this.id) return;
    if (HIDDEN_STATES.has(c.state)) {
      this.remove(c.id);
      return;
    }
    const old = this.comments.get(c.id);
    this.comments.set(c.id, { ...old, ...c });
    const li = this.items.get(c.id);
    if (li) this._fillItem(li, this.comments.get(c.id));
    this._renderList();
    this._pinOf(this.comments.get(c.id));
  }

  /** Drop a comment from the list and the view (hidden by a moderator). */
  remove(id) {
    if (!this.comments.delete(id)) return;
    const li = this.items.get(id);
    // Replies of a hidden comment stay, shown on their own.
    const replies = li ? [...li.querySelectorAll(':scope > article > .replies > li')] : [];
    li?.remove();
    this.items.delete(id);
    this.pins.remove(id);
    if (this.focused === id) this.focused = null;
    if (replies.length) this._renderList();
    this._renderCount();
  }

  _isOwn(c) {
    return this.citizen !== null && c.author === this.citizen.pseudonym;
  }

  _fillItem(li, c) {
    li.dataset.state = c.state;
    li.dataset.category = c.category ?? '';
    const art = li.firstElementChild;
    const sw = art.querySelector('.cat-dot');
    sw.style.background = this.colorOf(c.category);
    art.querySelector('.comment-author').textContent = c.author + (this._isOwn(c) ? ' (you)' : '');
    art.querySelector('.comment-category').textContent = c.category ?? '';
    const time = art.querySelector('time');
    time.dateTime = new Date(c.created * 1000).toISOString();
    time.textContent = when(c.created);
    art.querySelector('.comment-pending').hidden = c.state !== 'pending';
    art.querySelector('.comment-text').textContent = c.text;
    const where = [];
    if (c.anchor?.object_id) where.push(`on ${c.anchor.object_id}`);
    else if (c.anchor?.point) where.push('at a point');
    where.push(c.scenario);
    art.querySelector('.comment-where').textContent = where.join(' · ');
    const plus = art.querySelector('.comment-plus');
    plus.querySelector('.n').textContent = String(c.reactions ?? 0);
    plus.setAttribute('aria-label', `+1 (${c.reactions ?? 0})`);
    const pending = c.state === 'pending';
    for (const b of art.querySelectorAll(':scope > .comment-actions button')) b.hidden = pending;
  }

  _item(c) {
    const actions = h(
      'div',
      { class: 'comment-actions' },
      h('button', { type: 'button', class: 'comment-plus', 'aria-pressed': 'false', onclick: () => this._react(c.id) }, '+1 ', h('span', { class: 'n', text: '0' })),
      c.parent_id ? null : h('button', { type: 'button', class: 'comment-reply', onclick: () => this._replyForm(c.id) }, 'Reply'),
      h('button', { type: 'button', class: 'comment-flag', onclick: () => this._flagForm(c.id) }, 'Flag'),
    );
    const li = h(
      'li',
      { class: 'comment', 'data-id': c.id },
      h(
        'article',
        {},
        h(
          'div',
          { class: 'comment-meta' },
          h('span', { class: 'cat-dot', 'aria-hidden': 'true' }),
          h('span', { class: 'comment-author' }),
          h('span', { class: 'comment-category' }),
          h('time', {}),
          h('span', { class: 'comment-pending badge', text: 'awaiting moderation', hidden: '' }),
        ),
        h(
          'button',
          { type: 'button', class: 'comment-body', title: 'Show where this was written from', onclick: () => this.focusComment(c.id) },
          h('span', { class: 'comment-text' }),
          h('span', { class: 'comment-where muted' }),
        ),
        actions,
        h('div', { class: 'comment-extra' }),
        h('ol', { class: 'replies' }),
      ),
    );
    const open = this.session && this._status() === 'open';
    for (const b of actions.querySelectorAll('button')) b.disabled = !open;
    this._fillItem(li, c);
    return li;
  }

  _renderList() {
    const all = [...this.comments.values()];
    const top = all.filter((c) => !c.parent_id || !this.comments.has(c.parent_id)).sort((a, b) => b.created - a.created);
    const repliesOf = new Map();
    for (const c of all) {
      if (!c.parent_id || !this.comments.has(c.parent_id)) continue;
      if (!repliesOf.has(c.parent_id)) repliesOf.set(c.parent_id, []);
      repliesOf.get(c.parent_id).push(c);
    }
    const itemOf = (c) => {
      let li = this.items.get(c.id);
      if (!li) {
        li = this._item(c);
        this.items.set(c.id, li);
      }
      return li;
    };
    reconcile(this.el.list, top.map(itemOf));
    for (const c of top) {
      const replies = (repliesOf.get(c.id) ?? []).sort((a, b) => a.created - b.created);
      reconcile(itemOf(c).querySelector(':scope > article > .replies'), replies.map(itemOf));
    }
    this._applyFilter();
  }

  _applyFilter() {
    for (const li of this.el.list.children) {
      li.hidden = Boolean(this.filter) && li.dataset.category !== this.filter;
    }
    this._renderCount();
  }

  _renderCount() {
    const n = this.comments.size;
    const shown = [...this.el.list.children].filter((li) => !li.hidden).length;
    this.el.count.textContent = this.filter ? `(${shown} shown of ${n})` : `(${n})`;
    this.el.empty.hidden = n > 0;
    if (this.el.toggle) this.el.toggle.textContent = `Comments (${n})`;
  }

  async _react(id) {
    const li = this.items.get(id);
    const btn = li?.querySelector(':scope > article > .comment-actions .comment-plus');
    try {
      const r = await this._post(`/api/comments/${encodeURIComponent(id)}/reactions`, { kind: '+1' });
      const c = this.comments.get(id);
      if (c) c.reactions = r.reactions;
      if (btn) {
        btn.querySelector('.n').textContent = String(r.reactions);
        btn.setAttribute('aria-pressed', 'true');
        btn.setAttribute('aria-label', `+1 (${r.reactions})`);
      }
      this._note(id, r.added ? '' : 'You have +1’d this already.');
    } catch (err) {
      this._note(id, err.message, true);
    }
  }

  _note(id, text, error = false) {
    const extra = this.items.get(id)?.querySelector(':scope > article > .comment-extra');
    if (!extra) return;
    extra.replaceChildren(text ? h('p', { class: error ? 'error' : 'muted', role: error ? 'alert' : 'status', text }) : '');
  }

  _replyForm(id) {
    const extra = this.items.get(id)?.querySelector(':scope > article > .comment-extra');
    if (!extra) return;
    const input = h('textarea', { class: 'reply-text', rows: '2', maxlength: String(MAX_TEXT), 'aria-label': 'Your reply' });
    const error = h('p', { class: 'error', role: 'alert' });
    const form = h(
      'form',
      { class: 'reply-form' },
      input,
      h('div', { class: 'form-row' }, h('button', { type: 'submit', class: 'primary' }, 'Post reply'), h('button', { type: 'button', onclick: () => extra.replaceChildren() }, 'Cancel')),
      error,
    );
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (!input.value.trim()) return;
      const submit = form.querySelector('button[type=submit]');
      submit.disabled = true;
      try {
        const c = await this._post(`/api/sessions/${encodeURIComponent(this.id)}/comments`, { text: input.value, parent_id: id });
        extra.replaceChildren();
        this.upsert(c);
      } catch (err) {
        error.textContent = err.message;
      } finally {
        submit.disabled = false;
      }
    });
    extra.replaceChildren(form);
    input.focus();
  }

  _flagForm(id) {
    const extra = this.items.get(id)?.querySelector(':scope > article > .comment-extra');
    if (!extra) return;
    const input = h('input', { type: 'text', class: 'flag-reason', maxlength: '500', required: '', 'aria-label': 'Why should a moderator look at this?', placeholder: 'Why? (e.g. insulting, spam)' });
    const error = h('p', { class: 'error', role: 'alert' });
    const form = h(
      'form',
      { class: 'flag-form' },
      input,
      h('div', { class: 'form-row' }, h('button', { type: 'submit', class: 'primary' }, 'Send flag'), h('button', { type: 'button', onclick: () => extra.replaceChildren() }, 'Cancel')),
      error,
    );
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (!input.value.trim()) return;
      try {
        const r = await this._post(`/api/comments/${encodeURIComponent(id)}/flags`, { reason: input.value });
        this._note(id, r.added ? 'Flagged: a moderator will look at it. Thank you.' : 'You have flagged this already.');
      } catch (err) {
        error.textContent = err.message;
      }
    });
    extra.replaceChildren(form);
    input.focus();
  }

  // -- pins and focus ------------------------------------------------------------------

  _pinOf(c) {
    if (!c || HIDDEN_STATES.has(c.state)) {
      if (c) this.pins.remove(c.id);
      return;
    }
    let point = null;
    if (c.anchor?.point) {
      const [x, y, z] = c.anchor.point;
      point = { x, y, z };
    } else if (c.anchor?.object_id) {
      const f = this.viewer.indexOf(c.anchor.object_id);
      if (f >= 0 && this.viewer.features.index.hasGeometry(f)) point = this.viewer.features.index.centroid(f);
    }
    if (point) this.pins.set(c.id, point, this.colorOf(c.category));
    else this.pins.remove(c.id);
  }

  /** Recompute every pin (after a scene load: object-only anchors move with the scene). */
  refreshPins() {
    for (const c of this.comments.values()) this._pinOf(c);
  }

  /** Mark a list item as the current one and scroll it into view. */
  focusItem(id) {
    for (const li of this.el.list.querySelectorAll('li.comment[aria-current]')) li.removeAttribute('aria-current');
    const li = this.items.get(id);
    this.focused = id;
    this.pins.highlight(this.pins.pins.has(id) ? id : null);
    if (!li) return;
    li.setAttribute('aria-current', 'true');
    li.scrollIntoView({ block: 'nearest' });
  }

  /** Show a comment as its author saw it: its scenario, camera and object. */
  async focusComment(id) {
    const c = this.comments.get(id);
    if (!c) return;
    this.focusItem(id);
    if (c.scenario && c.scenario !== this.app.scenario()) await this.app.switchTo(c.scenario);
    const oid = c.anchor?.object_id;
    const flights = [];
    if (c.camera) {
      const [px, py, pz] = c.camera.position;
      const [tx, ty, tz] = c.camera.target;
      flights.push(this.viewer.flyToView({ x: px, y: py, z: pz }, { x: tx, y: ty, z: tz }, { fov: c.camera.fov }));
    }
    if (oid && this.viewer.indexOf(oid) >= 0) flights.push(this.app.select(oid, { fly: !c.camera }));
    await Promise.all(flights);
  }

  /** What tests read: the comments shown, in list order. */
  list() {
    const out = [];
    for (const li of this.el.list.querySelectorAll('li.comment')) {
      const c = this.comments.get(li.dataset.id);
      if (c) out.push({ id: c.id, text: c.text, state: c.state });
    }
    return out;
  }

  // -- live ----------------------------------------------------------------------------

  /** A bus event from the stream (`{"kind": "comment"|"moderation", ...}`). */
  onEvent(event) {
    if (!event || event.session !== this.id) return;
    if (event.kind === 'comment' && event.comment) {
      this.upsert(event.comment);
    } else if (event.kind === 'moderation') {
      if (event.comment && !HIDDEN_STATES.has(event.state)) this.upsert(event.comment);
      else if (HIDDEN_STATES.has(event.state)) this.remove(event.comment_id);
    }
  }
}

/** Make `parent`'s children exactly `nodes`, moving as few as possible (keeps focus). */
function reconcile(parent, nodes) {
  const keep = new Set(nodes);
  for (const child of [...parent.children]) if (!keep.has(child)) child.remove();
  nodes.forEach((node, i) => {
    const at = parent.children[i];
    if (at !== node) parent.insertBefore(node, at ?? null);
  });
}

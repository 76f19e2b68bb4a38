// The live stream client: WS /api/stream (protocol in viewer/routes/stream.py), with
// reconnection by exponential backoff and resume from the last sequence number.

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;

/**
 * Follows the state of the twin's objects.
 * Events: "state" (detail: connecting|live|reconnecting|closed), "snapshot", "delta",
 * "event" (detail: the message).
 */
export class LiveStream extends EventTarget {
  /**
   * @param {string} path e.g. "/api/stream"
   * @param {{ids?: string[], types?: string[], bbox?: number[]}} [filter]
   */
  constructor(path = '/api/stream', filter = {}) {
    super();
    this.path = path;
    this.filter = filter;
    this.state = 'closed';
    this.socket = null;
    this.seq = null;
    this.worker = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.lastError = '';
  }

  /** Connect (and keep reconnecting until close()). */
  start() {
    this.stopped = false;
    this._connect();
  }

  /** Disconnect for good. */
  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000, 'client closed');
      this.socket = null;
    }
    this._set('closed');
  }

  /** Replace the filter; the server answers with a new snapshot. */
  subscribe(filter) {
    this.filter = filter;
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ subscribe: filter }));
    }
  }

  _url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams();
    const { ids, types, bbox } = this.filter;
    if (ids?.length) q.set('ids', ids.join(','));
    if (types?.length) q.set('types', types.join(','));
    if (bbox?.length === 4) q.set('bbox', bbox.join(','));
    if (this.seq !== null) {
      // Resume: the server replays what we missed if it still holds it.
      q.set('since', String(this.seq));
      if (this.worker) q.set('worker', this.worker);
    }
    const qs = q.toString();
    return `${proto}//${location.host}${this.path}${qs ? `?${qs}` : ''}`;
  }

  _connect() {
    if (this.stopped) return;
    this._set(this.attempt === 0 && this.seq === null ? 'connecting' : 'reconnecting');
    const socket = new WebSocket(this._url());
    this.socket = socket;
    socket.onmessage = (ev) => this._message(ev.data);
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (ev.code === 1008) this.lastError = ev.reason || 'the server refused the filter';
      this._retry();
    };
    socket.onerror = () => {
      // onclose follows and schedules the retry.
    };
  }

  _retry() {
    if (this.stopped) return;
    this._set('reconnecting');
    const delay = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** this.attempt);
    this.attempt += 1;
    // Jitter so a restarted server is not hit by every viewer at once.
    this.timer = setTimeout(() => this._connect(), delay * (0.8 + Math.random() * 0.4));
  }

  _message(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof msg.seq === 'number') this.seq = msg.seq;
    switch (msg.type) {
      case 'hello':
        this.worker = msg.worker;
        this.attempt = 0;
        this.lastError = '';
        this._set('live');
        break;
      case 'snapshot':
        this.dispatchEvent(new CustomEvent('snapshot', { detail: msg }));
        break;
      case 'delta':
        this.dispatchEvent(new CustomEvent('delta', { detail: msg }));
        break;
      case 'event':
        this.dispatchEvent(new CustomEvent('event', { detail: msg }));
        break;
      case 'error':
        this.lastError = msg.message ?? 'stream error';
        break;
      default:
        break;
    }
  }

  _set(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }
}

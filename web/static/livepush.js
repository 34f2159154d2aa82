// livepush.js: the browser client of a Livepush edge. One ES module, no dependencies, no build step; every edge
// serves it at /livepush.js. The protocol it speaks, and this API, are in docs/protocol.md ("Browser client").
//
//   import { connect } from '/livepush.js';
//   const client = connect({ transport: 'auto' });
//   const sub = client.subscribe(['market.AAPL', 'sports.>'], ({ topic, cursor, data }) => render(topic, data));
//   client.on('state', (e) => show(e.state, e.reason));
//
// The client keeps one cursor (the stream position of the updates it delivered) and resumes from it after every
// reconnect, on any edge and any transport, so a caller sees every update once, in order per topic. It picks the
// best transport that works (WebSocket, then Server-Sent Events, long polling, polling), falls back when one is
// refused, probes now and then to move back up, and backs off with jitter as the edge asks.

/** TRANSPORTS lists the transports, best first: 'auto' starts with the first and falls back along the list. */
export const TRANSPORTS = Object.freeze(['websocket', 'sse', 'longpoll', 'poll']);

const SOON_MS = 250; // "reconnect at once" (a restart) still waits up to this much, at random, to spread clients
const TRY_LATER_MS = 2000; // the least wait after "try again later" (WebSocket 1013, a slow consumer)
const POLICY_MS = 10000; // the least wait after a close for what we sent (1008, 1009): do not hammer
const REPLY_MS = 5000; // how long a WebSocket control request waits for its reply
const READY_MS = 2000; // how long GET /readyz may take before a connect goes on without it
const KEEPALIVE_MS = 5000; // WebSocket liveness check period
const IDLE_MS = 20000; // a WebSocket silent this long gets a ping...
const PONG_MS = 10000; // ...and is given up if still silent this long after it
const FRESH_MS = 2000; // without the edge's cursor, a catch-up ends at the first update younger than this
const LONGPOLL_WAIT_S = 25; // what long polls ask the edge to wait
const LONGPOLL_GRACE_MS = 15000; // a long poll is given up this long after the wait it asked for
const DRAIN_MS = 1000; // the wait after a long poll answered at once and empty (the edge sends clients away so)
const CONTROL_RATE = 10; // WebSocket control messages per second, bursts of twice that: half what the edge allows
const MAX_RATE = 1000; // the highest maxRate the edge takes
// Codes with which the edge refuses what a subscription asks, not the connection.
const TOPIC_CODES = new Set(['invalid_topic', 'too_many_topics', 'forbidden_topic', 'bad_request']);

/**
 * connect returns a client of the edge at options.url. It connects when the first subscription is made.
 *
 * Options (all optional):
 *   url            the edge's base URL, or a list tried in turn after failures. Default: where this module was
 *                  loaded from. Another origin needs -cors-origins (and -allowed-origins for WebSocket) on the edge.
 *   transport      'auto' (default), 'websocket', 'sse', 'longpoll' or 'poll'.
 *   token          async () => string: a token for an edge that checks them; called before connections and again
 *                  when the edge refuses one or it is about to expire.
 *   cursor         resume after this cursor (a string from an earlier update) instead of starting from a snapshot.
 *   minBackoff, maxBackoff   bounds of the reconnect wait in ms (default 500 and 10000).
 *   probeInterval  ms before 'auto' first tries a better transport after falling back (default 30000; doubles
 *                  after each failed probe, up to 10 times that).
 *   pollInterval   ms between requests of 'poll' (default 1000).
 *   eventTypes     SSE event names to listen to besides quote, score and update: EventSource delivers a named
 *                  event only to a listener of that name, and the edge names each event after its payload's kind.
 */
export function connect(options = {}) {
  return new Client(options);
}

/** LivepushError is a refusal from the edge: code is its machine-readable code (invalid_topic, forbidden_topic…). */
export class LivepushError extends Error {
  constructor(message, { code = '', status = 0 } = {}) {
    super(message);
    this.name = 'LivepushError';
    this.code = code;
    this.status = status;
  }
}

/**
 * compareCursors compares two cursors (decimal strings, as updates carry them): negative, zero or positive as a is
 * before, equal to or after b. Cursors are stream sequences up to 2^64, beyond what a JavaScript number keeps.
 */
export function compareCursors(a, b) {
  const x = normCursor(a);
  const y = normCursor(b);
  if (x == null || y == null) throw new TypeError('livepush: not a cursor');
  return cmpCursor(x, y);
}

/**
 * Client follows subscriptions on an edge. Make one with connect(). Events (client.on(type, listener)):
 *   'state'      {state, previous, transport, url, attempt, delay, reason, code, resumed, since}: state is
 *                'idle' (no subscription), 'connecting', 'live', 'reconnecting' (with attempt, delay in ms and
 *                reason) or 'closed'. A 'live' after 'reconnecting' with a cursor is a resume (resumed: true).
 *   'transport'  {transport, previous, reason}: the transport changed (fallback, upgrade, or setTransport).
 *   'reset'      {reason, message, cursor}: the edge could not resume from the client's cursor ('expired': older
 *                than the stream keeps; 'stream_recreated': the stream was deleted and made again). A fresh
 *                snapshot follows; updates in between are lost.
 *   'conflated'  {skipped, transport}: the edge skipped `skipped` updates, each superseded by a newer one on the
 *                same topic, because this client (or the edge) could not keep up. What follows is the newest value
 *                of each topic: a screen of latest prices is still right; a list of every trade is not complete.
 *   'error'      {code, message, status, subscription}: something the edge refused (a subscription, a token).
 */
export class Client {
  constructor(options = {}) {
    const o = options || {};
    this._urls = baseURLs(o.url);
    this._urlIndex = 0;
    this._mode = transportName(o.transport == null ? 'auto' : o.transport);
    this._kind = this._mode === 'auto' ? TRANSPORTS[0] : this._mode;
    if (o.token != null && typeof o.token !== 'function') throw new TypeError('livepush: token must be a function returning a token');
    this._tokenFn = o.token || null;
    this._token = null; // {value, exp (epoch ms or null), at (when it came), refused}
    this._tokenCall = null; // a token() call in flight, shared
    this._cursor = null;
    if (o.cursor != null) {
      this._cursor = normCursor(o.cursor);
      if (this._cursor == null) throw new TypeError(`livepush: cursor ${JSON.stringify(o.cursor)} is not a cursor`);
    }
    this._minBackoff = positive(o.minBackoff, 500);
    this._maxBackoff = Math.max(positive(o.maxBackoff, 10000), this._minBackoff);
    this._probeMs = positive(o.probeInterval, 30000);
    this._probeDelay = this._probeMs;
    this._pollMs = positive(o.pollInterval, 1000);
    this._eventTypes = [...new Set(['quote', 'score', 'update', ...(Array.isArray(o.eventTypes) ? o.eventTypes.map(String) : [])])];

    this._subs = new Set();
    this._routes = new Map(); // topic -> the subscriptions it goes to; cleared when subscriptions change
    this._cache = new Map(); // topic -> {cursor, data}: the last update delivered, for dropping duplicates
    this._listeners = new Map();
    this._state = 'idle';
    this._attempt = 0; // failed attempts since the client was last live
    this._conn = null; // the transport serving the client
    this._probe = null; // a better transport being tried beside it ('auto' after a fallback)
    this._gen = 0; // bumps to cancel a connect in progress
    this._retryTimer = 0;
    this._probeTimer = 0;
    this._waking = false;
    this._closed = false;
    /** stats counts what the client did: requests made, bytes received, updates delivered, duplicates dropped. */
    this.stats = { requests: 0, bytes: 0, updates: 0, duplicates: 0, skipped: 0 };
    this._onOnline = () => this.reconnect();
    if (typeof window !== 'undefined') window.addEventListener('online', this._onOnline);
  }

  /** state is 'idle', 'connecting', 'live', 'reconnecting' or 'closed'. */
  get state() {
    return this._state;
  }

  /** transport is the transport in use (or about to be): 'websocket', 'sse', 'longpoll' or 'poll'. */
  get transport() {
    return this._kind;
  }

  /** mode is 'auto' or the transport the client was told to use. */
  get mode() {
    return this._mode;
  }

  /** cursor is where a reconnect resumes: the highest cursor delivered from the stream, or null. */
  get cursor() {
    return this._cursor;
  }

  /** url is the base URL of the edge the client uses now. */
  get url() {
    return this._urls[this._urlIndex];
  }

  /**
   * subscribe follows topic patterns ('market.AAPL', 'market.*', 'sports.>'): onUpdate({topic, cursor, data,
   * catchUp}) is called for each update of a matching topic, once, in stream order per topic. catchUp is true for
   * updates that are not live: the snapshot of a new subscription, and what a resume replays. options.maxRate asks
   * the edge for at most that many updates per second per topic, the latest value winning.
   *
   * It returns a Subscription; its ready promise settles when the edge has accepted the patterns, or rejects with
   * a LivepushError when the edge refuses them (the subscription then ends).
   */
  subscribe(patterns, onUpdate, options = {}) {
    if (this._closed) throw new Error('livepush: the client is closed');
    if (typeof onUpdate !== 'function') throw new TypeError('livepush: subscribe needs a function to call with updates');
    const sub = new Subscription(this, normPatterns(patterns), onUpdate, normRate((options || {}).maxRate));
    // Made while the client follows others: it starts from its snapshot, not from the client's cursor. Made
    // before the first connect, it is part of that connect (and of its resume, given options.cursor).
    sub._late = this._state !== 'idle';
    this._subs.add(sub);
    this._routes.clear();
    // Topics another subscription follows already: their last values reach this one at once.
    const known = [...this._cache].filter(([topic]) => sub._matches(topic));
    if (known.length) {
      queueMicrotask(() => {
        for (const [topic, u] of known) sub._deliver({ topic, cursor: u.cursor, data: u.data, catchUp: true }, null);
      });
    }
    this._added(sub);
    return sub;
  }

  /** on calls listener(detail) on each event of type ('state', 'transport', 'reset', 'conflated', 'error'); it returns an off function. */
  on(type, listener) {
    if (typeof listener !== 'function') throw new TypeError('livepush: on needs a function');
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  off(type, listener) {
    const set = this._listeners.get(type);
    if (set) set.delete(listener);
  }

  /** reconnect skips the rest of a backoff wait and tries now (the client does it by itself when the browser goes online). */
  reconnect() {
    if (!this._retryTimer || this._closed) return;
    clearTimeout(this._retryTimer);
    this._retryTimer = 0;
    this._start();
  }

  /**
   * setTransport switches to another transport ('auto' included), resuming from the cursor: nothing is lost or
   * repeated in the move.
   */
  setTransport(transport) {
    if (this._closed) return;
    const mode = transportName(transport);
    const previous = this._kind;
    this._mode = mode;
    this._kind = mode === 'auto' ? TRANSPORTS[0] : mode;
    this._halt();
    this._attempt = 0;
    this._probeDelay = this._probeMs;
    if (previous !== this._kind) this._emit('transport', { transport: this._kind, previous, reason: 'chosen' });
    if (!this._subs.size) return;
    this._setState('connecting');
    this._start();
  }

  /** close ends every connection for good; pending subscriptions reject. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._halt();
    if (typeof window !== 'undefined') window.removeEventListener('online', this._onOnline);
    for (const sub of [...this._subs]) sub._end(new LivepushError('livepush: the client was closed', { code: 'closed' }));
    this._setState('closed');
  }

  // ---- connecting ----

  // _wake starts the first connect once the current task is done, so that the subscriptions made together share it.
  _wake() {
    if (this._waking || this._closed) return;
    this._waking = true;
    queueMicrotask(() => {
      this._waking = false;
      if (this._state === 'idle' && this._subs.size && !this._closed) {
        this._setState('connecting');
        this._start();
      }
    });
  }

  // _halt stops every connection and timer.
  _halt() {
    this._gen++;
    clearTimeout(this._retryTimer);
    this._retryTimer = 0;
    this._stopProbe();
    if (this._conn) {
      const t = this._conn;
      this._conn = null;
      t.stop();
    }
  }

  async _start() {
    clearTimeout(this._retryTimer);
    this._retryTimer = 0;
    if (this._closed) return;
    if (!this._subs.size) {
      this._idle();
      return;
    }
    const gen = ++this._gen;
    const url = this.url;
    const kind = this._kind;
    // The edge's cursor, before subscribing: what comes up to it is snapshot or replay, not live. An edge still
    // catching up with the stream says how far it goes (target). It also tells whether the edge answers at all.
    const [pre, token] = await Promise.all([this._ready(url), this._getToken().catch((err) => ({ err }))]);
    if (gen !== this._gen || this._closed) return;
    if (token && token.err) {
      this._retry({ reason: `no token: ${errText(token.err)}` });
      return;
    }
    // Subscriptions the edge has not seen yet would only get what is newer than the cursor: take their current
    // values over HTTP first (which also checks them).
    if (this._cursor != null && kind !== 'poll') {
      const pending = [...this._subs].filter((s) => s.state === 'pending' && s._late);
      if (pending.length) await this._check(pending, url, token);
      if (gen !== this._gen || this._closed) return;
      if (!this._subs.size) {
        this._idle();
        return;
      }
    }
    // A head behind the cursor (an edge that has not reached the stream yet says 0) does not bound the replay.
    const since = this._cursor;
    const head = pre.head && pre.head !== '0' && (since == null || cmpCursor(pre.head, since) >= 0) ? pre.head : null;
    const t = makeTransport(kind, this, { url, since, head, token, pre });
    this._conn = t;
    t.start();
  }

  // _ready asks GET /readyz: {reachable, ready, head}. head is the edge's cursor when it is ready, or the cursor it
  // is catching up to; reachable says the edge itself answered (not a proxy's error page, not a network error).
  async _ready(url) {
    try {
      const { res, body } = await this._fetch(url + 'readyz', { timeout: READY_MS });
      if (!body || typeof body.status !== 'string') return { reachable: false, ready: false, head: null };
      const head = res.ok ? normCursor(body.cursor) : maxCursor(normCursor(body.target), normCursor(body.cursor));
      return { reachable: true, ready: res.ok, head };
    } catch {
      return { reachable: false, ready: false, head: null };
    }
  }

  // _retry schedules the next attempt after a failure, on the next URL when there are several.
  _retry(f) {
    if (this._closed) return;
    if (this._urls.length > 1) this._urlIndex = (this._urlIndex + 1) % this._urls.length;
    this._attempt++;
    const delay = this._delay(f, this._attempt);
    this._setState('reconnecting', { attempt: this._attempt, delay, reason: f.reason || 'connection lost', code: f.code || null });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = 0;
      this._start();
    }, delay);
  }

  // _delay is the wait before attempt: a backoff with jitter, or almost none after a restart, and at least what the
  // edge asked for (SSE retry:, Retry-After, WebSocket close codes).
  _delay(f, attempt) {
    let d = f.soon && attempt === 1 ? Math.random() * SOON_MS : backoff(attempt, this._minBackoff, this._maxBackoff);
    if (f.minDelay && d < f.minDelay) d = f.minDelay + (Math.random() * f.minDelay) / 4;
    return Math.round(d);
  }

  // ---- what transports report ----

  _live(t) {
    if (t === this._probe) {
      this._promote(t);
      return;
    }
    if (t !== this._conn) return;
    const resumed = t.since != null && this._state === 'reconnecting';
    this._attempt = 0;
    this._setState('live', { resumed, since: t.since });
    this._scheduleProbe();
  }

  _ended(t, f) {
    if (t === this._probe) {
      this._probe = null;
      t.stop();
      this._runProbe(t.probeIndex + 1);
      return;
    }
    if (t !== this._conn) return;
    this._conn = null;
    t.stop();
    this._stopProbe();
    this._failed(t, f);
  }

  async _failed(t, f) {
    const gen = ++this._gen;
    if (f.badCursor) {
      // The edge says our cursor is ahead of its stream: it was deleted and created again, and its cursors started
      // over. No edge can resume from it: start over from a snapshot, at once.
      this._reset({ reason: 'stream_recreated', message: f.message || f.reason, cursor: null, transport: t.kind });
      this._start();
      return;
    }
    if (f.tokenRejected && !this._tokenFn) f = { ...f, topicRefused: true }; // nothing to renew: the topics need a token
    if (f.topicRefused) {
      // Something asked for was refused: find which subscription, end it, and go on with the others.
      const found = await this._findRefused(t, f);
      if (gen !== this._gen || this._closed) return;
      if (found) {
        this._start();
        return;
      }
    }
    if (f.tokenRejected && this._token) this._token.refused = true;
    if (this._mode === 'auto' && (f.unsupported || (f.refused && t.pre.ready))) {
      // The edge answers, but not on this transport (a proxy that refuses WebSocket upgrades, one that cannot stream
      // or does not route it): the next one, at once.
      const next = TRANSPORTS[TRANSPORTS.indexOf(t.kind) + 1];
      if (next) {
        this._kind = next;
        this._probeDelay = this._probeMs;
        this._emit('transport', { transport: next, previous: t.kind, reason: `fallback: ${f.reason}` });
        this._start();
        return;
      }
    }
    this._retry(f);
  }

  // _findRefused checks each subscription of a refused request on its own (GET /api/snapshot answers the same
  // question for the same topics) and ends those the edge refuses. It returns whether the request can go again.
  async _findRefused(t, f) {
    const asked = [...t.included];
    if (asked.some((s) => s.state === 'closed')) return true; // one left meanwhile: ask again without it
    const open = [...this._subs];
    if (await this._check(open, t.url, t.token, { refuseOnly: true })) return true;
    if (f.code === 'too_many_topics' && open.length > 1) {
      const newest = open[open.length - 1];
      newest._end(new LivepushError(f.message || 'too many topics', { code: f.code, status: f.status }));
      return true;
    }
    return false;
  }

  /**
   * _check asks GET /api/snapshot for each subscription's patterns: a refusal (4xx with a code) ends it; an answer
   * confirms it and, for one the edge has not served yet, delivers its current values. It returns whether one was
   * refused.
   */
  async _check(subs, url, token, { refuseOnly = false } = {}) {
    let refused = false;
    await Promise.all(
      subs.map(async (sub) => {
        const params = new URLSearchParams();
        for (const p of sub.patterns) params.append('topic', p);
        let res;
        let body;
        try {
          ({ res, body } = await this._fetch(`${url}api/snapshot?${params}`, { timeout: REPLY_MS, token }));
        } catch {
          return; // cannot tell now: the connection will
        }
        if (sub.state === 'closed') return;
        const code = body && typeof body.code === 'string' ? body.code : '';
        if (res.ok && body && Array.isArray(body.updates)) {
          if (!refuseOnly && sub.state === 'pending') {
            for (const u of body.updates) if (u) this._deliver(null, u.topic, u.cursor, u.data, { catchUp: true, move: false });
            sub._confirm();
          }
        } else if (res.status >= 400 && res.status < 500 && (TOPIC_CODES.has(code) || (code === 'unauthorized' && !this._tokenFn))) {
          refused = true;
          sub._end(new LivepushError(typeof body.error === 'string' ? body.error : `refused (${code})`, { code, status: res.status }));
        }
      }),
    );
    return refused;
  }

  // ---- probing for a better transport ('auto' after a fallback) ----

  _scheduleProbe() {
    clearTimeout(this._probeTimer);
    this._probeTimer = 0;
    if (this._mode !== 'auto' || this._kind === TRANSPORTS[0] || this._closed || this._probe) return;
    this._probeTimer = setTimeout(() => {
      this._probeTimer = 0;
      this._runProbe(0);
    }, this._probeDelay);
  }

  // _runProbe tries the i-th transport better than the current one beside it, resuming from the cursor. If it goes
  // live it takes over (the updates both deliver meanwhile are dropped as duplicates); if not, the next better one
  // is tried, and after all of them the next round waits twice as long.
  async _runProbe(i) {
    const better = TRANSPORTS.slice(0, TRANSPORTS.indexOf(this._kind));
    if (this._closed || !this._conn || this._state !== 'live' || this._probe) return;
    if (i >= better.length) {
      this._probeDelay = Math.min(this._probeDelay * 2, this._probeMs * 10);
      this._scheduleProbe();
      return;
    }
    const gen = this._gen;
    let token;
    try {
      token = await this._getToken();
    } catch {
      token = null;
    }
    if (gen !== this._gen || !this._conn || this._probe || this._closed) return;
    const t = makeTransport(better[i], this, { url: this._conn.url, since: this._cursor, head: this._cursor, token, pre: {} });
    t.probeIndex = i;
    this._probe = t;
    t.start();
  }

  _promote(t) {
    const old = this._conn;
    this._probe = null;
    this._conn = t;
    if (old) old.stop();
    const previous = this._kind;
    this._kind = t.kind;
    this._probeDelay = this._probeMs;
    this._emit('transport', { transport: t.kind, previous, reason: 'upgrade' });
    this._scheduleProbe();
  }

  _stopProbe() {
    clearTimeout(this._probeTimer);
    this._probeTimer = 0;
    if (this._probe) {
      const p = this._probe;
      this._probe = null;
      p.stop();
    }
  }

  // ---- subscriptions ----

  _added(sub) {
    if (this._state === 'idle') {
      this._wake();
      return;
    }
    // A live WebSocket subscribes in band: the edge sends the topics' snapshot, then their updates, in order.
    // Other transports take the subscription at their next request or reopened stream, and a WebSocket not
    // subscribed yet at its first subscribe.
    const tell = () => {
      for (const t of [this._conn, this._probe]) {
        if (!t || sub.state === 'closed') continue;
        if (t.canSubscribe()) t.subscribeLive(sub);
        else t.topicsChanged();
      }
    };
    if (this._cursor == null || (this._conn && this._conn.canSubscribe())) {
      tell();
      return;
    }
    // Those resume from the cursor, which brings only what is newer: take its current values over HTTP first,
    // which also checks it.
    const url = this._conn ? this._conn.url : this.url;
    const token = this._conn ? this._conn.token : this._token && this._token.value;
    this._check([sub], url, token).then(tell);
  }

  _removed(sub) {
    if (!this._subs.delete(sub)) return;
    this._routes.clear();
    const still = new Set();
    for (const s of this._subs) for (const p of s.patterns) still.add(p);
    const gone = sub.patterns.filter((p) => !still.has(p));
    // A topic nobody follows any more is forgotten, so that following it again starts from its snapshot.
    for (const topic of [...this._cache.keys()]) if (!this._route(topic).length) this._cache.delete(topic);
    if (!this._subs.size) {
      this._idle();
      return;
    }
    if (gone.length) for (const t of [this._conn, this._probe]) if (t) t.unsubscribed(gone);
  }

  _rateChanged(sub) {
    for (const t of [this._conn, this._probe]) if (t) t.rateChanged(sub);
  }

  // _idle stops connecting while there is nothing to follow; the next subscription starts from a snapshot.
  _idle() {
    this._halt();
    this._cursor = null;
    this._cache.clear();
    this._attempt = 0;
    if (!this._closed) this._setState('idle');
  }

  _route(topic) {
    let subs = this._routes.get(topic);
    if (!subs) {
      subs = [];
      for (const s of this._subs) if (s._matches(topic)) subs.push(s);
      this._routes.set(topic, subs);
    }
    return subs;
  }

  /**
   * _deliver hands an update to the subscriptions of its topic unless that topic has had it, or a newer one,
   * already. move says the update came in stream order on a connection, so the resume cursor may pass it; a value
   * fetched beside the stream (a snapshot over HTTP) must not move it, or a resume could skip updates still on
   * their way.
   */
  _deliver(t, topic, cursor, data, { catchUp = null, move = true } = {}) {
    const c = normCursor(cursor);
    if (typeof topic !== 'string' || c == null || !data || typeof data !== 'object') return; // unreadable
    if (move) this._cursor = maxCursor(this._cursor, c);
    const subs = this._route(topic);
    if (!subs.length) return; // unsubscribed a moment ago
    const prev = this._cache.get(topic);
    if (prev && cmpCursor(c, prev.cursor) <= 0) {
      this.stats.duplicates++;
      return;
    }
    this._cache.set(topic, { cursor: c, data });
    this.stats.updates++;
    const u = { topic, cursor: c, data, catchUp: catchUp != null ? catchUp : t ? t.isCatchUp(c, data) : false };
    for (const sub of subs) sub._deliver(u, t);
  }

  _reset(detail) {
    this._cache.clear();
    this._cursor = null;
    this._emit('reset', detail);
  }

  // ---- tokens ----

  /** _getToken returns a token to send (null without a token function), calling it when there is none still good. */
  async _getToken(fresh = false) {
    if (!this._tokenFn) return null;
    const t = this._token;
    // A token is used until a third of its life is left (at most 30 s), so that a request made with it is
    // accepted and a stream opened with it does not end at once.
    if (!fresh && t && !t.refused && (t.exp == null || t.exp - Date.now() > Math.min(30000, (t.exp - t.at) / 3))) return t.value;
    if (!this._tokenCall) {
      this._tokenCall = (async () => {
        try {
          const value = await this._tokenFn();
          if (typeof value !== 'string' || !value) throw new Error('the token function gave no token');
          this._token = { value, exp: tokenExpiry(value), at: Date.now(), refused: false };
          return value;
        } finally {
          this._tokenCall = null;
        }
      })();
    }
    return this._tokenCall;
  }

  // ---- plumbing ----

  /** _fetch GETs href and reads a JSON body; it rejects on a network error, a timeout or an abort, not on a status. */
  async _fetch(href, { signal = null, timeout = 0, token = null } = {}) {
    const ctrl = new AbortController();
    const abort = () => ctrl.abort();
    if (signal) {
      if (signal.aborted) throw new DOMException('aborted', 'AbortError');
      signal.addEventListener('abort', abort, { once: true });
    }
    const timer = timeout ? setTimeout(() => ctrl.abort(new DOMException('timed out', 'TimeoutError')), timeout) : 0;
    const headers = { Accept: 'application/json' };
    let target = href;
    if (token) {
      // A header from another origin would need a preflight the edge does not answer: the query parameter then.
      if (sameOrigin(href)) headers.Authorization = `Bearer ${token}`;
      else target = withParam(href, 'token', token);
    }
    this.stats.requests++;
    try {
      const res = await fetch(target, { signal: ctrl.signal, cache: 'no-store', headers });
      const text = await res.text();
      this.stats.bytes += utf8Length(text);
      let body = null;
      try {
        body = text ? JSON.parse(text) : null;
      } catch {
        body = null;
      }
      return { res, body };
    } finally {
      clearTimeout(timer);
      if (signal) signal.removeEventListener('abort', abort);
    }
  }

  _setState(state, detail = {}) {
    const previous = this._state;
    this._state = state;
    this._emit('state', {
      state,
      previous,
      transport: this._kind,
      url: this.url,
      attempt: this._attempt,
      delay: 0,
      reason: '',
      code: null,
      resumed: false,
      since: null,
      ...detail,
    });
  }

  _error(detail) {
    this._emit('error', { code: '', message: '', status: 0, subscription: null, ...detail });
  }

  _emit(type, detail) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (err) {
        report(err);
      }
    }
  }
}

/** Subscription is what subscribe returns: its patterns, ready, setMaxRate and unsubscribe. */
export class Subscription {
  constructor(client, patterns, onUpdate, maxRate) {
    this._client = client;
    this._onUpdate = onUpdate;
    this._maxRate = maxRate;
    this._parts = patterns.map((p) => p.split('.'));
    this._fresh = null; // the transport it was subscribed on in band: the first value of each topic is its snapshot
    this._seen = null;
    this._late = false;
    /** patterns are the topic patterns followed. */
    this.patterns = Object.freeze(patterns);
    /** state is 'pending' (not yet accepted by an edge), 'active' or 'closed'. */
    this.state = 'pending';
    /** ready settles when the edge accepts the patterns; it rejects with a LivepushError if the edge refuses them. */
    this.ready = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.ready.catch(() => {}); // a caller that does not wait for ready hears of a refusal through 'error'
  }

  /** maxRate is the rate asked for (updates per second per topic), or null for no limit. */
  get maxRate() {
    return this._maxRate;
  }

  /** setMaxRate changes the rate on the live connection (null or 0: no limit). */
  setMaxRate(rate) {
    const r = normRate(rate);
    if (this.state === 'closed' || r === this._maxRate) return;
    this._maxRate = r;
    this._client._rateChanged(this);
  }

  /** unsubscribe stops the updates: none reaches onUpdate after it returns. */
  unsubscribe() {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this._reject(new LivepushError('livepush: unsubscribed', { code: 'unsubscribed' }));
    this._client._removed(this);
  }

  _matches(topic) {
    const t = topic.split('.');
    return this._parts.some((p) => matchTokens(p, t));
  }

  _confirm() {
    if (this.state !== 'pending') return;
    this.state = 'active';
    this._resolve();
  }

  // _end ends a subscription the edge refused (or the client closing), telling the caller why.
  _end(err) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this._reject(err);
    this._client._removed(this);
    if (err.code !== 'closed') {
      this._client._error({ code: err.code, message: err.message, status: err.status, subscription: this });
    }
  }

  _deliver(u, t) {
    if (this.state === 'closed') return;
    if (this._fresh && t === this._fresh && !this._seen.has(u.topic)) {
      this._seen.add(u.topic);
      if (!u.catchUp) u = { ...u, catchUp: true };
    }
    try {
      this._onUpdate(u);
    } catch (err) {
      report(err);
    }
  }
}

// ---- transports ----

function makeTransport(kind, client, opts) {
  switch (kind) {
    case 'websocket':
      return new WebSocketTransport(kind, client, opts);
    case 'sse':
      return new SSETransport(kind, client, opts);
    case 'longpoll':
      return new LongPollTransport(kind, client, opts);
    default:
      return new PollTransport(kind, client, opts);
  }
}

/**
 * Transport is one way of following the client's subscriptions on one edge, until it ends: it reports live(),
 * updates and resets, and end(failure) once, where failure says what happened and how soon to come back:
 *   {reason, code, status, message, soon, minDelay, badCursor, tokenRejected, topicRefused,
 *    refused (failed before it worked, with nothing from the edge to say why), unsupported (the edge answered,
 *    but not with this transport)}.
 */
class Transport {
  constructor(kind, client, { url, since, head, token, pre }) {
    this.kind = kind;
    this.client = client;
    this.url = url;
    this.since = since; // the cursor it resumed from
    this.head = head; // updates up to this cursor are catch-up; null: unknown
    this.tsPhase = !head; // with no head, the catch-up ends at the first fresh update
    this.token = token;
    this.pre = pre || {};
    this.stopped = false;
    this.isLive = false;
    this.included = new Set(); // the subscriptions the last request or stream asked for
    this.probeIndex = 0;
  }

  subs() {
    return [...this.client._subs];
  }

  patterns(subs) {
    return [...new Set(subs.flatMap((s) => s.patterns))];
  }

  // rate is the least restrictive rate of subs: one request carries one rate for all its topics.
  rate(subs) {
    let r = 0;
    for (const s of subs) {
      if (s.maxRate == null) return null;
      r = Math.max(r, s.maxRate);
    }
    return r || null;
  }

  live() {
    for (const s of this.included) s._confirm();
    if (this.isLive || this.stopped) return;
    this.isLive = true;
    this.client._live(this);
  }

  end(f) {
    if (this.stopped) return;
    this.client._ended(this, f);
  }

  deliver(topic, cursor, data) {
    if (!this.stopped) this.client._deliver(this, topic, cursor, data);
  }

  reset(cursor, reason, message) {
    if (!this.stopped) this.client._reset({ reason, message, cursor: normCursor(cursor), transport: this.kind });
  }

  conflated(skipped) {
    if (this.stopped || !Number.isSafeInteger(skipped) || skipped <= 0) return;
    this.client.stats.skipped += skipped;
    this.client._emit('conflated', { skipped, transport: this.kind });
  }

  isCatchUp(c, data) {
    if (this.head) return cmpCursor(c, this.head) <= 0;
    if (!this.tsPhase) return false;
    const ts = parseTs(data.ts);
    if (Number.isFinite(ts) && Date.now() - ts < FRESH_MS) {
      this.tsPhase = false;
      return false;
    }
    return true;
  }

  stop() {
    this.stopped = true;
    this.close();
  }

  canSubscribe() {
    return false;
  }
  topicsChanged() {}
  unsubscribed() {
    this.topicsChanged();
  }
  rateChanged() {
    this.topicsChanged();
  }
  close() {}
}

/**
 * WebSocketTransport speaks the JSON control protocol on GET /ws: on open, the token ({"type":"auth"}, renewed
 * before it expires) and one subscribe for every subscription, resuming with since; then a subscribe or unsubscribe
 * per change, and a ping when the line goes quiet.
 */
class WebSocketTransport extends Transport {
  start() {
    const u = new URL('ws', this.url);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    // A batch of updates as one frame of lines: one message event for all of them, not one each.
    u.searchParams.set('frames', 'lines');
    this.client.stats.requests++;
    this.ids = 0;
    this.pending = new Map(); // request id -> {sub, timer}
    this.queue = [];
    this.tokens = 2 * CONTROL_RATE;
    this.filled = performance.now();
    let ws;
    try {
      ws = new WebSocket(u.href);
    } catch (err) {
      this.end({ reason: errText(err), unsupported: true });
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.onOpen();
    ws.onmessage = (e) => this.onFrame(e.data);
    ws.onerror = () => {}; // a close event follows, with the code
    ws.onclose = (e) => this.onClose(e);
  }

  onOpen() {
    if (this.stopped) return;
    this.opened = true;
    this.lastRx = performance.now();
    this.pingAt = 0;
    this.keepalive = setInterval(() => this.checkAlive(), KEEPALIVE_MS);
    if (this.token) this.send({ type: 'auth', id: this.nextId('auth'), token: this.token });
    // From the client's cursor now: a probe opens beside a transport that went on delivering meanwhile.
    this.subscribeAll(this.client._cursor);
  }

  // subscribeAll sends one subscribe for every subscription, resuming after since: one request, so that the replay
  // comes in cursor order. Subscriptions asking for a stricter rate than the request's then set theirs.
  subscribeAll(since) {
    const subs = this.subs();
    this.included = new Set(subs);
    if (!subs.length) return;
    const rate = this.rate(subs);
    this.connectId = this.nextId();
    this.send({ type: 'subscribe', id: this.connectId, topics: this.patterns(subs), ...(since ? { since } : {}), ...(rate ? { maxRate: rate } : {}) });
    for (const s of subs) if (s.maxRate !== rate) this.sendRate(s);
  }

  canSubscribe() {
    return !!this.connectId && !this.stopped && this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  subscribeLive(sub) {
    const id = this.nextId();
    sub._fresh = this;
    sub._seen = new Set();
    this.request(id, sub);
    this.send({ type: 'subscribe', id, topics: sub.patterns, ...(sub.maxRate ? { maxRate: sub.maxRate } : {}) });
  }

  sendRate(sub) {
    const id = this.nextId();
    this.request(id, null);
    this.send({ type: 'subscribe', id, topics: sub.patterns, maxRate: sub.maxRate || 0 });
  }

  rateChanged(sub) {
    if (this.canSubscribe()) this.sendRate(sub);
  }

  unsubscribed(patterns) {
    if (this.canSubscribe()) this.send({ type: 'unsubscribe', id: this.nextId(), topics: patterns });
  }

  request(id, sub) {
    const timer = setTimeout(() => this.pending.delete(id), REPLY_MS); // unanswered: the next connect asks again
    this.pending.set(id, { sub, timer });
  }

  nextId(prefix = '') {
    return `${prefix}${++this.ids}`;
  }

  // send queues a control message; flush sends what the rate allows, several per frame, one per line.
  send(msg) {
    this.queue.push(JSON.stringify(msg));
    this.flush();
  }

  flush() {
    if (this.stopped || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const now = performance.now();
    this.tokens = Math.min(2 * CONTROL_RATE, this.tokens + ((now - this.filled) / 1000) * CONTROL_RATE);
    this.filled = now;
    const n = Math.min(Math.floor(this.tokens), this.queue.length);
    if (n > 0) {
      this.ws.send(this.queue.splice(0, n).join('\n'));
      this.tokens -= n;
    }
    if (this.queue.length && !this.flushTimer) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = 0;
        this.flush();
      }, 1000 / CONTROL_RATE);
    }
  }

  onFrame(data) {
    if (this.stopped) return;
    this.lastRx = performance.now();
    this.pingAt = 0;
    if (typeof data !== 'string') {
      this.client.stats.bytes += data.byteLength || data.size || 0; // binary frames are not part of the protocol
      return;
    }
    this.client.stats.bytes += utf8Length(data);
    // A frame carries one or more messages, one per line (frames=lines).
    for (const line of data.split('\n')) {
      if (this.stopped) return;
      if (!line) continue;
      let m;
      try {
        m = JSON.parse(line);
      } catch {
        continue;
      }
      if (m && typeof m === 'object') this.onMessage(m);
    }
  }

  onMessage(m) {
    switch (m.type) {
      case 'update':
        this.deliver(m.topic, m.cursor, m.data);
        break;
      case 'subscribed': {
        const id = m.id == null ? '' : String(m.id);
        if (id === this.connectId) this.live();
        else this.settle(id, (p) => p.sub && p.sub._confirm());
        break;
      }
      case 'unsubscribed':
        this.settle(m.id == null ? '' : String(m.id), () => {});
        break;
      case 'reset':
        this.reset(m.cursor, 'expired', m.reason || 'cursor older than the stream keeps');
        break;
      case 'conflated':
        this.conflated(m.skipped);
        break;
      case 'authenticated':
        this.scheduleRefresh();
        break;
      case 'error':
        this.onError(m);
        break;
      default: // pong, and whatever a later edge adds
    }
  }

  settle(id, fn) {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    fn(p);
  }

  onError(m) {
    const id = m.id == null ? '' : String(m.id);
    const code = typeof m.code === 'string' ? m.code : '';
    const message = typeof m.message === 'string' ? m.message : code || 'refused';
    if (id.startsWith('auth')) {
      if (code === 'bad_request') {
        this.noAuth = true; // the edge checks no tokens
        return;
      }
      this.fail({ reason: `token refused: ${message}`, code, message, tokenRejected: true });
      return;
    }
    if (id && id === this.connectId) {
      this.connectId = '';
      if (code === 'bad_cursor') {
        // Our cursor is ahead of the stream: it was recreated. Start over from a snapshot, on this connection.
        this.reset(null, 'stream_recreated', message);
        this.subscribeAll(null);
      } else if (code === 'unavailable') {
        this.fail({ reason: message, code, message, minDelay: TRY_LATER_MS });
      } else if (code === 'unauthorized') {
        this.fail({ reason: message, code, message, tokenRejected: true });
      } else {
        this.fail({ reason: message, code, message, topicRefused: TOPIC_CODES.has(code) });
      }
      return;
    }
    const p = this.pending.get(id);
    if (p) {
      this.settle(id, () => {});
      if (p.sub && TOPIC_CODES.has(code)) {
        p.sub._end(new LivepushError(message, { code }));
        return;
      }
      if (code === 'unauthorized') {
        this.fail({ reason: message, code, message, tokenRejected: true });
        return;
      }
    }
    this.client._error({ code, message });
  }

  // scheduleRefresh sends a fresh token before the current one expires: at half its life, or 30 s before the end.
  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const t = this.client._token;
    if (this.noAuth || !t || !t.exp) return;
    const left = t.exp - Date.now();
    const wait = Math.max(1000, left > 60000 ? left - 30000 : left / 2);
    this.refreshTimer = setTimeout(async () => {
      let token;
      try {
        token = await this.client._getToken(true);
      } catch (err) {
        this.client._error({ code: 'token', message: `no fresh token: ${errText(err)}` });
        if (!this.stopped) this.refreshTimer = setTimeout(() => this.scheduleRefresh(), 5000);
        return;
      }
      if (this.stopped) return;
      this.token = token;
      this.send({ type: 'auth', id: this.nextId('auth'), token });
    }, wait);
  }

  checkAlive() {
    const now = performance.now();
    if (this.pingAt && now - this.pingAt > PONG_MS) {
      this.fail({ reason: 'no answer to ping' });
    } else if (!this.pingAt && now - this.lastRx > IDLE_MS) {
      this.pingAt = now;
      this.send({ type: 'ping', id: this.nextId() });
    }
  }

  fail(f) {
    this.end({ ...f, beforeLive: !this.isLive });
  }

  onClose(e) {
    if (this.stopped) return;
    const code = e.code;
    const f = { reason: `closed ${code}${e.reason ? `: ${e.reason}` : ''}`, code, message: e.reason || '' };
    switch (code) {
      case 1000:
      case 1001:
      case 1012: // going away, restarting (or the stream was recreated): at once, elsewhere
        f.soon = true;
        break;
      case 1013: // try again later: this edge is full, or too slow a reader
        f.minDelay = TRY_LATER_MS;
        break;
      case 4001: // the token expired or was refused: a fresh one
        f.tokenRejected = true;
        f.soon = true;
        break;
      case 1002:
      case 1003:
      case 1007:
      case 1008:
      case 1009: // closed for what we sent: do not hammer
        f.minDelay = POLICY_MS;
        break;
      case 1011:
        break;
      default:
        // 1006 and the like: the connection failed. Before it worked, that is how a browser sees a refused
        // handshake (a 403, a proxy that does not pass upgrades); the edge would have closed with a code.
        f.refused = !this.isLive;
    }
    this.fail(f);
  }

  close() {
    clearInterval(this.keepalive);
    clearTimeout(this.refreshTimer);
    clearTimeout(this.flushTimer);
    if (this.pending) for (const p of this.pending.values()) clearTimeout(p.timer);
    const ws = this.ws;
    this.ws = null;
    if (ws) quietClose(ws);
  }
}

// quietClose closes ws without its handlers firing. Closing a socket still connecting makes Chrome log an error,
// so such a socket is closed once it opens instead.
function quietClose(ws) {
  ws.onmessage = ws.onerror = ws.onclose = null;
  if (ws.readyState === WebSocket.CONNECTING) {
    ws.onopen = () => ws.close(1000);
  } else {
    ws.onopen = null;
    if (ws.readyState === WebSocket.OPEN) ws.close(1000);
  }
}

/**
 * SSETransport reads GET /sse with EventSource, never leaving reconnecting to the browser: the browser retries at
 * a fixed pace with a stale URL (token, topics), and gives up for good on any answer but 200 (a proxy's 502 while
 * an edge restarts, the edge's own 503 or 429). On any error the stream is closed and the client opens a new one
 * after its backoff, with lastEventId set to its cursor. A refused stream is asked again with fetch, which can read
 * the status, the edge's JSON and Retry-After.
 */
class SSETransport extends Transport {
  start() {
    this.open(this.since);
  }

  open(since) {
    this.closeStream();
    const subs = this.subs();
    this.included = new Set(subs);
    const params = new URLSearchParams();
    for (const p of this.patterns(subs)) params.append('topic', p);
    const rate = this.rate(subs);
    if (rate) params.set('maxRate', String(rate));
    if (since) params.set('lastEventId', since);
    if (this.token) params.set('token', this.token); // EventSource cannot send headers
    const href = `${this.url}sse?${params}`;
    this.client.stats.requests++;
    let es;
    try {
      es = new EventSource(href);
    } catch (err) {
      this.end({ reason: errText(err), unsupported: true });
      return;
    }
    this.es = es;
    let opened = false;
    es.onopen = () => {
      if (this.es !== es) return;
      opened = true;
      this.live();
    };
    const onUpdate = (e) => {
      if (this.es === es) this.event(e);
    };
    for (const type of this.client._eventTypes) es.addEventListener(type, onUpdate);
    es.onmessage = onUpdate; // unnamed events
    es.addEventListener('reset', (e) => {
      if (this.es !== es) return;
      this.client.stats.bytes += eventSize(e);
      const body = parseJSON(e.data) || {};
      this.reset(body.cursor, 'expired', body.reason || 'cursor older than the stream keeps');
    });
    es.addEventListener('conflated', (e) => {
      if (this.es !== es) return;
      this.client.stats.bytes += eventSize(e);
      this.conflated((parseJSON(e.data) || {}).skipped);
    });
    es.addEventListener('close', (e) => {
      // The edge ends the stream on purpose, saying why and when to come back.
      if (this.es !== es) return;
      this.client.stats.bytes += eventSize(e);
      this.closeStream();
      const body = parseJSON(e.data) || {};
      const reason = typeof body.reason === 'string' ? body.reason : 'closed';
      const retry = Number(body.retry) > 0 ? Number(body.retry) : 0;
      const f = { reason: `${reason}${body.message ? `: ${body.message}` : ''}`, code: reason, message: body.message || '', minDelay: retry };
      if (reason === 'server_restart' || reason === 'stream_recreated') f.soon = true;
      if (reason === 'token_expired') Object.assign(f, { soon: true, tokenRejected: true });
      if (reason === 'slow_consumer' || reason === 'unavailable') f.minDelay = Math.max(retry, TRY_LATER_MS);
      this.end(f);
    });
    es.onerror = (e) => {
      if (this.es !== es) return;
      if (typeof e.data === 'string') {
        // An "event: error" from the edge, not a failure of the stream.
        this.client.stats.bytes += eventSize(e);
        const body = parseJSON(e.data) || {};
        this.client._error({ code: body.code || '', message: body.message || body.error || e.data });
        return;
      }
      this.closeStream();
      if (opened) this.end({ reason: 'stream interrupted' });
      else this.diagnose(href);
    };
  }

  event(e) {
    this.client.stats.bytes += eventSize(e);
    const data = parseJSON(e.data);
    if (!data || typeof data !== 'object') return;
    if (data.type === 'update' && data.data && typeof data.data === 'object') this.deliver(data.topic, data.cursor, data.data);
    else this.deliver(data.topic, e.lastEventId, data);
  }

  // diagnose asks the refused stream's URL again with fetch, to learn what EventSource hides.
  async diagnose(href) {
    const ctrl = new AbortController();
    this.diag = ctrl;
    let f;
    try {
      this.client.stats.requests++;
      const res = await fetch(href, { signal: ctrl.signal, cache: 'no-store', headers: { Accept: 'text/event-stream' } });
      if (res.ok) {
        const type = res.headers.get('Content-Type') || '';
        ctrl.abort();
        f = type.startsWith('text/event-stream')
          ? { reason: 'stream refused, then accepted' } // a moment's trouble: come back after the backoff
          : { reason: `not an event stream (${type || 'no content type'})`, unsupported: true };
      } else {
        const text = await res.text();
        this.client.stats.bytes += utf8Length(text);
        f = httpFailure(res, parseJSON(text));
      }
    } catch (err) {
      if (this.stopped) return;
      f = { reason: `cannot connect (${errText(err)})` };
    }
    if (this.stopped) return;
    this.end({ ...f, beforeLive: !this.isLive });
  }

  // A changed topic list or rate reopens the stream from the cursor: nothing is lost in between.
  topicsChanged() {
    if (!this.es) return; // a stream not open yet reads the topics when it opens
    clearTimeout(this.reopenTimer);
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = 0;
      if (this.es && !this.stopped) this.open(this.client._cursor);
    }, 100); // one reopen for a burst of changes
  }

  closeStream() {
    if (this.es) {
      this.es.close();
      this.es = null;
    }
  }

  close() {
    clearTimeout(this.reopenTimer);
    this.closeStream();
    if (this.diag) this.diag.abort();
  }
}

// eventSize estimates the bytes of one SSE event on the wire (EventSource hides the raw stream): "event: T\n" +
// "id: N\n" + "data: D\n" + "\n". Heartbeat comments are invisible and not counted.
function eventSize(e) {
  let n = utf8Length(e.data || '') + 8;
  if (e.type && e.type !== 'message') n += e.type.length + 8;
  if (e.lastEventId) n += e.lastEventId.length + 5;
  return n;
}

/**
 * LongPollTransport loops on GET /api/poll?topic=…&cursor=N&timeout=25s, asking again from the answer's cursor
 * (or its own, if the edge answered from behind it). A changed topic list aborts the waiting request and asks again.
 */
class LongPollTransport extends Transport {
  start() {
    this.pollCursor = this.since;
    this.gen = 0;
    this.run();
  }

  async run() {
    const gen = ++this.gen;
    const current = () => !this.stopped && gen === this.gen;
    while (current()) {
      const subs = this.subs();
      this.included = new Set(subs);
      const sent = this.pollCursor;
      const params = new URLSearchParams();
      for (const p of this.patterns(subs)) params.append('topic', p);
      if (sent) params.set('cursor', sent);
      params.set('timeout', `${LONGPOLL_WAIT_S}s`);
      const rate = this.rate(subs);
      if (rate) params.set('maxRate', String(rate));
      const ctrl = new AbortController();
      this.ctrl = ctrl;
      this.restart = false;
      const began = performance.now();
      let res;
      let body;
      try {
        this.token = await this.client._getToken(); // each request carries a token still good
        if (!current()) return;
        ({ res, body } = await this.client._fetch(`${this.url}api/poll?${params}`, {
          signal: ctrl.signal,
          timeout: LONGPOLL_WAIT_S * 1000 + LONGPOLL_GRACE_MS,
          token: this.token,
        }));
      } catch (err) {
        if (!current()) return;
        if (this.restart) continue; // the topics changed: ask again at once
        this.end({ reason: errText(err), beforeLive: !this.isLive });
        return;
      } finally {
        if (this.ctrl === ctrl) this.ctrl = null;
      }
      if (!current()) return;
      if (!res.ok) {
        const f = httpFailure(res, body);
        // A proxy that gives up on a request before the edge answers it cannot carry long polls.
        if (res.status === 504 && !f.code) f.unsupported = true;
        this.end({ ...f, beforeLive: !this.isLive });
        return;
      }
      if (!body || typeof body !== 'object' || !Array.isArray(body.updates)) {
        this.end({ reason: 'not a long-poll answer', unsupported: true });
        return;
      }
      const server = normCursor(body.cursor);
      // The first answer is catch-up up to its cursor, whatever /readyz said.
      if (!this.isLive && server) this.head = maxCursor(this.head, server);
      this.live();
      if (body.reset) {
        this.reset(server, 'expired', body.reason || 'cursor older than the stream keeps');
        this.pollCursor = null;
      }
      for (const u of body.updates) if (u && !this.stopped) this.deliver(u.topic, u.cursor, u.data);
      if (!current()) return;
      this.pollCursor = maxCursor(maxCursor(this.pollCursor, server), this.client._cursor);
      if (sent && !body.updates.length && !body.reset && performance.now() - began < 250) {
        // Answered at once with nothing: the edge is draining (it sends its clients elsewhere so). Move on.
        this.end({ reason: 'the edge is draining', minDelay: DRAIN_MS });
        return;
      }
    }
  }

  topicsChanged() {
    if (!this.ctrl) return; // between requests the next one reads the topics
    this.restart = true;
    this.ctrl.abort();
  }

  close() {
    this.gen++;
    if (this.ctrl) {
      this.ctrl.abort();
      this.ctrl = null;
    }
  }
}

/**
 * PollTransport GETs /api/snapshot every pollInterval: the latest value of each topic at each poll, not every update
 * (it cannot resume: what changed twice between two polls shows once).
 */
class PollTransport extends Transport {
  start() {
    this.gen = 0;
    this.tick(++this.gen);
  }

  async tick(gen) {
    const current = () => !this.stopped && gen === this.gen;
    const began = performance.now();
    const subs = this.subs();
    this.included = new Set(subs);
    const params = new URLSearchParams();
    for (const p of this.patterns(subs)) params.append('topic', p);
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    let res;
    let body;
    try {
      this.token = await this.client._getToken();
      if (!current()) return;
      ({ res, body } = await this.client._fetch(`${this.url}api/snapshot?${params}`, { signal: ctrl.signal, timeout: 10000, token: this.token }));
    } catch (err) {
      if (current()) this.end({ reason: errText(err), beforeLive: !this.isLive });
      return;
    }
    if (!current()) return;
    if (!res.ok || !body || !Array.isArray(body.updates)) {
      this.end({ ...(res.ok ? { reason: 'not a snapshot answer', unsupported: true } : httpFailure(res, body)), beforeLive: !this.isLive });
      return;
    }
    const server = normCursor(body.cursor);
    if (!this.isLive && server) this.head = maxCursor(this.head, server); // the first answer is catch-up
    this.live();
    const ours = this.client._cursor;
    if (server && ours && cmpCursor(server, ours) < 0) {
      // Behind our cursor. An edge still catching up answers older values (dropped as duplicates); only a stream
      // deleted and created again starts over, which a ready edge behind us shows.
      const pre = await this.client._ready(this.url);
      if (!current()) return;
      if (pre.ready && pre.head && cmpCursor(pre.head, ours) < 0) this.reset(server, 'stream_recreated', 'the stream restarted');
    }
    for (const u of body.updates) if (u && current()) this.deliver(u.topic, u.cursor, u.data);
    if (current()) this.timer = setTimeout(() => this.tick(gen), Math.max(0, this.client._pollMs - (performance.now() - began)));
  }

  close() {
    this.gen++;
    clearTimeout(this.timer);
    if (this.ctrl) this.ctrl.abort();
  }
}

// httpFailure says what an error answer means for the client: the edge's JSON error (code) or a proxy's page.
function httpFailure(res, body) {
  const status = res.status;
  const fromEdge = !!body && typeof body.code === 'string';
  const code = fromEdge ? body.code : '';
  const message = fromEdge && typeof body.error === 'string' ? body.error : `HTTP ${status}`;
  const f = { reason: `HTTP ${status}${code ? ` ${code}` : ''}${fromEdge ? `: ${message}` : ''}`, status, code, message };
  const wait = retryAfter(res.headers.get('Retry-After'));
  if (wait) f.minDelay = wait;
  if (code === 'bad_cursor') f.badCursor = true;
  else if (status === 401 || code === 'unauthorized') f.tokenRejected = true;
  else if (TOPIC_CODES.has(code)) f.topicRefused = true;
  else if (!fromEdge && (status === 404 || status === 405 || status === 501)) f.unsupported = true;
  return f;
}

// retryAfter reads a Retry-After header (seconds or an HTTP date) into milliseconds, at most 5 minutes; 0 if none.
function retryAfter(v) {
  if (!v) return 0;
  let ms = /^\d+$/.test(v.trim()) ? Number(v) * 1000 : Date.parse(v) - Date.now();
  if (!Number.isFinite(ms) || ms <= 0) return 0;
  return Math.min(ms, 300000);
}

// ---- small helpers ----

function normCursor(c) {
  if (c == null) return null;
  const s = typeof c === 'string' ? c : String(c);
  if (!/^\d{1,20}$/.test(s)) return null;
  return s.replace(/^0+(?=\d)/, '');
}

// cmpCursor compares canonical cursors: a longer decimal is larger.
function cmpCursor(a, b) {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

function maxCursor(a, b) {
  if (a == null) return b;
  if (b == null) return a;
  return cmpCursor(a, b) >= 0 ? a : b;
}

// matchTokens matches a topic's tokens against a pattern's, as NATS does: '*' is one token, a final '>' the rest.
function matchTokens(p, t) {
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return t.length > i;
    if (i >= t.length || (p[i] !== '*' && p[i] !== t[i])) return false;
  }
  return p.length === t.length;
}

function normPatterns(patterns) {
  const list = typeof patterns === 'string' ? [patterns] : Array.isArray(patterns) ? patterns : null;
  if (!list) throw new TypeError('livepush: subscribe takes a topic pattern or a list of them');
  const out = [];
  for (const p of list) {
    if (typeof p !== 'string' || !p.trim()) throw new TypeError(`livepush: ${JSON.stringify(p)} is not a topic pattern`);
    if (!out.includes(p.trim())) out.push(p.trim());
  }
  if (!out.length) throw new TypeError('livepush: subscribe needs at least one topic pattern');
  return out;
}

function normRate(r) {
  if (r == null || r === 0) return null;
  if (typeof r !== 'number' || !Number.isFinite(r) || r < 0 || r > MAX_RATE) {
    throw new RangeError(`livepush: maxRate must be a number of updates per second from 0 (no limit) to ${MAX_RATE}`);
  }
  return r;
}

function transportName(t) {
  const name = t === 'ws' ? 'websocket' : t;
  if (name !== 'auto' && !TRANSPORTS.includes(name)) {
    throw new TypeError(`livepush: unknown transport ${JSON.stringify(t)}: use auto, ${TRANSPORTS.join(', ')}`);
  }
  return name;
}

function baseURLs(url) {
  const list = url == null ? [new URL('./', import.meta.url).href] : Array.isArray(url) ? url : [url];
  if (!list.length) throw new TypeError('livepush: url is an empty list');
  return list.map((raw) => {
    const u = new URL(String(raw), typeof location !== 'undefined' ? location.href : undefined);
    if (u.protocol === 'ws:') u.protocol = 'http:';
    if (u.protocol === 'wss:') u.protocol = 'https:';
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError(`livepush: ${raw} is not an http(s) URL`);
    u.search = '';
    u.hash = '';
    if (!u.pathname.endsWith('/')) u.pathname += '/';
    return u.href;
  });
}

function sameOrigin(href) {
  return typeof location !== 'undefined' && new URL(href).origin === location.origin;
}

function withParam(href, name, value) {
  const u = new URL(href);
  u.searchParams.set(name, value);
  return u.href;
}

function positive(v, def) {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : def;
}

// backoff is the wait before attempt n (1, 2, …): exponential from min, capped at max, with jitter over the upper
// half, so that many clients dropped together do not come back together.
function backoff(attempt, min, max) {
  const ceiling = Math.min(max, min * 2 ** Math.min(30, Math.max(0, attempt - 1)));
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

// tokenExpiry reads the exp claim of a JWT (epoch ms), or null for a token that is not one.
function tokenExpiry(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
    return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// parseTs reads an RFC 3339 time stamp into epoch ms (to the millisecond: engines differ on longer fractions).
function parseTs(s) {
  return typeof s === 'string' ? Date.parse(s.replace(/(\.\d{3})\d+/, '$1')) : NaN;
}

function utf8Length(s) {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 2; // a surrogate pair: 4 bytes for 2 units
      i++;
    } else n += 2;
  }
  return n;
}

function errText(err) {
  if (!err) return 'error';
  if (err.name === 'TimeoutError') return 'timed out';
  if (err.name === 'AbortError') return 'aborted';
  if (err instanceof TypeError) return 'network error';
  return String(err.message || err);
}

// report hands a listener's or callback's exception to the browser (the console, window.onerror) without
// disturbing the client.
function report(err) {
  if (typeof reportError === 'function') reportError(err);
  else setTimeout(() => {
    throw err;
  });
}

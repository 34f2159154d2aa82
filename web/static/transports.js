// transports.js: the four ways the page follows its topics on the edge. Each transport turns one endpoint
// into calls on a sink (made by app.js), reconnects with backoff and resumes by cursor. None touches the DOM.
//
// The sink a transport is given:
//   topics()                      the topic patterns to follow now
//   since()                       the last applied cursor (the resume point), or null
//   prepare() -> Promise<since>   before a WebSocket or SSE (re)connect: learns the server's cursor, says where to resume
//   request(), bytes(n)           one HTTP request made; n bytes received
//   opened(serverCursor?)         connected (again); the server's cursor at that moment when the answer carries it
//   retrying(attempt, delayMs, reason)
//   update(topic, cursor, data)   one update; data is the decoded payload
//   restarted(cursor, ours) -> Promise<bool>
//                                 whether a server cursor behind ours means the stream was recreated (not an edge
//                                 still catching up with it)
//   reset(cursor, reason)         the resume cursor was too old (or the stream restarted): a fresh snapshot follows
//   serverError(message, code)    an error the edge reported, to show
//   rejectTopic(topic, message)   the edge refused one topic of the watchlist
//
// add(topic) resolves to {ok:true, updates?} or {ok:false, message}: over WebSocket it is a subscribe on the
// live connection; over HTTP (and over WebSocket between connections) it is one GET /api/snapshot for the new
// topic, which both checks the topic (a 4xx carries the edge's message) and gives its current value, since a
// resumed stream only carries what is newer.

import { HttpError, backoffDelay, cmpCursor, endpoint, errText, fetchJSON, normCursor, utf8Length } from './util.js';

/** TRANSPORTS names the transports by the values of the page's #transport select. */
export const TRANSPORTS = Object.freeze({
  ws: 'WebSocket',
  sse: 'Server-Sent Events',
  longpoll: 'Long polling',
  poll: 'Polling',
});

/** createTransport returns a stopped transport of the given kind; call start(). */
export function createTransport(kind, sink) {
  switch (kind) {
    case 'ws': return new WebSocketTransport(sink);
    case 'sse': return new SSETransport(sink);
    case 'longpoll': return new LongPollTransport(sink);
    case 'poll': return new PollTransport(sink);
    default: throw new Error(`transports: unknown transport ${kind}`);
  }
}

const SOON_MS = 250; // "reconnect now" (WebSocket 1012/1001) still waits up to this much, at random
const TRY_LATER_MS = 2000; // the least wait after WebSocket 1013 "try again later"
const REPLY_MS = 5000; // how long a WebSocket control request waits for its reply
const KEEPALIVE_MS = 5000; // WebSocket liveness check period
const IDLE_MS = 20000; // a WebSocket silent this long gets a ping...
const PONG_MS = 10000; // ...and is given up if still silent this long after it
const POLL_MS = 1000; // plain polling period
const LONGPOLL_WAIT = '25s'; // what long polls ask the edge to wait
const LONGPOLL_MS = 40000; // when the page gives up on one long poll itself

const topicParams = (topics) => topics.map((t) => ['topic', t]);

/** Transport holds what every transport shares: start/stop and reconnecting with backoff. */
class Transport {
  constructor(sink) {
    this.sink = sink;
    this.stopped = false;
    this.attempt = 0; // failed attempts since the last successful connect
    this.retryTimer = 0;
  }

  start() {
    this.connect();
  }

  /** stop closes everything for good; the sink hears nothing more. */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    this.close();
  }

  /** retryNow skips the rest of a backoff wait (the browser says it is online again). */
  retryNow() {
    if (!this.retryTimer || this.stopped) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    this.connect();
  }

  opened(serverCursor) {
    this.attempt = 0;
    this.sink.opened(serverCursor);
  }

  /** lost closes the connection and schedules the next attempt. */
  lost(reason, { soon = false, minDelay = 0 } = {}) {
    if (this.stopped) return;
    this.close();
    clearTimeout(this.retryTimer);
    this.attempt++;
    const wait = soon && this.attempt === 1 ? Math.random() * SOON_MS : backoffDelay(this.attempt);
    const delay = Math.round(Math.max(wait, minDelay));
    this.sink.retrying(this.attempt, delay, reason);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = 0;
      if (!this.stopped) this.connect();
    }, delay);
  }

  // The HTTP transports take a new topic list on their next request or reopened stream.
  add(topic) {
    return this.checkTopic(topic);
  }
  remove() {
    this.topicsChanged();
  }
  topicsChanged() {}

  async checkTopic(topic) {
    this.sink.request();
    try {
      const body = await fetchJSON(endpoint('api/snapshot', [['topic', topic]]), {
        timeout: REPLY_MS,
        onBytes: (n) => this.sink.bytes(n),
      });
      return { ok: true, updates: Array.isArray(body.updates) ? body.updates : [] };
    } catch (err) {
      if (err instanceof HttpError && err.status < 500) return { ok: false, message: err.message, code: err.code };
      return { ok: false, message: `could not check it with the server (${errText(err)}); try again` };
    }
  }

  /** refused shows a 4xx answer's message: the edge refused what was asked (a topic, most likely). */
  refused(err) {
    if (err instanceof HttpError && err.status >= 400 && err.status < 500) this.sink.serverError(err.message, err.code);
  }
}

/**
 * WebSocketTransport speaks the JSON control protocol on GET /ws: one subscribe for everything on connect
 * (with since= when resuming), subscribe/unsubscribe per watchlist edit, a ping when the line goes quiet.
 */
class WebSocketTransport extends Transport {
  constructor(sink) {
    super(sink);
    this.ws = null;
    this.ready = false; // open and subscribed (or subscribing)
    this.ids = 0;
    this.pending = new Map(); // request id -> {resolve, timer}
    this.firstSub = null; // the connect-time subscribe: {id, topics, since}
    this.keepalive = 0;
    this.lastRx = 0;
    this.pingAt = 0;
  }

  connect() {
    const url = new URL(endpoint('ws'));
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    this.sink.request(); // the upgrade
    let ws;
    try {
      ws = new WebSocket(url.href);
    } catch (err) {
      this.lost(errText(err));
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.handshake(ws);
    ws.onmessage = (e) => {
      if (this.ws === ws) this.frame(e.data);
    };
    ws.onerror = () => {}; // a close event always follows, with the code
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const reason = `closed ${e.code}${e.reason ? ': ' + e.reason : ''}`;
      if (e.code === 1012 || e.code === 1001) this.lost(reason, { soon: true }); // restart, going away: come back now
      else if (e.code === 1013) this.lost(reason, { minDelay: TRY_LATER_MS }); // try again later
      else this.lost(reason);
    };
  }

  async handshake(ws) {
    const since = await this.sink.prepare();
    if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
    this.ready = true;
    this.lastRx = performance.now();
    this.pingAt = 0;
    this.keepalive = setInterval(() => this.checkAlive(), KEEPALIVE_MS);
    this.opened();
    const topics = this.sink.topics();
    const id = this.nextId();
    this.firstSub = { id, topics, since };
    this.send({ type: 'subscribe', id, topics, ...(since ? { since } : {}) });
  }

  nextId() {
    return String(++this.ids);
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** request sends a control message and resolves with its reply; {ok:true, offline:true} if none can come. */
  request(msg) {
    const id = this.nextId();
    return new Promise((resolve) => {
      if (!this.ready || !this.send({ ...msg, id })) {
        resolve({ ok: true, offline: true });
        return;
      }
      const timer = setTimeout(() => this.settle(id, { ok: true, offline: true }), REPLY_MS);
      this.pending.set(id, { resolve, timer });
    });
  }

  settle(id, result) {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.resolve(result);
  }

  // A frame carries one or more JSON messages separated by "\n".
  frame(data) {
    this.lastRx = performance.now();
    this.pingAt = 0;
    if (typeof data !== 'string') {
      this.sink.bytes(data.byteLength || data.size || 0); // binary frames are not part of the protocol
      return;
    }
    this.sink.bytes(utf8Length(data));
    for (const line of data.split('\n')) {
      if (!line.trim()) continue;
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      if (msg && typeof msg === 'object') this.message(msg);
    }
  }

  message(m) {
    switch (m.type) {
      case 'update':
        this.sink.update(m.topic, m.cursor, m.data);
        break;
      case 'reset':
        this.sink.reset(m.cursor, m.reason || 'cursor older than the stream keeps');
        break;
      case 'subscribed':
      case 'unsubscribed':
        if (m.id != null) this.settle(String(m.id), { ok: true });
        break;
      case 'error':
        this.error(m);
        break;
      default: // pong, and whatever a later edge adds
    }
  }

  error(m) {
    const id = m.id == null ? '' : String(m.id);
    const message = m.message || m.code || 'refused';
    if (this.pending.has(id)) {
      this.settle(id, { ok: false, message, code: m.code });
      return;
    }
    this.sink.serverError(message, m.code);
    const sub = this.firstSub;
    if (sub && id === sub.id) {
      // The edge refused the connect-time subscribe as a whole: subscribe topic by topic, so that the good
      // ones flow and the bad ones are named and dropped.
      this.firstSub = null;
      if (sub.topics.length < 2) return;
      for (const topic of sub.topics) {
        this.request({ type: 'subscribe', topics: [topic], ...(sub.since ? { since: sub.since } : {}) }).then((r) => {
          if (!r.ok && !this.stopped) this.sink.rejectTopic(topic, r.message);
        });
      }
    }
  }

  checkAlive() {
    const now = performance.now();
    if (this.pingAt && now - this.pingAt > PONG_MS) {
      this.lost('no answer to ping');
    } else if (!this.pingAt && now - this.lastRx > IDLE_MS) {
      this.pingAt = now;
      this.send({ type: 'ping', id: this.nextId() });
    }
  }

  add(topic) {
    // Between connections, check the topic over HTTP and take its current value from there: the next
    // connect subscribes it with since=, which brings only what is newer.
    if (!this.ready) return this.checkTopic(topic);
    return this.request({ type: 'subscribe', topics: [topic] });
  }

  remove(topic) {
    if (this.ready) this.request({ type: 'unsubscribe', topics: [topic] });
  }

  topicsChanged() {} // add and remove already told the live connection

  close() {
    this.ready = false;
    this.firstSub = null;
    clearInterval(this.keepalive);
    this.keepalive = 0;
    for (const id of [...this.pending.keys()]) this.settle(id, { ok: true, offline: true });
    const ws = this.ws;
    this.ws = null;
    if (ws) quietClose(ws);
  }
}

// quietClose closes ws without its handlers firing. Closing a socket still connecting makes Chrome log an
// error, so such a socket is closed once it opens instead.
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
 * SSETransport reads GET /sse with EventSource. It does not leave reconnecting to the browser (fixed delay,
 * no backoff): on any error it closes the stream and opens a new one after backoff with lastEventId=<cursor>.
 * A changed topic list reopens the stream the same way, with no gap.
 */
class SSETransport extends Transport {
  constructor(sink) {
    super(sink);
    this.es = null;
    this.live = false; // a stream has opened since the last (re)connect began
    this.token = 0; // bumps to cancel a connect waiting on prepare()
    this.reopenTimer = 0;
  }

  async connect() {
    const token = ++this.token;
    const since = await this.sink.prepare();
    if (this.stopped || token !== this.token) return;
    this.open(since);
  }

  open(since) {
    this.closeStream();
    const params = topicParams(this.sink.topics());
    if (since) params.push(['lastEventId', since]);
    this.sink.request();
    let es;
    try {
      es = new EventSource(endpoint('sse', params));
    } catch (err) {
      this.lost(errText(err));
      return;
    }
    this.es = es;
    let isOpen = false;
    es.onopen = () => {
      if (this.es !== es) return;
      isOpen = true;
      if (!this.live) {
        this.live = true;
        this.opened();
      }
    };
    const onUpdate = (e) => {
      if (this.es === es) this.event(e);
    };
    es.addEventListener('quote', onUpdate);
    es.addEventListener('score', onUpdate);
    es.onmessage = onUpdate; // unnamed events, in case an edge sends them
    es.addEventListener('reset', (e) => {
      if (this.es !== es) return;
      this.sink.bytes(eventSize(e));
      let cursor = null;
      try {
        cursor = JSON.parse(e.data).cursor;
      } catch { /* a reset without a body is still a reset */ }
      this.sink.reset(cursor, 'cursor older than the stream keeps');
    });
    es.onerror = (e) => {
      if (this.es !== es) return;
      if (typeof e.data === 'string') {
        // An "event: error" the edge sent, not a failure of the stream.
        this.sink.bytes(eventSize(e));
        let body = null;
        try {
          body = JSON.parse(e.data);
        } catch { /* plain text */ }
        this.sink.serverError((body && (body.message || body.error)) || e.data, body && body.code);
        return;
      }
      // EventSource is CLOSED (not CONNECTING) after an HTTP error status: it cannot show the body, so ask
      // /api/snapshot the same question once per run of failures to learn and show the edge's message.
      const refused = !isOpen && es.readyState === EventSource.CLOSED;
      if (refused && this.attempt === 0) this.explain();
      this.lost(isOpen ? 'stream interrupted' : refused ? 'stream refused' : 'cannot connect');
    };
  }

  event(e) {
    this.sink.bytes(eventSize(e));
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      return;
    }
    if (!data || typeof data !== 'object') return;
    if (data.type === 'update' && data.data) this.sink.update(data.topic, data.cursor, data.data); // an envelope
    else this.sink.update(data.topic, e.lastEventId, data);
  }

  async explain() {
    this.sink.request();
    try {
      await fetchJSON(endpoint('api/snapshot', topicParams(this.sink.topics())), {
        timeout: REPLY_MS,
        onBytes: (n) => this.sink.bytes(n),
      });
    } catch (err) {
      if (!this.stopped) this.refused(err);
    }
  }

  topicsChanged() {
    if (!this.es) return; // a connect in progress reads the topics when it opens
    clearTimeout(this.reopenTimer);
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = 0;
      if (this.es && !this.stopped) this.open(this.sink.since());
    }, 100); // one reopen for a burst of edits
  }

  closeStream() {
    clearTimeout(this.reopenTimer);
    this.reopenTimer = 0;
    if (this.es) {
      this.es.close();
      this.es = null;
    }
  }

  close() {
    this.token++;
    this.live = false;
    this.closeStream();
  }
}

// eventSize estimates the bytes of one SSE event on the wire (EventSource hides the raw stream):
// "event: T\n" + "id: N\n" + "data: D\n" + "\n". Heartbeat comments are invisible and not counted.
function eventSize(e) {
  let n = utf8Length(e.data || '') + 8;
  if (e.type && e.type !== 'message') n += e.type.length + 8;
  if (e.lastEventId) n += e.lastEventId.length + 5;
  return n;
}

/**
 * LongPollTransport loops on GET /api/poll?topic=..&cursor=N&timeout=25s, taking the answer's cursor for the
 * next request. A changed topic list aborts the waiting request and asks again from the same cursor.
 */
class LongPollTransport extends Transport {
  constructor(sink) {
    super(sink);
    this.cursor = null; // the server's cursor from the last answer
    this.gen = 0; // bumps to end a running loop
    this.ctrl = null;
    this.restart = false;
  }

  connect() {
    this.run(++this.gen);
  }

  async run(gen) {
    let first = true;
    const current = () => !this.stopped && gen === this.gen;
    while (current()) {
      const sent = this.cursor || this.sink.since();
      const params = topicParams(this.sink.topics());
      if (sent) params.push(['cursor', sent]);
      params.push(['timeout', LONGPOLL_WAIT]);
      const ctrl = new AbortController();
      this.ctrl = ctrl;
      const began = performance.now();
      this.sink.request();
      let body;
      try {
        body = await fetchJSON(endpoint('api/poll', params), {
          signal: ctrl.signal,
          timeout: LONGPOLL_MS,
          onBytes: (n) => this.sink.bytes(n),
        });
      } catch (err) {
        if (!current()) return;
        if (this.restart) {
          this.restart = false; // topics changed: ask again at once
          continue;
        }
        this.refused(err);
        this.lost(errText(err));
        return;
      } finally {
        if (this.ctrl === ctrl) this.ctrl = null;
      }
      if (!current()) return;
      this.restart = false;
      const server = normCursor(body.cursor);
      const updates = Array.isArray(body.updates) ? body.updates : [];
      if (first) {
        first = false;
        this.opened(server);
      }
      if (body.reset) {
        this.sink.reset(server, 'cursor older than the stream keeps');
      } else if (sent && server && cmpCursor(server, sent) < 0) {
        const restarted = await this.sink.restarted(server, sent);
        if (!current()) return;
        if (restarted) {
          // The stream is behind the cursor we sent: it was recreated. Start over from a snapshot.
          this.sink.reset(server, 'the stream restarted');
          this.cursor = null;
          continue;
        }
        // An edge still catching up with the stream: ask it again from our cursor, not its own.
        await new Promise((r) => setTimeout(r, POLL_MS));
        continue;
      }
      for (const u of updates) if (u) this.sink.update(u.topic, u.cursor, u.data);
      if (server) this.cursor = server;
      // An edge that answers at once with nothing would make this loop spin: pace it.
      if (!updates.length && !body.reset && performance.now() - began < 250) {
        await new Promise((r) => setTimeout(r, POLL_MS));
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
    this.restart = false;
    if (this.ctrl) {
      this.ctrl.abort();
      this.ctrl = null;
    }
  }
}

/** PollTransport GETs /api/snapshot every second; it cannot resume, it sees the latest value of each topic. */
class PollTransport extends Transport {
  constructor(sink) {
    super(sink);
    this.gen = 0;
    this.timer = 0;
    this.ctrl = null;
  }

  connect() {
    this.tick(++this.gen, true);
  }

  async tick(gen, first) {
    const began = performance.now();
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    this.sink.request();
    let body;
    try {
      body = await fetchJSON(endpoint('api/snapshot', topicParams(this.sink.topics())), {
        signal: ctrl.signal,
        timeout: 10000,
        onBytes: (n) => this.sink.bytes(n),
      });
    } catch (err) {
      if (this.stopped || gen !== this.gen) return;
      this.refused(err);
      this.lost(errText(err));
      return;
    }
    if (this.stopped || gen !== this.gen) return;
    const server = normCursor(body.cursor);
    if (first) this.opened(server);
    const since = this.sink.since();
    if (server && since && cmpCursor(server, since) < 0) {
      // An edge still catching up answers with older values: skip them (the page keeps the newer ones it has);
      // only a recreated stream starts the page over.
      const restarted = await this.sink.restarted(server, since);
      if (this.stopped || gen !== this.gen) return;
      if (restarted) this.sink.reset(server, 'the stream restarted');
    }
    for (const u of Array.isArray(body.updates) ? body.updates : []) if (u) this.sink.update(u.topic, u.cursor, u.data);
    this.timer = setTimeout(() => this.tick(gen, false), Math.max(0, POLL_MS - (performance.now() - began)));
  }

  close() {
    this.gen++;
    clearTimeout(this.timer);
    if (this.ctrl) {
      this.ctrl.abort();
      this.ctrl = null;
    }
  }
}

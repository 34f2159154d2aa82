// app.js: the page's entry module. It keeps the state (watchlist, last values, cursors, counters), applies
// the updates of whichever transport is chosen, and has ui.js redraw what changed once per animation frame.
//
// For tests, window.livepush reads the current state (every field is a getter):
//   {transport, state, counters: {updates, duplicates, bytes, requests, latencyP50, latencyP90},
//    lastCursor, replayed, watchlist, attempt, perTopic}
// perTopic is {topic: {count, lastCursor}}: the updates received for each topic since the page loaded (counted
// as counters.updates counts them, but never reset) and the topic's last applied cursor.

import { TRANSPORTS, createTransport } from './transports.js';
import { UI, leagueName } from './ui.js';
import { Samples, cmpCursor, endpoint, fetchJSON, maxCursor, normCursor, nowMs, parseTs } from './util.js';

const DEFAULT_SYMBOLS = ['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'META', 'TSLA', 'JPM', 'V', 'XOM', 'BRK-B', 'NFLX'];
const SPORTS = 'sports.>'; // every match, always
const HISTORY = 60; // sparkline points per symbol
const LATENCY_SAMPLES = 200;
const MAX_FINALS = 6; // finished matches kept per league; older ones leave the board
const HOLD_MS = 5000; // "resumed" and "reset" stay up this long after the catch-up, then "live"
const FRESH_MS = 2000; // without the server's cursor, replay ends at the first update younger than this
const KEY_WATCHLIST = 'livepush.watchlist';
const KEY_TRANSPORT = 'livepush.transport';
const STORED_SYMBOL = /^[^\s.*>\u0000-\u001f\u007f]{1,64}$/; // what a stored entry must look like to be kept

const storage = {
  get(key) {
    try {
      return localStorage.getItem(key);
    } catch {
      return null; // storage disabled: the page still works, it just forgets
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch { /* as above */ }
  },
};

// ---- state ----

const model = {
  lastCursor: null, // the highest cursor applied from the stream: where a reconnect resumes
  cursors: new Map(), // topic -> last applied cursor; anything not newer is a duplicate
  quotes: new Map(), // symbol -> {q: last quote payload, hist: recent prices, move: 'up'|'down'|null}
  matches: new Map(), // topic -> last score payload
  catalog: new Set(), // market symbols the edge knows
  snapshotDue: new Set(), // topics just added over WebSocket: their first update is a snapshot
};
let watchlist = [];
let watched = new Set();
const adding = new Set(); // symbols whose add waits for the edge's answer; their updates are kept meanwhile

const counters = { updates: 0, duplicates: 0, bytes: 0, requests: 0 };
const perTopic = new Map(); // topic -> updates received since the page loaded; read only through window.livepush

function countUpdate(topic) {
  counters.updates++;
  if (typeof topic === 'string') perTopic.set(topic, (perTopic.get(topic) || 0) + 1);
}

const latency = new Samples(LATENCY_SAMPLES);
Object.defineProperties(counters, {
  latencyP50: { enumerable: true, get: () => latency.percentile(0.5) },
  latencyP90: { enumerable: true, get: () => latency.percentile(0.9) },
});

const conn = {
  state: 'connecting', // connecting | live | reconnecting | resumed | reset
  detail: '',
  open: false, // the transport is connected
  down: false, // it lost its connection and has not got it back yet
  attempt: 0,
  resumed: false, // counting replayed updates
  replayed: 0,
  catchup: null, // the server's cursor when this connection began: updates up to it are snapshot or replay
  tsPhase: false, // no such cursor: the catch-up lasts until the first fresh update
  pendingReset: '', // a reset noticed before the connection opened, to show once it does
  holdTimer: 0,
};

let kind = 'ws';
let transport = null;
let generation = 0; // bumps on each transport switch; a stopped transport's late calls are ignored
let ui = null;

window.livepush = Object.defineProperties(
  {},
  {
    transport: { enumerable: true, get: () => kind },
    state: { enumerable: true, get: () => conn.state },
    counters: { enumerable: true, get: () => counters },
    lastCursor: { enumerable: true, get: () => model.lastCursor },
    replayed: { enumerable: true, get: () => conn.replayed },
    watchlist: { enumerable: true, get: () => watchlist.slice() },
    attempt: { enumerable: true, get: () => conn.attempt },
    perTopic: {
      enumerable: true,
      get: () => Object.fromEntries([...perTopic].map(([t, count]) => [t, { count, lastCursor: model.cursors.get(t) || null }])),
    },
  },
);

// ---- drawing: once per frame, only what changed ----

const dirtyQuotes = new Set();
const dirtyMatches = new Map(); // topic -> the score changed
let frame = 0;

function redraw() {
  if (!frame) frame = requestAnimationFrame(flush);
}

function flush() {
  frame = 0;
  for (const sym of dirtyQuotes) {
    const s = model.quotes.get(sym);
    if (s && watched.has(sym)) {
      ui.renderQuote(sym, s.q, s.hist, s.move);
      s.move = null;
    }
  }
  dirtyQuotes.clear();
  for (const [topic, scored] of dirtyMatches) {
    const m = model.matches.get(topic);
    if (m) ui.renderMatch(topic, m, scored);
  }
  dirtyMatches.clear();
  ui.sortLeagues();
  ui.renderConn(conn.state, conn.state === 'resumed' ? `${conn.replayed} replayed` : conn.detail);
  ui.renderCounters(counters, model.lastCursor);
}

// ---- connection state ----

const SENTENCES = {
  connecting: 'Connecting',
  live: 'Live',
  reconnecting: 'Connection lost, reconnecting',
  resumed: 'Reconnected, catching up',
  reset: 'Stream reset, reloading the latest values',
};

function setState(state, detail = '') {
  const changed = state !== conn.state;
  conn.state = state;
  conn.detail = detail;
  if (changed) ui.announceConn(SENTENCES[state]);
  redraw();
}

// hold keeps "resumed" or "reset" on the indicator until HOLD_MS after the last replayed update.
function hold() {
  clearTimeout(conn.holdTimer);
  conn.holdTimer = setTimeout(() => {
    if (conn.open && (conn.state === 'resumed' || conn.state === 'reset')) {
      conn.resumed = false;
      setState('live');
    }
  }, HOLD_MS);
}

function onOpened(serverCursor) {
  if (serverCursor !== undefined) conn.catchup = normCursor(serverCursor);
  conn.tsPhase = !conn.catchup;
  const resumed = conn.down && model.lastCursor != null;
  conn.open = true;
  conn.down = false;
  conn.attempt = 0;
  conn.resumed = false;
  if (conn.pendingReset) {
    const why = conn.pendingReset;
    conn.pendingReset = '';
    setState('reset', why);
    hold();
  } else if (resumed) {
    conn.resumed = true;
    conn.replayed = 0;
    setState('resumed');
    hold();
  } else {
    setState('live');
  }
}

function onRetrying(attempt, delay, reason) {
  clearTimeout(conn.holdTimer);
  conn.open = false;
  conn.down = true;
  conn.resumed = false;
  conn.attempt = attempt;
  setState('reconnecting', `attempt ${attempt}, next in ${(delay / 1000).toFixed(1)} s${reason ? ` (${reason})` : ''}`);
}

// onReset forgets every cursor: the snapshot that follows is the new truth, even if the stream went backwards.
function onReset(cursor, reason) {
  const c = normCursor(cursor);
  model.cursors.clear();
  model.snapshotDue.clear();
  model.lastCursor = null;
  if (c) conn.catchup = maxCursor(conn.catchup, c);
  conn.resumed = false;
  const why = reason || 'fresh snapshot';
  if (!conn.open) {
    conn.pendingReset = why;
    return;
  }
  setState('reset', why);
  hold();
}

// ---- updates ----

/**
 * applyUpdate applies one update unless it is a duplicate (cursor not newer than the topic's last).
 * fromSnapshot marks a value fetched beside the stream (a checked add): it must not move the resume point.
 */
function applyUpdate(topic, cursor, data, fromSnapshot = false) {
  if (!data || typeof data !== 'object') return;
  if (typeof topic !== 'string' || !topic) topic = data.topic;
  if (typeof topic !== 'string') return;
  let sym = null;
  if (topic.startsWith('market.')) {
    sym = topic.slice(7);
    if (!watched.has(sym) && !adding.has(sym)) return; // removed a moment ago
  } else if (!topic.startsWith('sports.')) {
    return;
  }
  const c = normCursor(cursor);
  if (c) {
    const prev = model.cursors.get(topic);
    if (prev && cmpCursor(c, prev) <= 0) {
      counters.duplicates++;
      return;
    }
    model.cursors.set(topic, c);
  }
  // A new topic's first value is its snapshot, possibly older than updates of other topics still on
  // their way: resuming after it could skip those, so it does not move the resume point.
  const snapshot = fromSnapshot || model.snapshotDue.delete(topic);
  if (c && !snapshot) model.lastCursor = maxCursor(model.lastCursor, c);

  const ts = parseTs(data.ts);
  let catchup = snapshot;
  if (!catchup) {
    if (conn.catchup) {
      catchup = c != null && cmpCursor(c, conn.catchup) <= 0;
    } else if (conn.tsPhase) {
      if (Number.isFinite(ts) && nowMs() - ts < FRESH_MS) conn.tsPhase = false;
      else catchup = true;
    }
    if (catchup && conn.resumed) {
      conn.replayed++;
      hold();
    }
  }
  // Latency is measured on live updates only: a snapshot or replay is as old as it is.
  if (!catchup && Number.isFinite(ts)) latency.add(nowMs() - ts);

  if (sym) applyQuote(sym, data);
  else applyScore(topic, data, catchup);
}

function applyQuote(sym, q) {
  let s = model.quotes.get(sym);
  if (!s) model.quotes.set(sym, (s = { q: null, hist: [], move: null }));
  const price = Number(q.price);
  if (q.price != null && Number.isFinite(price)) {
    if (s.q) {
      const before = Number(s.q.price);
      if (price > before) s.move = 'up';
      else if (price < before) s.move = 'down';
    }
    s.hist.push(price);
    if (s.hist.length > HISTORY) s.hist.shift();
  }
  s.q = q;
  dirtyQuotes.add(sym);
  redraw();
}

const teamName = (side, fallback) => (side && side.name) || fallback;
const teamScore = (side) => (side && side.score != null ? String(side.score) : '0');

function applyScore(topic, m, catchup) {
  const league = String(m.league || topic.split('.')[1] || 'other');
  const prev = model.matches.get(topic);
  model.matches.set(topic, m);
  let scored = false;
  if (prev && !catchup) {
    // Announced: a score change, a final whistle, a start. Not the clock.
    const changed = teamScore(m.home) !== teamScore(prev.home) || teamScore(m.away) !== teamScore(prev.away);
    const line = `${teamName(m.home, 'Home')} ${teamScore(m.home)}, ${teamName(m.away, 'Away')} ${teamScore(m.away)}`;
    const name = leagueName(league);
    if (m.status === 'final' && prev.status !== 'final') ui.announce(`Final, ${name}: ${line}`);
    else if (changed) ui.announce(`${name}: ${line}${m.event ? `, ${m.event}` : ''}`);
    else if (m.status === 'live' && prev.status === 'scheduled') {
      ui.announce(`${name}: ${teamName(m.home, 'Home')} against ${teamName(m.away, 'Away')} has started`);
    }
    scored = changed;
  }
  if (m.status === 'final' && (!prev || prev.status !== 'final')) pruneFinals(league);
  if (model.matches.has(topic)) dirtyMatches.set(topic, dirtyMatches.get(topic) || scored);
  redraw();
}

function pruneFinals(league) {
  const finals = [];
  for (const [topic, m] of model.matches) {
    if (m.status === 'final' && String(m.league || topic.split('.')[1]) === league) finals.push([topic, parseTs(m.ts) || 0]);
  }
  if (finals.length <= MAX_FINALS) return;
  finals.sort((a, b) => b[1] - a[1]);
  for (const [topic] of finals.slice(MAX_FINALS)) {
    model.matches.delete(topic);
    dirtyMatches.delete(topic);
    ui.removeMatch(topic);
  }
}

// ---- catalog and watchlist ----

function applyCatalog(body) {
  if (!body || !Array.isArray(body.topics)) return;
  const symbols = new Set();
  for (const t of body.topics) {
    const topic = t && t.topic;
    if (typeof topic === 'string' && topic.startsWith('market.')) symbols.add(topic.slice(7));
  }
  model.catalog = symbols;
  ui.setCatalog([...symbols].sort());
}

/** fetchCatalog loads GET /api/topics into the symbol list; it returns the body, or null. */
async function fetchCatalog(timeout) {
  try {
    const body = await fetchJSON(endpoint('api/topics'), { timeout });
    applyCatalog(body);
    return body;
  } catch {
    return null;
  }
}

function loadWatchlist() {
  const raw = storage.get(KEY_WATCHLIST);
  if (raw == null) return null;
  try {
    const list = JSON.parse(raw);
    if (!Array.isArray(list)) return null;
    return [...new Set(list.filter((s) => typeof s === 'string' && STORED_SYMBOL.test(s)))];
  } catch {
    return null;
  }
}

// The default list keeps the well-known symbols the edge has; if it has none of them, its first dozen.
function defaultWatchlist() {
  if (!model.catalog.size) return DEFAULT_SYMBOLS.slice();
  const known = DEFAULT_SYMBOLS.filter((s) => model.catalog.has(s));
  return known.length ? known : [...model.catalog].sort().slice(0, DEFAULT_SYMBOLS.length);
}

function setWatchlist(list, save) {
  watchlist = list;
  watched = new Set(list);
  if (save) storage.set(KEY_WATCHLIST, JSON.stringify(list));
  ui.setWatchlist(list);
  for (const sym of list) if (model.quotes.has(sym)) dirtyQuotes.add(sym);
  redraw();
}

function topics() {
  return [...watchlist.map((s) => `market.${s}`), SPORTS];
}

async function onAdd(raw) {
  const sym = String(raw || '').trim().toUpperCase();
  if (!sym) {
    ui.addMessage('Type a symbol to add, for example AAPL.', true);
    return;
  }
  if (/[*>]/.test(sym)) {
    ui.addMessage('Type one symbol, not a pattern.', true);
    return;
  }
  if (watched.has(sym)) {
    ui.addMessage(`${sym} is already on the watchlist.`);
    return;
  }
  if (adding.has(sym)) return;
  const topic = `market.${sym}`;
  const via = transport;
  adding.add(sym);
  model.snapshotDue.add(topic);
  ui.addMessage(`Adding ${sym}…`);
  let res;
  try {
    res = await via.add(topic);
  } catch (err) {
    res = { ok: false, message: String((err && err.message) || err) };
  }
  adding.delete(sym);
  if (!res.ok) {
    model.snapshotDue.delete(topic);
    model.quotes.delete(sym);
    model.cursors.delete(topic);
    ui.addMessage(`Cannot add ${sym}: ${res.message}`, true);
    return;
  }
  if (watched.has(sym)) return;
  setWatchlist([...watchlist, sym], true);
  if (Array.isArray(res.updates)) {
    model.snapshotDue.delete(topic);
    for (const u of res.updates) {
      if (!u) continue;
      if (via === transport) countUpdate(u.topic || (u.data && u.data.topic));
      applyUpdate(u.topic, u.cursor, u.data, true);
    }
  }
  if (via === transport) transport.topicsChanged();
  else transport.add(topic).then(() => transport.topicsChanged()); // switched meanwhile: tell the new one
  ui.clearInput();
  ui.addMessage(
    model.catalog.size && !model.catalog.has(sym)
      ? `Added ${sym}. The catalog does not list it: its row fills when quotes arrive.`
      : `Added ${sym}.`,
  );
}

function onRemove(sym) {
  if (!watched.has(sym)) return;
  const topic = `market.${sym}`;
  ui.focusAfterRemove(sym);
  setWatchlist(
    watchlist.filter((s) => s !== sym),
    true,
  );
  model.quotes.delete(sym);
  model.cursors.delete(topic); // so that adding it again takes its snapshot
  model.snapshotDue.delete(topic);
  dirtyQuotes.delete(sym);
  transport.remove(topic);
  ui.addMessage(`Removed ${sym}.`);
}

// rejectTopic drops a watchlist symbol the edge refused when the whole list was subscribed.
function rejectTopic(topic, message) {
  if (topic.startsWith('market.') && watched.has(topic.slice(7))) {
    const sym = topic.slice(7);
    onRemove(sym);
    ui.addMessage(`Removed ${sym}: ${message}`, true);
  } else {
    ui.notify(`Server refused ${topic}: ${message}`);
  }
}

// ---- transports ----

// readyCursor is the edge's cursor if it says it is ready (caught up with the stream), else null. A cursor behind
// ours from an edge that just started and is still catching up is not a new stream; only a ready edge's is.
async function readyCursor() {
  return (await readiness()).ready;
}

// readiness asks /readyz: ready is the edge's cursor if it has caught up with the stream, target (when it has not)
// the cursor it is catching up to, which still tells replayed updates from live ones.
async function readiness() {
  try {
    const body = await fetchJSON(endpoint('readyz'), { timeout: 2000 });
    return { ready: normCursor(body.cursor), target: null };
  } catch (err) {
    return { ready: null, target: normCursor(err && err.body && err.body.target) };
  }
}

function makeSink(gen) {
  const mine = () => gen === generation;
  return {
    topics,
    since: () => model.lastCursor,
    async prepare() {
      // The server's cursor before (re)subscribing: updates up to it are snapshot or replay, not live.
      const body = await fetchCatalog(2000);
      if (!mine()) return null;
      let c = body ? normCursor(body.cursor) : null;
      if (c && model.lastCursor && cmpCursor(c, model.lastCursor) < 0) {
        // Behind ours: a new stream only if a caught-up edge says so. One still catching up says how far it goes,
        // which bounds the replay; without even that, the catch-up ends by time stamps.
        const r = await readiness();
        if (!mine()) return null;
        c = r.ready;
        if (!c && r.target && cmpCursor(r.target, model.lastCursor) >= 0) {
          conn.catchup = r.target;
          return model.lastCursor;
        }
      }
      conn.catchup = c;
      if (c && model.lastCursor && cmpCursor(c, model.lastCursor) < 0) {
        onReset(c, 'the stream restarted'); // behind our cursor: a new stream; since= would skip it all
        return null;
      }
      return model.lastCursor;
    },
    async restarted(serverCursor, ours) {
      const c = normCursor(serverCursor);
      if (!c || !ours || cmpCursor(c, ours) >= 0) return false;
      const head = await readyCursor();
      return !!head && cmpCursor(head, ours) < 0;
    },
    request() {
      if (!mine()) return;
      counters.requests++;
      redraw();
    },
    bytes(n) {
      if (!mine()) return;
      counters.bytes += n;
      redraw();
    },
    opened(serverCursor) {
      if (mine()) onOpened(serverCursor);
    },
    retrying(attempt, delay, reason) {
      if (mine()) onRetrying(attempt, delay, reason);
    },
    update(topic, cursor, data) {
      if (!mine()) return;
      countUpdate(topic || (data && data.topic));
      applyUpdate(topic, cursor, data);
      redraw();
    },
    reset(cursor, reason) {
      if (mine()) onReset(cursor, reason);
    },
    serverError(message, code) {
      if (mine()) ui.notify(`Server: ${message}${code ? ` (${code})` : ''}`);
    },
    rejectTopic(topic, message) {
      if (mine()) rejectTopic(topic, message);
    },
  };
}

function switchTransport(next) {
  if (!Object.hasOwn(TRANSPORTS, next)) return;
  if (transport) transport.stop();
  generation++;
  kind = next;
  storage.set(KEY_TRANSPORT, next);
  ui.setTransport(next);
  counters.updates = counters.duplicates = counters.bytes = counters.requests = 0;
  latency.clear();
  clearTimeout(conn.holdTimer);
  Object.assign(conn, { open: false, down: false, attempt: 0, resumed: false, replayed: 0, catchup: null, tsPhase: false, pendingReset: '' });
  setState('connecting', `via ${TRANSPORTS[next]}`);
  // The new transport resumes from the last cursor: switching loses nothing.
  transport = createTransport(next, makeSink(generation));
  transport.start();
}

function initialTransport() {
  const asked = new URLSearchParams(location.search).get('transport'); // ?transport=sse, handy for tests
  if (asked && Object.hasOwn(TRANSPORTS, asked)) return asked;
  const stored = storage.get(KEY_TRANSPORT);
  return stored && Object.hasOwn(TRANSPORTS, stored) ? stored : 'ws';
}

async function main() {
  ui = new UI({ add: onAdd, remove: onRemove, transport: switchTransport });
  kind = initialTransport();
  ui.setTransport(kind);
  setState('connecting', `via ${TRANSPORTS[kind]}`);
  const stored = loadWatchlist();
  if (stored) {
    setWatchlist(stored, false);
    fetchCatalog(3000);
  } else {
    await fetchCatalog(3000); // the defaults depend on what the edge has
    setWatchlist(defaultWatchlist(), false);
  }
  switchTransport(kind);
  window.addEventListener('online', () => transport && transport.retryNow());
}

main();

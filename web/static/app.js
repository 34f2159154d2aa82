// app.js: the page's entry module. It follows its topics through the client library (livepush.js: transports,
// reconnecting, resuming, dropping duplicates), keeps the state (watchlist, last values, counters) and has ui.js
// redraw what changed once per animation frame.
//
// For tests, window.livepush reads the current state (every field is a getter):
//   {transport, state, counters: {updates, duplicates, bytes, requests, latencyP50, latencyP90},
//    lastCursor, replayed, watchlist, attempt, perTopic}
// perTopic is {topic: {count, lastCursor}}: the updates received for each topic since the page loaded (counted
// as counters.updates counts them, but never reset) and the topic's last applied cursor.

import { connect } from './livepush.js';
import { UI, leagueName } from './ui.js';
import { Samples, endpoint, fetchJSON, nowMs, parseTs } from './util.js';

/** TRANSPORTS names the transports by the values of the page's #transport select, as the library calls them. */
const TRANSPORTS = Object.freeze({
  ws: { label: 'WebSocket', lib: 'websocket' },
  sse: { label: 'Server-Sent Events', lib: 'sse' },
  longpoll: { label: 'Long polling', lib: 'longpoll' },
  poll: { label: 'Polling', lib: 'poll' },
});
const pageKind = (lib) => Object.keys(TRANSPORTS).find((k) => TRANSPORTS[k].lib === lib) || 'ws';

const DEFAULT_SYMBOLS = ['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'META', 'TSLA', 'JPM', 'V', 'XOM', 'BRK-B', 'NFLX'];
const SPORTS = 'sports.>'; // every match, always
const HISTORY = 60; // sparkline points per symbol
const LATENCY_SAMPLES = 200;
const MAX_FINALS = 6; // finished matches kept per league; older ones leave the board
const HOLD_MS = 5000; // "resumed" and "reset" stay up this long after the catch-up, then "live"
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
  cursors: new Map(), // topic -> last applied cursor
  quotes: new Map(), // symbol -> {q: last quote payload, hist: recent prices, move: 'up'|'down'|null}
  matches: new Map(), // topic -> last score payload
  catalog: new Set(), // market symbols the edge knows
};
let watchlist = [];
let watched = new Set();
const adding = new Set(); // symbols whose add waits for the edge's answer; their updates are kept meanwhile
const subs = new Map(); // symbol -> its subscription; SPORTS has one of its own

let client = null;
let mode = 'auto'; // 'auto' or the page's name of a forced transport
let kind = 'ws'; // the transport in use

const counters = { updates: 0 };
const base = { bytes: 0, requests: 0, duplicates: 0 }; // the client's counts when the counters were last reset
const perTopic = new Map(); // topic -> updates received since the page loaded; read only through window.livepush

function countUpdate(topic) {
  counters.updates++;
  if (typeof topic === 'string') perTopic.set(topic, (perTopic.get(topic) || 0) + 1);
}

const latency = new Samples(LATENCY_SAMPLES);
Object.defineProperties(counters, {
  duplicates: { enumerable: true, get: () => client.stats.duplicates - base.duplicates },
  bytes: { enumerable: true, get: () => client.stats.bytes - base.bytes },
  requests: { enumerable: true, get: () => client.stats.requests - base.requests },
  latencyP50: { enumerable: true, get: () => latency.percentile(0.5) },
  latencyP90: { enumerable: true, get: () => latency.percentile(0.9) },
});

function resetCounters() {
  counters.updates = 0;
  Object.assign(base, { bytes: client.stats.bytes, requests: client.stats.requests, duplicates: client.stats.duplicates });
  latency.clear();
}

const conn = {
  state: 'connecting', // connecting | live | reconnecting | resumed | reset
  detail: '',
  open: false, // the client is live
  attempt: 0,
  resumed: false, // counting replayed updates
  replayed: 0,
  pendingReset: '', // a reset heard before the connection opened, to show once it does
  holdTimer: 0,
};

let ui = null;

window.livepush = Object.defineProperties(
  {},
  {
    transport: { enumerable: true, get: () => kind },
    state: { enumerable: true, get: () => conn.state },
    counters: { enumerable: true, get: () => counters },
    lastCursor: { enumerable: true, get: () => client && client.cursor },
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
  ui.renderCounters(counters, client.cursor);
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

// onState follows the client's state: 'live' after 'reconnecting' with a cursor is a resume, and its catch-up
// (the updates marked catchUp) is counted as replayed.
function onState(e) {
  switch (e.state) {
    case 'connecting':
      setState('connecting', `via ${TRANSPORTS[kind].label}`);
      break;
    case 'reconnecting':
      clearTimeout(conn.holdTimer);
      conn.open = false;
      conn.resumed = false;
      conn.attempt = e.attempt;
      setState('reconnecting', `attempt ${e.attempt}, next in ${(e.delay / 1000).toFixed(1)} s${e.reason ? ` (${e.reason})` : ''}`);
      break;
    case 'live':
      onOpened(e.resumed);
      fetchCatalog(2000); // the edge may know more symbols by now
      break;
    default: // idle, closed: the page always follows something, and never closes its client
  }
}

function onOpened(resumed) {
  conn.open = true;
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

// onReset forgets every cursor: the snapshot that follows is the new truth, even if the stream went backwards.
function onReset(e) {
  model.cursors.clear();
  conn.resumed = false;
  const why = e.reason === 'stream_recreated' ? 'the stream restarted' : 'cursor older than the stream keeps';
  if (!conn.open) {
    conn.pendingReset = why;
    return;
  }
  setState('reset', why);
  hold();
}

// onTransport shows the transport the client moved to by itself (a fallback, or back up after one).
function onTransport(e) {
  kind = pageKind(e.transport);
  ui.setTransport(kind, mode === 'auto');
  redraw();
}

// onError shows what the edge refused. A refused watchlist symbol leaves the watchlist.
function onError(e) {
  const patterns = e.subscription ? e.subscription.patterns : [];
  if (patterns.length === 1 && patterns[0].startsWith('market.')) {
    const sym = patterns[0].slice(7);
    if (adding.has(sym)) return; // onAdd says it
    if (watched.has(sym)) {
      onRemove(sym);
      ui.addMessage(`Removed ${sym}: ${e.message}`, true);
      return;
    }
  }
  if (e.code === 'unsubscribed' || e.code === 'closed') return;
  ui.notify(`Server: ${e.message}${e.code ? ` (${e.code})` : ''}`);
}

// ---- updates ----

/** onUpdate applies one update from the client, which has dropped duplicates and says whether it is catch-up. */
function onUpdate(u) {
  countUpdate(u.topic);
  applyUpdate(u.topic, u.cursor, u.data, u.catchUp);
  redraw();
}

function applyUpdate(topic, cursor, data, catchup) {
  if (!data || typeof data !== 'object' || typeof topic !== 'string') return;
  let sym = null;
  if (topic.startsWith('market.')) {
    sym = topic.slice(7);
    if (!watched.has(sym) && !adding.has(sym)) return; // removed a moment ago
  } else if (!topic.startsWith('sports.')) {
    return;
  }
  model.cursors.set(topic, cursor);
  if (catchup && conn.resumed) {
    conn.replayed++;
    hold();
  }
  // Latency is measured on live updates only: a snapshot or replay is as old as it is.
  const ts = parseTs(data.ts);
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

function follow(sym) {
  const sub = client.subscribe(`market.${sym}`, onUpdate);
  subs.set(sym, sub);
  return sub;
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
  adding.add(sym);
  ui.addMessage(`Adding ${sym}…`);
  const sub = follow(sym);
  try {
    await sub.ready; // the edge accepted it; its snapshot is on its way or here
  } catch (err) {
    adding.delete(sym);
    if (subs.get(sym) === sub) subs.delete(sym);
    model.quotes.delete(sym);
    model.cursors.delete(`market.${sym}`);
    ui.addMessage(`Cannot add ${sym}: ${(err && err.message) || err}`, true);
    return;
  }
  adding.delete(sym);
  if (watched.has(sym)) return;
  setWatchlist([...watchlist, sym], true);
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
  model.cursors.delete(topic);
  dirtyQuotes.delete(sym);
  const sub = subs.get(sym);
  subs.delete(sym);
  if (sub) sub.unsubscribe(); // the client forgets the topic too: adding it again takes its snapshot
  ui.addMessage(`Removed ${sym}.`);
}

// ---- the client ----

function switchTransport(next) {
  if (next !== 'auto' && !Object.hasOwn(TRANSPORTS, next)) return;
  mode = next;
  storage.set(KEY_TRANSPORT, next);
  kind = next === 'auto' ? 'ws' : next;
  ui.setTransport(kind, mode === 'auto');
  resetCounters();
  clearTimeout(conn.holdTimer);
  Object.assign(conn, { open: false, attempt: 0, resumed: false, replayed: 0, pendingReset: '' });
  setState('connecting', `via ${TRANSPORTS[kind].label}`);
  // The client resumes from its cursor on the new transport: switching loses nothing.
  client.setTransport(next === 'auto' ? 'auto' : TRANSPORTS[next].lib);
}

function initialMode() {
  const asked = new URLSearchParams(location.search).get('transport'); // ?transport=sse, handy for tests
  if (asked && (asked === 'auto' || Object.hasOwn(TRANSPORTS, asked))) return asked;
  const stored = storage.get(KEY_TRANSPORT);
  return stored && (stored === 'auto' || Object.hasOwn(TRANSPORTS, stored)) ? stored : 'auto';
}

async function main() {
  ui = new UI({ add: onAdd, remove: onRemove, transport: switchTransport });
  mode = initialMode();
  kind = mode === 'auto' ? 'ws' : mode;
  client = connect({ transport: mode === 'auto' ? 'auto' : TRANSPORTS[mode].lib });
  client.on('state', onState);
  client.on('reset', onReset);
  client.on('transport', onTransport);
  client.on('error', onError);
  ui.setTransport(kind, mode === 'auto');
  setState('connecting', `via ${TRANSPORTS[kind].label}`);
  const stored = loadWatchlist();
  if (stored) {
    setWatchlist(stored, false);
    fetchCatalog(3000);
  } else {
    await fetchCatalog(3000); // the defaults depend on what the edge has
    setWatchlist(defaultWatchlist(), false);
  }
  for (const sym of watchlist) follow(sym);
  client.subscribe(SPORTS, onUpdate);
  setInterval(redraw, 1000); // the byte and request counters move between updates too
}

main();

// app.js: the page's entry module. It follows its topics through the client library (livepush.js: transports,
// reconnecting, resuming, dropping duplicates), keeps the state (watchlist, board, last values, the detail view's
// history, counters) and has ui.js redraw what changed once per animation frame.
//
// For tests, window.livepush reads the current state (every field is a getter):
//   {transport, state, counters: {updates, duplicates, bytes, requests, latencyP50, latencyP90},
//    lastCursor, replayed, watchlist, attempt, perTopic, session, view, board, detail, comparison}
// perTopic is {topic: {count, lastCursor}}: the updates received for each topic since the page loaded (counted
// as counters.updates counts them, but never reset) and the topic's last applied cursor. detail is the detail
// view: {topic, loaded, joinCursor, lastCursor, interval, bars} for a symbol, {topic, loaded, joinCursor,
// lastCursor, cursors} for a match.

import { compareCursors, connect } from './livepush.js';
import { BarSeries, UpdateSeries, fill, history as readHistory } from './series.js';
import { KINDS, Measure, measure } from './transports.js';
import { UI, leagueName } from './ui.js';
import { Samples, endpoint, fetchJSON, nowMs, parseTs } from './util.js';

/** TRANSPORTS names the transports by the values of the page's #transport select, as the library calls them. */
const TRANSPORTS = Object.freeze(Object.fromEntries(KINDS.map((k) => [k.kind, k])));
const pageKind = (lib) => Object.keys(TRANSPORTS).find((k) => TRANSPORTS[k].lib === lib) || 'ws';

const DEFAULT_SYMBOLS = ['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'META', 'TSLA', 'JPM', 'V', 'XOM', 'BRK-B', 'NFLX'];
const SPORTS = 'sports.>'; // every match, always
const HISTORY = 60; // sparkline points per symbol: bars of SPARK_INTERVAL
const SPARK_INTERVAL = '5s';
const CHART_BARS = 60; // fewer 5-second bars than this: the chart asks for 1-second bars instead
const LATENCY_SAMPLES = 200;
const MAX_FINALS = 6; // finished matches kept per league; older ones leave the board
const HOLD_MS = 5000; // "resumed" and "reset" stay up this long after the catch-up, then "live"
const RESORT_MS = 1000; // a board sorted by change or volume reorders at most this often
const COMPARE_MS = 5000; // how long Compare all follows each other transport
const KEY_WATCHLIST = 'livepush.watchlist';
const KEY_TRANSPORT = 'livepush.transport';
const KEY_VIEW = 'livepush.view';
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
  session: '', // the market's trading session, from the newest quote
};
let watchlist = [];
let watched = new Set();
const adding = new Set(); // symbols whose add waits for the edge's answer; their updates are kept meanwhile
const subs = new Map(); // symbol -> its subscription; SPORTS has one of its own
const sparks = new Map(); // symbol -> its sparkline's BarSeries, from the history and live
const listeners = new Map(); // topic -> Set of series fed with its updates
const board = { view: 'watch', filter: '', sort: null, dir: -1, key: '', sortedAt: 0, dirty: true };
let allSub = null; // market.* while the board shows every symbol
let detail = null; // {topic, sym, sub, series, abort}

let client = null;
let mode = 'auto'; // 'auto' or the page's name of a forced transport
let kind = 'ws'; // the transport in use

const counters = { updates: 0 };
const base = { bytes: 0, requests: 0, duplicates: 0 }; // the client's counts when the counters were last reset
const perTopic = new Map(); // topic -> updates received since the page loaded; read only through window.livepush
const measures = new Map(); // transport kind -> its Measure: the one in use live, the others from Compare all
const measuring = new Set();

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

/** liveMeasure is the transport in use, measured since the counters were last reset. */
function liveMeasure() {
  const m = new Measure();
  Object.assign(m, { updates: counters.updates, bytes: counters.bytes, requests: counters.requests, delays: latency, at: Date.now() });
  return m;
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

const copyBars = (bars) => bars.map((b) => ({ ...b }));

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
    session: { enumerable: true, get: () => model.session },
    view: { enumerable: true, get: () => board.view },
    board: { enumerable: true, get: () => boardSymbols() },
    detail: {
      enumerable: true,
      get: () => {
        if (!detail || !detail.series) return null;
        const s = detail.series;
        const d = { topic: detail.topic, loaded: s.loaded, joinCursor: s.joinCursor, lastCursor: s.lastCursor, error: s.error };
        if (s instanceof BarSeries) return { ...d, interval: s.interval, bars: copyBars(s.bars) };
        return { ...d, cursors: s.updates.map((u) => u.cursor) };
      },
    },
    comparison: {
      enumerable: true,
      get: () => Object.fromEntries([...measures].map(([k, m]) => [k, {
        updates: m.updates, bytesPerUpdate: m.bytesPerUpdate, requestsPerUpdate: m.requestsPerUpdate, p50: m.p50, p90: m.p90,
      }])),
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
  drawBoard();
  drawTape();
  for (const sym of dirtyQuotes) {
    const s = model.quotes.get(sym);
    if (!s) continue;
    const spark = sparks.get(sym);
    const hist = spark && spark.loaded && spark.bars.length ? spark.bars.map((b) => b.close) : s.hist;
    ui.renderQuote(sym, s.q, hist, s.move);
    s.move = null;
  }
  dirtyQuotes.clear();
  for (const [topic, scored] of dirtyMatches) {
    const m = model.matches.get(topic);
    if (m) ui.renderMatch(topic, m, scored);
  }
  dirtyMatches.clear();
  ui.sortLeagues();
  drawDetail();
  ui.renderSession(model.session);
  ui.renderConn(conn.state, conn.state === 'resumed' ? `${conn.replayed} replayed` : conn.detail);
  ui.renderCounters(counters, client.cursor);
  measures.set(kind, liveMeasure());
  ui.renderComparison(measures, measuring);
}

// ---- the board ----

/** boardSymbols is what the board shows, in order: the list of its view, searched, sorted. */
function boardSymbols() {
  const list = board.view === 'all' ? [...new Set([...model.catalog, ...watchlist])].sort() : watchlist.slice();
  const f = board.filter.trim().toUpperCase();
  const shown = f ? list.filter((s) => s.includes(f)) : list;
  if (!board.sort) return shown;
  const value = (s) => {
    const q = model.quotes.get(s)?.q;
    const v = board.sort === 'change' ? Number(q?.changePct) : Number(q?.volume);
    return Number.isFinite(v) ? v : null;
  };
  if (board.sort === 'symbol') return shown.sort((a, b) => board.dir * (a < b ? -1 : a > b ? 1 : 0));
  return shown.sort((a, b) => {
    const x = value(a);
    const y = value(b);
    if (x == null || y == null) return x == null ? (y == null ? 0 : 1) : -1; // no value yet: last
    return board.dir * (x - y) || (a < b ? -1 : 1);
  });
}

function drawBoard() {
  const resort = board.sort && board.sort !== 'symbol' && performance.now() - board.sortedAt > RESORT_MS;
  if (!board.dirty && !resort) return;
  board.dirty = false;
  board.sortedAt = performance.now();
  const symbols = boardSymbols();
  const key = `${board.view}|${symbols.join(',')}|${watchlist.join(',')}`;
  if (key === board.key) return;
  const fresh = symbols.filter((s) => !ui.rows.has(s));
  board.key = key;
  ui.setBoard(symbols, watched, {
    empty: board.view === 'watch' && !watchlist.length,
    filtered: board.filter.trim() !== '',
  });
  ui.setCounts(watchlist.length, new Set([...model.catalog, ...watchlist]).size);
  for (const s of fresh) if (model.quotes.has(s)) dirtyQuotes.add(s);
}

function drawTape() {
  const live = [...model.matches].filter(([, m]) => m.status === 'live').map(([t]) => t).sort();
  if (!ui.setTape(watchlist, live)) return;
  // New items: fill them with what is known.
  for (const sym of watchlist) if (model.quotes.has(sym)) dirtyQuotes.add(sym);
  for (const t of live) dirtyMatches.set(t, dirtyMatches.get(t) || false);
}

function setView(view) {
  if (view !== 'watch' && view !== 'all') return;
  if (view === board.view) return;
  board.view = view;
  storage.set(KEY_VIEW, view);
  ui.setView(view);
  if (view === 'all' && !allSub) {
    allSub = client.subscribe('market.*', onUpdate, { maxRate: 4 });
    fetchCatalog(3000);
  } else if (view === 'watch' && allSub) {
    allSub.unsubscribe();
    allSub = null;
    for (const sym of model.quotes.keys()) if (!interesting(sym)) model.quotes.delete(sym);
  }
  board.dirty = true;
  redraw();
}

function setFilter(text) {
  board.filter = String(text || '');
  board.dirty = true;
  redraw();
}

function setSort(key) {
  if (board.sort === key) {
    if (board.dir === (key === 'symbol' ? 1 : -1)) board.dir = -board.dir;
    else board.sort = null; // a third click: back to the list's own order
  } else {
    board.sort = key;
    board.dir = key === 'symbol' ? 1 : -1; // symbols A to Z; the biggest change or volume first
  }
  ui.setSort(board.sort, board.dir);
  board.dirty = true;
  board.sortedAt = 0;
  redraw();
}

// ---- connection state ----

const SENTENCES = {
  connecting: 'Connecting',
  live: 'Live',
  reconnecting: 'Connection lost, reconnecting',
  resumed: 'Reconnected, catching up',
  reset: 'Stream reset, reloading the latest values',
};

function setState(state, detailText = '') {
  const changed = state !== conn.state;
  conn.state = state;
  conn.detail = detailText;
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

// onReset forgets every cursor: the snapshot that follows is the new truth, even if the stream went backwards. The
// histories joined to the stream have a gap now: they are loaded again.
function onReset(e) {
  model.cursors.clear();
  conn.resumed = false;
  for (const sym of sparks.keys()) loadSpark(sym);
  if (detail) openDetail(detail.topic, false);
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

/**
 * onUpdate applies one update from the client, which has dropped duplicates per subscription and says whether it
 * is catch-up. Several subscriptions may follow one topic (the watchlist's, every symbol's, the detail view's): an
 * update is applied once, the first time any of them delivers it.
 */
function onUpdate(u) {
  const last = model.cursors.get(u.topic);
  if (last != null && compareCursors(u.cursor, last) <= 0) return;
  countUpdate(u.topic);
  applyUpdate(u.topic, u.cursor, u.data, u.catchUp);
  redraw();
}

/** interesting says whether the page shows sym's quotes now. */
function interesting(sym) {
  return watched.has(sym) || adding.has(sym) || board.view === 'all' || (detail != null && detail.sym === sym);
}

function applyUpdate(topic, cursor, data, catchup) {
  if (!data || typeof data !== 'object' || typeof topic !== 'string') return;
  let sym = null;
  if (topic.startsWith('market.')) {
    sym = topic.slice(7);
    if (!interesting(sym)) return; // removed a moment ago
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

  for (const series of listeners.get(topic) || []) series.live(cursor, data);
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
  if (typeof q.session === 'string' && q.session) model.session = q.session;
  dirtyQuotes.add(sym);
  if (board.sort && board.sort !== 'symbol') board.dirty = true;
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
    if (detail && detail.topic === topic) continue; // the match on show stays
    model.matches.delete(topic);
    dirtyMatches.delete(topic);
    ui.removeMatch(topic);
  }
}

// ---- history: sparklines and the detail view ----

function listen(topic, series) {
  if (!listeners.has(topic)) listeners.set(topic, new Set());
  listeners.get(topic).add(series);
}

function unlisten(topic, series) {
  const set = listeners.get(topic);
  if (!set) return;
  set.delete(series);
  if (!set.size) listeners.delete(topic);
}

/** loadSpark (re)loads a watched symbol's sparkline: the last HISTORY bars from the stream, then live. */
function loadSpark(sym) {
  const topic = `market.${sym}`;
  const old = sparks.get(sym);
  if (old) {
    old.abort.abort();
    unlisten(topic, old);
  }
  const series = new BarSeries(topic, HISTORY);
  series.abort = new AbortController();
  sparks.set(sym, series);
  listen(topic, series);
  const params = (since) => [['interval', SPARK_INTERVAL], since == null ? ['last', String(HISTORY)] : ['since', since]];
  fill(series, (since) => readHistory(topic, params(since), series.abort.signal), series.abort.signal)
    .then(() => {
      dirtyQuotes.add(sym);
      redraw();
    })
    .catch(() => {}); // no history: the sparkline fills live, as it did before there was one
}

function dropSpark(sym) {
  const s = sparks.get(sym);
  if (!s) return;
  s.abort.abort();
  unlisten(`market.${sym}`, s);
  sparks.delete(sym);
}

/** openDetail shows a symbol's chart or a match's timeline: its history joined to its live updates. */
function openDetail(topic, focus = true) {
  closeDetail();
  const abort = new AbortController();
  if (topic.startsWith('market.')) {
    const sym = topic.slice(7);
    const series = new BarSeries(topic);
    detail = { topic, sym, series, abort };
    ui.showSymbol(sym);
    listen(topic, series);
    detail.sub = client.subscribe(topic, onUpdate);
    let interval = '5s';
    const ask = async (since) => {
      if (since != null) return readHistory(topic, [['interval', interval], ['since', since]], abort.signal);
      let a = await readHistory(topic, [['interval', '5s']], abort.signal);
      if ((a.bars || []).length < CHART_BARS) {
        interval = '1s'; // a short day so far: finer bars
        a = await readHistory(topic, [['interval', interval]], abort.signal);
      }
      return a;
    };
    fill(series, ask, abort.signal)
      .then(() => redraw())
      .catch((err) => {
        if (abort.signal.aborted) return;
        series.error = (err && err.message) || String(err);
        if (detail && detail.series === series) detail.note = `The day's history could not be read: ${series.error}`;
        redraw();
      });
  } else {
    const league = topic.split('.')[1] || 'other';
    const series = new UpdateSeries(topic);
    detail = { topic, sym: null, series, abort };
    ui.showMatch(topic, league);
    const m = model.matches.get(topic);
    if (m) ui.renderMatchHead(m);
    listen(topic, series);
    detail.sub = client.subscribe(topic, onUpdate);
    const ask = async (since) => {
      if (since != null) return readHistory(topic, [['since', since]], abort.signal);
      try {
        return await readHistory(topic, [], abort.signal);
      } catch (err) {
        if (err && err.status === 413) return readHistory(topic, [['last', '2000']], abort.signal);
        throw err;
      }
    };
    fill(series, ask, abort.signal)
      .then(() => redraw())
      .catch((err) => {
        if (abort.signal.aborted) return;
        series.error = (err && err.message) || String(err);
        if (detail && detail.series === series) detail.note = `The match's history could not be read: ${series.error}`;
        redraw();
      });
  }
  if (location.hash !== `#${topic}`) replaceHash(`#${topic}`);
  // The focus stays where it was (the board's arrows keep working), and a screen reader hears what opened; on one
  // column, the view comes into sight.
  if (focus) {
    const m = model.matches.get(topic);
    ui.announceConn(detail.sym ? `Chart of ${detail.sym} shown` : `${teamName(m?.home, 'Home')} against ${teamName(m?.away, 'Away')} shown`);
    if (window.innerWidth < 1000) document.getElementById('detail').scrollIntoView({ block: 'start' });
  }
  redraw();
}

function replaceHash(hash) {
  try {
    window.history.replaceState(null, '', hash);
  } catch { /* a sandboxed page: no history */ }
}

function closeDetail() {
  if (!detail) return;
  detail.abort.abort();
  unlisten(detail.topic, detail.series);
  if (detail.sub) detail.sub.unsubscribe();
  if (detail.sym && !interesting(detail.sym)) model.quotes.delete(detail.sym);
  detail = null;
  ui.closeDetail();
}

let drawnDetail = -1;

function drawDetail() {
  if (!detail) return;
  const s = detail.series;
  const note = detail.note ?? (s.loaded ? '' : 'Loading the day from the stream…');
  if (detail.sym) {
    const q = model.quotes.get(detail.sym)?.q;
    ui.renderSymbol(detail.sym, q, s.loaded ? s : null, s.loaded && !s.bars.length ? 'No prices in the stream yet.' : note);
  } else if (s.version !== drawnDetail || !s.loaded) {
    drawnDetail = s.version;
    if (s.loaded) ui.renderTimeline(detail.topic, s.updates, s.updates.length ? '' : 'Nothing in the stream yet.');
    else ui.renderTimeline(detail.topic, [], note);
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
  board.dirty = true;
  redraw();
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
  for (const sym of list) if (model.quotes.has(sym)) dirtyQuotes.add(sym);
  board.dirty = true;
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
    if (!interesting(sym)) model.quotes.delete(sym);
    model.cursors.delete(`market.${sym}`);
    ui.addMessage(`Cannot add ${sym}: ${(err && err.message) || err}`, true);
    return;
  }
  adding.delete(sym);
  if (watched.has(sym)) return;
  setWatchlist([...watchlist, sym], true);
  loadSpark(sym);
  ui.clearInput();
  setFilter('');
  ui.addMessage(
    model.catalog.size && !model.catalog.has(sym)
      ? `Added ${sym}. The catalog does not list it: its row fills when quotes arrive.`
      : `Added ${sym}.`,
  );
}

function onRemove(sym) {
  if (!watched.has(sym)) return;
  const topic = `market.${sym}`;
  if (board.view === 'watch') ui.focusAfterRemove(sym);
  setWatchlist(
    watchlist.filter((s) => s !== sym),
    true,
  );
  dropSpark(sym);
  const sub = subs.get(sym);
  subs.delete(sym);
  if (sub) sub.unsubscribe(); // the client forgets the topic too: adding it again takes its snapshot
  if (!interesting(sym)) {
    model.quotes.delete(sym);
    model.cursors.delete(topic);
    dirtyQuotes.delete(sym);
  }
  ui.addMessage(`Removed ${sym}.`);
}

function toggleWatch(sym) {
  if (watched.has(sym)) onRemove(sym);
  else onAdd(sym);
}

// ---- transports ----

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

/** compareAll measures the transports not in use, each over the page's topics in a client of its own. */
async function compareAll() {
  if (measuring.size) return;
  const patterns = [...watchlist.map((s) => `market.${s}`), SPORTS];
  const others = KINDS.filter((k) => k.kind !== kind);
  for (const k of others) measuring.add(k.kind);
  ui.comparing(true, `Following the page's ${patterns.length} topics over ${others.map((k) => k.label).join(', ')} for ${COMPARE_MS / 1000} s…`);
  redraw();
  const failed = [];
  await Promise.all(others.map(async (k) => {
    try {
      measures.set(k.kind, await measure(k.lib, patterns, COMPARE_MS));
    } catch (err) {
      failed.push(`${k.label}: ${(err && err.message) || err}`);
    } finally {
      measuring.delete(k.kind);
      redraw();
    }
  }));
  const at = new Date().toLocaleTimeString();
  ui.comparing(false, failed.length ? `Measured at ${at}; ${failed.join('; ')}.` : `Measured at ${at}, over ${COMPARE_MS / 1000} s each, alongside the page's own connection.`);
}

function initialMode() {
  const asked = new URLSearchParams(location.search).get('transport'); // ?transport=sse, handy for tests
  if (asked && (asked === 'auto' || Object.hasOwn(TRANSPORTS, asked))) return asked;
  const stored = storage.get(KEY_TRANSPORT);
  return stored && (stored === 'auto' || Object.hasOwn(TRANSPORTS, stored)) ? stored : 'auto';
}

/** detailFromHash reads the detail view asked for in the address: #market.AAPL or #sports.nba.g-0001. */
function detailFromHash() {
  const h = decodeURIComponent(location.hash.slice(1));
  return /^(market\.[A-Z0-9_-]{1,32}|sports\.[A-Za-z0-9_-]{1,32}\.[A-Za-z0-9_-]{1,64})$/.test(h) ? h : '';
}

async function main() {
  ui = new UI({
    add: onAdd,
    remove: onRemove,
    toggleWatch,
    view: setView,
    filter: setFilter,
    sort: setSort,
    detail: (topic) => openDetail(topic),
    transport: switchTransport,
    compare: compareAll,
  });
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
  for (const sym of watchlist) loadSpark(sym);
  const view = new URLSearchParams(location.search).get('view') || storage.get(KEY_VIEW);
  ui.setView('watch');
  if (view === 'all') setView('all');
  const wanted = detailFromHash() || (watchlist.length ? `market.${watchlist[0]}` : '');
  if (wanted) openDetail(wanted, false);
  window.addEventListener('hashchange', () => {
    const t = detailFromHash();
    if (t && (!detail || detail.topic !== t)) openDetail(t);
  });
  setInterval(redraw, 1000); // the byte and request counters move between updates too
}

main();

// series.js: a topic's past from GET /api/history, joined to its live updates with no gap and no duplicate.
//
// The join: subscribe first, and keep the live updates while the history is on its way; the history's answer holds
// every update of the topic up to its cursor, and the live stream every update after its first one. Once the
// answer's cursor has reached the first live update (ask again with since= if it has not: an edge behind another),
// the live updates up to the cursor are dropped and the others applied. docs/protocol.md, "History".

import { compareCursors } from './livepush.js';
import { endpoint, fetchJSON, parseTs } from './util.js';

const MAX_PENDING = 20000; // live updates kept while the history loads

/** Joined is the join itself; subclasses say how an answer and an update are applied. */
class Joined {
  constructor(topic) {
    this.topic = topic;
    this.firstLive = null; // the cursor of the first live update
    this.joinCursor = null; // the history's cursor: every update up to it is in
    this.lastCursor = null; // the newest cursor applied
    this.loaded = false;
    this.pending = [];
    this.version = 0; // changes whenever what is shown changes
    this.error = '';
  }

  /** live takes an update of the topic from the live stream, in stream order. */
  live(cursor, data) {
    if (this.firstLive == null) this.firstLive = cursor;
    if (!this.loaded) {
      this.pending.push([cursor, data]);
      if (this.pending.length > MAX_PENDING) this.pending.shift();
      return;
    }
    if (this.lastCursor != null && compareCursors(cursor, this.lastCursor) <= 0) return; // in the history already
    this.lastCursor = cursor;
    this.apply(cursor, data);
    this.version++;
  }

  /** ready applies the live updates past the history's cursor, and those that come from now on. */
  ready() {
    this.loaded = true;
    this.lastCursor = this.joinCursor;
    const pending = this.pending;
    this.pending = [];
    for (const [cursor, data] of pending) this.live(cursor, data);
    this.version++;
  }

  /** behind says the history stops before the first live update: what is between is asked for with since=. */
  behind() {
    return this.firstLive != null && this.joinCursor != null && compareCursors(this.joinCursor, this.firstLive) < 0;
  }

  /** reset forgets everything: the stream had a gap (the client's reset), the history is loaded again. */
  reset() {
    this.firstLive = null;
    this.joinCursor = null;
    this.lastCursor = null;
    this.loaded = false;
    this.pending = [];
    this.clear();
    this.version++;
  }
}

/** BarSeries is a topic's prices as OHLC bars of one interval (from the history's answer), extended live. */
export class BarSeries extends Joined {
  constructor(topic, maxBars = Infinity) {
    super(topic);
    this.maxBars = maxBars;
    this.interval = 0; // ms
    this.bars = []; // {t (ms), open, high, low, close, n, first, last (cursors)}
  }

  clear() {
    this.bars = [];
  }

  /** load replaces the bars with an answer's (its interval included). */
  load(answer) {
    this.interval = parseInterval(answer.interval);
    this.bars = [];
    this.extend(answer);
  }

  /** extend merges an answer after since into the bars: a bar of the same time joins the last one. */
  extend(answer) {
    for (const b of answer.bars || []) {
      const t = Date.parse(b.t);
      this.add(t, b.open, b.high, b.low, b.close, b.n, b.first, b.last);
    }
    this.joinCursor = answer.cursor;
    this.version++;
  }

  apply(cursor, data) {
    const price = Number(data && data.price);
    const ts = parseTs(data && data.ts);
    if (data == null || data.price == null || !Number.isFinite(price) || !Number.isFinite(ts) || !this.interval) return;
    const t = Math.floor(ts / this.interval) * this.interval;
    this.add(t, price, price, price, price, 1, cursor, cursor);
  }

  add(t, open, high, low, close, n, first, last) {
    const b = this.bars[this.bars.length - 1];
    if (b && t <= b.t) {
      // The same interval, or a time stamp that went back: it joins the latest bar, as the edge does.
      b.high = Math.max(b.high, high);
      b.low = Math.min(b.low, low);
      b.close = close;
      b.n += n;
      b.last = last;
      return;
    }
    this.bars.push({ t, open, high, low, close, n, first, last });
    if (this.bars.length > this.maxBars) this.bars.shift();
  }
}

/** UpdateSeries is a topic's updates themselves (for a match's timeline), extended live. */
export class UpdateSeries extends Joined {
  constructor(topic) {
    super(topic);
    this.updates = []; // {cursor, data}
  }

  clear() {
    this.updates = [];
  }

  load(answer) {
    this.updates = [];
    this.extend(answer);
  }

  extend(answer) {
    for (const u of answer.updates || []) {
      if (this.updates.length && compareCursors(u.cursor, this.updates[this.updates.length - 1].cursor) <= 0) continue;
      this.updates.push({ cursor: u.cursor, data: u.data });
    }
    this.joinCursor = answer.cursor;
    this.version++;
  }

  apply(cursor, data) {
    this.updates.push({ cursor, data });
  }
}

function parseInterval(s) {
  const m = /^(\d+)([smh])$/.exec(String(s || ''));
  if (!m) return 0;
  return Number(m[1]) * { s: 1000, m: 60000, h: 3600000 }[m[2]];
}

/** history asks the edge for a topic's history; params are [name, value] pairs besides the topic. */
export function history(topic, params, signal) {
  return fetchJSON(endpoint('api/history', [['topic', topic], ...params]), { signal, timeout: 15000 });
}

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });

/**
 * fill loads series from the history once its subscription has delivered its first update (or waited a moment:
 * a topic with none yet has nothing to join), then joins it to the live updates. ask(since) returns the answer to
 * use; with since set it must ask for the updates after it. It resolves when the series is live.
 */
export async function fill(series, ask, signal) {
  for (let i = 0; series.firstLive == null && i < 20; i++) await sleep(50, signal);
  series.load(await retried(() => ask(null), signal));
  for (let i = 0; series.behind() && i < 40; i++) {
    await sleep(250, signal); // the edge that answered is behind the one streaming: give it a moment
    series.extend(await retried(() => ask(series.joinCursor), signal));
  }
  series.ready();
}

/** retried asks again, a few times and a little later each time, while the edge says it is busy or unavailable. */
async function retried(f, signal) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await f();
    } catch (err) {
      if (attempt >= 5 || !err || err.status !== 503) throw err;
      await sleep(1000 * attempt, signal);
    }
  }
}

// transports.js: the four transports compared in this browser. The one in use is measured all the time from the
// page's own client; "Compare all" follows the page's topics over the others, each in a client of its own, for a
// few seconds, and measures what each costs per update: bytes received, requests made, and the delay from the
// feeds' time stamp to this page. The same figures the project's benchmarks take on the server side
// (docs/benchmarks.md), seen from a browser.

import { connect } from './livepush.js';
import { Samples, nowMs, parseTs } from './util.js';

/** KINDS are the transports in the page's names, with the library's name and what each does, in one line. */
export const KINDS = Object.freeze([
  {
    kind: 'ws', lib: 'websocket', label: 'WebSocket',
    about: 'One connection both ways: updates leave as frames as they come, several in one frame when they wait together.',
  },
  {
    kind: 'sse', lib: 'sse', label: 'Server-Sent Events',
    about: 'One long HTTP response the edge writes events into; the browser resumes it by itself after a cut.',
  },
  {
    kind: 'longpoll', lib: 'longpoll', label: 'Long polling',
    about: 'A request the edge holds until updates come, then answers; the client asks again at once from its cursor.',
  },
  {
    kind: 'poll', lib: 'poll', label: 'Polling (1 s)',
    about: 'A request a second for the latest values: plain, but it misses updates in between and waits up to a second.',
  },
]);

const SETTLE_MS = 1500; // after going live, past the snapshot, before measuring

/** Measure is what one transport cost: live updates, bytes and requests, and the delay percentiles. */
export class Measure {
  constructor() {
    this.updates = 0;
    this.bytes = 0;
    this.requests = 0;
    this.delays = new Samples(500);
    this.at = 0; // when measured (ms since the epoch)
  }

  get bytesPerUpdate() {
    return this.updates ? this.bytes / this.updates : null;
  }

  get requestsPerUpdate() {
    return this.updates ? this.requests / this.updates : null;
  }

  get p50() {
    return this.delays.percentile(0.5);
  }

  get p90() {
    return this.delays.percentile(0.9);
  }
}

/** delayOf is the delay of a live update: now minus its payload's time stamp, in ms, or NaN. */
export function delayOf(data) {
  const ts = parseTs(data && data.ts);
  return Number.isFinite(ts) ? nowMs() - ts : NaN;
}

/**
 * measure follows patterns over the library transport lib for ms (after it is live and past its snapshot) in a
 * client of its own, and resolves with a Measure. signal stops it early.
 */
export async function measure(lib, patterns, ms, signal) {
  const client = connect({ transport: lib });
  const m = new Measure();
  let counting = false;
  try {
    const sub = client.subscribe(patterns, (u) => {
      if (!counting || u.catchUp) return;
      m.updates++;
      const d = delayOf(u.data);
      if (Number.isFinite(d)) m.delays.add(d);
    });
    await Promise.race([sub.ready, wait(15000, signal).then(() => Promise.reject(new Error('no answer from the edge')))]);
    await wait(SETTLE_MS, signal);
    const base = { ...client.stats };
    counting = true;
    await wait(ms, signal);
    counting = false;
    m.bytes = client.stats.bytes - base.bytes;
    m.requests = client.stats.requests - base.requests;
    m.at = Date.now();
    return m;
  } finally {
    client.close();
  }
}

function wait(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

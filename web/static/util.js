// util.js: small helpers shared by the page's modules (time stamps, URLs, fetch, percentiles). Nothing here
// touches the DOM. Cursors, transports and backoff are the client library's (livepush.js).

const TS = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):?(\d{2}))$/;

/**
 * parseTs reads an RFC 3339 time stamp (nanoseconds allowed) into epoch milliseconds with a fraction;
 * NaN when it cannot. Date.parse is not used for the common case: engines differ on more than 3 fraction digits.
 */
export function parseTs(s) {
  if (typeof s !== 'string') return NaN;
  const m = TS.exec(s);
  if (!m) return Date.parse(s);
  let ms = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
  if (m[7]) ms += Number('0.' + m[7]) * 1000;
  if (m[9]) {
    const off = (+m[10] * 60 + +m[11]) * 60000;
    ms += m[9] === '+' ? -off : off;
  }
  return ms;
}

let clockOffset = 0;
let clockAt = -Infinity;

/**
 * nowMs is the wall clock in epoch milliseconds, finer than Date.now(). performance.now() is monotonic and
 * may stop while the computer sleeps, so its offset to the wall clock is taken again every few seconds.
 */
export function nowMs() {
  const p = performance.now();
  if (p - clockAt > 5000) {
    clockOffset = Date.now() + 0.5 - p; // Date.now() truncates: +0.5 centres it
    clockAt = p;
  }
  return clockOffset + p;
}

/**
 * endpoint builds an absolute URL for path on the page's own origin, relative to the document, so the
 * page also works when a proxy mounts the edge under a prefix. params is a list of [name, value] pairs.
 */
export function endpoint(path, params = []) {
  const u = new URL(path, document.baseURI);
  for (const [k, v] of params) if (v != null) u.searchParams.append(k, v);
  return u.href;
}

/** HttpError is an HTTP error answer; message is the edge's {"error"} text when it sent one. */
export class HttpError extends Error {
  constructor(status, message, code, body = null) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code || '';
    this.body = body; // the decoded JSON answer, if it was one
  }
}

/**
 * fetchJSON GETs url and decodes a JSON body. It rejects with HttpError for a non-2xx answer, and with the
 * abort reason when signal is aborted or timeout (ms) passes.
 */
export async function fetchJSON(url, { signal, timeout = 0 } = {}) {
  const ctrl = new AbortController();
  const abort = () => ctrl.abort(signal.reason);
  if (signal) {
    if (signal.aborted) throw signal.reason;
    signal.addEventListener('abort', abort, { once: true });
  }
  const timer = timeout ? setTimeout(() => ctrl.abort(new DOMException('timed out', 'TimeoutError')), timeout) : 0;
  try {
    const res = await fetch(url, { signal: ctrl.signal, cache: 'no-store', headers: { Accept: 'application/json' } });
    const text = await res.text();
    let body = null;
    if (text) {
      try { body = JSON.parse(text); } catch { body = null; }
    }
    if (!res.ok) {
      const msg = body && typeof body.error === 'string' ? body.error : `HTTP ${res.status}`;
      throw new HttpError(res.status, msg, body && body.code, body);
    }
    if (!body || typeof body !== 'object') throw new HttpError(res.status, 'the answer is not a JSON object', 'bad_body');
    return body;
  } finally {
    clearTimeout(timer);
    if (signal) signal.removeEventListener('abort', abort);
  }
}

/** Samples keeps the last n numbers and answers percentiles over them. */
export class Samples {
  constructor(n) {
    this.buf = new Float64Array(n);
    this.clear();
  }
  clear() {
    this.len = 0;
    this.next = 0;
    this.sorted = null;
  }
  add(v) {
    this.buf[this.next] = v;
    this.next = (this.next + 1) % this.buf.length;
    if (this.len < this.buf.length) this.len++;
    this.sorted = null;
  }
  /** percentile returns the q-th (0..1) percentile by nearest rank, rounded to 0.1, or null with no samples. */
  percentile(q) {
    if (!this.len) return null;
    if (!this.sorted) this.sorted = this.buf.slice(0, this.len).sort();
    const i = Math.min(this.len - 1, Math.max(0, Math.ceil(q * this.len) - 1));
    return Math.round(this.sorted[i] * 10) / 10;
  }
}

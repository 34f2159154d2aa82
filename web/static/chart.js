// chart.js: the intraday chart of the detail view, drawn in SVG from a BarSeries: the closes as a line over an
// area, the bars' high-low range as a band, the previous close dashed, price and time labels. It redraws only when
// the series or its size changed, and never more than a few times a second.

const SVG_NS = 'http://www.w3.org/2000/svg';
const PAD = { top: 10, right: 64, bottom: 22, left: 8 };
const MIN_REDRAW_MS = 200;

function svg(tag, attrs = {}, parent = null) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (parent) parent.append(el);
  return el;
}

/** niceStep is a round step (1, 2, 2.5 or 5 times a power of ten) giving about n ticks over span. */
function niceStep(span, n) {
  const raw = span / Math.max(1, n);
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

const timeFmt = (span) =>
  new Intl.DateTimeFormat([], span < 10 * 60e3 ? { hour: '2-digit', minute: '2-digit', second: '2-digit' } : { hour: '2-digit', minute: '2-digit' });

export class Chart {
  /** Chart draws into container, which it fills; fmtPrice formats prices as the page does. */
  constructor(container, fmtPrice) {
    this.container = container;
    this.fmtPrice = fmtPrice;
    this.root = svg('svg', { class: 'chart', role: 'img', focusable: 'false' });
    this.grid = svg('g', { class: 'grid' }, this.root);
    this.band = svg('path', { class: 'band' }, this.root);
    this.area = svg('path', { class: 'area' }, this.root);
    this.line = svg('path', { class: 'line' }, this.root);
    this.prev = svg('line', { class: 'prev' }, this.root);
    this.prevLabel = svg('text', { class: 'prev-label' }, this.root);
    this.dot = svg('circle', { class: 'dot', r: 3 }, this.root);
    this.lastLabel = svg('text', { class: 'last-label' }, this.root);
    this.labels = svg('g', { class: 'labels' }, this.root);
    container.replaceChildren(this.root);
    this.drawn = '';
    this.lastDraw = 0;
    this.timer = 0;
    this.args = null;
    this.size = { w: 0, h: 0 };
    this.resize = new ResizeObserver(() => {
      this.size = { w: container.clientWidth, h: container.clientHeight };
      this.draw(...(this.args || []));
    });
    this.resize.observe(container);
  }

  destroy() {
    this.resize.disconnect();
    clearTimeout(this.timer);
  }

  /** draw shows series (a BarSeries) with its previous close, at most every MIN_REDRAW_MS. */
  draw(series, prevClose, label) {
    if (!series) return;
    this.args = [series, prevClose, label];
    const key = `${series.version}|${prevClose}|${this.size.w}x${this.size.h}`;
    if (key === this.drawn) return;
    const wait = this.lastDraw + MIN_REDRAW_MS - performance.now();
    if (wait > 0) {
      if (!this.timer) this.timer = setTimeout(() => {
        this.timer = 0;
        this.draw(...this.args);
      }, wait);
      return;
    }
    this.drawn = key;
    this.lastDraw = performance.now();
    this.render(series, prevClose, label);
  }

  render(series, prevClose, label) {
    const { w, h } = this.size;
    if (w < 50 || h < 50) return;
    this.root.setAttribute('viewBox', `0 0 ${w} ${h}`);
    const x0 = PAD.left;
    const x1 = w - PAD.right;
    const y0 = PAD.top;
    const y1 = h - PAD.bottom;
    const cols = groupBars(series.bars, Math.max(2, Math.floor((x1 - x0) / 2)));
    this.labels.replaceChildren();
    this.grid.replaceChildren();
    if (!cols.length) {
      for (const el of [this.band, this.area, this.line]) el.setAttribute('d', '');
      this.prev.setAttribute('visibility', 'hidden');
      this.prevLabel.textContent = '';
      this.lastLabel.textContent = '';
      this.dot.setAttribute('visibility', 'hidden');
      this.root.setAttribute('aria-label', `${label}: no prices yet`);
      return;
    }
    let lo = Infinity;
    let hi = -Infinity;
    for (const c of cols) {
      lo = Math.min(lo, c.low);
      hi = Math.max(hi, c.high);
    }
    const hasPrev = Number.isFinite(prevClose) && prevClose > 0;
    if (hasPrev) {
      lo = Math.min(lo, prevClose);
      hi = Math.max(hi, prevClose);
    }
    if (hi - lo < 1e-9) {
      hi += Math.max(0.01, hi * 0.001);
      lo -= Math.max(0.01, lo * 0.001);
    }
    const margin = (hi - lo) * 0.06;
    lo -= margin;
    hi += margin;
    const t0 = cols[0].t;
    const t1 = Math.max(cols[cols.length - 1].t, t0 + 1);
    const X = (t) => x0 + ((t - t0) / (t1 - t0)) * (x1 - x0);
    const Y = (p) => y1 - ((p - lo) / (hi - lo)) * (y1 - y0);

    // Price grid and labels on the right.
    const step = niceStep(hi - lo, Math.max(2, Math.floor((y1 - y0) / 45)));
    for (let p = Math.ceil(lo / step) * step; p <= hi; p += step) {
      const y = Y(p).toFixed(1);
      svg('line', { x1: x0, x2: x1, y1: y, y2: y }, this.grid);
      svg('text', { x: x1 + 6, y: Number(y) + 4, class: 'y' }, this.labels).textContent = this.fmtPrice(p);
    }
    // Time labels along the bottom.
    const fmt = timeFmt(t1 - t0);
    const n = Math.max(2, Math.min(6, Math.floor((x1 - x0) / 90)));
    for (let i = 0; i <= n; i++) {
      const t = t0 + ((t1 - t0) * i) / n;
      const anchor = i === 0 ? 'start' : i === n ? 'end' : 'middle';
      svg('text', { x: X(t).toFixed(1), y: h - 6, class: 'x', 'text-anchor': anchor }, this.labels).textContent = fmt.format(t);
    }

    let line = '';
    let band = '';
    let back = '';
    for (let i = 0; i < cols.length; i++) {
      const c = cols[i];
      const x = X(c.t).toFixed(1);
      line += `${i ? 'L' : 'M'}${x},${Y(c.close).toFixed(1)}`;
      band += `${i ? 'L' : 'M'}${x},${Y(c.high).toFixed(1)}`;
      back = `L${x},${Y(c.low).toFixed(1)}` + back;
    }
    if (cols.length === 1) line += `L${x1},${Y(cols[0].close).toFixed(1)}`;
    const last = cols[cols.length - 1];
    this.line.setAttribute('d', line);
    this.band.setAttribute('d', `${band}${back}Z`);
    this.area.setAttribute('d', `${line}L${X(last.t).toFixed(1)},${y1}L${x0},${y1}Z`);
    const up = hasPrev ? last.close >= prevClose : last.close >= cols[0].open;
    this.root.dataset.dir = up ? 'up' : 'down';
    this.dot.setAttribute('visibility', 'visible');
    this.dot.setAttribute('cx', X(last.t).toFixed(1));
    this.dot.setAttribute('cy', Y(last.close).toFixed(1));
    this.lastLabel.setAttribute('x', x1 + 6);
    this.lastLabel.setAttribute('y', (Y(last.close) + 4).toFixed(1));
    this.lastLabel.textContent = this.fmtPrice(last.close);
    if (hasPrev) {
      const y = Y(prevClose).toFixed(1);
      this.prev.setAttribute('visibility', 'visible');
      for (const [k, v] of Object.entries({ x1: x0, x2: x1, y1: y, y2: y })) this.prev.setAttribute(k, v);
      this.prevLabel.setAttribute('x', x0 + 4);
      this.prevLabel.setAttribute('y', Number(y) - 4);
      this.prevLabel.textContent = `prev close ${this.fmtPrice(prevClose)}`;
    } else {
      this.prev.setAttribute('visibility', 'hidden');
      this.prevLabel.textContent = '';
    }
    let dayLo = Infinity;
    let dayHi = -Infinity;
    for (const c of cols) {
      dayLo = Math.min(dayLo, c.low);
      dayHi = Math.max(dayHi, c.high);
    }
    this.root.setAttribute('aria-label',
      `${label} from ${fmt.format(t0)} to ${fmt.format(last.t)}: low ${this.fmtPrice(dayLo)}, high ${this.fmtPrice(dayHi)}, last ${this.fmtPrice(last.close)}`);
  }
}

/** groupBars merges consecutive bars into at most n columns, each keeping its open, high, low and close. */
function groupBars(bars, n) {
  if (bars.length <= n) return bars;
  const per = Math.ceil(bars.length / n);
  const out = [];
  for (let i = 0; i < bars.length; i += per) {
    const group = bars.slice(i, i + per);
    const c = { t: group[0].t, open: group[0].open, high: -Infinity, low: Infinity, close: group[group.length - 1].close };
    for (const b of group) {
      c.high = Math.max(c.high, b.high);
      c.low = Math.min(c.low, b.low);
    }
    out.push(c);
  }
  return out;
}

// ui.js: the page's DOM. It builds rows, tape items, score cards and the detail view once and afterwards only
// changes text, attributes and a few paths in place; app.js calls it at most once per animation frame.

import { Chart } from './chart.js';
import { KINDS } from './transports.js';

const LEAGUES = { epl: 'Premier League', nba: 'NBA', nhl: 'NHL' };
const LEAGUE_ORDER = ['epl', 'nba', 'nhl'];
const STARTS = { epl: 'Kick-off', nba: 'Tip-off', nhl: 'Puck drop' };
const STATUS_RANK = { live: 0, scheduled: 1, final: 2 };
const SESSIONS = { 'pre-market': 'Pre-market', open: 'Open', 'after-hours': 'After hours', closed: 'Closed' };
const SVG_NS = 'http://www.w3.org/2000/svg';
const SPARK_W = 60;
const SPARK_H = 20;
const ANNOUNCE_GAP_MS = 1500; // the least time between two score announcements (they are merged meanwhile)
const TAPE_PX_PER_S = 60;

/** leagueName is the display name of a league code. */
export function leagueName(code) {
  return LEAGUES[code] || String(code || 'other').toUpperCase();
}

/** sessionName is how a quote's session is shown. */
export function sessionName(s) {
  return SESSIONS[s] || (s ? String(s) : '—');
}

// ---- formatting (plain ASCII signs and no grouping in prices, so cells parse back as numbers) ----

const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 2 });

export const fmt = {
  price(v) {
    const n = Number(v);
    if (v == null || !Number.isFinite(n)) return '—';
    return n.toFixed(Math.abs(n) < 1 && n !== 0 ? 4 : 2);
  },
  signed(v, suffix = '') {
    const n = Number(v);
    if (v == null || !Number.isFinite(n)) return '—';
    const s = n.toFixed(2);
    if (Number(s) === 0) return '0.00' + suffix;
    return (n > 0 ? '+' : '') + s + suffix;
  },
  volume(v) {
    const n = Number(v);
    return v == null || !Number.isFinite(n) ? '—' : compact.format(n);
  },
  bytes(n) {
    if (n < 1024) return `${Math.round(n)} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(2)} MiB`;
    return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
  },
  ms(v) {
    if (v == null) return '–';
    return Math.abs(v) < 10 ? v.toFixed(1) : String(Math.round(v));
  },
  range(lo, hi) {
    return lo == null || hi == null ? '—' : `${fmt.price(lo)} – ${fmt.price(hi)}`;
  },
};

/** direction is "up", "down" or "flat" for the sign of v as displayed with 2 decimals. */
function direction(v) {
  const n = Number(Number(v).toFixed(2));
  return !Number.isFinite(n) || n === 0 ? 'flat' : n > 0 ? 'up' : 'down';
}

// ---- tiny DOM helpers ----

function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const kid of kids) if (kid != null) el.append(kid);
  return el;
}

function setText(el, s) {
  if (el.textContent !== s) el.textContent = s;
}

function setData(el, key, v) {
  if (el.dataset[key] !== v) el.dataset[key] = v;
}

function setAttr(el, key, v) {
  if (el.getAttribute(key) !== v) el.setAttribute(key, v);
}

// flash restarts a CSS flash on el: the keyframes' name alternates (…-a / …-b), and a new animation-name
// restarts the animation without forcing a style recalculation.
function flash(el, dir) {
  el.dataset.flash = `${dir}-${el.dataset.flash && el.dataset.flash.endsWith('-a') ? 'b' : 'a'}`;
}

function sparkPoints(hist) {
  if (!hist.length) return '';
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of hist) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const span = hi - lo;
  const y = (v) => (span > 0 ? SPARK_H - 1.5 - ((v - lo) / span) * (SPARK_H - 3) : SPARK_H / 2).toFixed(1);
  if (hist.length === 1) return `0,${y(hist[0])} ${SPARK_W},${y(hist[0])}`;
  const step = SPARK_W / (hist.length - 1);
  let pts = '';
  for (let i = 0; i < hist.length; i++) pts += `${(i * step).toFixed(1)},${y(hist[i])} `;
  return pts;
}

function timeText(t, withDay = true) {
  if (!Number.isFinite(t)) return '';
  const d = new Date(t);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return !withDay || new Date().toDateString() === d.toDateString()
    ? time
    : `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
}

/**
 * UI owns the page's elements. handlers: {add(text), remove(symbol), toggleWatch(symbol), view(name),
 * filter(text), sort(key), detail(topic), transport(kind), compare()}.
 */
export class UI {
  constructor(handlers) {
    const $ = (id) => document.getElementById(id);
    this.handlers = handlers;
    this.el = {
      conn: $('conn'),
      connState: $('conn-state'),
      connDetail: $('conn-detail'),
      connSep: $('conn-sep'),
      market: $('market-status'),
      marketSession: $('market-session'),
      transport: $('transport'),
      updates: $('c-updates'),
      bytes: $('c-bytes'),
      requests: $('c-requests'),
      latency: $('c-latency'),
      cursor: $('cursor'),
      tape: $('tape'),
      tapeTrack: $('tape-track'),
      tapeToggle: $('tape-toggle'),
      notice: $('notice'),
      noticeText: $('notice-text'),
      noticeClose: $('notice-close'),
      form: $('add-form'),
      input: $('add-symbol'),
      addMsg: $('add-msg'),
      symbols: $('symbols'),
      table: $('board-table'),
      tbody: $('wl-body'),
      empty: $('wl-empty'),
      nomatch: $('wl-nomatch'),
      viewWatch: $('view-watch'),
      viewAll: $('view-all'),
      countWatch: $('count-watch'),
      countAll: $('count-all'),
      detail: $('detail'),
      detailTitle: $('detail-title'),
      detailSub: $('detail-sub'),
      detailBody: $('detail-body'),
      scoreboard: $('scoreboard'),
      scoresEmpty: $('scores-empty'),
      compare: $('compare'),
      cmpBody: $('cmp-body'),
      cmpMsg: $('cmp-msg'),
      announcer: $('announcer'),
      connAnnouncer: $('conn-announcer'),
    };
    this.rows = new Map(); // symbol -> cells
    this.tapeItems = new Map(); // symbol -> [{px, ch}] (two copies)
    this.cards = new Map(); // topic -> parts
    this.leagues = new Map(); // league -> {section, list, unsorted}
    this.view = 'watch';
    this.detailView = null; // {kind: 'symbol'|'match', topic, parts}
    this.announceQueue = [];
    this.announceTimer = 0;
    this.lastAnnounce = 0;
    this.noticeTimer = 0;
    this.catalogKey = '';
    this.tapeKey = '';
    this.cmpRows = new Map();
    this.current = ''; // the row the board's one tab stop is on

    const { el } = this;
    el.transport.addEventListener('change', () => handlers.transport(el.transport.value));
    el.form.addEventListener('submit', async (e) => {
      e.preventDefault();
      el.form.setAttribute('aria-busy', 'true');
      try {
        await handlers.add(el.input.value);
      } finally {
        el.form.removeAttribute('aria-busy');
      }
    });
    el.input.addEventListener('input', () => {
      if (el.input.getAttribute('aria-invalid')) this.addMessage('');
      handlers.filter(el.input.value);
    });
    el.input.addEventListener('keydown', (e) => {
      if (e.key === 'ArrowDown') {
        const first = el.tbody.querySelector('tr:not([hidden]) .sym-btn');
        if (first) {
          e.preventDefault();
          first.focus();
        }
      } else if (e.key === 'Escape' && el.input.value) {
        el.input.value = '';
        handlers.filter('');
      }
    });
    el.tbody.addEventListener('click', (e) => {
      const tr = e.target.closest('tr[data-symbol]');
      if (!tr) return;
      const sym = tr.dataset.symbol;
      if (e.target.closest('button.remove')) handlers.remove(sym);
      else if (e.target.closest('button.star')) handlers.toggleWatch(sym);
      else if (e.target.closest('.sym-btn')) handlers.detail(`market.${sym}`);
    });
    el.tbody.addEventListener('keydown', (e) => this.onBoardKey(e));
    el.tbody.addEventListener('focusin', (e) => {
      const tr = e.target.closest('tr[data-symbol]');
      if (tr) this.rove(tr.dataset.symbol);
    });
    for (const b of [el.viewWatch, el.viewAll]) {
      b.addEventListener('click', () => handlers.view(b.dataset.view));
      b.addEventListener('keydown', (e) => {
        if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight') return;
        e.preventDefault();
        const other = b === el.viewWatch ? el.viewAll : el.viewWatch;
        other.focus();
        handlers.view(other.dataset.view);
      });
    }
    for (const b of el.table.querySelectorAll('button.sort')) b.addEventListener('click', () => handlers.sort(b.dataset.sort));
    el.scoreboard.addEventListener('click', (e) => {
      const card = e.target.closest('article[data-topic]');
      if (card) handlers.detail(card.dataset.topic);
    });
    el.tapeToggle.addEventListener('click', () => {
      const paused = el.tapeToggle.getAttribute('aria-pressed') !== 'true';
      el.tapeToggle.setAttribute('aria-pressed', String(paused));
      el.tape.classList.toggle('paused', paused);
    });
    el.noticeClose.addEventListener('click', () => this.notify(''));
    el.compare.addEventListener('click', () => handlers.compare());
    document.addEventListener('keydown', (e) => {
      if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey) return;
      const t = e.target;
      if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
      e.preventDefault();
      el.input.focus();
      el.input.select();
    });
    this.makeComparison();
  }

  /**
   * setTransport shows the transport in use. With auto, the client chose it: its option says so, and the
   * "Automatic" option stays there to come back to from a forced one.
   */
  setTransport(kind, auto) {
    const { transport } = this.el;
    for (const opt of transport.options) {
      if (!opt.dataset.label) opt.dataset.label = opt.textContent;
      const label = auto && opt.value === kind ? `${opt.dataset.label} (auto)` : opt.dataset.label;
      if (opt.textContent !== label) opt.textContent = label;
    }
    transport.value = kind;
    for (const [k, row] of this.cmpRows) {
      const inUse = k === kind;
      setData(row.tr, 'inuse', String(inUse));
      row.badge.hidden = !inUse;
    }
  }

  // ---- the board ----

  /** setView shows which list the board shows: 'watch' or 'all'. */
  setView(view) {
    this.view = view;
    const watch = view === 'watch';
    setAttr(this.el.viewWatch, 'aria-selected', String(watch));
    setAttr(this.el.viewAll, 'aria-selected', String(!watch));
    this.el.viewWatch.tabIndex = watch ? 0 : -1;
    this.el.viewAll.tabIndex = watch ? -1 : 0;
    setAttr(this.el.table, 'aria-labelledby', watch ? 'view-watch' : 'view-all');
    setData(this.el.table, 'view', view);
  }

  setCounts(watch, all) {
    setText(this.el.countWatch, String(watch));
    setText(this.el.countAll, String(all));
  }

  /** setSort marks the column the board is sorted by: key 'symbol', 'change' or 'volume', dir 1 or -1; null: none. */
  setSort(key, dir) {
    for (const b of this.el.table.querySelectorAll('button.sort')) {
      const th = b.closest('th');
      setAttr(th, 'aria-sort', b.dataset.sort === key ? (dir > 0 ? 'ascending' : 'descending') : 'none');
    }
  }

  /**
   * setBoard shows the rows of symbols, in that order, keeping existing rows (and the focus in them); watched
   * says which are on the watchlist. empty: the list itself is empty; filtered: the search left nothing.
   */
  setBoard(symbols, watched, { empty, filtered }) {
    const keep = new Set(symbols);
    for (const [sym, row] of this.rows) {
      if (!keep.has(sym)) {
        if (row.tr.contains(document.activeElement)) this.focusNear(row);
        row.tr.remove();
        this.rows.delete(sym);
      }
    }
    const focused = document.activeElement;
    let prev = null;
    for (const sym of symbols) {
      const row = this.rows.get(sym) || this.makeRow(sym);
      const want = prev ? prev.nextSibling : this.el.tbody.firstChild;
      if (row.tr !== want) this.el.tbody.insertBefore(row.tr, want);
      prev = row.tr;
      const on = watched.has(sym);
      setAttr(row.star, 'aria-pressed', String(on));
      setText(row.star, on ? '★' : '☆');
      const what = on ? `Remove ${sym} from the watchlist` : `Add ${sym} to the watchlist`;
      setAttr(row.star, 'aria-label', what);
      setAttr(row.star, 'title', what);
    }
    // Moving a row takes the focus out of it: put it back.
    if (focused && focused !== document.activeElement && document.contains(focused)) focused.focus();
    this.rove(keep.has(this.current) ? this.current : symbols[0] || '');
    this.el.empty.hidden = !empty;
    this.el.nomatch.hidden = !(filtered && !symbols.length && !empty);
  }

  makeRow(sym) {
    const cell = (cls) => h('td', { class: cls }, '—');
    const row = {
      last: cell('last num'),
      chg: cell('chg num'),
      pct: cell('pct num'),
      prev: cell('prev num'),
      range: cell('range num'),
      vol: cell('vol num'),
      poly: document.createElementNS(SVG_NS, 'polyline'),
      svg: document.createElementNS(SVG_NS, 'svg'),
    };
    row.svg.setAttribute('class', 'spark');
    row.svg.setAttribute('viewBox', `0 0 ${SPARK_W} ${SPARK_H}`);
    row.svg.setAttribute('preserveAspectRatio', 'none');
    row.svg.setAttribute('aria-hidden', 'true');
    row.svg.setAttribute('focusable', 'false');
    row.svg.append(row.poly);
    row.btn = h('button', { type: 'button', class: 'sym-btn', title: `Chart of ${sym}`, tabindex: -1 }, sym);
    const remove = h('button', { type: 'button', class: 'remove', 'aria-label': `Remove ${sym}`, title: `Remove ${sym}`, tabindex: -1 }, '×');
    row.star = h('button', { type: 'button', class: 'star', 'aria-pressed': 'false', tabindex: -1 }, '☆');
    row.tr = h(
      'tr',
      { 'data-symbol': sym },
      h('th', { scope: 'row', class: 'sym' }, row.btn),
      row.last,
      row.chg,
      row.pct,
      row.prev,
      row.range,
      row.vol,
      h('td', { class: 'trend' }, row.svg),
      h('td', { class: 'rm' }, remove, row.star),
    );
    this.rows.set(sym, row);
    return row;
  }

  /** rove makes sym's row the board's one tab stop: Tab enters the board once, the arrows move inside it. */
  rove(sym) {
    const old = this.rows.get(this.current);
    if (old && this.current !== sym) old.btn.tabIndex = -1;
    this.current = sym;
    const row = this.rows.get(sym);
    if (row) row.btn.tabIndex = 0;
  }

  /** onBoardKey moves through the board with the keyboard: arrows, Home, End; Delete removes; + adds. */
  onBoardKey(e) {
    const tr = e.target.closest('tr[data-symbol]');
    if (!tr || e.altKey || e.ctrlKey || e.metaKey) return;
    const rows = [...this.el.tbody.querySelectorAll('tr[data-symbol]:not([hidden])')];
    const i = rows.indexOf(tr);
    const go = (j) => {
      const r = rows[Math.max(0, Math.min(rows.length - 1, j))];
      if (r) r.querySelector('.sym-btn').focus();
    };
    const sym = tr.dataset.symbol;
    switch (e.key) {
      case 'ArrowDown':
        go(i + 1);
        break;
      case 'ArrowUp':
        if (i === 0) this.el.input.focus();
        else go(i - 1);
        break;
      case 'Home':
        go(0);
        break;
      case 'End':
        go(rows.length - 1);
        break;
      case 'Delete':
      case 'Backspace':
        this.handlers.remove(sym);
        break;
      case '+':
      case 'Insert':
        this.handlers.toggleWatch(sym);
        break;
      default:
        return;
    }
    e.preventDefault();
  }

  /** focusNear moves focus off a row about to go: to the next row, or to the search. */
  focusNear(row) {
    const next = row.tr.nextElementSibling || row.tr.previousElementSibling;
    const btn = next && next.querySelector('.sym-btn');
    (btn || this.el.input).focus();
  }

  /** focusAfterRemove moves focus off a row about to go, if it has it. */
  focusAfterRemove(sym) {
    const row = this.rows.get(sym);
    if (row && row.tr.contains(document.activeElement)) this.focusNear(row);
  }

  /** setTape makes the tape show symbols and then the matches of scores; it returns whether it changed. */
  setTape(symbols, scores = []) {
    const key = symbols.join(',') + '|' + scores.join(',');
    if (key === this.tapeKey) return false;
    this.tapeKey = key;
    const { tapeTrack } = this.el;
    tapeTrack.replaceChildren();
    this.tapeItems.clear();
    for (let copy = 0; copy < 2; copy++) {
      const list = h('ul', { class: 'tape-copy' });
      for (const sym of symbols) {
        const item = { px: h('span', { class: 't-px' }, '—'), ch: h('span', { class: 't-ch' }, '') };
        list.append(h('li', { class: 't-item', 'data-tsym': sym }, h('span', { class: 't-sym' }, sym), item.px, item.ch));
        if (!this.tapeItems.has(sym)) this.tapeItems.set(sym, []);
        this.tapeItems.get(sym).push(item);
      }
      for (const topic of scores) {
        const item = { line: h('span', { class: 't-score' }, '') };
        list.append(h('li', { class: 't-item t-game', 'data-ttopic': topic }, item.line));
        if (!this.tapeItems.has(topic)) this.tapeItems.set(topic, []);
        this.tapeItems.get(topic).push(item);
      }
      tapeTrack.append(list);
    }
    // Scroll speed stays the same whatever the number of items: measure once per change.
    requestAnimationFrame(() => {
      const first = tapeTrack.firstElementChild;
      const w = first ? first.getBoundingClientRect().width : 0;
      tapeTrack.style.setProperty('--tape-duration', `${Math.max(15, Math.round(w / TAPE_PX_PER_S))}s`);
    });
    return true;
  }

  /** renderQuote shows q (a quote payload) in the symbol's row and tape items; move is "up", "down" or null. */
  renderQuote(sym, q, hist, move) {
    if (!q) return;
    const chgDir = direction(q.change);
    const row = this.rows.get(sym);
    if (row) {
      setText(row.last, fmt.price(q.price));
      setText(row.chg, fmt.signed(q.change));
      setText(row.pct, fmt.signed(q.changePct, '%'));
      setText(row.prev, fmt.price(q.prevClose));
      setText(row.range, fmt.range(q.low, q.high));
      setText(row.vol, fmt.volume(q.volume));
      setData(row.chg, 'dir', chgDir);
      setData(row.pct, 'dir', chgDir);
      if (move) flash(row.last, move);
      row.poly.setAttribute('points', sparkPoints(hist));
      const trend = hist.length > 1 ? direction(hist[hist.length - 1] - hist[0]) : 'flat';
      if (row.svg.dataset.dir !== trend) row.svg.dataset.dir = trend;
    }
    for (const item of this.tapeItems.get(sym) || []) {
      setText(item.px, fmt.price(q.price));
      setText(item.ch, `${chgDir === 'up' ? '▲' : chgDir === 'down' ? '▼' : '■'} ${fmt.signed(q.changePct, '%')}`);
      setData(item.ch, 'dir', chgDir);
    }
  }

  /** renderSession shows the market's trading session. */
  renderSession(session) {
    setData(this.el.market, 'session', session || '');
    setText(this.el.marketSession, sessionName(session));
  }

  /** addMessage shows text under the add form; error marks the input invalid. */
  addMessage(text, error = false) {
    const { addMsg, input } = this.el;
    setText(addMsg, text);
    addMsg.classList.toggle('error', error);
    if (error) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }

  clearInput() {
    this.el.input.value = '';
  }

  setCatalog(symbols) {
    const key = symbols.join(',');
    if (key === this.catalogKey) return;
    this.catalogKey = key;
    this.el.symbols.replaceChildren(...symbols.map((s) => h('option', { value: s })));
  }

  // ---- scoreboard ----

  league(code) {
    let lg = this.leagues.get(code);
    if (lg) return lg;
    const id = `league-${code.replace(/[^a-z0-9_-]/gi, '_')}`;
    const list = h('div', { class: 'matches' });
    const section = h('section', { class: 'league', 'data-league': code, 'aria-labelledby': id }, h('h3', { id }, leagueName(code)), list);
    lg = { section, list, unsorted: true };
    this.leagues.set(code, lg);
    // Fixed order for the known leagues, then the others by code.
    const rank = (c) => {
      const i = LEAGUE_ORDER.indexOf(c);
      return i < 0 ? LEAGUE_ORDER.length : i;
    };
    const after = [...this.el.scoreboard.children].find((s) => {
      const c = s.dataset.league;
      return rank(c) > rank(code) || (rank(c) === rank(code) && c > code);
    });
    this.el.scoreboard.insertBefore(section, after || null);
    this.el.scoresEmpty.hidden = true;
    return lg;
  }

  makeCard(topic, league) {
    const part = (cls, text = '') => h('span', { class: cls }, text);
    const team = (side) => {
      const t = { abbr: part('abbr'), name: part('t-name'), score: part(`t-score s-${side}`) };
      t.el = h('div', { class: `m-team ${side}` }, t.abbr, t.name, t.score);
      return t;
    };
    const c = {
      status: part('status'),
      period: part('period'),
      clock: part('clock'),
      home: team('home'),
      away: team('away'),
      vs: h('div', { class: 'm-vs', 'aria-hidden': 'true' }, 'vs'),
      event: h('p', { class: 'event' }),
      open: h('button', { type: 'button', class: 'm-open' }),
      league,
      rank: -1,
      start: 0,
    };
    c.el = h(
      'article',
      { class: 'match', 'data-topic': topic },
      h('div', { class: 'm-head' }, c.status, c.period, c.clock),
      h('div', { class: 'm-body' }, c.home.el, c.vs, c.away.el),
      c.event,
      c.open,
    );
    this.cards.set(topic, c);
    const lg = this.league(league);
    lg.list.append(c.el);
    lg.unsorted = true;
    return c;
  }

  /** renderMatch shows m (a score payload) in its card, making it if new; scored flashes the score. */
  renderMatch(topic, m, scored) {
    const league = String(m.league || topic.split('.')[1] || 'other');
    const c = this.cards.get(topic) || this.makeCard(topic, league);
    const status = STATUS_RANK[m.status] != null ? m.status : 'scheduled';
    const home = teamName(m.home, 'Home');
    const away = teamName(m.away, 'Away');
    setText(c.status, status);
    setData(c.status, 'status', status);
    setData(c.el, 'status', status);
    const start = Date.parse(m.start);
    if (status === 'scheduled') {
      setText(c.period, STARTS[league] || 'Starts');
      setText(c.clock, timeText(start));
    } else {
      setText(c.period, String(m.period || (status === 'final' ? 'FT' : '')));
      setText(c.clock, status === 'final' ? '' : String(m.clock || ''));
    }
    for (const [t, side, name] of [[c.home, m.home, home], [c.away, m.away, away]]) {
      setText(t.name, name);
      setText(t.abbr, String((side && side.abbr) || ''));
      const score = status === 'scheduled' ? '' : scoreText(side);
      if (scored && t.score.textContent !== score) flash(t.score, 'score'); // the side that scored
      setText(t.score, score);
    }
    if (status !== 'scheduled') {
      const h = Number(m.home && m.home.score);
      const a = Number(m.away && m.away.score);
      setData(c.home.el, 'lead', String(h > a));
      setData(c.away.el, 'lead', String(a > h));
    }
    const last = status === 'scheduled' ? '' : String(m.lastScore || m.event || '');
    setText(c.event, last);
    const label = `Details of ${home} against ${away}`;
    setAttr(c.open, 'aria-label', label);
    const rank = STATUS_RANK[status];
    const startKey = start || 0;
    if (rank !== c.rank || startKey !== c.start) {
      c.rank = rank;
      c.start = startKey;
      this.leagues.get(c.league).unsorted = true;
    }
    for (const item of this.tapeItems.get(topic) || []) setText(item.line, tapeScore(m, league));
    if (this.detailView && this.detailView.topic === topic) this.renderMatchHead(m);
  }

  removeMatch(topic) {
    const c = this.cards.get(topic);
    if (!c) return;
    c.el.remove();
    this.cards.delete(topic);
    this.leagues.get(c.league).unsorted = true; // hides the league if that was its last card
  }

  /** sortLeagues orders the cards of leagues that changed: live, then scheduled by start, then final. */
  sortLeagues() {
    for (const lg of this.leagues.values()) {
      if (!lg.unsorted) continue;
      lg.unsorted = false;
      const cards = [...lg.list.children].map((el) => this.cards.get(el.dataset.topic)).filter(Boolean);
      const order = cards.slice().sort((a, b) => a.rank - b.rank || (a.rank === 2 ? b.start - a.start : a.start - b.start));
      if (order.some((c, i) => c !== cards[i])) for (const c of order) lg.list.append(c.el);
      lg.section.hidden = cards.length === 0;
    }
  }

  /** announce tells screen readers about a score change, politely, merging what comes close together. */
  announce(text) {
    this.announceQueue.push(text);
    if (this.announceTimer) return;
    const wait = Math.max(0, this.lastAnnounce + ANNOUNCE_GAP_MS - performance.now());
    this.announceTimer = setTimeout(() => {
      this.announceTimer = 0;
      this.lastAnnounce = performance.now();
      const msgs = this.announceQueue.splice(0);
      const text = msgs.length > 3 ? `${msgs.slice(-3).join('. ')}. And ${msgs.length - 3} more score changes.` : msgs.join('. ');
      // Empty first so that the same words twice are announced twice.
      this.el.announcer.textContent = '';
      setTimeout(() => {
        this.el.announcer.textContent = text;
      }, 50);
    }, wait);
  }

  // ---- the detail view ----

  /** showSymbol makes the detail view a symbol's: its quote and a chart; it returns the chart. */
  showSymbol(sym) {
    this.closeDetail();
    const stat = (label, cls) => {
      const dd = h('dd', { class: cls }, '—');
      return [h('div', null, h('dt', null, label), dd), dd];
    };
    const [open, openDd] = stat('Open', 'd-open');
    const [prev, prevDd] = stat('Prev close', 'd-prev');
    const [range, rangeDd] = stat('Day range', 'd-range');
    const [vol, volDd] = stat('Volume', 'd-vol');
    const [ba, baDd] = stat('Bid / Ask', 'd-ba');
    const parts = {
      price: h('span', { class: 'd-price' }, '—'),
      change: h('span', { class: 'd-change' }, ''),
      session: h('span', { class: 'd-session' }, ''),
      open: openDd,
      prev: prevDd,
      range: rangeDd,
      vol: volDd,
      ba: baDd,
      chartBox: h('div', { class: 'chart-box' }),
      note: h('p', { class: 'chart-note' }, 'Loading the day from the stream…'),
    };
    this.el.detailBody.replaceChildren(
      h('div', { class: 'd-quote' }, parts.price, parts.change, parts.session),
      h('dl', { class: 'd-stats' }, open, prev, range, vol, ba),
      parts.chartBox,
      parts.note,
    );
    setText(this.el.detailTitle, sym);
    setText(this.el.detailSub, 'intraday');
    setData(this.el.detail, 'kind', 'symbol');
    setData(this.el.detail, 'topic', `market.${sym}`);
    parts.chart = new Chart(parts.chartBox, fmt.price);
    this.detailView = { kind: 'symbol', topic: `market.${sym}`, sym, parts };
    return parts.chart;
  }

  /** renderSymbol shows a quote and the chart of the series in the detail view, if it shows that symbol. */
  renderSymbol(sym, q, series, note) {
    const v = this.detailView;
    if (!v || v.kind !== 'symbol' || v.sym !== sym) return;
    const p = v.parts;
    if (q) {
      const dir = direction(q.change);
      setText(p.price, fmt.price(q.price));
      setText(p.change, `${fmt.signed(q.change)} (${fmt.signed(q.changePct, '%')})`);
      setData(p.change, 'dir', dir);
      setText(p.session, sessionName(q.session));
      setData(p.session, 'session', String(q.session || ''));
      setText(p.open, fmt.price(q.open));
      setText(p.prev, fmt.price(q.prevClose));
      setText(p.range, fmt.range(q.low, q.high));
      setText(p.vol, fmt.volume(q.volume));
      setText(p.ba, `${fmt.price(q.bid)} / ${fmt.price(q.ask)}`);
    }
    if (series) p.chart.draw(series, q ? Number(q.prevClose) : NaN, `${sym}, ${series.interval / 1000}-second bars`);
    if (note != null) setText(p.note, note);
  }

  /** showMatch makes the detail view a match's: its score and its timeline. */
  showMatch(topic, league) {
    this.closeDetail();
    const parts = {
      league,
      status: h('span', { class: 'status' }, ''),
      period: h('span', { class: 'period' }, ''),
      clock: h('span', { class: 'clock' }, ''),
      home: h('span', { class: 'd-team' }, ''),
      away: h('span', { class: 'd-team' }, ''),
      sHome: h('span', { class: 'd-score' }, ''),
      sAway: h('span', { class: 'd-score' }, ''),
      start: h('p', { class: 'd-start' }, ''),
      timeline: h('ol', { class: 'timeline', 'aria-label': 'Timeline, newest first' }),
      note: h('p', { class: 'chart-note' }, 'Loading the match from the stream…'),
      shown: 0,
    };
    this.el.detailBody.replaceChildren(
      h('div', { class: 'm-head' }, parts.status, parts.period, parts.clock),
      h('div', { class: 'd-match' },
        h('div', { class: 'd-side' }, parts.home, parts.sHome),
        h('div', { class: 'd-side' }, parts.away, parts.sAway)),
      parts.start,
      h('h3', { class: 'tl-title' }, 'Timeline'),
      parts.timeline,
      parts.note,
    );
    setText(this.el.detailTitle, leagueName(league));
    setText(this.el.detailSub, 'match');
    setData(this.el.detail, 'kind', 'match');
    setData(this.el.detail, 'topic', topic);
    this.detailView = { kind: 'match', topic, parts };
  }

  renderMatchHead(m) {
    const p = this.detailView.parts;
    const status = STATUS_RANK[m.status] != null ? m.status : 'scheduled';
    setText(p.status, status);
    setData(p.status, 'status', status);
    setText(p.period, status === 'scheduled' ? STARTS[p.league] || 'Starts' : String(m.period || ''));
    setText(p.clock, status === 'live' ? String(m.clock || '') : '');
    setText(p.home, teamName(m.home, 'Home'));
    setText(p.away, teamName(m.away, 'Away'));
    setText(p.sHome, status === 'scheduled' ? '' : scoreText(m.home));
    setText(p.sAway, status === 'scheduled' ? '' : scoreText(m.away));
    const start = Date.parse(m.start);
    setText(p.start, Number.isFinite(start) ? `${STARTS[p.league] || 'Start'} ${timeText(start)}` : '');
  }

  /** renderTimeline adds the events of updates (a match's, oldest first) that the timeline does not show yet. */
  renderTimeline(topic, updates, note) {
    const v = this.detailView;
    if (!v || v.kind !== 'match' || v.topic !== topic) return;
    const p = v.parts;
    let prevEvent = p.shown > 0 ? updates[p.shown - 1]?.data?.event : undefined;
    for (let i = p.shown; i < updates.length; i++) {
      const { cursor, data: m } = updates[i];
      const event = m && m.event;
      if (event && event !== prevEvent) {
        const when = [m.period, m.status === 'live' ? m.clock : ''].filter(Boolean).join(' ');
        const score = m.status === 'scheduled' ? '' : `${scoreText(m.home)}–${scoreText(m.away)}`;
        const scoring = event === m.lastScore;
        p.timeline.prepend(
          h('li', { 'data-cursor': cursor, class: scoring ? 'scoring' : null },
            h('span', { class: 'tl-when' }, when),
            h('span', { class: 'tl-event' }, event),
            h('span', { class: 'tl-score' }, score)),
        );
      }
      prevEvent = event;
    }
    p.shown = updates.length;
    if (updates.length) this.renderMatchHead(updates[updates.length - 1].data);
    if (note != null) setText(p.note, note);
  }

  closeDetail() {
    if (this.detailView && this.detailView.parts.chart) this.detailView.parts.chart.destroy();
    this.detailView = null;
  }

  // ---- connection, counters, comparison, notices ----

  renderConn(state, detail) {
    setData(this.el.conn, 'state', state);
    setText(this.el.connState, state);
    setText(this.el.connDetail, detail);
    this.el.connSep.hidden = !detail;
  }

  /** announceConn says a connection state change in the status region (not its ever-changing details). */
  announceConn(text) {
    this.el.connAnnouncer.textContent = text;
  }

  renderCounters(c, cursor) {
    setText(this.el.updates, String(c.updates));
    const dupTitle = `${c.duplicates} of them dropped as duplicates`;
    if (this.el.updates.title !== dupTitle) this.el.updates.title = dupTitle;
    setText(this.el.bytes, fmt.bytes(c.bytes));
    setData(this.el.bytes, 'value', String(c.bytes));
    setText(this.el.requests, String(c.requests));
    setText(this.el.latency, `${fmt.ms(c.latencyP50)} / ${fmt.ms(c.latencyP90)} ms`);
    setText(this.el.cursor, cursor || '—');
  }

  makeComparison() {
    for (const k of KINDS) {
      const cell = () => h('td', { class: 'num' }, '—');
      const row = { updates: cell(), bytes: cell(), requests: cell(), delay: cell(), badge: h('span', { class: 'inuse' }, 'in use') };
      row.badge.hidden = true;
      row.tr = h(
        'tr',
        { 'data-kind': k.kind },
        h('th', { scope: 'row' }, h('span', { class: 'tname' }, k.label, ' ', row.badge), h('span', { class: 'about' }, k.about)),
        row.updates,
        row.bytes,
        row.requests,
        row.delay,
      );
      this.cmpRows.set(k.kind, row);
      this.el.cmpBody.append(row.tr);
    }
  }

  /** renderComparison shows a Measure per transport kind (missing: not measured); measuring marks those in progress. */
  renderComparison(measures, measuring) {
    for (const [kind, row] of this.cmpRows) {
      const m = measures.get(kind);
      setData(row.tr, 'measuring', String(measuring.has(kind)));
      if (!m || !m.updates) {
        setText(row.updates, measuring.has(kind) ? '…' : m ? '0' : '—');
        for (const c of [row.bytes, row.requests, row.delay]) setText(c, '—');
        continue;
      }
      setText(row.updates, String(m.updates));
      setText(row.bytes, fmt.bytes(m.bytesPerUpdate));
      setData(row.bytes, 'value', String(m.bytesPerUpdate));
      setText(row.requests, m.requestsPerUpdate.toFixed(m.requestsPerUpdate < 0.1 ? 3 : 2));
      setData(row.requests, 'value', String(m.requestsPerUpdate));
      setText(row.delay, `${fmt.ms(m.p50)} / ${fmt.ms(m.p90)} ms`);
    }
  }

  comparing(on, text) {
    this.el.compare.disabled = on;
    setText(this.el.cmpMsg, text);
  }

  /** notify shows a message from the edge for a while; '' hides it. */
  notify(text) {
    const { notice, noticeText } = this.el;
    clearTimeout(this.noticeTimer);
    setText(noticeText, text);
    notice.hidden = !text;
    if (text) this.noticeTimer = setTimeout(() => this.notify(''), 15000);
  }
}

function teamName(side, fallback) {
  return String((side && side.name) || fallback);
}

function scoreText(side) {
  const n = side && Number(side.score);
  return side && side.score != null && Number.isFinite(n) ? String(n) : '0';
}

/** tapeScore is a match as the bottom line of a sports channel writes it: abbreviations, score, period. */
function tapeScore(m, league) {
  const abbr = (side, fallback) => String((side && (side.abbr || side.name)) || fallback);
  const head = `${leagueName(league)} `;
  if (m.status === 'scheduled') {
    return `${head}${abbr(m.home, 'Home')} vs ${abbr(m.away, 'Away')} ${timeText(Date.parse(m.start), false)}`;
  }
  const when = m.status === 'final' ? 'Final' : [m.period, m.clock].filter(Boolean).join(' ');
  return `${head}${abbr(m.home, 'Home')} ${scoreText(m.home)} ${abbr(m.away, 'Away')} ${scoreText(m.away)} ${when}`;
}

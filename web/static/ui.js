// ui.js: the page's DOM. It builds rows, tape items and score cards once and afterwards only changes text,
// attributes and one polyline in place; app.js calls it at most once per animation frame.

const LEAGUES = { epl: 'Premier League', nba: 'NBA', nhl: 'NHL' };
const LEAGUE_ORDER = ['epl', 'nba', 'nhl'];
const STATUS_RANK = { live: 0, scheduled: 1, final: 2 };
const SVG_NS = 'http://www.w3.org/2000/svg';
const SPARK_W = 60;
const SPARK_H = 20;
const ANNOUNCE_GAP_MS = 1500; // the least time between two score announcements (they are merged meanwhile)
const TAPE_PX_PER_S = 60;

/** leagueName is the display name of a league code. */
export function leagueName(code) {
  return LEAGUES[code] || String(code || 'other').toUpperCase();
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
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(2)} MiB`;
    return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
  },
  ms(v) {
    if (v == null) return '–';
    return Math.abs(v) < 10 ? v.toFixed(1) : String(Math.round(v));
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

/** UI owns the page's elements. handlers: {add(symbol) -> Promise, remove(symbol), transport(kind)}. */
export class UI {
  constructor(handlers) {
    const $ = (id) => document.getElementById(id);
    this.el = {
      conn: $('conn'),
      connState: $('conn-state'),
      connDetail: $('conn-detail'),
      connSep: $('conn-sep'),
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
      tbody: $('wl-body'),
      empty: $('wl-empty'),
      scoreboard: $('scoreboard'),
      scoresEmpty: $('scores-empty'),
      announcer: $('announcer'),
      connAnnouncer: $('conn-announcer'),
    };
    this.rows = new Map(); // symbol -> cells
    this.tapeItems = new Map(); // symbol -> [{px, ch}] (two copies)
    this.cards = new Map(); // topic -> parts
    this.leagues = new Map(); // league -> {section, list, unsorted}
    this.announceQueue = [];
    this.announceTimer = 0;
    this.lastAnnounce = 0;
    this.noticeTimer = 0;
    this.catalogKey = '';

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
    });
    el.tbody.addEventListener('click', (e) => {
      const btn = e.target.closest('button.remove');
      const tr = btn && btn.closest('tr[data-symbol]');
      if (tr) handlers.remove(tr.dataset.symbol);
    });
    el.tapeToggle.addEventListener('click', () => {
      const paused = el.tapeToggle.getAttribute('aria-pressed') !== 'true';
      el.tapeToggle.setAttribute('aria-pressed', String(paused));
      el.tape.classList.toggle('paused', paused);
    });
    el.noticeClose.addEventListener('click', () => this.notify(''));
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
  }

  // ---- watchlist ----

  /** setWatchlist makes the table rows and the tape match symbols (in that order), keeping existing rows. */
  setWatchlist(symbols) {
    const keep = new Set(symbols);
    for (const [sym, row] of this.rows) {
      if (!keep.has(sym)) {
        row.tr.remove();
        this.rows.delete(sym);
      }
    }
    // Rows already in place stay put: moving a row would take the keyboard focus out of it.
    let prev = null;
    for (const sym of symbols) {
      const row = this.rows.get(sym) || this.makeRow(sym);
      const want = prev ? prev.nextSibling : this.el.tbody.firstChild;
      if (row.tr !== want) this.el.tbody.insertBefore(row.tr, want);
      prev = row.tr;
    }
    this.el.empty.hidden = symbols.length > 0;
    this.setTape(symbols);
  }

  makeRow(sym) {
    const cell = (cls) => h('td', { class: cls }, '—');
    const row = {
      last: cell('last num'),
      chg: cell('chg num'),
      pct: cell('pct num'),
      bid: h('span', { class: 'bid' }, '—'),
      ask: h('span', { class: 'ask' }, '—'),
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
    const remove = h('button', { type: 'button', class: 'remove', 'aria-label': `Remove ${sym}`, title: `Remove ${sym}` }, '×');
    row.tr = h(
      'tr',
      { 'data-symbol': sym },
      h('th', { scope: 'row', class: 'sym' }, sym),
      row.last,
      row.chg,
      row.pct,
      h('td', { class: 'ba num' }, row.bid, h('span', { class: 'slash', 'aria-hidden': 'true' }, ' / '), row.ask),
      row.vol,
      h('td', { class: 'trend' }, row.svg),
      h('td', { class: 'rm' }, remove),
    );
    this.rows.set(sym, row);
    return row;
  }

  setTape(symbols) {
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
      tapeTrack.append(list);
    }
    // Scroll speed stays the same whatever the number of symbols: measure once per watchlist change.
    requestAnimationFrame(() => {
      const first = tapeTrack.firstElementChild;
      const w = first ? first.getBoundingClientRect().width : 0;
      tapeTrack.style.setProperty('--tape-duration', `${Math.max(15, Math.round(w / TAPE_PX_PER_S))}s`);
    });
  }

  /** renderQuote shows q (a quote payload) in the symbol's row and tape items; move is "up", "down" or null. */
  renderQuote(sym, q, hist, move) {
    const row = this.rows.get(sym);
    if (!row || !q) return;
    const chgDir = direction(q.change);
    setText(row.last, fmt.price(q.price));
    setText(row.chg, fmt.signed(q.change));
    setText(row.pct, fmt.signed(q.changePct, '%'));
    setText(row.bid, fmt.price(q.bid));
    setText(row.ask, fmt.price(q.ask));
    setText(row.vol, fmt.volume(q.volume));
    setData(row.chg, 'dir', chgDir);
    setData(row.pct, 'dir', chgDir);
    if (move) flash(row.last, move);
    row.poly.setAttribute('points', sparkPoints(hist));
    const trend = hist.length > 1 ? direction(hist[hist.length - 1] - hist[0]) : 'flat';
    if (row.svg.dataset.dir !== trend) row.svg.dataset.dir = trend;
    for (const item of this.tapeItems.get(sym) || []) {
      setText(item.px, fmt.price(q.price));
      setText(item.ch, `${chgDir === 'up' ? '▲' : chgDir === 'down' ? '▼' : '■'} ${fmt.signed(q.changePct, '%')}`);
      setData(item.ch, 'dir', chgDir);
    }
  }

  /** focusAfterRemove moves focus off a row about to go: to the next row's remove button, or to the input. */
  focusAfterRemove(sym) {
    const row = this.rows.get(sym);
    if (!row || !row.tr.contains(document.activeElement)) return;
    const next = row.tr.nextElementSibling || row.tr.previousElementSibling;
    const btn = next && next.querySelector('button.remove');
    (btn || this.el.input).focus();
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
    const c = {
      status: part('status'),
      period: part('period'),
      clock: part('clock'),
      home: part('team home'),
      away: part('team away'),
      sHome: part('s-home', '0'),
      sAway: part('s-away', '0'),
      event: h('p', { class: 'event' }),
      league,
      rank: -1,
      start: 0,
    };
    c.score = h('span', { class: 'score' }, c.sHome, h('span', { class: 'sep' }, '–'), c.sAway);
    c.el = h(
      'article',
      { class: 'match', 'data-topic': topic },
      h('div', { class: 'm-head' }, c.status, c.period, c.clock),
      h('div', { class: 'm-body' }, c.home, c.score, c.away),
      c.event,
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
    const home = (m.home && m.home.name) || 'Home';
    const away = (m.away && m.away.name) || 'Away';
    setText(c.status, status);
    setData(c.status, 'status', status);
    setData(c.el, 'status', status);
    if (status === 'scheduled') {
      setText(c.period, 'starts');
      setText(c.clock, startText(m.start));
    } else {
      setText(c.period, String(m.period || (status === 'final' ? 'FT' : '')));
      setText(c.clock, status === 'final' ? '' : String(m.clock || ''));
    }
    setText(c.home, home);
    setText(c.away, away);
    setText(c.sHome, scoreText(m.home));
    setText(c.sAway, scoreText(m.away));
    if (c.home.title !== `${home} (home)`) c.home.title = `${home} (home)`;
    if (c.away.title !== `${away} (away)`) c.away.title = `${away} (away)`;
    setText(c.event, String(m.event || ''));
    if (scored) flash(c.score, 'score');
    const rank = STATUS_RANK[status];
    const start = Date.parse(m.start) || 0;
    if (rank !== c.rank || start !== c.start) {
      c.rank = rank;
      c.start = start;
      this.leagues.get(c.league).unsorted = true;
    }
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

  // ---- connection, counters, notices ----

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

  /** notify shows a message from the edge for a while; '' hides it. */
  notify(text) {
    const { notice, noticeText } = this.el;
    clearTimeout(this.noticeTimer);
    setText(noticeText, text);
    notice.hidden = !text;
    if (text) this.noticeTimer = setTimeout(() => this.notify(''), 15000);
  }
}

function scoreText(side) {
  const n = side && Number(side.score);
  return side && side.score != null && Number.isFinite(n) ? String(n) : '0';
}

function startText(start) {
  const t = Date.parse(start);
  if (!Number.isFinite(t)) return '';
  const d = new Date(t);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return new Date().toDateString() === d.toDateString() ? time : `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
}

package web_test

// The page's views, tested as a trader and a fan use them: the market board (every symbol, searched, sorted, added,
// removed, with the keyboard), the chart of a symbol's day from the stream's history joined to the live stream, a
// match's timeline, the scoreboard, the comparison of transports, the market's session, and the layout at every
// width from a small phone to a large monitor.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/device"
	"github.com/chromedp/chromedp/kb"

	"github.com/livepush/livepush/feeds"
)

// catalogSymbols returns the market symbols of the edge's catalog.
func (s *system) catalogSymbols() []string {
	s.t.Helper()
	resp, err := http.Get("http://" + s.addr + "/api/topics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Topics []struct{ Topic string } }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for _, t := range body.Topics {
		if sym, ok := strings.CutPrefix(t.Topic, "market."); ok {
			out = append(out, sym)
		}
	}
	sort.Strings(out)
	return out
}

// waitCatalog waits until the edge's catalog lists at least n symbols: a fresh stream learns them one by one.
func (s *system) waitCatalog(n int) []string {
	s.t.Helper()
	for deadline := time.Now().Add(waitLong); ; time.Sleep(100 * time.Millisecond) {
		if syms := s.catalogSymbols(); len(syms) >= n {
			return syms
		} else if time.Now().After(deadline) {
			s.t.Fatalf("the catalog lists %d symbols after %v, want %d", len(syms), waitLong, n)
		}
	}
}

// shownRows is the symbols of the board's rows, in the order shown.
const shownRows = `[...document.querySelectorAll('#wl-body tr[data-symbol]')].map((r) => r.dataset.symbol)`

// key sends a key to the element that has the focus.
func (p *page) key(k string) {
	p.t.Helper()
	p.do(chromedp.KeyEvent(k))
}

// shortcut presses a key the page takes as a shortcut: key down and up. Chromium's protocol sends the character of a
// key as an event of its own, which a page's preventDefault on key down cannot stop as it does for a real key.
func (p *page) shortcut(r rune) {
	p.t.Helper()
	p.do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, k := range kb.Encode(r) {
			if k.Type == kb.KeyChar {
				continue
			}
			if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, *k); err != nil {
				return err
			}
		}
		return nil
	}))
}

// testBoardSearchSortAndKeys: the board shows the day of each symbol (previous close, range, volume), lists every
// symbol of the catalog, finds them by search, adds and removes them (kept in the browser across a reload), sorts
// by change, and is used with the keyboard alone.
func testBoardSearchSortAndKeys(t *testing.T, sys *system) {
	catalog := sys.waitCatalog(len(feeds.DefaultSymbols))
	p := openPage(t, sys.url())
	p.waitFor("the connection is live", waitLong, jsState+` === 'live'`)
	p.prices()

	// The day of each symbol, as quote boards show it.
	p.waitFor("AAPL's row shows its previous close, day range and volume", waitShort, `(() => {
		const r = document.querySelector('tr[data-symbol="AAPL"]');
		const [lo, hi] = r.querySelector('.range').textContent.split(' – ').map(Number);
		const last = Number(r.querySelector('.last').textContent);
		return /^\d+\.\d\d$/.test(r.querySelector('.prev').textContent) && lo <= last && last <= hi &&
			/^[\d.]+[KMB]?$/.test(r.querySelector('.vol').textContent);
	})()`)

	// Every symbol.
	p.do(chromedp.Click(chromedp.CSS("#view-all")))
	p.waitFor("the board lists every symbol of the catalog", waitShort,
		fmt.Sprintf(`%s.length >= %d && document.querySelector('#view-all').getAttribute('aria-selected') === 'true'`, shownRows, len(catalog)))
	if got := eval[[]string](p, shownRows); !sameSet(got, catalog) {
		t.Errorf("All symbols shows %v, want the catalog %v", got, catalog)
	}
	p.waitFor("a symbol off the watchlist gets live prices", waitShort,
		`/^\d+\.\d+$/.test(document.querySelector('tr[data-symbol="`+busySymbol+`"] .last').textContent)`)

	// Search.
	p.do(chromedp.SendKeys(chromedp.CSS("#add-symbol"), "am"))
	var want []string
	for _, s := range catalog {
		if strings.Contains(s, "AM") {
			want = append(want, s)
		}
	}
	if len(want) < 2 {
		t.Fatalf("the catalog has %v with AM: pick another search", want)
	}
	p.waitFor("the search shows the symbols with AM", waitShort, fmt.Sprintf(`JSON.stringify(%s) === JSON.stringify(%s)`, shownRows, mustJSON(t, want)))

	// Add one from the search, with its star: it joins the watchlist and stays there across a reload.
	onList := eval[[]string](p, `window.livepush.watchlist`)
	i := slices.IndexFunc(want, func(s string) bool { return !slices.Contains(onList, s) })
	if i < 0 {
		t.Fatalf("%v are all on the default watchlist: pick another search", want)
	}
	added := want[i]
	p.do(chromedp.Click(chromedp.CSS(`tr[data-symbol="` + added + `"] button.star`)))
	p.waitFor(added+" is on the watchlist", waitShort, `window.livepush.watchlist.includes('`+added+`') &&
		document.querySelector('tr[data-symbol="`+added+`"] button.star').getAttribute('aria-pressed') === 'true'`)
	p.do(chromedp.Reload())
	p.waitFor("the page is back", waitLong, `window.livepush && window.livepush.watchlist.length > 0 && `+jsState+` === 'live'`)
	if got := eval[[]string](p, `window.livepush.watchlist`); !slices.Contains(got, added) {
		t.Errorf("after a reload the watchlist is %v, without %s", got, added)
	}
	if v := eval[string](p, `window.livepush.view`); v != "all" {
		t.Errorf("after a reload the board shows %q, want all (kept too)", v)
	}

	// Sorted by change, biggest first, as the prices move.
	p.do(chromedp.Click(chromedp.CSS("#view-watch")))
	p.do(chromedp.Click(chromedp.CSS(`button.sort[data-sort="change"]`)))
	sorted := `(() => {
		const v = [...document.querySelectorAll('#wl-body tr[data-symbol]')].map((r) => r.querySelector('.pct').textContent)
			.filter((s) => s !== '—').map((s) => Number(s.replace('%', '')));
		return v.length >= 10 && v.every((x, i) => i === 0 || v[i - 1] >= x);
	})()`
	p.waitFor("the rows are ordered by % change, biggest first", waitShort,
		sorted+` && document.querySelector('th.c-pct').getAttribute('aria-sort') === 'descending'`)
	time.Sleep(2500 * time.Millisecond) // prices moved: the board reorders by itself
	p.waitFor("the rows are still ordered by % change", waitShort, sorted)

	// The keyboard alone: / to search, down into the board, along it, Enter for the chart, Delete to remove.
	p.do(chromedp.Click(chromedp.CSS(`button.sort[data-sort="symbol"]`)))
	p.do(chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
	p.shortcut('/')
	p.waitFor("/ goes to the search", waitShort, `document.activeElement.id === 'add-symbol' && document.activeElement.value === ''`)
	p.key(kb.ArrowDown)
	rows := eval[[]string](p, shownRows)
	p.waitFor("down goes to the first row", waitShort, `document.activeElement.closest('tr')?.dataset.symbol === '`+rows[0]+`'`)
	p.key(kb.ArrowDown)
	p.key(kb.ArrowDown)
	p.waitFor("down twice more goes to the third row", waitShort, `document.activeElement.closest('tr')?.dataset.symbol === '`+rows[2]+`'`)
	if n := eval[int](p, `document.querySelectorAll('#wl-body [tabindex="0"]').length`); n != 1 {
		t.Errorf("%d tab stops in the board, want one (the row with the focus)", n)
	}
	p.key(kb.Enter)
	p.waitFor("Enter opens its chart", waitShort, `document.querySelector('#detail').dataset.topic === 'market.`+rows[2]+`'`)
	p.do(chromedp.Focus(chromedp.CSS(`tr[data-symbol="` + rows[2] + `"] .sym-btn`)))
	p.key(kb.Delete)
	p.waitFor("Delete removes it", waitShort, `!window.livepush.watchlist.includes('`+rows[2]+`') && !document.querySelector('tr[data-symbol="`+rows[2]+`"]')`)
	p.waitFor("the focus stays in the board", waitShort, `!!document.activeElement.closest('#wl-body tr')`)
	p.noErrors(true)
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// chartState is window.livepush.detail for a symbol.
type chartState struct {
	Topic      string
	Loaded     bool
	JoinCursor string
	LastCursor string
	Interval   float64
	Bars       []struct {
		T           float64
		N           int
		First, Last string
	}
}

// testChartJoinsHistoryAndLive: a symbol's chart starts with its day from the stream's history and goes on live;
// its bars hold every update of the symbol the stream holds, from the first one, each once: no gap and no duplicate
// where the history joins the live stream.
func testChartJoinsHistoryAndLive(t *testing.T, sys *system) {
	topic := "market." + busySymbol
	// Some history before the page opens, so that the chart starts with the past.
	for deadline := time.Now().Add(waitLong); len(sys.streamSeqs([]string{topic}, 0, mustLast(t, sys, topic))[topic]) < 50; {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 50 quotes of %s in %v", topic, waitLong)
		}
		time.Sleep(200 * time.Millisecond)
	}
	p := openPage(t, sys.url()+"#"+topic)
	p.waitFor("the chart has its history", waitLong, `window.livepush.detail?.topic === '`+topic+`' && window.livepush.detail.loaded`)
	first := eval[chartState](p, `window.livepush.detail`)
	join := mustCursorT(t, first.JoinCursor)
	p.waitFor("the chart goes on live", waitLong,
		fmt.Sprintf(`Number(window.livepush.detail.lastCursor) > %d && window.livepush.detail.bars.reduce((n, b) => n + b.n, 0) > %d`,
			join+200, sumN(first)+10))
	c := eval[chartState](p, `window.livepush.detail`)
	if len(c.Bars) < 2 || c.Interval != 1000 && c.Interval != 5000 {
		t.Fatalf("chart %+v: want bars of 1 or 5 seconds", c)
	}
	last := mustCursorT(t, c.LastCursor)
	// lastCursor is the newest update applied, of this topic: read the stream up to it.
	seqs := sys.streamSeqs([]string{topic}, 0, last)[topic]
	if got := mustCursorT(t, c.Bars[0].First); got != seqs[0] {
		t.Errorf("the chart starts at cursor %d, the stream's first %s update is %d", got, busySymbol, seqs[0])
	}
	if got := mustCursorT(t, c.Bars[len(c.Bars)-1].Last); got != last {
		t.Errorf("the chart's last bar ends at %d, its last update applied is %d", got, last)
	}
	if n := sumN(c); n != len(seqs) {
		t.Errorf("the chart's bars count %d updates of %s up to cursor %d, the stream holds %d: a gap or a duplicate at the join (cursor %d)",
			n, busySymbol, last, len(seqs), join)
	}
	var live int
	for _, s := range seqs {
		if s > join {
			live++
		}
	}
	if live < 10 {
		t.Errorf("only %d updates after the join: the test proved little", live)
	}
	for i, b := range c.Bars {
		if i > 0 && (b.T <= c.Bars[i-1].T || mustCursorT(t, b.First) <= mustCursorT(t, c.Bars[i-1].Last)) {
			t.Errorf("bars %d and %d overlap: %+v, %+v", i-1, i, c.Bars[i-1], b)
		}
	}
	// What a trader sees: a line, the last price, the day's numbers.
	p.waitFor("the chart is drawn", waitShort, `(document.querySelector('#detail .chart .line')?.getAttribute('d') || '').split('L').length > 5 &&
		/last \d+\.\d+/.test(document.querySelector('#detail .chart').getAttribute('aria-label'))`)
	p.waitFor("the detail shows the day", waitShort, `/^\d+\.\d\d$/.test(document.querySelector('.d-prev').textContent) &&
		/ – /.test(document.querySelector('.d-range').textContent) && document.querySelector('.d-session').textContent === 'Open'`)
	p.noErrors(true)
}

func sumN(c chartState) (n int) {
	for _, b := range c.Bars {
		n += b.N
	}
	return n
}

func mustCursorT(t *testing.T, s string) uint64 {
	t.Helper()
	var n uint64
	if _, err := fmt.Sscan(s, &n); err != nil || s == "" {
		t.Fatalf("cursor %q", s)
	}
	return n
}

func mustLast(t *testing.T, sys *system, topic string) uint64 {
	t.Helper()
	for deadline := time.Now().Add(waitLong); ; time.Sleep(100 * time.Millisecond) {
		if n, err := sys.lastOf(topic); err == nil {
			return n
		} else if time.Now().After(deadline) {
			t.Fatalf("no update of %s: %v", topic, err)
		}
	}
}

// testMatchDetail: a match opened from the scoreboard shows both teams in full and its timeline from the stream's
// history, joined to the live updates: every update of the match the stream holds, once.
func testMatchDetail(t *testing.T, sys *system) {
	p := openPage(t, sys.url())
	// At the tests' speed a match lasts seconds: one picked in its last moments may have nothing more to publish once
	// its timeline has loaded. Such a match is given up for another; a match still live whose timeline does not go
	// on is a failure.
	var topic string
	for tried := []string{}; ; {
		p.waitFor("a live match on the board", waitLong, `document.querySelector('#scoreboard article[data-status="live"]')`)
		topic = eval[string](p, `[...document.querySelectorAll('#scoreboard article[data-status="live"]')].map((a) => a.dataset.topic)
			.find((t) => !`+mustJSON(t, tried)+`.includes(t)) || ''`)
		if topic == "" {
			t.Fatalf("no live match on the board but %v, which ended while the test watched them", tried)
		}
		tried = append(tried, topic)
		p.do(chromedp.Click(chromedp.CSS(`#scoreboard article[data-topic="` + topic + `"] .m-open`)))
		p.waitFor("the match's timeline is loaded", waitLong, `window.livepush.detail?.topic === '`+topic+`' && window.livepush.detail.loaded`)
		before := eval[[]string](p, `window.livepush.detail.cursors`)
		wentOn := fmt.Sprintf(`window.livepush.detail.cursors.length > %d`, len(before)+2)
		card := `(document.querySelector('#scoreboard article[data-topic="` + topic + `"]')?.dataset.status || 'gone')`
		for deadline := time.Now().Add(waitLong); !eval[bool](p, wentOn) && eval[string](p, card) == "live"; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				p.waitFor("the timeline of a live match goes on live", 0, wentOn) // fails, saying what the page shows
			}
		}
		if eval[bool](p, wentOn) {
			break
		}
		if len(tried) == 3 {
			t.Fatalf("matches %v all ended before their timelines went on live", tried)
		}
	}
	got := eval[[]string](p, `window.livepush.detail.cursors`)
	last := mustCursorT(t, got[len(got)-1])
	want := sys.streamSeqs([]string{topic}, 0, last)[topic]
	var gotN []uint64
	for _, c := range got {
		gotN = append(gotN, mustCursorT(t, c))
	}
	if !slices.Equal(gotN, want) {
		t.Errorf("the match's updates in the page:\n%v\nin the stream:\n%v", gotN, want)
	}
	card := eval[struct{ Home, Away string }](p, `({home: document.querySelector('article[data-topic="`+topic+`"] .home .t-name').textContent,
		away: document.querySelector('article[data-topic="`+topic+`"] .away .t-name').textContent})`)
	p.waitFor("the detail names both teams in full and lists events", waitShort, fmt.Sprintf(
		`[...document.querySelectorAll('#detail .d-team')].map((e) => e.textContent).join('|') === %s &&
		document.querySelectorAll('#detail .timeline li').length >= 1 && document.querySelector('#detail').dataset.kind === 'match'`,
		mustJSON(t, card.Home+"|"+card.Away)))
	p.noErrors(true)
}

// testScoreboard: scheduled games show who plays whom and when, with no score; live ones the clock and period,
// both scores and the last scoring event; full team names, with the abbreviations scoreboards use beside them.
func testScoreboard(t *testing.T, sys *system) {
	p := openPage(t, sys.url())
	p.waitFor("a scheduled and a live match", waitLong, `document.querySelector('#scoreboard article[data-status="scheduled"]') &&
		document.querySelector('#scoreboard article[data-status="live"]')`)
	type card struct {
		Status, Period, Clock, Home, Away, HomeAbbr, AwayAbbr, SHome, SAway, VS, Event string
	}
	cards := eval[[]card](p, `[...document.querySelectorAll('#scoreboard article[data-topic]')].map((c) => ({
		status: c.dataset.status, period: c.querySelector('.period').textContent, clock: c.querySelector('.clock').textContent,
		home: c.querySelector('.home .t-name').textContent, away: c.querySelector('.away .t-name').textContent,
		homeAbbr: c.querySelector('.home .abbr').textContent, awayAbbr: c.querySelector('.away .abbr').textContent,
		sHome: c.querySelector('.s-home').textContent, sAway: c.querySelector('.s-away').textContent,
		vs: getComputedStyle(c.querySelector('.m-vs')).display !== 'none' ? c.querySelector('.m-vs').textContent : '',
		event: c.querySelector('.event').textContent}))`)
	scoring := false
	for _, c := range cards {
		if len(c.HomeAbbr) != 3 || len(c.AwayAbbr) != 3 || len(c.Home) <= 3 || len(c.Away) <= 3 {
			t.Errorf("card %+v: want full names and three-letter abbreviations", c)
		}
		switch c.Status {
		case "scheduled":
			if c.VS != "vs" || c.SHome != "" || c.SAway != "" || !slices.Contains([]string{"Kick-off", "Tip-off", "Puck drop"}, c.Period) ||
				!strings.Contains(c.Clock, ":") {
				t.Errorf("scheduled card %+v: want 'vs', no score, and when it starts", c)
			}
		case "live":
			if c.VS != "" || c.Period == "" || !strings.Contains(c.Clock, ":") || c.SHome == "" || c.SAway == "" {
				t.Errorf("live card %+v: want the period, the clock and both scores", c)
			}
			if c.SHome+c.SAway != "00" && c.Event != "" {
				scoring = true
			}
		}
	}
	if !scoring {
		p.waitFor("a live match with a score shows its last scoring event", waitLong, `[...document.querySelectorAll('#scoreboard article[data-status="live"]')]
			.some((c) => Number(c.querySelector('.s-home').textContent) + Number(c.querySelector('.s-away').textContent) > 0 &&
				/(GOAL|PT|FT|Shootout)/.test(c.querySelector('.event').textContent))`)
	}
	// The scores stay announced to screen readers, politely.
	if live := eval[string](p, `document.querySelector('#announcer').getAttribute('aria-live')`); live != "polite" {
		t.Errorf("#announcer aria-live=%q, want polite", live)
	}
	p.noErrors(true)
}

// testTransportPanel: the counters live in the transport panel, not the header; the transport in use is measured
// there all the time, and Compare all measures the three others in the browser: bytes, requests and delay per
// update, each with a line saying what it is.
func testTransportPanel(t *testing.T, sys *system) {
	p := openPage(t, sys.url())
	p.waitFor("the connection is live", waitLong, jsState+` === 'live'`)
	if eval[bool](p, `!!document.querySelector('header #c-updates, header .counters')`) {
		t.Error("the header still holds the counters")
	}
	p.waitFor("the row of the transport in use has figures", waitShort, `(() => {
		const r = document.querySelector('#cmp-body tr[data-kind="ws"]');
		return r.dataset.inuse === 'true' && /B|KiB/.test(r.querySelector('td:nth-child(3)').textContent);
	})()`)
	p.do(chromedp.Click(chromedp.CSS("#compare")))
	p.waitFor("every transport is measured", waitLong, `(() => {
		const c = window.livepush.comparison;
		return ['ws', 'sse', 'longpoll', 'poll'].every((k) => c[k] && c[k].updates > 0 && c[k].bytesPerUpdate > 0) &&
			!document.querySelector('#compare').disabled;
	})()`)
	type measure struct {
		Updates                           int
		BytesPerUpdate, RequestsPerUpdate float64
		P50                               *float64
	}
	c := eval[map[string]measure](p, `window.livepush.comparison`)
	t.Logf("measured in the browser: %+v", c)
	if c["poll"].RequestsPerUpdate <= c["ws"].RequestsPerUpdate || c["longpoll"].RequestsPerUpdate <= c["sse"].RequestsPerUpdate {
		t.Errorf("requests per update: polling %v, WebSocket %v, long polling %v, SSE %v: the request-per-answer transports should cost more",
			c["poll"].RequestsPerUpdate, c["ws"].RequestsPerUpdate, c["longpoll"].RequestsPerUpdate, c["sse"].RequestsPerUpdate)
	}
	for k, m := range c {
		if m.P50 == nil {
			t.Errorf("%s: no delay measured", k)
		}
	}
	if n := eval[int](p, `[...document.querySelectorAll('#cmp-body .about')].filter((e) => e.textContent.length > 20).length`); n != 4 {
		t.Errorf("%d transports say in a line what they are, want 4", n)
	}
	p.noErrors(true)
}

// layoutProblems lists what is wrong with the page's layout: a horizontal scroll of the page or of a panel, a
// panel wider than the screen, a team or symbol name cut or overflowing its place.
const layoutProblems = `(() => {
	const out = [];
	const W = document.documentElement.clientWidth;
	if (document.documentElement.scrollWidth > W + 1) out.push('the page scrolls sideways: ' + document.documentElement.scrollWidth + ' > ' + W);
	for (const el of document.querySelectorAll('.panel, .table-wrap, .match, .d-side')) {
		const where = (el.id || el.className) + (el.closest('.panel') && el.closest('.panel') !== el ? ' in #' + el.closest('.panel').id : '');
		if (el.scrollWidth > el.clientWidth + 1) out.push(where + ' overflows: ' + el.scrollWidth + ' > ' + el.clientWidth);
		const r = el.getBoundingClientRect();
		if (r.width && (r.left < -1 || r.right > W + 1)) out.push(where + ' leaves the screen: ' + r.left + '..' + r.right);
	}
	const names = '.t-name, .sym-btn, .d-team, .tname, .abbr, #detail-title, .views button, .tl-event, .d-price';
	for (const el of document.querySelectorAll(names)) {
		if (!el.getClientRects().length) continue; // not shown at this width
		const cs = getComputedStyle(el);
		if (el.scrollWidth > el.clientWidth + 1 || cs.textOverflow === 'ellipsis' && el.scrollWidth > el.clientWidth) {
			out.push('"' + el.textContent + '" is cut (' + el.className + '): ' + el.scrollWidth + ' > ' + el.clientWidth);
		}
		const box = el.closest('td, th, .match, .m-team, .d-side, .panel-head, li');
		if (box) {
			const r = el.getBoundingClientRect(), b = box.getBoundingClientRect();
			if (r.right > b.right + 1 || r.left < b.left - 1) out.push('"' + el.textContent + '" overflows its ' + box.className + ': ' + r.left + '..' + r.right + ' in ' + b.left + '..' + b.right);
		}
	}
	return out;
})()`

// testLayout: at every width from a small phone to a large monitor, nothing scrolls sideways, no panel leaves the
// screen, and no team or symbol name is cut; the scoreboard keeps full names at every width. The screenshots are the
// README's.
func testLayout(t *testing.T, sys *system) {
	sys.waitCatalog(70)
	for _, sym := range []string{"AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "V", "XOM", "BRK-B", "NFLX"} {
		mustLast(t, sys, "market."+sym) // the default watchlist keeps only symbols the edge knows
	}
	p := openPage(t, sys.url()+"#market.NVDA")
	p.waitFor("the connection is live", waitLong, jsState+` === 'live'`)
	p.prices()
	p.waitFor("the scoreboard has a few matches with long names", waitLong, `document.querySelectorAll('#scoreboard [data-topic]').length >= 8`)
	p.waitFor("the chart is drawn", waitLong, `window.livepush.detail?.loaded && (document.querySelector('#detail .chart .line')?.getAttribute('d') || '').length > 20`)
	p.do(chromedp.Click(chromedp.CSS("#compare")))
	p.waitFor("the transports are compared", waitLong, `Object.keys(window.livepush.comparison).length === 4 && !document.querySelector('#compare').disabled`)

	// The longest team names of each league on the board, whatever the simulator drew: a producer publishes them.
	for i, m := range []struct{ league, home, homeAbbr, away, awayAbbr, status string }{
		{"nba", "Minnesota Timberwolves", "MIN", "Portland Trail Blazers", "POR", "live"},
		{"nhl", "Columbus Blue Jackets", "CBJ", "Vegas Golden Knights", "VGK", "live"},
		{"epl", "Nottingham Forest", "NFO", "Wolverhampton Wanderers", "WOL", "scheduled"},
	} {
		topic := fmt.Sprintf("sports.%s.g-90%02d", m.league, i)
		payload := fmt.Sprintf(`{"topic":%q,"kind":"score","league":%q,"match":"g-90%02d","home":{"name":%q,"abbr":%q,"score":101},`+
			`"away":{"name":%q,"abbr":%q,"score":99},"period":"Q3","clock":"05:12","status":%q,"event":"3PT Edwards",`+
			`"lastScore":"3PT Edwards","start":%q,"ts":%q}`, topic, m.league, i, m.home, m.homeAbbr, m.away, m.awayAbbr, m.status,
			time.Now().Add(time.Hour).UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339Nano))
		if _, err := sys.js.Publish(t.Context(), topic, []byte(payload)); err != nil {
			t.Fatal(err)
		}
	}
	p.waitFor("the long names are on the board", waitShort, `document.querySelector('#scoreboard article[data-topic="sports.epl.g-9002"]')`)

	for _, w := range []struct {
		name   string
		setup  chromedp.Action[chromedp.Void]
		width  int
		height int
		shot   string // the README's picture, if any
	}{
		{"360", chromedp.EmulateViewport(360, 740, chromedp.EmulateMobile), 360, 740, ""},
		{"phone", chromedp.Emulate(device.IPhone13), 390, 844, "ticker-phone.png"}, // 390x844, scale 3, mobile, touch
		{"768", chromedp.EmulateViewport(768, 1024), 768, 1024, ""},
		{"1024", chromedp.EmulateViewport(1024, 768), 1024, 768, ""},
		{"1366", chromedp.EmulateViewport(1366, 768), 1366, 768, ""},
		{"1440", chromedp.EmulateViewport(1440, 900), 1440, 900, "ticker-desktop.png"},
		{"1920", chromedp.EmulateViewport(1920, 1080), 1920, 1080, ""},
		{"2560", chromedp.EmulateViewport(2560, 1440), 2560, 1440, "ticker-wide.png"},
	} {
		t.Run(w.name, func(t *testing.T) {
			p.t = t
			p.do(w.setup)
			p.waitFor("the page has the new width", waitShort, fmt.Sprintf(`document.documentElement.clientWidth === %d`, w.width))
			p.nextFrame()
			time.Sleep(400 * time.Millisecond) // the chart redraws at its new size, at most 5 times a second
			p.nextFrame()
			p.do(chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
			if problems := eval[[]string](p, layoutProblems); len(problems) > 0 {
				t.Errorf("at %dx%d:\n  %s", w.width, w.height, strings.Join(problems, "\n  "))
			}
			for _, sel := range []string{"#board", "#detail", "#scores", "#transports"} {
				if !eval[bool](p, `document.querySelector('`+sel+`').getBoundingClientRect().width > 200`) {
					t.Errorf("at %d px, %s is not shown", w.width, sel)
				}
			}
			if w.width >= 1000 {
				// Beside each other: the scores are not pushed under the board.
				if !eval[bool](p, `document.querySelector('#scores').getBoundingClientRect().top < document.querySelector('#detail').getBoundingClientRect().bottom`) {
					t.Errorf("at %d px the scores are under the chart, want them beside the board", w.width)
				}
			}
			shoot(t, p, fmt.Sprintf("ticker-%s.png", w.name), w.shot)
		})
	}
	p.t = t
	p.noErrors(true)
}

// shoot takes a screenshot of what the tab shows into the test's artifacts as name and, when LIVEPUSH_SCREENSHOTS
// names a directory and readme is set, there as readme.
func shoot(t *testing.T, p *page, name, readme string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitLong)
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	cancel()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !strings.HasPrefix(string(png), "\x89PNG\r\n\x1a\n") {
		t.Fatalf("%s: not a PNG", name)
	}
	paths := []string{filepath.Join(t.ArtifactDir(), name)}
	if dir := os.Getenv("LIVEPUSH_SCREENSHOTS"); dir != "" && readme != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, filepath.Join(dir, readme))
	}
	for _, path := range paths {
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", path, len(png))
	}
}

// TestPageMarketSession: the simulator's trading day, compressed to a few seconds, reaches the page: the header
// says the market is open, then out of hours, then open again, and the quotes go on all along.
func TestPageMarketSession(t *testing.T) {
	sys := startSystemWith(t, 8*time.Second) // open 5.6 s, then after-hours, closed and pre-market 0.8 s each
	p := openPage(t, sys.url())
	p.waitFor("the page says the market is open", waitLong, `document.querySelector('#market-status').dataset.session === 'open' &&
		document.querySelector('#market-session').textContent === 'Open'`)
	p.waitFor("then that it is out of hours", waitLong, `['after-hours', 'closed', 'pre-market'].includes(window.livepush.session) &&
		['After hours', 'Closed', 'Pre-market'].includes(document.querySelector('#market-session').textContent)`)
	out := eval[string](p, `window.livepush.session`)
	p.waitFor("then open again", waitLong, `window.livepush.session === 'open' && document.querySelector('#market-session').textContent === 'Open'`)
	p.waitFor("the detail shows the session of its symbol", waitShort, `document.querySelector('#detail .d-session').textContent === 'Open'`)
	t.Logf("saw open, %s, open", out)
	p.noErrors(true)
}

package web_test

// The live ticker page, tested in a real browser: an embedded nats-server with JetStream, the market and sports
// simulators and a real edge run on loopback, and headless Chromium (driven with chromedp) opens the page the edge
// serves. Chromium must be installed: without it these tests fail, they do not skip. The tests share one Chromium
// (a tab each), and the page's own tests one system, so that the package's tests stay within a few minutes.
//
// Screenshots go to t.ArtifactDir() (keep them with `go test -artifacts -outputdir DIR`) and, when
// LIVEPUSH_SCREENSHOTS names a directory, to ticker-desktop.png, ticker-wide.png and ticker-phone.png there: the
// README's pictures (LIVEPUSH_SCREENSHOTS=$PWD/docs/img go test ./web -run TestPage/Layout).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/feeds"
	"github.com/livepush/livepush/internal/browsertest"
	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/push"
	"github.com/livepush/livepush/push/pushtest"
	"github.com/livepush/livepush/web"
)

// Waits are generous: the tests must pass on a loaded 2-core machine under -race. They poll, so they take only as
// long as the page needs.
const (
	waitLong  = 20 * time.Second // connecting, reconnecting, a first value
	waitShort = 10 * time.Second // something that should happen within a second or two
)

// busySymbol is a feed symbol that is not on the page's default watchlist and, with the market seed below, among
// the busiest (about 6 quotes a second), so that adding and removing it shows quickly.
const busySymbol = "LLY"

// ---- the system under test: NATS, the simulators and an edge ----

type system struct {
	t        *testing.T
	js       jetstream.JetStream
	cfg      stream.Config
	log      *slog.Logger
	addr     string // the edge's address: a restarted edge listens on the same one
	edgeStop func() // stops the running edge and waits until it has; nil when none runs
}

// startSystem runs an embedded nats-server, the stream, the simulators (the market always open) and an edge on a
// loopback port. Everything stops when the test ends.
func startSystem(t *testing.T) *system {
	t.Helper()
	return startSystemWith(t, 0)
}

// startSystemWith is startSystem with a simulated trading day of marketDay (0: always open).
func startSystemWith(t *testing.T, marketDay time.Duration) *system {
	t.Helper()
	log := pushtest.Logger()
	n := pushtest.StartNATS(t, stream.Config{})
	s := &system{t: t, js: n.JS, cfg: n.Stream, log: log}

	ctx, stopFeeds := context.WithCancel(context.Background())
	feedsDone := make(chan struct{})
	pub := feeds.NewPublisher(s.js, 0, log)
	go func() {
		defer close(feedsDone)
		cfg := feeds.Config{
			Market: feeds.MarketConfig{Rate: 200, Seed: 1, Day: marketDay},
			Sports: feeds.SportsConfig{Speed: 300, Seed: 2, Start: time.Now()},
		}
		if err := feeds.Run(ctx, cfg, pub.Publish, log); err != nil {
			t.Errorf("feeds: %v", err)
		}
	}()
	t.Cleanup(func() {
		stopFeeds()
		<-feedsDone
	})

	s.startEdge()
	s.waitReady()
	t.Cleanup(func() {
		if s.edgeStop != nil {
			s.stopEdge()
		}
	})
	return s
}

// url is the page's address.
func (s *system) url() string { return "http://" + s.addr + "/" }

// startEdge runs a new edge (hub, source, server) on s.addr, or on a new loopback port the first time. It serves at
// once; waitReady waits until it has caught up with the stream.
func (s *system) startEdge() {
	t := s.t
	t.Helper()
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 100 { // a port an edge just released may take a moment to be free again
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	s.addr = ln.Addr().String()

	src := push.NewSource(s.js, s.cfg, s.log)
	hub := push.NewHub(push.HubOptions{History: src})
	srv := push.NewServer(push.Config{Page: web.FS, Log: s.log, DrainTimeout: time.Second}, hub, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	s.edgeStop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge stopped with %v", err)
		}
	}
}

// ready reports whether the edge says it is ready: it follows the stream and has caught up.
func (s *system) ready() bool {
	resp, err := http.Get("http://" + s.addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitReady waits until the edge is ready.
func (s *system) waitReady() {
	t := s.t
	t.Helper()
	for deadline := time.Now().Add(waitLong); !s.ready(); {
		if time.Now().After(deadline) {
			t.Fatalf("edge on %s not ready after %v", s.addr, waitLong)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopEdge stops the edge and waits until it has drained and stopped; the simulators keep publishing.
func (s *system) stopEdge() {
	s.t.Helper()
	s.edgeStop()
	s.edgeStop = nil
}

// lastSeq is the stream's newest sequence: the cursor of the newest update published.
func (s *system) lastSeq() uint64 {
	s.t.Helper()
	str, err := s.js.Stream(s.t.Context(), s.cfg.StreamName())
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := str.Info(s.t.Context())
	if err != nil {
		s.t.Fatal(err)
	}
	return info.State.LastSeq
}

// lastOf is the cursor of the newest update of topic in the stream; an error if it has none.
func (s *system) lastOf(topic string) (uint64, error) {
	str, err := s.js.Stream(s.t.Context(), s.cfg.StreamName())
	if err != nil {
		return 0, err
	}
	m, err := str.GetLastMsgForSubject(s.t.Context(), topic)
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// streamSeqs returns, per topic, the sequences of the stream's messages of those topics in (from, to]. to must be
// the sequence of a message of one of the topics (a cursor the page applied), so that reading stops there.
func (s *system) streamSeqs(topics []string, from, to uint64) map[string][]uint64 {
	t := s.t
	t.Helper()
	seqs := make(map[string][]uint64)
	if to <= from {
		return seqs
	}
	cons, err := s.js.OrderedConsumer(t.Context(), s.cfg.StreamName(), jetstream.OrderedConsumerConfig{
		FilterSubjects: topics,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from + 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer msgs.Stop()
	for {
		m, err := msgs.Next(jetstream.NextMaxWait(waitShort))
		if err != nil {
			t.Fatalf("reading the stream in (%d, %d]: %v", from, to, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		seq := meta.Sequence.Stream
		if seq > to {
			return seqs
		}
		seqs[m.Subject()] = append(seqs[m.Subject()], seq)
		if seq == to {
			return seqs
		}
	}
}

// ---- the browser ----

// page is one browser tab showing the ticker page.
type page struct {
	t     *testing.T
	ctx   context.Context // the tab's chromedp context
	close func()          // closes the tab before the test ends

	mu      sync.Mutex
	console []chromedp.ConsoleMessage // everything the page logged, exceptions and browser log entries included
}

// openPage opens a tab at desktop size (1366x900) with the page's storage cleared, runs setup (emulation, say),
// opens url and waits until the page has set up window.livepush.
func openPage(t *testing.T, url string, setup ...chromedp.Action[chromedp.Void]) *page {
	t.Helper()
	p := openTab(t, url, append([]chromedp.Action[chromedp.Void]{clearStorage(url)}, setup...)...)
	p.waitFor("the page has started", waitLong, `window.livepush && window.livepush.watchlist.length > 0`)
	return p
}

// clearStorage forgets what the page kept in the shared browser for url's origin (watchlist, transport, view).
func clearStorage(url string) chromedp.Action[chromedp.Void] {
	u, err := neturl.Parse(url)
	if err != nil {
		panic(err)
	}
	origin := u.Scheme + "://" + u.Host
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, storage.ClearDataForOrigin, storage.ClearDataForOriginParams{Origin: origin, StorageTypes: "local_storage"})
		return err
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	browsertest.StopShared()
	os.Exit(code)
}

// openTab opens a tab of the shared browser, runs setup and opens url. The tab closes when the test ends.
func openTab(t *testing.T, url string, setup ...chromedp.Action[chromedp.Void]) *page {
	t.Helper()
	ctx := browsertest.Tab(t, chromedp.WindowSize(1366, 900))
	p := &page{t: t, ctx: ctx, close: func() { chromedp.Cancel(ctx) }}

	messages := chromedp.Console(ctx) // subscribed now, before the page loads
	go func() {
		for m, err := range messages {
			if err != nil {
				return // the tab closed
			}
			p.mu.Lock()
			p.console = append(p.console, m)
			p.mu.Unlock()
		}
	}()

	p.do(append(setup, chromedp.Navigate(url))...)
	return p
}

// do runs actions on the tab, failing the test on an error.
func (p *page) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitLong)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression in the page and decodes its value.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	v, err := tryEval[T](p, expr)
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

func tryEval[T any](p *page, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, waitShort)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// waitFor polls the JavaScript expression until it is truthy; after timeout it fails the test, saying what it
// waited for and what the page's state was.
func (p *page) waitFor(what string, timeout time.Duration, expr string) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := tryEval[bool](p, "!!("+expr+")")
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("still false")
			}
			p.t.Fatalf("waited %v until %s: %v\n  expression: %s\n  page: %s", timeout, what, err, expr, p.state())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nextFrame waits until the page has drawn twice: it draws once per animation frame, so after this the DOM shows
// what window.livepush said before.
func (p *page) nextFrame() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitShort)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](
		`new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))`, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("waiting for the page to draw: %v", err)
	}
}

// state describes the page for failure messages.
func (p *page) state() string {
	s, err := tryEval[string](p, `window.lp ? window.lp.summary() : JSON.stringify({
		conn: document.querySelector('#conn-state').textContent,
		detail: document.querySelector('#conn-detail').textContent,
		transport: window.livepush.transport, state: window.livepush.state, counters: window.livepush.counters,
		lastCursor: window.livepush.lastCursor, replayed: window.livepush.replayed, watchlist: window.livepush.watchlist,
		prices: `+jsPrices+`, uptimeMs: Math.round(performance.now()),
	})`)
	if err != nil {
		return fmt.Sprintf("(unreadable: %v)", err)
	}
	return s
}

// noErrors fails the test if the page logged an error or threw. With browserLog, errors the browser itself
// logged (failed requests, say) count too; without, only console.error calls and exceptions do.
func (p *page) noErrors(browserLog bool) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.console {
		fromPage := m.Source == "" // a console API call or an exception, not a browser log entry
		if (m.Type == chromedp.ConsoleError || m.IsException()) && (fromPage || browserLog) {
			p.t.Errorf("page console: %s (%s:%d)", m, m.URL, m.Line+1)
		}
	}
}

// JavaScript snippets reading the page.
const (
	// jsPrices maps each watchlist row's symbol to the text of its .last cell.
	jsPrices = `Object.fromEntries([...document.querySelectorAll('#wl-body tr[data-symbol]')]
		.map((r) => [r.dataset.symbol, r.querySelector('.last').textContent]))`
	jsState = `document.querySelector('#conn-state').textContent`
)

// jsNum reads a counter shown on the page as a number.
func jsNum(id string) string {
	return `Number(document.querySelector('#` + id + `').dataset.value ?? document.querySelector('#` + id + `').textContent)`
}

// prices returns the watchlist's .last texts, once every row shows a price.
func (p *page) prices() map[string]string {
	p.t.Helper()
	p.waitFor("every watchlist row shows a price", waitLong,
		`Object.values(`+jsPrices+`).every((v) => /^\d+\.\d+$/.test(v))`)
	return eval[map[string]string](p, jsPrices)
}

// waitPriceChange waits until some row shows a price other than in before.
func (p *page) waitPriceChange(before map[string]string) {
	p.t.Helper()
	p.waitFor("a watchlist price changes", waitShort,
		fmt.Sprintf(`((before) => Object.entries(%s).some(([sym, v]) => sym in before && /^\d/.test(v) && v !== before[sym]))(%s)`,
			jsPrices, mustJSON(p.t, before)))
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// topicCount is what window.livepush.perTopic says of one topic.
type topicCount struct {
	Count      int     `json:"count"`
	LastCursor *string `json:"lastCursor"`
}

func (c topicCount) cursor(t *testing.T) uint64 {
	t.Helper()
	if c.LastCursor == nil {
		return 0
	}
	n, err := strconv.ParseUint(*c.LastCursor, 10, 64)
	if err != nil {
		t.Fatalf("cursor %q: %v", *c.LastCursor, err)
	}
	return n
}

func (p *page) perTopic() map[string]topicCount {
	p.t.Helper()
	return eval[map[string]topicCount](p, `window.livepush.perTopic`)
}

// ---- the tests ----

// TestPage runs the page's tests on one system: each opens a tab of its own, with the page's storage cleared.
func TestPage(t *testing.T) {
	sys := startSystem(t)
	for _, tc := range []struct {
		name string
		test func(*testing.T, *system)
	}{
		{"LoadsLive", testLoadsLive},
		{"AddAndRemoveSymbol", testAddAndRemoveSymbol},
		{"SwitchTransports", testSwitchTransports},
		{"BoardSearchSortAndKeys", testBoardSearchSortAndKeys},
		{"ChartJoinsHistoryAndLive", testChartJoinsHistoryAndLive},
		{"MatchDetail", testMatchDetail},
		{"Scoreboard", testScoreboard},
		{"TransportPanel", testTransportPanel},
		{"Layout", testLayout},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, sys) })
	}
}

// testLoadsLive: the page loads without errors, its prices move and the scoreboard fills.
func testLoadsLive(t *testing.T, sys *system) {
	p := openPage(t, sys.url())

	p.waitFor("the connection is live", waitLong, jsState+` === 'live'`)
	if got := eval[string](p, `document.querySelector('#transport').value`); got != "ws" {
		t.Errorf("#transport = %q, want ws (the default)", got)
	}
	p.waitFor("the AAPL row exists", waitShort, `document.querySelector('tr[data-symbol="AAPL"] .last')`)
	p.waitPriceChange(p.prices())

	// The card shows each team's score on its row (it had one "H–A" element before the scoreboard showed full names).
	p.waitFor("a score card shows a status and a score", waitShort,
		`[...document.querySelectorAll('#scoreboard [data-topic^="sports."]')].some((c) =>
			c.querySelector('.status').textContent !== '' && /^\d+$/.test(c.querySelector('.s-home').textContent) &&
			/^\d+$/.test(c.querySelector('.s-away').textContent))`)
	p.waitFor("the update counter moves", waitShort, jsNum("c-updates")+` > 0`)
	p.noErrors(true)
}

// testAddAndRemoveSymbol: a symbol added by hand gets a row and live prices; removed, its row goes and its updates
// stop while the feed keeps publishing it.
func testAddAndRemoveSymbol(t *testing.T, sys *system) {
	p := openPage(t, sys.url())
	p.waitFor("the connection is live", waitLong, jsState+` === 'live'`)
	p.prices()
	topic := "market." + busySymbol
	row := `document.querySelector('tr[data-symbol="` + busySymbol + `"]')`
	if eval[bool](p, `!!`+row) {
		t.Fatalf("%s is on the default watchlist: pick another symbol for this test", busySymbol)
	}

	p.do(
		chromedp.SendKeys(chromedp.CSS("#add-symbol"), busySymbol),
		chromedp.Click(chromedp.CSS("#add-btn")),
	)
	p.waitFor("the new row shows a price", waitShort, row+` && /^\d+\.\d+$/.test(`+row+`.querySelector('.last').textContent)`)
	if !eval[bool](p, `window.livepush.watchlist.includes('`+busySymbol+`')`) {
		t.Errorf("%s has a row but is not on window.livepush.watchlist", busySymbol)
	}
	// Its first value is a snapshot; live updates follow.
	p.waitFor("live updates for the new symbol", waitLong, `(window.livepush.perTopic['`+topic+`']?.count ?? 0) >= 3`)

	p.do(chromedp.Click(chromedp.CSS(`tr[data-symbol="` + busySymbol + `"] button.remove`)))
	p.waitFor("the row is gone", waitShort, `!`+row+` && !window.livepush.watchlist.includes('`+busySymbol+`')`)

	// Updates already on their way when the unsubscribe left may still arrive: settle until the page is 100
	// stream messages (half a second of the feeds) past the removal; from then on nothing more may come.
	settled := sys.lastSeq() + 100
	p.waitFor("the page moves on", waitLong, fmt.Sprintf(`Number(window.livepush.lastCursor) >= %d`, settled))
	before := p.perTopic()[topic].Count
	from := uint64(eval[float64](p, `Number(window.livepush.lastCursor)`))

	// Wait until the feed has published the symbol three more times and the page has gone past the last of them.
	var published []uint64
	deadline := time.Now().Add(waitLong)
	for len(published) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the feed published %s only %d times in %v", topic, len(published), waitLong)
		}
		time.Sleep(200 * time.Millisecond)
		last, err := sys.lastOf(topic)
		if err != nil {
			t.Fatal(err)
		}
		published = sys.streamSeqs([]string{topic}, from, last)[topic]
	}
	p.waitFor("the page has gone past them", waitLong,
		fmt.Sprintf(`Number(window.livepush.lastCursor) > %d`, published[len(published)-1]))
	if after := p.perTopic()[topic].Count; after != before {
		t.Errorf("after removing %s the page still received %d updates of it (the stream had %d since cursor %d)",
			busySymbol, after-before, len(published), from)
	}
	if eval[bool](p, `!!`+row) {
		t.Errorf("the %s row came back", busySymbol)
	}
	p.noErrors(true)
}

// testSwitchTransports: on each of the four transports, chosen in #transport, the table keeps updating and the
// counters (in the transport panel now) move.
func testSwitchTransports(t *testing.T, sys *system) {
	p := openPage(t, sys.url())
	p.prices()
	for _, kind := range []string{"ws", "sse", "longpoll", "poll", "ws"} {
		if eval[string](p, `window.livepush.transport`) != kind {
			p.do(chromedp.Evaluate[chromedp.Void](`(() => {
				const s = document.querySelector('#transport');
				s.value = '` + kind + `';
				s.dispatchEvent(new Event('change', {bubbles: true}));
			})()`))
		}
		p.waitFor(kind+" is live", waitLong, `window.livepush.transport === '`+kind+`' && window.livepush.state === 'live'`)
		p.nextFrame() // until then the DOM may still show the previous transport's state and counters
		if got := eval[string](p, `document.querySelector('#transport').value`); got != kind {
			t.Errorf("#transport shows %q, want %q", got, kind)
		}
		if got := eval[string](p, jsState); got != "live" {
			t.Errorf("%s: #conn-state shows %q, want live", kind, got)
		}
		updates := eval[float64](p, jsNum("c-updates"))
		requests := eval[float64](p, jsNum("c-requests"))
		bytes := eval[float64](p, jsNum("c-bytes"))
		cursor := eval[float64](p, `Number(window.livepush.lastCursor)`)
		prices := eval[map[string]string](p, jsPrices)

		p.waitFor(kind+": the table updates", waitShort, fmt.Sprintf(
			`Number(window.livepush.lastCursor) > %d || ((before) => Object.entries(%s).some(([s, v]) => v !== before[s]))(%s)`,
			uint64(cursor), jsPrices, mustJSON(t, prices)))
		p.waitFor(kind+": #c-updates and #c-bytes grow", waitShort,
			fmt.Sprintf(`%s > %d && %s > %d`, jsNum("c-updates"), int(updates), jsNum("c-bytes"), int(bytes)))
		switch kind {
		case "longpoll", "poll":
			p.waitFor(kind+": #c-requests grows", waitShort, fmt.Sprintf(`%s > %d`, jsNum("c-requests"), int(requests)))
		default: // one request (the upgrade or the stream) serves all
			p.waitFor(kind+": #c-requests counts the connection", waitShort, jsNum("c-requests")+` >= 1`)
		}
	}
	p.noErrors(true)
}

// TestEdgeRestartResumesWithoutGap: with the edge stopped the page says "reconnecting"; with it back on the same
// address it says "resumed", and for every watched symbol it has received exactly the updates the stream holds
// between its cursor before the stop and its cursor after the restart: none lost, none twice.
func TestEdgeRestartResumesWithoutGap(t *testing.T) {
	for _, tc := range []struct {
		name, transport string
		slowCatchUp     bool
		lossy           bool // polling shows the latest value at each poll, not every update
	}{
		{"ws", "ws", false, false},
		{"sse", "sse", false, false},
		{"longpoll", "longpoll", false, false},
		// The page reconnects while the new edge is still catching up with the stream, so the edge's cursor is
		// behind the page's for a moment. That is not a new stream: the page must resume, not reset.
		{"ws-edge-catching-up", "ws", true, false},
		{"poll-edge-catching-up", "poll", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := startSystem(t)
			p := openPage(t, sys.url()+"?transport="+tc.transport)
			p.waitFor("the connection is live", waitLong,
				`window.livepush.transport === '`+tc.transport+`' && `+jsState+` === 'live'`)
			p.prices()
			watched := eval[[]string](p, `window.livepush.watchlist.map((s) => 'market.' + s)`)

			before := p.perTopic()
			sys.stopEdge()
			stoppedAt := sys.lastSeq()
			p.waitFor("the page says reconnecting", waitLong, jsState+` === 'reconnecting'`)

			// The feeds go on while the edge is away: let about a second of updates pile up.
			for deadline := time.Now().Add(waitLong); sys.lastSeq() < stoppedAt+200; {
				if time.Now().After(deadline) {
					t.Fatalf("the feeds published too little while the edge was down")
				}
				time.Sleep(100 * time.Millisecond)
			}
			if s := eval[string](p, jsState); s != "reconnecting" {
				t.Errorf("with the edge down the page says %q, want reconnecting", s)
			}

			if tc.slowCatchUp {
				sys.publishManyTopics(5000) // a new edge then takes about half a second to catch up
			}
			sys.startEdge()
			restartedAt := sys.lastSeq()
			if tc.slowCatchUp {
				// Tell the page it is online: it skips the rest of its backoff and reconnects now, during the catch-up.
				p.do(chromedp.Evaluate[chromedp.Void](`window.dispatchEvent(new Event('online'))`))
				if sys.ready() {
					t.Log("the edge caught up before the page reconnected: this run does not test what it should")
				}
			}
			sys.waitReady()
			p.waitFor("the page has reconnected", waitLong, `['resumed', 'reset'].includes(`+jsState+`)`)
			if s := eval[string](p, jsState+` + ': ' + document.querySelector('#conn-detail').textContent`); !strings.HasPrefix(s, "resumed") {
				t.Fatalf("after the restart the page says %q, want resumed", s)
			}
			// AAPL moves on past the restart: the table continues.
			p.waitFor("AAPL gets an update published after the restart", waitLong,
				fmt.Sprintf(`Number(window.livepush.perTopic['market.AAPL']?.lastCursor) > %d`, restartedAt))
			p.waitFor("the footer shows a cursor from after the restart", waitShort,
				fmt.Sprintf(`Number(document.querySelector('#cursor').textContent) > %d`, restartedAt))
			after := p.perTopic()
			if tc.lossy {
				for _, topic := range watched {
					if a, b := after[topic].cursor(t), before[topic].cursor(t); a < b {
						t.Errorf("%s: the page went back from cursor %d to %d", topic, b, a)
					}
				}
				p.noErrors(false)
				return
			}

			var from, to uint64 = ^uint64(0), 0
			for _, topic := range watched {
				from = min(from, before[topic].cursor(t))
				to = max(to, after[topic].cursor(t))
			}
			seqs := sys.streamSeqs(watched, from, to)
			missedWhileDown := 0
			for _, topic := range watched {
				b, a := before[topic], after[topic]
				var want int
				for _, seq := range seqs[topic] {
					if seq > b.cursor(t) && seq <= a.cursor(t) {
						want++
						if seq > stoppedAt && seq <= restartedAt {
							missedWhileDown++
						}
					}
				}
				if got := a.Count - b.Count; got != want {
					t.Errorf("%s: the page received %d updates between cursors %d and %d, the stream holds %d",
						topic, got, b.cursor(t), a.cursor(t), want)
				}
			}
			if missedWhileDown == 0 {
				t.Errorf("no watched update was published while the edge was down: the test proved nothing")
			}
			// The indicator's count: at least the watched updates published while the edge was down were replayed.
			if replayed := eval[float64](p, `window.livepush.replayed`); replayed < float64(missedWhileDown) {
				t.Errorf("the page says %v replayed, but %d watched updates were published while the edge was down",
					replayed, missedWhileDown)
			}
			if !t.Failed() {
				t.Logf("%d watched updates published while the edge was down, all received once (the page counted %v replayed)",
					missedWhileDown, eval[float64](p, `window.livepush.replayed`))
			}
			p.noErrors(false) // the browser logs failed connections while the edge is down: expected
		})
	}
}

// publishManyTopics publishes one update on each of n topics nobody watches (market.ZZ00000 and on).
func (s *system) publishManyTopics(n int) {
	t := s.t
	t.Helper()
	for i := range n {
		payload := fmt.Sprintf(`{"topic":"market.ZZ%05d","kind":"quote","symbol":"ZZ%05d","price":1,"ts":"%s"}`,
			i, i, time.Now().UTC().Format(time.RFC3339Nano))
		if _, err := s.js.PublishAsync(fmt.Sprintf("market.ZZ%05d", i), []byte(payload)); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 { // stay under the client's limit of outstanding publishes
			select {
			case <-s.js.PublishAsyncComplete():
			case <-time.After(waitLong):
				t.Fatal("publishing timed out")
			}
		}
	}
	select {
	case <-s.js.PublishAsyncComplete():
	case <-time.After(waitLong):
		t.Fatal("publishing timed out")
	}
}

// ---- edge loss behind a load balancer ----

// trackingListener remembers the connections it accepted, so a test can cut them all at once as if the process
// had been killed.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// kill closes the listener and every connection without a goodbye: what clients see when an edge is SIGKILLed.
func (l *trackingListener) kill() {
	l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// startExtraEdge runs another edge on the system's NATS, on a listener the test can kill abruptly.
func (s *system) startExtraEdge() (addr string, kill func()) {
	t := s.t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := &trackingListener{Listener: ln}
	src := push.NewSource(s.js, s.cfg, s.log)
	hub := push.NewHub(push.HubOptions{History: src})
	srv := push.NewServer(push.Config{Page: web.FS, Log: s.log, DrainTimeout: time.Second}, hub, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx, tl); close(done) }()
	var once sync.Once
	kill = func() {
		once.Do(func() {
			tl.kill()
			cancel()
			<-done
		})
	}
	t.Cleanup(kill)
	return ln.Addr().String(), kill
}

// loadBalancer proxies HTTP, SSE and WebSocket to the first backend that accepts a connection, as a load balancer
// with health checks would: when one edge dies, new connections go to the next.
func loadBalancer(t *testing.T, backends ...string) string {
	t.Helper()
	dialer := &net.Dialer{Timeout: time.Second}
	transport := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var last error
		for _, b := range backends {
			c, err := dialer.DialContext(ctx, network, b)
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}, DisableKeepAlives: true}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&neturl.URL{Scheme: "http", Host: "edges"})
			r.Out.Host = r.In.Host
		},
		Transport:     transport,
		FlushInterval: -1, // SSE: pass every write on at once
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestPageSurvivesEdgeLossBehindLoadBalancer: two edges behind a load balancer; the one serving the page dies
// without a goodbye; the page reconnects through the balancer to the other and resumes without a gap.
func TestPageSurvivesEdgeLossBehindLoadBalancer(t *testing.T) {
	sys := startSystem(t)
	first, kill := sys.startExtraEdge()
	lb := loadBalancer(t, first, sys.addr) // the extra edge first: the page lands on it
	p := openPage(t, lb+"/")
	p.waitFor("the connection is live", waitLong, jsState+` === 'live'`)
	p.prices()
	watched := eval[[]string](p, `window.livepush.watchlist.map((s) => 'market.' + s)`)
	before := p.perTopic()
	killedAt := sys.lastSeq()
	kill()

	p.waitFor("the page has reconnected through the balancer", waitLong, jsState+` === 'resumed'`)
	p.waitFor("AAPL moves on past the edge loss", waitLong,
		fmt.Sprintf(`Number(window.livepush.perTopic['market.AAPL']?.lastCursor) > %d`, sys.lastSeq()))
	after := p.perTopic()
	var from, to uint64 = ^uint64(0), 0
	for _, topic := range watched {
		from = min(from, before[topic].cursor(t))
		to = max(to, after[topic].cursor(t))
	}
	seqs := sys.streamSeqs(watched, from, to)
	for _, topic := range watched {
		b, a := before[topic], after[topic]
		want := 0
		for _, seq := range seqs[topic] {
			if seq > b.cursor(t) && seq <= a.cursor(t) {
				want++
			}
		}
		if got := a.Count - b.Count; got != want {
			t.Errorf("%s: the page received %d updates between cursors %d and %d, the stream holds %d",
				topic, got, b.cursor(t), a.cursor(t), want)
		}
	}
	if to <= killedAt {
		t.Errorf("no watched update after the edge died (last %d, died at %d)", to, killedAt)
	}
	p.noErrors(false)
}

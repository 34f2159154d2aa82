package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"github.com/livepush/livepush/internal/proxytest"
	"github.com/livepush/livepush/internal/tlscert/tlscerttest"
)

// What a newcomer does with the repository's HTTPS configuration (deploy/nginx/livepush-tls.conf): Debian's nginx
// terminates TLS and speaks HTTP/2 to the browser, HTTP/1.1 to two edges; the browser opens the ticker page and an
// application page of the same site built on /livepush.js; one edge is killed, then restarted and the other killed.
// Both pages carry on, with every update once.

// clientPage is where the application page of testdata/client-page.html is served on the proxy's origin.
const clientPage = "/app/client-page.html"

// trustCert is the Chromium flag that makes it accept the certificate, as if a CA it trusts had signed it.
func trustCert(cert *tlscerttest.Pair) chromedp.ExecAllocatorOption {
	spki := sha256.Sum256(cert.Cert.RawSubjectPublicKeyInfo)
	return chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:]))
}

// newTab opens another tab in b's browser.
func (b *browser) newTab(t *testing.T) *browser {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	return &browser{t: t, ctx: ctx}
}

// openFile opens path of the site at base in the tab with file's content, as if the site served it there: it
// loads what the site answers at path (the nginx configuration under test sends everything to the edges, where
// an application's own page would come from its own files) and writes file over it. The page keeps all that a
// page from the site has: its origin, and its address as the browser's network checks see it.
func (b *browser) openFile(base, path, file string) {
	t := b.t
	t.Helper()
	html, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b.navigate(base + path)
	b.run(`document.open(); document.write(` + strconv.Quote(string(html)) + `); document.close()`)
}

// consoleErrors collects the exceptions and console.error calls of the tab's pages.
func (b *browser) consoleErrors() func() []string {
	var mu sync.Mutex
	var errs []string
	messages := chromedp.Console(b.ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Source == "" && (m.Type == chromedp.ConsoleError || m.IsException()) { // the page's, not the browser's
				mu.Lock()
				errs = append(errs, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
				mu.Unlock()
			}
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), errs...)
	}
}

// tickerSymbols are symbols of the ticker page's default watchlist; the test publishes quotes for them.
var tickerSymbols = []string{"AAPL", "MSFT", "NVDA"}

// quote is a quote payload with a price that moves on every update, numbered n.
func quote(topic string, n int) string {
	sym := strings.TrimPrefix(topic, "market.")
	price := 100 + 20*math.Sin(float64(n)/7) + float64(n%10)/100
	return fmt.Sprintf(`{"topic":%q,"kind":"quote","symbol":%q,"price":%.2f,"bid":%.2f,"ask":%.2f,"open":100,`+
		`"change":%.2f,"changePct":%.2f,"volume":%d,"n":%d,"ts":%q}`, topic, sym, price, price-0.01, price+0.01,
		price-100, price-100, 1000+n, n, time.Now().UTC().Format(time.RFC3339Nano))
}

// JavaScript read in the tabs.
const (
	// jsTickerPrices is the watchlist's last prices of the published symbols.
	jsTickerPrices = `['AAPL', 'MSFT', 'NVDA'].map((s) => document.querySelector('#wl-body tr[data-symbol="' + s + '"] .last')?.textContent).join()`
	// jsTickerState describes the ticker page for failure messages.
	jsTickerState = `{conn: document.querySelector('#conn-state').textContent, detail: document.querySelector('#conn-detail').textContent,
		transport: window.livepush.transport, cursor: window.livepush.lastCursor, said: window.said, prices: ` + jsTickerPrices + `}`
	// jsListen records what the ticker page says of its connection: the sentences of its status region, set on
	// every state change (screen readers announce them).
	jsListen = `(() => {
		const el = document.querySelector('#conn-announcer');
		window.said = [];
		new MutationObserver(() => window.said.push(el.textContent)).observe(el, {childList: true, characterData: true, subtree: true});
	})()`
	// jsClientState describes the application page for failure messages.
	jsClientState = `Object.fromEntries(Object.entries(window.rec || {}).map(([k, r]) => [k, {updates: r.updates.length,
		last: r.updates.at(-1), states: r.states.slice(-4), resets: r.resets, errors: r.errors.slice(-3)}]))`
	// jsProtocols lists the page's requests to its own origin that the browser timed, with the protocol each went over.
	jsProtocols = `[...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
		.filter((e) => new URL(e.name).origin === location.origin)
		.map((e) => [new URL(e.name).pathname, e.nextHopProtocol])`
)

// clientTransports are the transports of the application page's clients (its default ?transports=).
var clientTransports = []string{"websocket", "sse", "longpoll"}

// jsEveryClient, followed by a parenthesized function of a transport's name, is true when the function is true for
// every client of the application page.
var jsEveryClient = `['` + strings.Join(clientTransports, `', '`) + `'].every`

// TestHTTPSPagesOutliveEdgeLoss: two edges behind the repository's HTTPS nginx configuration, Chromium on HTTP/2
// with two pages: the ticker page (/) and an application page on /livepush.js with one client per transport
// (WebSocket, SSE, long polling). Quotes are published under load; one edge is killed (SIGKILL), then restarted
// and the other killed. After each kill both pages carry on: the ticker's prices move again and it says it
// reconnected and caught up, never that it reset; every client of the application page has every update exactly
// once across both kills, and so has the ticker page for its symbols. The page's requests and streams went over
// HTTP/2, its WebSockets over HTTP/1.1 connections of their own.
//
// It runs behind each HTTPS configuration the repository ships: nginx's and Caddy's.
func TestHTTPSPagesOutliveEdgeLoss(t *testing.T) {
	for _, proxy := range []struct {
		name  string
		start func(testing.TB, ...string) *proxytest.Proxy
	}{{"nginx", proxytest.StartNginxTLS}, {"caddy", proxytest.StartCaddy}} {
		t.Run(proxy.name, func(t *testing.T) { httpsPagesOutliveEdgeLoss(t, proxy.start) })
	}
}

func httpsPagesOutliveEdgeLoss(t *testing.T, startProxy func(testing.TB, ...string) *proxytest.Proxy) {
	n := startNATS(t, 0, t.TempDir())
	edges := []*edge{
		startEdge(t, n.url, "-trusted-proxies", "127.0.0.1"),
		startEdge(t, n.url, "-trusted-proxies", "127.0.0.1"),
	}
	p := startProxy(t, edges[0].addr(), edges[1].addr())
	if p.Proto != "h2" || !strings.HasPrefix(p.URL, "https://") {
		t.Fatalf("the TLS proxy says it speaks %s on %s, want h2 on https", p.Proto, p.URL)
	}
	defer func() {
		if t.Failed() {
			t.Log(p.Logs())
			for i, e := range edges {
				t.Logf("---- edge %d\n%s", i+1, e.logs())
			}
		}
	}()
	site := "https://shop.example:" + portOf(p.Addr) // the proxy, reached under a name of its own
	var topics []string
	for _, s := range tickerSymbols {
		topics = append(topics, "market."+s)
	}
	ld := startLoadOf(t, n.url, topics, 60, 1, quote)

	ticker := openBrowser(t, trustCert(p.Cert))
	tickerErrors := ticker.consoleErrors()
	ticker.navigate(site + "/")
	ticker.waitFor("the ticker page is live and shows prices", browserWait,
		`document.querySelector('#conn-state').textContent === 'live' && /^\d+\.\d+,\d+\.\d+,\d+\.\d+$/.test(`+jsTickerPrices+`)`,
		jsTickerState)
	ticker.run(jsListen)

	app := ticker.newTab(t)
	appErrors := app.consoleErrors()
	app.openFile(site, clientPage, "testdata/client-page.html")
	app.waitFor("every client of the application page gets updates", browserWait,
		`window.rec && `+jsEveryClient+`((k) => rec[k].updates.length > 0 && rec[k].states.at(-1).state === 'live')`,
		jsClientState)

	// HTTP/2 to the browser: the pages and what they fetched (the library, /readyz, the API) went over h2. (The
	// application page's document is what the edges answer at its path, written over: it was fetched too.)
	for _, tab := range []struct {
		b    *browser
		name string
		want []string
	}{{ticker, "ticker page", []string{"/", "/livepush.js", "/readyz", "/api/topics"}},
		{app, "application page", []string{"/livepush.js", "/readyz", "/api/poll"}}} {
		entries, err := browserEval[[][2]string](tab.b, jsProtocols)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range entries {
			seen[e[0]] = true
			if e[1] != "h2" {
				t.Errorf("%s: %s went over %q, want h2", tab.name, e[0], e[1])
			}
		}
		for _, w := range tab.want {
			if !seen[w] {
				t.Errorf("%s: no request to %s timed by the browser; it timed %v", tab.name, w, entries)
			}
		}
	}

	// The edges' origin check: the page's https origin passes (X-Forwarded-Proto https, from a trusted proxy; the
	// pages' WebSockets above are live), the same name over http does not.
	checkOriginRefused(t, p, "http://shop.example:"+portOf(p.Addr))

	from := ld.last() // every update after this one must reach every client exactly once
	tickerBefore := tickerTopics(t, ticker, topics)
	ld.waitPublished(t, 60)

	killAndCarryOn := func(victim *edge, name string) {
		t.Helper()
		prices, err := browserEval[string](ticker, jsTickerPrices)
		if err != nil {
			t.Fatal(err)
		}
		victim.signal(syscall.SIGKILL)
		killedAt := ld.last()
		ld.waitPublished(t, 120) // two seconds of load with one edge gone
		app.waitFor("every client of the application page has updates published after "+name+" died", 30*time.Second,
			fmt.Sprintf(jsEveryClient+`((k) => rec[k].updates.some(([, c]) => Number(c) > %d))`, killedAt),
			jsClientState)
		ticker.waitFor("the ticker page shows prices published after "+name+" died", 30*time.Second,
			fmt.Sprintf(`Number(window.livepush.lastCursor) > %d && %s !== %q`, killedAt, jsTickerPrices, prices), jsTickerState)
	}
	killAndCarryOn(edges[0], "edge 1")
	edges[0].restart(t)
	// nginx leaves an edge that failed alone for fail_timeout (5s), Caddy for fail_duration (5s): wait until the
	// proxy takes edge 1 back, so that the next kill leaves a live edge behind it.
	time.Sleep(6 * time.Second)
	killAndCarryOn(edges[1], "edge 2")
	acked := ld.finish()

	// The application page: every update after from, once, on every transport.
	want := 0
	for _, cursors := range acked {
		for _, c := range cursors {
			if c > from {
				want++
			}
		}
	}
	app.waitFor(fmt.Sprintf("every client of the application page has the %d updates published since %d", want, from),
		30*time.Second, fmt.Sprintf(jsEveryClient+`((k) => rec[k].updates.filter(([, c]) => Number(c) > %d).length >= %d)`,
			from, want), jsClientState)
	var rec map[string]struct {
		Updates [][2]string
		States  []struct {
			State   string
			Resumed bool
			Reason  string
		}
		Resets []string
		Errors []string
	}
	raw, err := browserEval[json.RawMessage](app, `window.rec`)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	for _, transport := range clientTransports {
		r := rec[transport]
		cl := &client{name: "livepush.js over " + transport, got: map[string][]uint64{}}
		for _, u := range r.Updates {
			c, err := strconv.ParseUint(u[1], 10, 64)
			if err != nil {
				t.Fatalf("%s: cursor %q", cl.name, u[1])
			}
			cl.got[u[0]] = append(cl.got[u[0]], c)
		}
		cl.expectExactly(t, acked, from)
		if len(r.Resets) > 0 {
			t.Errorf("%s: reset %v, want none: the edges resume each other's cursors", cl.name, r.Resets)
		}
		reconnected := 0
		for _, s := range r.States {
			if s.State == "live" && s.Resumed {
				reconnected++
			}
			if s.State == "closed" {
				t.Errorf("%s: closed", cl.name)
			}
		}
		// Each stream was on one of the two killed edges (transport longpoll may not notice: nginx retries a
		// request that fails on the other edge).
		if reconnected == 0 && transport != "longpoll" {
			t.Errorf("%s never resumed after a kill: states %+v", cl.name, r.States)
		}
		if len(r.Errors) > 0 {
			t.Errorf("%s: errors %v", cl.name, r.Errors)
		}
		if !t.Failed() {
			t.Logf("%s: %d updates since cursor %d, each once; resumed %d times", cl.name, want, from, reconnected)
		}
	}

	// The ticker page: for its symbols, exactly the updates the stream holds between its cursors before the first
	// kill and now.
	lastAcked := uint64(0)
	for _, topic := range topics {
		lastAcked = max(lastAcked, acked[topic][len(acked[topic])-1])
	}
	ticker.waitFor("the ticker page has every update published", 30*time.Second,
		fmt.Sprintf(`Number(window.livepush.lastCursor) >= %d`, lastAcked), jsTickerState)
	tickerAfter := tickerTopics(t, ticker, topics)
	for _, topic := range topics {
		b, a := tickerBefore[topic], tickerAfter[topic]
		want := 0
		for _, c := range acked[topic] {
			if c > b.cursor && c <= a.cursor {
				want++
			}
		}
		if got := a.Count - b.Count; got != want {
			t.Errorf("ticker page, %s: %d updates between cursors %d and %d, the stream holds %d", topic, got, b.cursor, a.cursor, want)
		}
	}
	said, err := browserEval[[]string](ticker, `window.said`)
	if err != nil {
		t.Fatal(err)
	}
	saidText := strings.Join(said, " | ")
	if !strings.Contains(saidText, "Connection lost, reconnecting") || !strings.Contains(saidText, "Reconnected, catching up") {
		t.Errorf("the ticker page said %q across two edge kills: want it to have lost its connection and caught up", saidText)
	}
	if strings.Contains(saidText, "reset") {
		t.Errorf("the ticker page said %q: a reset, want none", saidText)
	}
	t.Logf("ticker page: said %q", saidText)

	// The proxy's log: streams and requests over HTTP/2, WebSockets over HTTP/1.1 (nginx offers no WebSocket over
	// HTTP/2, so Chromium opens them on connections of their own), each upgraded.
	if p.Name == "nginx-tls" { // Caddy keeps no access log unless told to
		checkAccessLog(t, p.AccessLog())
	}

	for name, errs := range map[string][]string{"ticker page": tickerErrors(), "application page": appErrors()} {
		for _, e := range errs {
			t.Errorf("%s console: %s", name, e)
		}
	}
}

// topicCount is what the ticker page has received for one topic.
type topicCount struct {
	Count      int
	LastCursor string
	cursor     uint64
}

// tickerTopics reads the ticker page's per-topic counts and cursors for topics.
func tickerTopics(t *testing.T, b *browser, topics []string) map[string]topicCount {
	t.Helper()
	got, err := browserEval[map[string]topicCount](b, `window.livepush.perTopic`)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range topics {
		c := got[topic]
		n, err := strconv.ParseUint(c.LastCursor, 10, 64)
		if err != nil {
			t.Fatalf("ticker page, %s: cursor %q", topic, c.LastCursor)
		}
		c.cursor = n
		got[topic] = c
	}
	return got
}

// checkOriginRefused dials a WebSocket through p with origin, which must be refused with the edge's 403.
func checkOriginRefused(t *testing.T, p *proxytest.Proxy, origin string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), browserWait)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.Cert.Pool()}}}
	c, resp, err := websocket.Dial(ctx, "wss://"+p.Addr+"/ws?topic=market.*", &websocket.DialOptions{
		HTTPClient: client, HTTPHeader: http.Header{"Origin": {origin}}, Host: "shop.example:" + portOf(p.Addr)})
	if err == nil {
		c.CloseNow()
		t.Fatalf("a page of %s opened a WebSocket through the HTTPS proxy", origin)
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a page of %s through the HTTPS proxy: %v, want the edge's 403", origin, err)
	}
}

var accessLine = regexp.MustCompile(`"GET (/[^ ?]*)\S* (HTTP/[0-9.]+)" (\d+)`)

// checkAccessLog checks the protocols of Chromium's requests in nginx's access log: /sse and the API over HTTP/2,
// /ws over HTTP/1.1 and upgraded.
func checkAccessLog(t *testing.T, log string) {
	t.Helper()
	count := map[string]int{}
	for _, line := range strings.Split(log, "\n") {
		m := accessLine.FindStringSubmatch(line)
		if m == nil || !strings.Contains(line, "HeadlessChrome/") { // the browser's requests, not the test's
			continue
		}
		path, proto, status := m[1], m[2], m[3]
		switch {
		case path == "/ws":
			if proto != "HTTP/1.1" || status != "101" {
				t.Errorf("nginx access log: a WebSocket %s %s, want HTTP/1.1 101: %s", proto, status, line)
			}
		case path == "/sse" || strings.HasPrefix(path, "/api/"):
			if proto != "HTTP/2.0" {
				t.Errorf("nginx access log: %s over %s, want HTTP/2.0: %s", path, proto, line)
			}
		default:
			continue
		}
		count[path]++
	}
	for _, path := range []string{"/ws", "/sse", "/api/poll"} {
		if count[path] == 0 {
			t.Errorf("nginx access log: no finished %s request (counted %v)", path, count)
		}
	}
}

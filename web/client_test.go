package web_test

// The browser client library, web/static/livepush.js, tested in headless Chromium against real edges: an embedded
// nats-server, edges from push/pushtest (stopped and started again on the same address), and the test page
// testdata/client-test.html, which starts clients and records every update and event they report. The tests publish
// numbered updates and compare, topic by topic, what each client received with what was published: every update,
// once, in order.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/push"
	"github.com/livepush/livepush/push/pushtest"
	"github.com/livepush/livepush/web"
)

const clientPage = "/client-test.html"

// clientEnv is NATS with the stream, and edges serving the page's files with the test page beside them.
type clientEnv struct {
	t    *testing.T
	nats *pushtest.NATS
	page fs.FS
}

func newClientEnv(t *testing.T) *clientEnv {
	t.Helper()
	return &clientEnv{t: t, nats: pushtest.StartNATS(t, stream.Config{}), page: pageWithTestPage(t)}
}

// pageWithTestPage returns the edge's page files (web.FS) and testdata/client-test.html at /client-test.html.
func pageWithTestPage(t *testing.T) fs.FS {
	t.Helper()
	files := fstest.MapFS{}
	err := fs.WalkDir(web.FS, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(web.FS, name)
		files[name] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("testdata/client-test.html")
	if err != nil {
		t.Fatal(err)
	}
	files[strings.TrimPrefix(clientPage, "/")] = &fstest.MapFile{Data: b}
	return files
}

// edge starts an edge on addr ("127.0.0.1:0": any port) serving the test page.
func (e *clientEnv) edge(addr string, cfg push.Config) *pushtest.Edge {
	e.t.Helper()
	return e.edgeWith(addr, cfg, push.HubOptions{})
}

// edgeWith starts an edge as edge does, with hub options.
func (e *clientEnv) edgeWith(addr string, cfg push.Config, opts push.HubOptions) *pushtest.Edge {
	e.t.Helper()
	cfg.Page = e.page
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = time.Second
	}
	return e.nats.StartEdge(e.t, addr, cfg, opts)
}

// openClientPage opens the test page at pageURL and waits until it has loaded the library.
func openClientPage(t *testing.T, pageURL string) *page {
	t.Helper()
	p := openTab(t, pageURL)
	p.waitFor("the test page has loaded livepush.js", waitLong, `window.lp && window.lp.lib && window.lp.lib.connect`)
	return p
}

// js runs a JavaScript statement in the page.
func (p *page) js(format string, args ...any) {
	p.t.Helper()
	eval[any](p, fmt.Sprintf(format, args...))
}

// start makes client name in the page: lp.start(name, options, patterns, subOptions).
func (p *page) start(name string, options map[string]any, patterns []string, subOptions map[string]any) {
	p.t.Helper()
	if subOptions == nil {
		subOptions = map[string]any{}
	}
	p.js(`lp.start(%s, %s, %s, %s)`, mustJSON(p.t, name), mustJSON(p.t, options), mustJSON(p.t, patterns), mustJSON(p.t, subOptions))
}

// waitLive waits until client name is live on transport.
func (p *page) waitLive(name, transport string, timeout time.Duration) {
	p.t.Helper()
	p.waitFor(fmt.Sprintf("client %s is live on %s", name, transport), timeout,
		fmt.Sprintf(`lp.client(%q).state === 'live' && lp.client(%q).transport === %q`, name, name, transport))
}

// clientEvent is an event a client reported, as the test page keeps it.
type clientEvent struct {
	Type      string          `json:"type"`
	At        float64         `json:"at"`
	State     string          `json:"state"`
	Previous  string          `json:"previous"`
	Transport string          `json:"transport"`
	Attempt   int             `json:"attempt"`
	Delay     float64         `json:"delay"`
	Reason    string          `json:"reason"`
	Code      json.RawMessage `json:"code"`
	Resumed   bool            `json:"resumed"`
	Message   string          `json:"message"`
	Skipped   uint64          `json:"skipped"`
}

func (e clientEvent) code() string { return strings.Trim(string(e.Code), `"`) }

func (p *page) events(name, typ string) []clientEvent {
	p.t.Helper()
	return eval[[]clientEvent](p, fmt.Sprintf(`lp.events(%q, %q)`, name, typ))
}

// received returns the cursors client name received, per topic, in the order it received them.
func (p *page) received(name string) map[string][]uint64 {
	p.t.Helper()
	raw := eval[map[string][]string](p, fmt.Sprintf(`lp.rec(%q).updates`, name))
	out := make(map[string][]uint64, len(raw))
	for topic, list := range raw {
		for _, c := range list {
			n, err := strconv.ParseUint(c, 10, 64)
			if err != nil {
				p.t.Fatalf("client %s: cursor %q of %s: %v", name, c, topic, err)
			}
			out[topic] = append(out[topic], n)
		}
	}
	return out
}

// waitAll waits until client name has received the last update published on each topic.
func (p *page) waitAll(name string, sent map[string][]uint64, timeout time.Duration) {
	p.t.Helper()
	want := map[string]string{}
	for topic, list := range sent {
		if len(list) > 0 {
			want[topic] = strconv.FormatUint(list[len(list)-1], 10)
		}
	}
	p.waitFor(fmt.Sprintf("client %s has the last update of each topic", name), timeout,
		fmt.Sprintf(`lp.has(%q, %s)`, name, mustJSON(p.t, want)))
}

// checkEvery fails the test unless client name received exactly the updates published, per topic, in order: no
// gap, no duplicate.
func (p *page) checkEvery(name string, sent map[string][]uint64) {
	p.t.Helper()
	got := p.received(name)
	total := 0
	for topic, want := range sent {
		total += len(want)
		have := got[topic]
		if slices.Equal(have, want) {
			continue
		}
		seen := map[uint64]int{}
		for _, c := range have {
			seen[c]++
		}
		var missing, twice []uint64
		for _, c := range want {
			if seen[c] == 0 {
				missing = append(missing, c)
			}
		}
		for c, n := range seen {
			if n > 1 {
				twice = append(twice, c)
			}
		}
		p.t.Errorf("client %s, %s: received %d updates, %d published; missing %v, twice %v, out of order: %v",
			name, topic, len(have), len(want), missing, twice, !slices.IsSorted(have))
	}
	if !p.t.Failed() {
		p.t.Logf("client %s received all %d updates on %d topics once, in order", name, total, len(sent))
	}
}

// checkLatest is checkEvery for polling, which sees the latest value at each poll: in order, none twice, and the
// last one published.
func (p *page) checkLatest(name string, sent map[string][]uint64) {
	p.t.Helper()
	got := p.received(name)
	for topic, want := range sent {
		have := got[topic]
		if len(have) == 0 || have[len(have)-1] != want[len(want)-1] {
			p.t.Errorf("client %s, %s: last received %v, last published %d", name, topic, have, want[len(want)-1])
			continue
		}
		for i := 1; i < len(have); i++ {
			if have[i] <= have[i-1] {
				p.t.Errorf("client %s, %s: cursor %d after %d", name, topic, have[i], have[i-1])
			}
		}
		for _, c := range have {
			if !slices.Contains(want, c) {
				p.t.Errorf("client %s, %s: cursor %d was never published on it", name, topic, c)
			}
		}
	}
}

// ---- publishing numbered updates ----

// publisher publishes quotes round robin on its topics, one every interval, and remembers each one's cursor.
type publisher struct {
	t     *testing.T
	mu    sync.Mutex
	sent  map[string][]uint64
	total atomic.Int64
	quit  chan struct{}
	once  sync.Once
	done  chan struct{}
}

func (e *clientEnv) publish(topics []string, every time.Duration) *publisher {
	t := e.t
	p := &publisher{t: t, sent: map[string][]uint64{}, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-p.quit:
				return
			case <-tick.C:
			}
			// Not cancelled by stop: a publish the stream stored must be counted.
			topic := topics[i%len(topics)]
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ack, err := e.nats.JS.Publish(ctx, topic, []byte(pushtest.Quote(strings.TrimPrefix(topic, "market."), 100+float64(i)/100)))
			cancel()
			if err != nil {
				t.Errorf("publish %s: %v", topic, err)
				return
			}
			p.mu.Lock()
			p.sent[topic] = append(p.sent[topic], ack.Sequence)
			p.mu.Unlock()
			p.total.Add(1)
		}
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// waitCount waits until n more updates have been published.
func (p *publisher) waitCount(n int64) {
	p.t.Helper()
	target := p.total.Load() + n
	for deadline := time.Now().Add(waitLong); p.total.Load() < target; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			p.t.Fatalf("published only %d of %d updates in %v", p.total.Load(), target, waitLong)
		}
	}
}

// stop stops publishing and returns every cursor published, per topic.
func (p *publisher) stop() map[string][]uint64 {
	p.once.Do(func() { close(p.quit) })
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string][]uint64, len(p.sent))
	for k, v := range p.sent {
		out[k] = slices.Clone(v)
	}
	return out
}

var testTopics = []string{"market.T0", "market.T1", "market.T2", "market.T3"}

// ---- the tests ----

// TestClientServed: the edge serves the library at /livepush.js as a JavaScript module that browsers revalidate,
// and a page imports it.
func TestClientServed(t *testing.T) {
	env := newClientEnv(t)
	e := env.edge("127.0.0.1:0", push.Config{})
	resp, err := http.Get(e.URL + "/livepush.js")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") ||
		resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("ETag") == "" {
		t.Errorf("GET /livepush.js: %s, Content-Type %q, Cache-Control %q, ETag %q; want 200, text/javascript, no-cache, an ETag",
			resp.Status, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"), resp.Header.Get("ETag"))
	}
	if !strings.Contains(string(body), "export function connect(") {
		t.Errorf("GET /livepush.js does not export connect")
	}
	p := openClientPage(t, e.URL+clientPage)
	got := eval[[]string](p, `Object.keys(lp.lib).sort()`)
	for _, name := range []string{"Client", "LivepushError", "TRANSPORTS", "compareCursors", "connect"} {
		if !slices.Contains(got, name) {
			t.Errorf("livepush.js exports %v: %s missing", got, name)
		}
	}
	p.noErrors(true)
}

// TestClientTransports: a client on each transport, forced, and one on 'auto' (which picks WebSocket), all on one
// page: each receives every numbered update once, in order (polling: the latest at each poll). Updates carry
// catchUp false once live.
func TestClientTransports(t *testing.T) {
	env := newClientEnv(t)
	e := env.edge("127.0.0.1:0", push.Config{})
	p := openClientPage(t, e.URL+clientPage)
	clients := map[string]string{"ws": "websocket", "sse": "sse", "lp": "longpoll", "poll": "poll", "auto": "auto"}
	for name, transport := range clients {
		p.start(name, map[string]any{"transport": transport}, testTopics, nil)
	}
	for name, transport := range clients {
		if transport == "auto" {
			transport = "websocket"
		}
		p.waitLive(name, transport, waitLong)
	}
	pub := env.publish(testTopics, 10*time.Millisecond)
	pub.waitCount(120)
	sent := pub.stop()
	for name := range clients {
		p.waitAll(name, sent, waitLong)
		if name == "poll" {
			p.checkLatest(name, sent)
		} else {
			p.checkEvery(name, sent)
		}
	}
	if n := eval[float64](p, `lp.rec('ws').catchUp`); n != 0 {
		t.Errorf("the WebSocket client marked %v live updates as catch-up", n)
	}
	for name := range clients {
		if ev := p.events(name, "reset"); len(ev) > 0 {
			t.Errorf("client %s: reset %+v", name, ev)
		}
		if ev := p.events(name, "transport"); len(ev) > 0 {
			t.Errorf("client %s changed transport: %+v", name, ev)
		}
	}
	p.noErrors(true)
}

// refusingProxy is a reverse proxy in front of an edge that answers WebSocket handshakes with 403 while refuse is
// set, as nginx does when it rewrites Host and the edge's origin check fails, or as a proxy that does not pass
// upgrades. Everything else it passes on, streaming.
type refusingProxy struct {
	URL    string
	refuse atomic.Bool
}

func startRefusingProxy(t *testing.T, edgeAddr string) *refusingProxy {
	t.Helper()
	rp := &refusingProxy{}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: edgeAddr})
			r.Out.Host = r.In.Host
		},
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rp.refuse.Load() && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrades refused", http.StatusForbidden)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rp.URL = srv.URL
	return rp
}

// TestClientFallsBackWhenWebSocketIsRefused: behind a proxy that refuses WebSocket handshakes, 'auto' falls back to
// SSE and says so; once the proxy lets upgrades through, a probe moves it back to WebSocket. Across both moves every
// update arrives once.
func TestClientFallsBackWhenWebSocketIsRefused(t *testing.T) {
	env := newClientEnv(t)
	e := env.edge("127.0.0.1:0", push.Config{})
	proxy := startRefusingProxy(t, e.Addr)
	proxy.refuse.Store(true)
	p := openClientPage(t, proxy.URL+clientPage)
	p.start("c", map[string]any{"probeInterval": 1000}, testTopics, nil)
	p.waitLive("c", "sse", waitLong)
	fell := p.events("c", "transport")
	if len(fell) == 0 || fell[0].Transport != "sse" || fell[0].Previous != "websocket" || !strings.Contains(fell[0].Reason, "fallback") {
		t.Errorf("transport events %+v, want a fallback from websocket to sse", fell)
	}

	pub := env.publish(testTopics, 10*time.Millisecond)
	pub.waitCount(100)
	// Probes fail while upgrades are refused: the client stays on SSE, live.
	if s := eval[string](p, `lp.client('c').state + ' ' + lp.client('c').transport`); s != "live sse" {
		t.Errorf("while WebSocket is refused the client is %q, want live on sse", s)
	}
	proxy.refuse.Store(false)
	p.waitLive("c", "websocket", waitLong)
	pub.waitCount(100)
	sent := pub.stop()
	p.waitAll("c", sent, waitLong)
	p.checkEvery("c", sent)
	moves := p.events("c", "transport")
	if last := moves[len(moves)-1]; last.Transport != "websocket" || last.Reason != "upgrade" {
		t.Errorf("last transport event %+v, want an upgrade to websocket", last)
	}
	for _, ev := range p.events("c", "state") {
		if ev.State == "reconnecting" {
			t.Errorf("the client lost its connection: %+v", ev)
		}
	}
	p.noErrors(false) // the browser logs the refused handshakes
}

// TestClientResumesAcrossEdgeRestart: the edge serving the page stops (drains) and starts again on the same
// address while updates go on; clients on each transport say reconnecting, then resume, and receive every update
// once, those published while the edge was away included.
func TestClientResumesAcrossEdgeRestart(t *testing.T) {
	env := newClientEnv(t)
	e := env.edge("127.0.0.1:0", push.Config{})
	p := openClientPage(t, e.URL+clientPage)
	clients := map[string]string{"ws": "websocket", "sse": "sse", "lp": "longpoll", "auto": "auto", "poll": "poll"}
	for name, transport := range clients {
		p.start(name, map[string]any{"transport": transport}, testTopics, nil)
	}
	for name, transport := range clients {
		p.waitLive(name, strings.Replace(transport, "auto", "websocket", 1), waitLong)
	}
	pub := env.publish(testTopics, 10*time.Millisecond)
	pub.waitCount(50)
	e.Stop()
	for name := range clients {
		p.waitFor("client "+name+" says reconnecting", waitLong, fmt.Sprintf(`lp.client(%q).state === 'reconnecting'`, name))
	}
	pub.waitCount(100) // published while the edge is away
	env.edge(e.Addr, push.Config{})
	for name, transport := range clients {
		p.waitLive(name, strings.Replace(transport, "auto", "websocket", 1), waitLong)
	}
	pub.waitCount(50)
	sent := pub.stop()
	for name := range clients {
		p.waitAll(name, sent, waitLong)
		if name == "poll" {
			p.checkLatest(name, sent)
			continue
		}
		p.checkEvery(name, sent)
		states := p.events(name, "state")
		if last := states[len(states)-1]; last.State != "live" || !last.Resumed {
			t.Errorf("client %s: last state event %+v, want live and resumed", name, last)
		}
	}
	// The replay after the restart is catch-up, not live.
	if n := eval[float64](p, `lp.rec('ws').catchUp`); n == 0 {
		t.Errorf("the WebSocket client marked none of the replayed updates as catch-up")
	}
	p.noErrors(false)
}

// TestClientMovesBetweenEdgesAndTransports: behind a load balancer, the edge the clients use drains and stops;
// they resume on the other. Then one client is moved from transport to transport while updates flow. No update
// is lost or repeated in any move.
func TestClientMovesBetweenEdgesAndTransports(t *testing.T) {
	env := newClientEnv(t)
	a := env.edge("127.0.0.1:0", push.Config{})
	b := env.edge("127.0.0.1:0", push.Config{})
	lb := loadBalancer(t, a.Addr, b.Addr) // a first: the clients land on it
	p := openClientPage(t, lb+clientPage)
	clients := map[string]string{"ws": "websocket", "sse": "sse", "lp": "longpoll"}
	for name, transport := range clients {
		p.start(name, map[string]any{"transport": transport}, testTopics, nil)
	}
	for name, transport := range clients {
		p.waitLive(name, transport, waitLong)
	}
	pub := env.publish(testTopics, 10*time.Millisecond)
	pub.waitCount(50)
	a.Stop()
	pub.waitCount(100)
	for name, transport := range clients {
		p.waitLive(name, transport, waitLong)
	}

	p.start("m", map[string]any{"transport": "websocket"}, testTopics, nil)
	p.waitLive("m", "websocket", waitLong)
	var toPoll, fromPoll uint64 // m's cursor when it moved to polling, and when it left it
	for _, next := range []string{"sse", "longpoll", "poll", "websocket"} {
		pub.waitCount(40)
		cursor := uint64(eval[float64](p, `Number(lp.client('m').cursor)`))
		switch next {
		case "poll":
			toPoll = cursor
		case "websocket":
			fromPoll = cursor
		}
		p.js(`lp.client('m').setTransport(%q)`, next)
		p.waitLive("m", next, waitLong)
	}
	pub.waitCount(40)
	sent := pub.stop()
	for name := range clients {
		p.waitAll(name, sent, waitLong)
		p.checkEvery(name, sent)
	}
	// m subscribed after the first updates: it starts from their snapshot, then has every one after it, except
	// while on polling, which sees only the latest at each poll.
	p.waitAll("m", sent, waitLong)
	got := p.received("m")
	for topic, want := range sent {
		have := got[topic]
		if !slices.IsSorted(have) || len(slices.Compact(slices.Clone(have))) != len(have) {
			t.Errorf("client m, %s: out of order or repeated: %v", topic, have)
		}
		for _, c := range want {
			if c > have[0] && (c <= toPoll || c > fromPoll) && !slices.Contains(have, c) {
				t.Errorf("client m, %s: update %d missing (moved to polling at %d, left it at %d)", topic, c, toPoll, fromPoll)
			}
		}
	}
	p.noErrors(false)
}

// TestClientRecreatesEventSourceAfterNon200: EventSource gives up for good on any answer but 200. The client
// opens a new one, from its cursor, after the edge's 503 (full), its 429 (too many from one address, waiting what
// Retry-After says) and a proxy's 502 while the edge is down; then every update arrives once. The client starts
// from a cursor given in its options, so that it has one before it could ever connect.
func TestClientRecreatesEventSourceAfterNon200(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits push.Limits
		status string
	}{
		{"edge-full-503", push.Limits{MaxConnections: 1}, "HTTP 503 over_capacity"},
		{"per-address-429", push.Limits{MaxConnectionsPerIP: 1}, "HTTP 429 too_many_connections"},
		{"proxy-502", push.Limits{}, "HTTP 502"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newClientEnv(t)
			e := env.edge("127.0.0.1:0", push.Config{Limits: tc.limits})
			base := e.URL
			var proxy *refusingProxy
			if tc.name == "proxy-502" {
				proxy = startRefusingProxy(t, e.Addr)
				base = proxy.URL
			}
			p := openClientPage(t, base+clientPage)

			var release func()
			if tc.limits != (push.Limits{}) {
				release = holdStream(t, e.URL) // takes the one slot there is
			}
			from := env.nats.Publish(t, testTopics[0], pushtest.Quote("T0", 99))
			p.start("c", map[string]any{"transport": "sse", "cursor": strconv.FormatUint(from, 10)}, testTopics, nil)
			if proxy != nil {
				p.waitLive("c", "sse", waitLong)
				e.Stop()
			}
			p.waitFor("the client says why it reconnects", waitLong, fmt.Sprintf(
				`lp.events('c', 'state').some((e) => e.state === 'reconnecting' && e.reason.startsWith(%q))`, tc.status))
			refused := p.events("c", "state")
			for _, ev := range refused {
				if ev.State == "reconnecting" && strings.HasPrefix(ev.Reason, tc.status) && tc.limits != (push.Limits{}) && ev.Delay < 5000 {
					t.Errorf("after %s with Retry-After: 5 the client waits %v ms", tc.status, ev.Delay)
				}
			}
			pub := env.publish(testTopics, 10*time.Millisecond)
			pub.waitCount(40)
			if release != nil {
				release()
			} else {
				env.edge(e.Addr, push.Config{})
			}
			p.waitLive("c", "sse", waitLong)
			pub.waitCount(40)
			sent := pub.stop()
			p.waitAll("c", sent, waitLong)
			p.checkEvery("c", sent)
			p.noErrors(false)
		})
	}
}

// holdStream opens an SSE stream to base and holds it until release is called.
func holdStream(t *testing.T, base string) (release func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?topic=sports.>", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("holding a stream: %s", resp.Status)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			cancel()
			resp.Body.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// TestClientSurfacesReset: a client away while its cursor stopped meaning anything gets a reset event saying what
// happened, then a fresh snapshot and the updates after it. Expired: the stream no longer holds the cursor (purged
// here). Recreated: the stream was deleted and created again, so the cursor is ahead of it (bad_cursor).
func TestClientSurfacesReset(t *testing.T) {
	for _, tc := range []struct{ name, reason string }{{"expired", "expired"}, {"recreated", "stream_recreated"}} {
		t.Run(tc.name, func(t *testing.T) {
			env := newClientEnv(t)
			e := env.edge("127.0.0.1:0", push.Config{})
			p := openClientPage(t, e.URL+clientPage)
			clients := map[string]string{"ws": "websocket", "sse": "sse", "lp": "longpoll"}
			for name, transport := range clients {
				p.start(name, map[string]any{"transport": transport}, testTopics, nil)
			}
			for name, transport := range clients {
				p.waitLive(name, transport, waitLong)
			}
			// Enough before that the new stream of the recreated case does not pass the clients' cursor before they
			// are back (then nothing could tell them: docs/operations.md).
			pub := env.publish(testTopics, 10*time.Millisecond)
			pub.waitCount(200)
			before := pub.stop()
			for name := range clients {
				p.waitAll(name, before, waitLong)
			}
			e.Stop()
			ctx := t.Context()
			switch tc.name {
			case "expired":
				// Updates published while the clients are away, then removed: their cursor is older than the stream.
				lost := env.publish(testTopics, 10*time.Millisecond)
				lost.waitCount(8)
				lost.stop()
				str, err := env.nats.JS.Stream(ctx, env.nats.Stream.StreamName())
				if err != nil {
					t.Fatal(err)
				}
				if err := str.Purge(ctx); err != nil {
					t.Fatal(err)
				}
			case "recreated":
				if err := env.nats.JS.DeleteStream(ctx, env.nats.Stream.StreamName()); err != nil {
					t.Fatal(err)
				}
				if _, err := stream.Ensure(ctx, env.nats.JS, env.nats.Stream, pushtest.Logger()); err != nil {
					t.Fatal(err)
				}
			}
			// A little is published before the edge is back: the snapshot after the reset.
			pub = env.publish(testTopics, 50*time.Millisecond)
			pub.waitCount(8)
			env.edge(e.Addr, push.Config{})
			for name := range clients {
				p.waitFor("client "+name+" reports a reset", waitLong, fmt.Sprintf(`lp.events(%q, 'reset').length > 0`, name))
			}
			pub.waitCount(40)
			after := pub.stop()
			for name := range clients {
				resets := p.events(name, "reset")
				if len(resets) != 1 || resets[0].Reason != tc.reason || resets[0].Message == "" {
					t.Errorf("client %s: reset events %+v, want one with reason %s and a message", name, resets, tc.reason)
				}
				p.waitAll(name, after, waitLong)
				// After the reset: the snapshot (the latest of each topic then), then every update after it.
				got := p.received(name)
				for topic, want := range after {
					have := got[topic]
					i := slices.Index(have, before[topic][len(before[topic])-1])
					if i < 0 {
						t.Fatalf("client %s, %s: the last update before the reset is missing", name, topic)
					}
					have = have[i+1:]
					if len(have) == 0 {
						t.Errorf("client %s, %s: nothing after the reset", name, topic)
						continue
					}
					j := slices.Index(want, have[0])
					if j < 0 || !slices.Equal(have, want[j:]) {
						t.Errorf("client %s, %s: after the reset received %v, published %v", name, topic, have, want)
					}
				}
			}
			p.noErrors(false)
		})
	}
}

// TestClientSurfacesConflation: an edge that cannot write as fast as updates arrive (here: each write waits longer
// than the latency budget) sends the newest value of each topic, and the client says how many updates it skipped.
// What a client received and what it was told it skipped account for every update published.
func TestClientSurfacesConflation(t *testing.T) {
	env := newClientEnv(t)
	e := env.edgeWith("127.0.0.1:0", push.Config{}, push.HubOptions{WriteDelay: 300 * time.Millisecond,
		LatencyBudget: 50 * time.Millisecond})
	p := openClientPage(t, e.URL+clientPage)
	clients := map[string]string{"ws": "websocket", "sse": "sse"}
	for name, transport := range clients {
		p.start(name, map[string]any{"transport": transport}, testTopics, nil)
	}
	for name, transport := range clients {
		p.waitLive(name, transport, waitLong)
	}
	pub := env.publish(testTopics, time.Millisecond)
	pub.waitCount(400)
	sent := pub.stop()
	total := 0
	for _, list := range sent {
		total += len(list)
	}
	for name := range clients {
		p.waitAll(name, sent, waitLong)
		received := 0
		for topic, have := range p.received(name) {
			if !slices.IsSorted(have) || len(slices.Compact(slices.Clone(have))) != len(have) {
				t.Errorf("client %s, %s: received %v, out of order or twice", name, topic, have)
			}
			received += len(have)
		}
		var skipped uint64
		events := p.events(name, "conflated")
		for _, ev := range events {
			skipped += ev.Skipped
		}
		if len(events) == 0 || received+int(skipped) != total {
			t.Errorf("client %s: received %d and was told of %d skipped in %d conflated events; %d were published",
				name, received, skipped, len(events), total)
		}
		t.Logf("client %s: received %d of %d, told of %d skipped in %d events", name, received, total, skipped, len(events))
	}
	p.noErrors(false)
}

// TestClientMaxRateLive: a subscription with maxRate 2 gets about 2 updates a second of a topic published at 50;
// setMaxRate(null) on the live connection lifts the limit, setMaxRate(2) brings it back; the latest value always
// arrives. A burst of rate changes does not trip the edge's flood limit.
func TestClientMaxRateLive(t *testing.T) {
	env := newClientEnv(t)
	e := env.edge("127.0.0.1:0", push.Config{})
	p := openClientPage(t, e.URL+clientPage)
	topic := "market.FAST"
	clients := map[string]string{"ws": "websocket", "sse": "sse", "lp": "longpoll"}
	for name, transport := range clients {
		p.start(name, map[string]any{"transport": transport}, []string{topic}, map[string]any{"maxRate": 2})
	}
	for name, transport := range clients {
		p.waitLive(name, transport, waitLong)
	}
	pub := env.publish([]string{topic}, 20*time.Millisecond)
	rates := func() map[string]float64 {
		from := eval[float64](p, `lp.now()`)
		time.Sleep(3 * time.Second)
		out := map[string]float64{}
		for name := range clients {
			out[name] = eval[float64](p, fmt.Sprintf(`lp.countSince(%q, %q, %v)`, name, topic, from)) / 3
		}
		return out
	}
	time.Sleep(time.Second) // past the snapshot
	for name, r := range rates() {
		if r > 3 || r < 1 {
			t.Errorf("client %s with maxRate 2: %.1f updates/s", name, r)
		}
	}
	for name := range clients {
		p.js(`lp.sub(%q, 0).setMaxRate(null)`, name)
	}
	time.Sleep(500 * time.Millisecond)
	for name, r := range rates() {
		if r < 10 {
			t.Errorf("client %s without a limit: %.1f updates/s of a topic published at 50/s", name, r)
		}
	}
	// A burst of changes, ending at 2 a second: the client spreads its control messages under the edge's limit.
	for name := range clients {
		p.js(`for (let i = 0; i < 60; i++) lp.sub(%q, 0).setMaxRate(i %% 2 ? 5 : 10); lp.sub(%q, 0).setMaxRate(2)`, name, name)
	}
	time.Sleep(5 * time.Second) // the WebSocket client's queue drains at 10 messages a second
	for name, r := range rates() {
		if r > 3 || r < 1 {
			t.Errorf("client %s back to maxRate 2: %.1f updates/s", name, r)
		}
	}
	sent := pub.stop()
	for name := range clients {
		p.waitAll(name, sent, waitLong) // the latest value arrives
		for _, ev := range p.events(name, "state") {
			if ev.State == "reconnecting" {
				t.Errorf("client %s reconnected: %+v", name, ev)
			}
		}
	}
	p.noErrors(true)
}

// tokenService answers GET with a fresh token for topics that expires after ttl (to the second), allowing any
// origin, as an application's token endpoint would for its page.
func tokenService(t *testing.T, topics []string, ttl time.Duration) (string, *atomic.Int64) {
	t.Helper()
	var issued atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, err := pushtest.Token(topics, ttl)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		issued.Add(1)
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, tok)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &issued
}

// TestClientToken: against an edge that checks tokens, clients get theirs from a token function. Tokens live 3 s
// and the test runs past several. WebSocket renews its token in band ({"type":"auth"}) and keeps its connection;
// SSE is ended by the edge at expiry (token_expired) and comes back with a fresh token; long polling sends a fresh
// one when the old is about to expire; a token source that renews only at expiry gets WebSocket close 4001 and a
// fresh token. Nobody misses an update.
func TestClientToken(t *testing.T) {
	env := newClientEnv(t)
	e := env.edge("127.0.0.1:0", push.Config{Auth: pushtest.Authenticator(t)})
	tokens, issued := tokenService(t, []string{"market.>"}, 3*time.Second)
	p := openClientPage(t, e.URL+clientPage)
	clients := map[string]map[string]any{
		"ws":   {"transport": "websocket", "tokenURL": tokens},
		"sse":  {"transport": "sse", "tokenURL": tokens},
		"lp":   {"transport": "longpoll", "tokenURL": tokens},
		"lazy": {"transport": "websocket", "tokenURL": tokens, "tokenLazy": true},
	}
	for name, opts := range clients {
		p.start(name, opts, testTopics, nil)
	}
	for name, opts := range clients {
		p.waitLive(name, opts["transport"].(string), waitLong)
	}
	pub := env.publish(testTopics, 20*time.Millisecond)
	time.Sleep(9 * time.Second)
	sent := pub.stop()
	for name := range clients {
		p.waitAll(name, sent, waitLong)
		p.checkEvery(name, sent)
		if calls := eval[float64](p, fmt.Sprintf(`lp.rec(%q).tokenCalls`, name)); calls < 3 {
			t.Errorf("client %s asked for a token %v times in 9 s of 3 s tokens", name, calls)
		}
	}
	for _, ev := range p.events("ws", "state") {
		if ev.State == "reconnecting" {
			t.Errorf("the WebSocket client reconnected (%+v): it should renew its token in band", ev)
		}
	}
	expired := func(name, code string) {
		t.Helper()
		for _, ev := range p.events(name, "state") {
			if ev.State == "reconnecting" && ev.code() == code {
				return
			}
		}
		t.Errorf("client %s never reconnected for an expired token (%s): %+v", name, code, p.events(name, "state"))
	}
	expired("sse", "token_expired")
	expired("lazy", "4001")
	t.Logf("%d tokens issued", issued.Load())

	// A token the edge refuses: the client says so and backs off rather than hammering the edge.
	p.start("bad", map[string]any{"transport": "websocket", "tokenFixed": "not.a.token", "minBackoff": 200}, testTopics, nil)
	time.Sleep(4 * time.Second)
	states := p.events("bad", "state")
	attempts := 0
	for _, ev := range states {
		if ev.State == "reconnecting" {
			attempts++
			if !strings.Contains(ev.Reason, "token") && ev.code() != "4001" && ev.code() != "unauthorized" {
				t.Errorf("client bad reconnects for %q, want the refused token named", ev.Reason)
			}
		}
		if ev.State == "live" {
			t.Errorf("client bad went live with a bad token")
		}
	}
	if attempts == 0 || attempts > 8 {
		t.Errorf("client bad made %d attempts in 4 s with a refused token, want a few with backoff", attempts)
	}
	p.noErrors(false)
}

// TestClientCloseCodes: what the edge's WebSocket close codes make the client do. 1013 (edge full): wait at least
// 2 s. 1008 (too many control messages, our fault): at least 10 s, not hammering. 1012 (the edge restarting):
// come back at once.
func TestClientCloseCodes(t *testing.T) {
	env := newClientEnv(t)
	full := env.edge("127.0.0.1:0", push.Config{Limits: push.Limits{MaxConnections: 2}})
	p := openClientPage(t, full.URL+clientPage)
	release1, release2 := holdStream(t, full.URL), holdStream(t, full.URL)
	release := func() { release1(); release2() }
	p.start("full", map[string]any{"transport": "websocket"}, testTopics, nil)
	p.waitFor("the client hears 1013", waitLong, `lp.events('full', 'state').some((e) => e.state === 'reconnecting')`)
	ev := p.events("full", "state")
	for _, e := range ev {
		if e.State == "reconnecting" && (e.code() != "1013" || e.Delay < 2000) {
			t.Errorf("edge full: %+v, want code 1013 and a delay of at least 2000 ms", e)
		}
	}
	release()
	p.waitLive("full", "websocket", waitLong)

	// An edge that takes fewer control messages than the client sends in a burst closes with 1008.
	strict := env.edge("127.0.0.1:0", push.Config{Limits: push.Limits{ControlRate: 2}, AllowedOrigins: []string{strings.TrimPrefix(full.URL, "http://")}})
	p.start("flood", map[string]any{"transport": "websocket", "url": strict.URL}, testTopics, nil)
	p.waitLive("flood", "websocket", waitLong)
	p.js(`for (let i = 0; i < 30; i++) lp.sub('flood', 0).setMaxRate(i + 1)`)
	p.waitFor("the client hears 1008", waitLong, `lp.events('flood', 'state').some((e) => e.state === 'reconnecting')`)
	for _, e := range p.events("flood", "state") {
		if e.State == "reconnecting" && (e.code() != "1008" || e.Delay < 10000) {
			t.Errorf("flood: %+v, want code 1008 and a delay of at least 10000 ms", e)
		}
	}
	p.js(`lp.client('flood').close()`)

	before := eval[float64](p, `lp.now()`)
	full.Stop()
	env.edge(full.Addr, push.Config{})
	p.waitFor("the client is back", waitLong, fmt.Sprintf(`lp.events('full', 'state').some((e) => e.at > %v && e.state === 'live')`, before))
	var restart clientEvent
	for _, e := range p.events("full", "state") {
		if e.At > before && e.State == "reconnecting" {
			restart = e
			break
		}
	}
	if restart.code() != "1012" || restart.Delay > 300 {
		t.Errorf("edge restart: first reconnecting event %+v, want code 1012 and a delay under 300 ms", restart)
	}
	p.noErrors(false)
}

// TestClientCrossOrigin: a page on another origin imports /livepush.js from the edge and follows updates on every
// transport, with the edge configured for it (-cors-origins, -allowed-origins).
func TestClientCrossOrigin(t *testing.T) {
	env := newClientEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	site := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.FileServer(http.Dir("testdata"))}}
	site.Start()
	t.Cleanup(site.Close)
	e := env.edge("127.0.0.1:0", push.Config{CORSOrigins: []string{site.URL}, AllowedOrigins: []string{ln.Addr().String()}})
	p := openClientPage(t, site.URL+clientPage+"?lib="+url.QueryEscape(e.URL+"/livepush.js"))
	clients := map[string]string{"ws": "websocket", "sse": "sse", "lp": "longpoll", "poll": "poll"}
	for name, transport := range clients {
		p.start(name, map[string]any{"transport": transport, "url": e.URL}, testTopics, nil)
	}
	for name, transport := range clients {
		p.waitLive(name, transport, waitLong)
	}
	pub := env.publish(testTopics, 10*time.Millisecond)
	pub.waitCount(80)
	sent := pub.stop()
	for name := range clients {
		p.waitAll(name, sent, waitLong)
		if name == "poll" {
			p.checkLatest(name, sent)
		} else {
			p.checkEvery(name, sent)
		}
	}
	p.noErrors(true)
}

// TestClientReadmeExample: the README's browser example, served by an edge as a page, logs that it is live and
// the updates it receives.
func TestClientReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```html\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no html example")
	}
	env := newClientEnv(t)
	env.page.(fstest.MapFS)["readme-example.html"] = &fstest.MapFile{
		Data: append([]byte("<!doctype html>\n<meta charset=\"utf-8\">\n<link rel=\"icon\" href=\"data:,\">\n"), m[1]...),
	}
	e := env.edge("127.0.0.1:0", push.Config{})
	p := openTab(t, e.URL+"/readme-example.html")
	pub := env.publish([]string{"market.AAPL"}, 50*time.Millisecond)
	defer pub.stop()
	for _, want := range []string{"live", "market.AAPL "} {
		for deadline := time.Now().Add(waitLong); !p.logged(want); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the README's example never logged a line starting %q", want)
			}
		}
	}
	p.noErrors(true)
}

// logged reports whether the page wrote a console.log line starting with prefix.
func (p *page) logged(prefix string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.console {
		if m.Type == chromedp.ConsoleLog && strings.HasPrefix(m.Text, prefix) {
			return true
		}
	}
	return false
}

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/browsertest"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
)

// Headless Chromium through the repository's proxy configurations. Chromium resolves every *.example name to
// 127.0.0.1, so the proxy can be reached at a public-looking name (shop.example, its own origin) and a foreign site
// can be served from another (evil.example). Chromium must be installed: without it these tests fail.

const browserWait = 20 * time.Second // generous: a loaded 2-core machine under -race

// browser is one headless Chromium tab.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func openBrowser(t *testing.T, flags ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	ctx := browsertest.Start(t, append([]chromedp.ExecAllocatorOption{
		chromedp.Flag("host-resolver-rules", "MAP *.example 127.0.0.1")}, flags...)...)
	return &browser{t: t, ctx: ctx}
}

func (b *browser) navigate(url string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		b.t.Fatalf("open %s: %v", url, err)
	}
}

func browserEval[T any](b *browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// run evaluates JavaScript for its effect.
func (b *browser) run(js string) {
	b.t.Helper()
	if _, err := browserEval[chromedp.Void](b, js); err != nil {
		b.t.Fatalf("evaluating %s: %v", js, err)
	}
}

// waitFor polls the JavaScript expression until it is truthy, failing the test after timeout with what state
// shows.
func (b *browser) waitFor(what string, timeout time.Duration, expr, state string) {
	b.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		ok, err := browserEval[bool](b, "!!("+expr+")")
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("still false")
			}
			s, _ := browserEval[string](b, "JSON.stringify("+state+")")
			b.t.Fatalf("waited %v until %s: %v\n  expression: %s\n  state: %s", timeout, what, err, expr, s)
		}
	}
}

// portOf is the port of a host:port.
func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// foreignSite serves a blank page on a loopback port: another site, as far as a browser can tell once it is
// reached under another name.
func foreignSite(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<!doctype html><title>elsewhere</title><p>another site")
	})}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// JavaScript run in a page: an EventSource and a WebSocket on the page's own origin, recording what they get.
const jsOpenStreams = `(() => {
	const s = window.streams = {sse: {ids: [], errors: 0, closedForGood: false}, ws: {messages: 0, opened: false, closed: null}};
	const es = new EventSource('/sse?topic=market.*');
	es.addEventListener('quote', (e) => s.sse.ids.push(Number(e.lastEventId)));
	es.onerror = () => { s.sse.errors++; if (es.readyState === EventSource.CLOSED) s.sse.closedForGood = true; };
	const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws?topic=market.*');
	ws.onopen = () => { s.ws.opened = true; };
	ws.onmessage = (e) => { s.ws.messages += e.data.split('\n').filter((l) => JSON.parse(l).type === 'update').length; };
	ws.onclose = (e) => { s.ws.closed = e.code; };
})()`

// The ticker page, an EventSource and a WebSocket work in Chromium through each proxy on a port of its own, the
// proxy reached under a name of its own (for nginx, whose Host $host drops the port, the edge compares the origin's
// name alone); a page of another site is refused its WebSocket, and the edge says why, in its log and in the 403.
// A plain HTTP client reads SSE through the proxy as it streams.
func TestBrowserThroughProxy(t *testing.T) {
	n := startNATS(t, 0, t.TempDir())
	e := startEdge(t, n.url, "-trusted-proxies", "127.0.0.1", "-feeds")
	foreign := "http://evil.example:" + portOf(foreignSite(t))
	b := openBrowser(t)
	for _, kind := range plainHTTPProxies {
		t.Run(kind.name, func(t *testing.T) {
			b.t = t
			p := kind.start(t, e.addr())
			site := "http://shop.example:" + portOf(p.Addr)

			b.navigate(site + "/")
			pageState := `{conn: document.querySelector('#conn-state')?.textContent, transport: window.livepush?.transport}`
			b.waitFor("the page is live on WebSocket", browserWait,
				`document.querySelector('#conn-state').textContent === 'live' && window.livepush.transport === 'ws'`, pageState)
			const prices = `[...document.querySelectorAll('#wl-body tr[data-symbol] .last')].map((c) => c.textContent).join()`
			before, err := browserEval[string](b, prices)
			if err != nil {
				t.Fatal(err)
			}
			b.waitFor("the page's prices move", browserWait, prices+` !== `+strconv.Quote(before), pageState)

			b.run(jsOpenStreams)
			b.waitFor("EventSource and WebSocket get updates", browserWait,
				`streams.sse.ids.length >= 3 && streams.ws.messages >= 3`, `window.streams`)
			s, err := browserEval[struct {
				SSE struct{ IDs []uint64 }
				WS  struct{ Closed *int }
			}](b, `({sse: {ids: streams.sse.ids}, ws: {closed: streams.ws.closed}})`)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(s.SSE.IDs); i++ {
				if s.SSE.IDs[i] <= s.SSE.IDs[i-1] {
					t.Errorf("EventSource ids not increasing: %v", s.SSE.IDs)
					break
				}
			}
			if s.WS.Closed != nil {
				t.Errorf("the page's WebSocket closed with %d", *s.WS.Closed)
			}

			// Another site's page: the handshake is refused (the browser sees only 1006), and the edge says why.
			b.navigate(foreign + "/")
			b.run(`(() => {
				const s = window.foreign = {opened: false, closed: null};
				const ws = new WebSocket('ws://shop.example:` + portOf(p.Addr) + `/ws?topic=market.*');
				ws.onopen = () => { s.opened = true; };
				ws.onclose = (e) => { s.closed = e.code; };
			})()`)
			b.waitFor("the foreign page's WebSocket is closed", browserWait, `window.foreign.closed !== null`, `window.foreign`)
			if opened, _ := browserEval[bool](b, `window.foreign.opened`); opened {
				t.Error("a page of another site opened a WebSocket through the proxy")
			}
			wantHost := `"host":"shop.example:` + portOf(p.Addr) + `"`
			if kind.name == "nginx" {
				wantHost = `"host":"shop.example"`
			}
			refused := false
			for _, line := range strings.Split(e.logs(), "\n") {
				refused = refused || strings.Contains(line, "websocket refused") &&
					strings.Contains(line, `"origin":"`+foreign+`"`) && strings.Contains(line, wantHost) &&
					strings.Contains(line, "-allowed-origins")
			}
			if !refused {
				t.Errorf("the edge's log does not say it refused %s with Host %s and what to set:\n%s", foreign, wantHost, e.logs())
			}
			_, resp, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(p.URL, "http")+"/ws",
				&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {foreign}}})
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("foreign origin through %s: %v, %v; want 403", kind.name, err, resp)
			}
			var answer struct{ Error, Code string }
			if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || answer.Code != "forbidden_origin" ||
				!strings.Contains(answer.Error, foreign) || !strings.Contains(answer.Error, "-allowed-origins") {
				t.Errorf("the 403 through %s does not say what to configure: %+v (%v)", kind.name, answer, err)
			}

			readSSE(t, p.URL)
			if t.Failed() {
				t.Log(p.Logs())
			}
		})
	}
}

// readSSE reads an SSE stream through the proxy as curl would and checks that updates arrive as they happen, not
// all at once when a buffer fills.
func readSSE(t *testing.T, base string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), browserWait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?topic=market.*", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("SSE through the proxy: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	const want = 100 // the snapshot of the 78 symbols, then live quotes at 50 a second
	var arrivals []time.Time
	var last uint64
	for sc := bufio.NewScanner(resp.Body); len(arrivals) < want && sc.Scan(); {
		if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			n, err := strconv.ParseUint(id, 10, 64)
			if err != nil || n <= last {
				t.Fatalf("SSE through the proxy: id %q after %d", id, last)
			}
			last = n
			arrivals = append(arrivals, time.Now())
		}
	}
	if len(arrivals) < want {
		t.Fatalf("SSE through the proxy: %d events, then the stream ended (%v)", len(arrivals), ctx.Err())
	}
	// Live quotes come one or a few at a time, 50 a second: the last ones must not arrive with the first.
	if spread := arrivals[want-1].Sub(arrivals[0]); spread < 100*time.Millisecond {
		t.Errorf("SSE through the proxy: %d events arrived within %v: held back and sent together", want, spread)
	}
}

// A browser's own EventSource, through a single-upstream proxy, outlives its edge's restart: while the edge is
// down the proxy answers it with a stream asking it to retry, so it never closes for good, and once the edge is
// back it resumes with Last-Event-ID: every update published meanwhile arrives once.
func TestBrowserEventSourceOutlivesEdgeRestart(t *testing.T) {
	b := openBrowser(t)
	for _, kind := range plainHTTPProxies {
		t.Run(kind.name, func(t *testing.T) {
			b.t = t
			n := startNATS(t, 0, t.TempDir())
			e := startEdge(t, n.url, "-trusted-proxies", "127.0.0.1")
			p := kind.start(t, e.addr())
			ld := startLoad(t, n.url, topics, 50, 1)

			b.navigate("http://shop.example:" + portOf(p.Addr) + "/healthz") // a document of the proxy's origin
			b.run(`(() => {
				const s = window.es = {got: [], errors: 0, closedForGood: false, resets: 0};
				const es = window.eventSource = new EventSource('/sse?topic=market.*&topic=sports.>');
				es.addEventListener('quote', (e) => s.got.push([JSON.parse(e.data).topic, Number(e.lastEventId)]));
				es.addEventListener('reset', () => s.resets++);
				es.onerror = () => { s.errors++; if (es.readyState === EventSource.CLOSED) s.closedForGood = true; };
			})()`)
			const state = `{got: es.got.length, errors: es.errors, closedForGood: es.closedForGood, readyState: eventSource.readyState}`
			b.waitFor("the EventSource gets updates", browserWait, `es.got.length > 0`, state)
			from := ld.last()
			ld.waitPublished(t, 25)

			e.signal(syscall.SIGKILL)
			b.waitFor("the EventSource notices", browserWait, `es.errors > 0`, state)
			ld.waitPublished(t, 100) // two seconds down: the EventSource retries through the proxy meanwhile
			e.restart(t)
			ld.waitPublished(t, 50)
			acked := ld.finish()

			cl := &client{name: "EventSource", got: map[string][]uint64{}}
			want := 0
			for _, cursors := range acked {
				for _, c := range cursors {
					if c > from {
						want++
					}
				}
			}
			b.waitFor(fmt.Sprintf("the EventSource has the %d updates published since %d", want, from), 30*time.Second,
				fmt.Sprintf(`es.got.filter(([, c]) => c > %d).length >= %d || es.closedForGood`, from, want), state)
			got, err := browserEval[[][2]json.RawMessage](b, `es.got`)
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range got {
				var topic string
				var cursor uint64
				if json.Unmarshal(g[0], &topic) != nil || json.Unmarshal(g[1], &cursor) != nil {
					t.Fatalf("unreadable record %s", g)
				}
				cl.got[topic] = append(cl.got[topic], cursor)
			}
			cl.expectExactly(t, acked, from)
			s, err := browserEval[struct {
				ClosedForGood bool
				Resets        int
				ReadyState    int
			}](b, `({closedForGood: es.closedForGood, resets: es.resets, readyState: eventSource.readyState})`)
			if err != nil {
				t.Fatal(err)
			}
			if s.ClosedForGood || s.ReadyState != 1 || s.Resets != 0 {
				t.Errorf("EventSource after the restart: %+v, want open, never closed for good, no reset", s)
			}
			b.run(`eventSource.close()`)
			if t.Failed() {
				t.Log(p.Logs())
			}
		})
	}
}

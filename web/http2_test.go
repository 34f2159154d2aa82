package web_test

// Browsers over HTTPS: Chromium talks HTTP/2 to an edge serving TLS, so one page can hold many streams at once,
// which HTTP/1.1's six connections per host cannot. The certificate is self-signed, made by the test; Chromium is
// started with --ignore-certificate-errors.

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/browsertest"

	"github.com/livepush/livepush/internal/testlog"

	"github.com/chromedp/chromedp"

	"github.com/livepush/livepush/internal/tlscert/tlscerttest"
	"github.com/livepush/livepush/push"
	"github.com/livepush/livepush/web"
)

// tlsEdge is an edge serving HTTPS on a loopback port, following the system's stream.
type tlsEdge struct {
	url  string          // https://127.0.0.1:port
	log  *testlog.Buffer // what the edge logged
	mu   sync.Mutex
	alpn map[string]int // TLS connections by negotiated protocol ("h2", "http/1.1")
}

func (e *tlsEdge) connections(proto string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.alpn[proto]
}

// startTLSEdge runs an edge with a self-signed certificate beside s's plain one, and waits until it is ready.
func (s *system) startTLSEdge() *tlsEdge {
	t := s.t
	t.Helper()
	pair := tlscerttest.New(t, "livepush test edge")
	e := &tlsEdge{log: &testlog.Buffer{}, alpn: map[string]int{}}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{pair.TLSCertificate(t)},
		VerifyConnection: func(cs tls.ConnectionState) error {
			e.mu.Lock()
			e.alpn[cs.NegotiatedProtocol]++
			e.mu.Unlock()
			return nil
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "https://" + ln.Addr().String()
	log := slog.New(slog.NewTextHandler(e.log, nil))
	src := push.NewSource(s.js, s.cfg, log)
	hub := push.NewHub(push.HubOptions{History: src})
	srv := push.NewServer(push.Config{Page: web.FS, Log: log, TLS: cfg, DrainTimeout: time.Second}, hub, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("TLS edge stopped with %v", err)
		}
	})

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pair.Pool()}}}
	defer client.CloseIdleConnections()
	for deadline := time.Now().Add(waitLong); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("TLS edge stopped at start: %v", err)
		default:
		}
		resp, err := client.Get(e.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("TLS edge not ready after %v: %v", waitLong, err)
		}
	}
}

// browserTab starts headless Chromium, accepting the test's self-signed certificate, and returns a tab.
func browserTab(t *testing.T) context.Context {
	t.Helper()
	return browsertest.Start(t, chromedp.Flag("ignore-certificate-errors", true))
}

func evalIn[T any](t *testing.T, tab context.Context, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, waitLong)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		t.Fatalf("evaluating %.80s…: %v", expr, err)
	}
	return v
}

// jsManyStreams opens streams EventSources on market.* and counts the quotes each receives, in window.many.
const jsManyStreams = `(() => {
	window.many = { counts: [], fetched: 0, fetchErrors: [] };
	for (let i = 0; i < %d; i++) {
		window.many.counts.push(0);
		new EventSource('/sse?topic=market.*').addEventListener('quote', () => { window.many.counts[i]++; });
	}
	return true;
})()`

// jsFetchSnapshots fetches /api/snapshot n times at once, counting answers in window.many.fetched.
const jsFetchSnapshots = `(() => {
	for (let i = 0; i < %d; i++) {
		fetch('/api/snapshot?topic=market.*').then((r) => r.json())
			.then(() => { window.many.fetched++; }, (e) => { window.many.fetchErrors.push(String(e)); });
	}
	return true;
})()`

// waitJS polls expr in tab until it is true, or fails the test after d saying what it waited for.
func waitJS(t *testing.T, tab context.Context, what string, d time.Duration, expr string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if evalIn[bool](t, tab, "!!("+expr+")") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v until %s; window.many: %s", d, what, evalIn[string](t, tab, "JSON.stringify(window.many)"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestBrowserHoldsManyStreamsOverHTTP2(t *testing.T) {
	s := startSystem(t)
	e := s.startTLSEdge()
	tab := browserTab(t)
	const streams, fetches = 8, 4

	ctx, cancel := context.WithTimeout(tab, waitLong)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/")); err != nil {
		t.Fatalf("opening %s: %v", e.url, err)
	}
	evalIn[bool](t, tab, fmt.Sprintf(jsManyStreams, streams))
	waitJS(t, tab, "every stream has its snapshot", waitLong, `window.many.counts.every((n) => n > 0)`)
	evalIn[bool](t, tab, fmt.Sprintf(jsFetchSnapshots, fetches))
	// Live: every stream keeps receiving after the snapshot, with the fetches answered beside them.
	evalIn[bool](t, tab, `(window.many.base = window.many.counts.slice(), true)`)
	waitJS(t, tab, "every stream receives live updates and every fetch is answered", waitLong,
		fmt.Sprintf(`window.many.counts.every((n, i) => n >= window.many.base[i] + 20) && window.many.fetched === %d`, fetches))

	// The browser says HTTP/2, and so does the edge, for each stream.
	protos := evalIn[[]string](t, tab, `performance.getEntriesByType('resource')
		.filter((r) => r.name.includes('/api/snapshot')).map((r) => r.nextHopProtocol)`)
	if len(protos) != fetches || strings.Count(strings.Join(protos, " "), "h2") != fetches {
		t.Errorf("the fetches went over %v, want h2 for all %d", protos, fetches)
	}
	if n := strings.Count(e.log.String(), `transport=sse proto=HTTP/2.0`); n != streams {
		t.Errorf("the edge logged %d SSE streams over HTTP/2, want %d:\n%s", n, streams, e.log)
	}

	// A WebSocket from the same page: Chromium opens an HTTP/1.1 connection for it beside the HTTP/2 one, since the
	// edge does not offer WebSockets over HTTP/2.
	h1Before := e.connections("http/1.1")
	updates := evalIn[int](t, tab, `new Promise((resolve, reject) => {
		const ws = new WebSocket('wss://' + location.host + '/ws?topic=market.*');
		let updates = 0;
		ws.onmessage = (m) => {
			updates += m.data.split('\n').filter((line) => JSON.parse(line).type === 'update').length;
			if (updates >= 20) { ws.close(); resolve(updates); }
		};
		ws.onclose = (ev) => reject(new Error('closed with ' + ev.code + ' after ' + updates + ' updates'));
		setTimeout(() => reject(new Error('only ' + updates + ' updates in 15s')), 15000);
	})`, chromedp.EvalAwaitPromise)
	if updates < 20 {
		t.Errorf("the WebSocket got %d updates, want 20", updates)
	}
	h1, h2 := e.connections("http/1.1"), e.connections("h2")
	if h1 <= h1Before || h2 == 0 {
		t.Errorf("TLS connections: %d h2, %d http/1.1 (%d before the WebSocket); want the page on h2 and the "+
			"WebSocket on a new http/1.1 one", h2, h1, h1Before)
	}
	t.Logf("TLS connections from the browser: %d h2, %d http/1.1", h2, h1)
}

// The same page over plain HTTP/1.1, to show what the test above guards against: six connections per host, so
// the seventh stream and the fetches wait for good.
func TestBrowserStarvesOverHTTP1(t *testing.T) {
	s := startSystem(t)
	tab := browserTab(t)
	const streams, fetches = 8, 4
	ctx, cancel := context.WithTimeout(tab, waitLong)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(s.url())); err != nil {
		t.Fatalf("opening %s: %v", s.url(), err)
	}
	evalIn[bool](t, tab, fmt.Sprintf(jsManyStreams, streams))
	waitJS(t, tab, "six streams have their snapshot", waitLong, `window.many.counts.filter((n) => n > 0).length >= 6`)
	evalIn[bool](t, tab, fmt.Sprintf(jsFetchSnapshots, fetches))
	time.Sleep(3 * time.Second)
	live := evalIn[int](t, tab, `window.many.counts.filter((n) => n > 0).length`)
	fetched := evalIn[int](t, tab, `window.many.fetched`)
	if live == streams || fetched > 0 {
		t.Fatalf("over HTTP/1.1 %d of %d streams are live and %d fetches answered: the browser's connection limit "+
			"no longer shows, and the HTTP/2 test above proves nothing", live, streams, fetched)
	}
	t.Logf("over HTTP/1.1: %d of %d streams live, %d of %d fetches answered", live, streams, fetched, fetches)
}

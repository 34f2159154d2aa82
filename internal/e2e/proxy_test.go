package e2e

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/livepush/livepush/internal/proxytest"
	"github.com/livepush/livepush/subscriber"
)

// Edges behind the repository's own proxy configurations (deploy/nginx, deploy/haproxy, deploy/caddy), run by
// Debian's nginx, HAProxy and Caddy: what users copy is what is tested here.

type proxyKind struct {
	name  string
	start func(testing.TB, ...string) *proxytest.Proxy
	down  int // what the proxy answers an API request while no edge is reachable
}

var proxyKinds = append(plainHTTPProxies, proxyKind{"caddy", proxytest.StartCaddy, http.StatusServiceUnavailable})

// plainHTTPProxies are the proxies of proxyKinds that serve plain HTTP, for browser tests whose pages are http://
// (Caddy serves HTTPS only; TestHTTPSPagesOutliveEdgeLoss has Chromium behind it).
var plainHTTPProxies = []proxyKind{
	{"nginx", proxytest.StartNginx, http.StatusBadGateway},
	{"haproxy", proxytest.StartHAProxy, http.StatusServiceUnavailable},
}

// addr is the edge's host:port.
func (e *edge) addr() string { return strings.TrimPrefix(e.url, "http://") }

// restart starts the killed edge again on the same address and waits until it is ready.
func (e *edge) restart(t *testing.T) {
	t.Helper()
	e.start(e.cmd.Path)
	e.waitReady(t)
}

// streams is how many SSE and WebSocket connections the edge holds, from its /metrics.
func (e *edge) streams(t *testing.T) int {
	t.Helper()
	resp, err := http.Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	line := regexp.MustCompile(`^livepush_connections\{transport="(sse|ws)"\} (\d+)`)
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
		if m := line.FindStringSubmatch(sc.Text()); m != nil {
			k, _ := strconv.Atoi(m[2])
			n += k
		}
	}
	return n
}

// clientsVia starts one subscriber-package client per transport on url, each from its own loopback address
// (127.0.0.11, .12, .13), so that an edge behind a proxy can be seen to take the client's address from
// X-Forwarded-For.
func clientsVia(t *testing.T, p *proxytest.Proxy) []*client {
	var cls []*client
	for i, tr := range []string{subscriber.TransportSSE, subscriber.TransportWebSocket, subscriber.TransportPoll} {
		from := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(11+i))}
		transport := &http.Transport{DialContext: (&net.Dialer{LocalAddr: from}).DialContext}
		if p.Cert != nil {
			transport.TLSClientConfig = &tls.Config{RootCAs: p.Cert.Pool()}
			transport.ForceAttemptHTTP2 = true // as a browser: streams and polls over HTTP/2, WebSockets over HTTP/1.1
		}
		t.Cleanup(transport.CloseIdleConnections)
		cls = append(cls, startClient(t, tr, subscriber.Options{URLs: []string{p.URL}, Transport: tr, Topics: patterns,
			HTTPClient: &http.Client{Transport: transport}}))
	}
	return cls
}

// statusOf gets url through p and returns the answer's status, content type and the start of its body.
func statusOf(t *testing.T, p *proxytest.Proxy, url string) (int, string, string) {
	t.Helper()
	client := p.Client()
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// An edge behind a proxy with a single upstream is killed and restarted on the same address. Meanwhile the proxy
// answers API requests with its error (nginx 502, HAProxy and Caddy 503) and SSE requests with a retry stream; clients on
// SSE, WebSocket and long polling carry on once the edge is back, with every update published meanwhile exactly
// once.
func TestEdgeRestartBehindSingleUpstreamProxy(t *testing.T) {
	for _, kind := range proxyKinds {
		t.Run(kind.name, func(t *testing.T) {
			n := startNATS(t, 0, t.TempDir())
			e := startEdge(t, n.url, "-trusted-proxies", "127.0.0.1")
			p := kind.start(t, e.addr())
			ld := startLoad(t, n.url, topics, 100, 1)
			cls := clientsVia(t, p)
			waitLive(t, cls)
			from := ld.last()
			ld.waitPublished(t, 50)
			for _, remote := range []string{"127.0.0.11", "127.0.0.12"} { // the SSE and WebSocket clients
				if !strings.Contains(e.logs(), `"remote":"`+remote+`"`) {
					t.Errorf("the edge did not take the client's address %s from X-Forwarded-For:\n%s", remote, e.logs())
				}
			}

			e.signal(syscall.SIGKILL)
			if status, _, body := statusOf(t, p, p.URL+"/api/snapshot?topic=market.*"); status != kind.down {
				t.Errorf("API request with the edge down: %d %q, want %d", status, body, kind.down)
			}
			if status, ctype, body := statusOf(t, p, p.URL+"/sse?topic=market.*"); status != http.StatusOK ||
				ctype != "text/event-stream" || !strings.HasPrefix(body, "retry:") {
				t.Errorf("SSE request with the edge down: %d %s %q, want a 200 event stream asking to retry", status, ctype, body)
			}
			ld.waitPublished(t, 100)
			e.restart(t)
			ld.waitPublished(t, 100)
			acked := ld.finish()
			for _, cl := range cls {
				cl.expectExactly(t, acked, from)
				if cl.eventsOf(subscriber.Reconnecting) == 0 {
					t.Errorf("%s client never noticed its edge die", cl.name)
				}
			}
			if t.Failed() {
				t.Log(p.Logs())
			}
		})
	}
}

// Two edges behind a proxy; one is killed under load. Its clients come back through the proxy, which sends them to
// the other edge, and resume with no gap and no duplicate.
func TestEdgeLossBehindProxy(t *testing.T) {
	for _, kind := range proxyKinds {
		t.Run(kind.name, func(t *testing.T) {
			n := startNATS(t, 0, t.TempDir())
			a := startEdge(t, n.url, "-trusted-proxies", "127.0.0.1")
			b := startEdge(t, n.url, "-trusted-proxies", "127.0.0.1")
			p := kind.start(t, a.addr(), b.addr())
			ld := startLoad(t, n.url, topics, 200, 1)
			// The proxy balances requests, not streams (snapshots and polls count too), so chance decides where a
			// stream lands: clients are added until both edges hold some.
			cls := clientsVia(t, p)
			waitLive(t, cls)
			for added := 0; a.streams(t) == 0 || b.streams(t) == 0; added++ {
				if added == 8 {
					t.Fatalf("the proxy put %d streams on one edge and %d on the other: want both used", a.streams(t), b.streams(t))
				}
				more := clientsVia(t, p)
				waitLive(t, more)
				cls = append(cls, more...)
			}
			from := ld.last()
			ld.waitPublished(t, 100)

			a.signal(syscall.SIGKILL)
			ld.waitPublished(t, 300)
			acked := ld.finish()
			moved := 0
			for _, cl := range cls {
				cl.expectExactly(t, acked, from)
				moved += cl.eventsOf(subscriber.Reconnecting)
			}
			if moved == 0 {
				t.Error("no client noticed the edge die")
			}
			if t.Failed() {
				t.Log(p.Logs())
			}
		})
	}
}

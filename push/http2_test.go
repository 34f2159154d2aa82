package push

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/livepush/livepush/internal/tlscert"
	"github.com/livepush/livepush/internal/tlscert/tlscerttest"
	"github.com/livepush/livepush/subscriber/wire"
)

// Streams over HTTP/2, to Go clients that speak nothing else: over TLS (ALPN h2) and in clear text (h2c). Over
// HTTP/2 a connection cannot be taken over, so /sse writes through net/http; these tests check that such a stream
// behaves as the hijacked HTTP/1.1 one does.

// startTLSEdge runs an edge serving HTTPS with a new self-signed certificate, returned for clients to trust.
func startTLSEdge(t *testing.T, n *testNATS, cfg Config, hubOpts HubOptions) (*testEdge, tlscerttest.Pair) {
	t.Helper()
	pair := tlscerttest.New(t, "edge")
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{pair.TLSCertificate(t)}}
	return startEdge(t, n, cfg, hubOpts), pair
}

// clientFor returns a client that speaks only the given protocols and trusts the certificates given; tune, if
// given, adjusts its transport.
func clientFor(t *testing.T, protocols func(*http.Protocols), trusted []tlscerttest.Pair, tune ...func(*http.Transport)) *http.Client {
	t.Helper()
	var p http.Protocols
	protocols(&p)
	tr := &http.Transport{Protocols: &p, TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool()}}
	for _, pair := range trusted {
		tr.TLSClientConfig.RootCAs.AddCert(pair.Cert)
	}
	for _, f := range tune {
		f(tr)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func h2Only(p *http.Protocols)  { p.SetHTTP2(true) }
func h1Only(p *http.Protocols)  { p.SetHTTP1(true) }
func h2cOnly(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }

func mustProto(t *testing.T, c *sseClient, major int) {
	t.Helper()
	if c.resp.ProtoMajor != major {
		t.Fatalf("stream answered over %s, want HTTP/%d", c.resp.Proto, major)
	}
}

func TestSSEOverHTTP2SnapshotLiveAndResume(t *testing.T) {
	n := startNATS(t)
	lastAAPL := n.publish(t, "market.AAPL", quote("AAPL"))
	lastMSFT := n.publish(t, "market.MSFT", quote("MSFT"))
	e, pair := startTLSEdge(t, n, Config{}, HubOptions{})
	e.waitHead(t, lastMSFT)
	client := clientFor(t, h2Only, []tlscerttest.Pair{pair})

	c := openSSEWith(t, client, e.url, url.Values{"topic": {"market.*"}}, nil)
	mustProto(t, c, 2)
	for h, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
		"X-Accel-Buffering": "no"} {
		if got := c.resp.Header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	if first, second := c.next(t), c.next(t); first.Cursor != lastAAPL || second.Cursor != lastMSFT {
		t.Fatalf("snapshot %+v, %+v; want market.AAPL at %d then market.MSFT at %d", first, second, lastAAPL, lastMSFT)
	}
	// A second stream on the same client shares its connection.
	sports := openSSEWith(t, client, e.url, url.Values{"topic": {"sports.>"}}, nil)
	mustProto(t, sports, 2)

	var last uint64
	for i := range 10 {
		want := n.publish(t, "market.NVDA", quote("NVDA"))
		wantScore := n.publish(t, "sports.nba.g-0001", score("nba", "g-0001", i, 0))
		if r := c.next(t); r.Cursor != want || r.Topic != "market.NVDA" {
			t.Fatalf("live: got %s at %d, want market.NVDA at %d", r.Topic, r.Cursor, want)
		}
		if r := sports.next(t); r.Cursor != wantScore {
			t.Fatalf("live on the second stream: got %s at %d, want %d", r.Topic, r.Cursor, wantScore)
		}
		last = want
	}

	// Gone for a while; back with Last-Event-ID: what was missed, nothing twice, then live.
	c.close()
	e.waitSubscribers(t, 1)
	var missed []uint64
	for range 5 {
		missed = append(missed, n.publish(t, "market.AAPL", quote("AAPL")))
	}
	c = openSSEWith(t, client, e.url, url.Values{"topic": {"market.*"}},
		http.Header{"Last-Event-ID": {fmt.Sprint(last)}})
	mustProto(t, c, 2)
	for _, want := range missed {
		if r := c.next(t); r.Cursor != want {
			t.Fatalf("resumed after %d: got %s at %d, want %d", last, r.Topic, r.Cursor, want)
		}
	}
	want := n.publish(t, "market.MSFT", quote("MSFT"))
	if r := c.next(t); r.Cursor != want {
		t.Fatalf("live after the resume: got %s at %d, want %d", r.Topic, r.Cursor, want)
	}
}

func TestSSEOverHTTP2HeartbeatsOutlastTheWriteTimeout(t *testing.T) {
	// Over HTTP/2 a write deadline resets the stream when it passes, even while nothing is being written: an idle
	// stream, silent for longer than the write timeout between heartbeats, must survive.
	n := startNATS(t)
	e, pair := startTLSEdge(t, n, Config{}, HubOptions{Heartbeat: 600 * time.Millisecond,
		WriteTimeout: 250 * time.Millisecond})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/sse?topic=market.QUIET", nil)
	resp, err := clientFor(t, h2Only, []tlscerttest.Pair{pair}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("answered over %s, want HTTP/2", resp.Proto)
	}
	got := make(chan string, 1)
	go func() {
		var all strings.Builder
		buf := make([]byte, 4096)
		for {
			k, err := resp.Body.Read(buf)
			all.Write(buf[:k])
			if strings.Contains(all.String(), `"symbol":"QUIET"`) || err != nil { // past the hello's "no updates yet for market.QUIET"
				got <- fmt.Sprintf("%s (%v)", all.String(), err)
				return
			}
			if strings.Count(all.String(), ": heartbeat") == 3 {
				n.publish(t, "market.QUIET", quote("QUIET"))
			}
		}
	}()
	select {
	case s := <-got:
		if strings.Count(s, ": heartbeat") < 3 || !strings.Contains(s, `"symbol":"QUIET"`) {
			t.Fatalf("want three heartbeats then the update, got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no three heartbeats and an update within 10s")
	}
}

func TestSSEOverHTTP2ClientLeavingIsNoticed(t *testing.T) {
	n := startNATS(t)
	e, pair := startTLSEdge(t, n, Config{}, HubOptions{})
	client := clientFor(t, h2Only, []tlscerttest.Pair{pair})
	leaving := openSSEWith(t, client, e.url, url.Values{"topic": {"market.*"}}, nil)
	staying := openSSEWith(t, client, e.url, url.Values{"topic": {"market.*"}}, nil)
	mustProto(t, leaving, 2)
	e.waitSubscribers(t, 2)
	before := testutilDisconnects(e, reasonClientGone)

	leaving.close() // resets the stream; the connection stays for the other one
	e.waitSubscribers(t, 1)
	if got := testutilDisconnects(e, reasonClientGone); got != before+1 {
		t.Errorf("client_gone disconnects %v, want %v", got, before+1)
	}
	want := n.publish(t, "market.AAPL", quote("AAPL"))
	if r := staying.next(t); r.Cursor != want {
		t.Fatalf("the stream left on the connection got %d, want %d", r.Cursor, want)
	}
}

func testutilDisconnects(e *testEdge, reason closeReason) float64 {
	return testutil.ToFloat64(e.hub.metrics.disconnects.WithLabelValues(reason.err))
}

func TestSSEOverHTTP2DrainSendsCloseEvent(t *testing.T) {
	n := startNATS(t)
	const drain = 8 * time.Second
	e, pair := startTLSEdge(t, n, Config{DrainTimeout: drain}, HubOptions{})
	h2 := openSSEWith(t, clientFor(t, h2Only, []tlscerttest.Pair{pair}), e.url, url.Values{"topic": {"market.*"}}, nil)
	mustProto(t, h2, 2)
	// An HTTP/1.1 client on the same TLS port gets the hijacked stream; it must be told the same.
	h1 := openSSEWith(t, clientFor(t, h1Only, []tlscerttest.Pair{pair}), e.url, url.Values{"topic": {"market.*"}}, nil)
	mustProto(t, h1, 1)
	e.waitSubscribers(t, 2)
	want := n.publish(t, "market.AAPL", quote("AAPL"))
	for _, c := range []*sseClient{h2, h1} {
		if r := c.next(t); r.Cursor != want {
			t.Fatalf("got %d, want %d", r.Cursor, want)
		}
	}

	began := time.Now()
	stopped := make(chan struct{})
	go func() { e.stop(); close(stopped) }()
	for name, c := range map[string]*sseClient{"HTTP/2": h2, "HTTP/1.1": h1} {
		r := c.next(t)
		var body struct{ Reason string }
		if r.Kind != "close" || json.Unmarshal([]byte(r.Data), &body) != nil || body.Reason != reasonRestart.err {
			t.Fatalf("%s: got %+v, want a close event with reason %s", name, r, reasonRestart.err)
		}
		select {
		case r, ok := <-c.events:
			if ok {
				t.Fatalf("%s: %+v after the close event, want the stream to end", name, r)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: stream still open 5s after its close event", name)
		}
	}
	select {
	case <-stopped:
		// Shutdown waits for HTTP/2 handlers: if the stream's handler had not returned after its close event,
		// the edge would have waited for the whole drain timeout.
		if took := time.Since(began); took > drain/2 {
			t.Errorf("drain took %v: the HTTP/2 stream's handler kept it waiting", took)
		}
	case <-time.After(drain + 5*time.Second):
		t.Fatal("the edge did not stop")
	}
}

func TestSSEOverHTTP2SlowStreamIsCutAloneOnItsConnection(t *testing.T) {
	const topics, size = 10, 8 << 10
	n := startNATS(t)
	e, pair := startTLSEdge(t, n, Config{}, HubOptions{QueueLimit: 16, SlowTimeout: time.Second,
		CloseGrace: time.Second, ReplayBuffer: 64})
	// Flow control holds 64 KiB per stream at the client: a stream nobody reads stops the edge's writes soon.
	client := clientFor(t, h2Only, []tlscerttest.Pair{pair}, func(tr *http.Transport) {
		tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10}
	})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/sse?topic=market.*", nil)
	stuck, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Body.Close()
	reader := openSSEWith(t, client, e.url, url.Values{"topic": {"market.*"}}, nil)
	mustProto(t, reader, 2)
	e.waitSubscribers(t, 2)

	before := e.hub.metrics.slowDisconnects()
	var last uint64
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; e.hub.metrics.slowDisconnects() == before; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the stream nobody reads was never disconnected as slow")
		}
		sym := fmt.Sprintf("S%02d", i%topics)
		last = n.publish(t, "market."+sym, bigQuote(sym, i, size))
		for drained := false; !drained; { // the reading stream keeps up
			select {
			case <-reader.events:
			default:
				drained = true
			}
		}
	}
	e.waitSubscribers(t, 1)

	// The stuck stream ends: what flow control let through, then a reset or the end.
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, stuck.Body)
		ended <- err
	}()
	select {
	case err := <-ended:
		t.Logf("the stuck stream ended with %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the stuck stream was not ended")
	}
	// Its neighbour on the same connection is still live and gets the newest update.
	for {
		r := reader.next(t)
		if r.Cursor == last {
			break
		}
	}
	want := n.publish(t, "market.AAPL", quote("AAPL"))
	for {
		if r := reader.next(t); r.Cursor == want {
			break
		}
	}
}

func TestH2CBesideHTTP1OnOnePort(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{H2C: true}, HubOptions{})
	h2c := openSSEWith(t, clientFor(t, h2cOnly, nil), e.url, url.Values{"topic": {"market.*"}}, nil)
	mustProto(t, h2c, 2)
	h1 := openSSE(t, e.url, url.Values{"topic": {"market.*"}}, nil)
	mustProto(t, h1, 1)
	e.waitSubscribers(t, 2)
	for range 3 {
		want := n.publish(t, "market.AAPL", quote("AAPL"))
		for name, c := range map[string]*sseClient{"h2c": h2c, "HTTP/1.1": h1} {
			if r := c.next(t); r.Cursor != want {
				t.Fatalf("%s: got %d, want %d", name, r.Cursor, want)
			}
		}
	}

	// Without the option, an h2c client gets nowhere.
	plain := startEdge(t, n, Config{}, HubOptions{})
	resp, err := clientFor(t, h2cOnly, nil).Get(plain.url + "/healthz")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("h2c to an edge without -h2c: %s over %s, want a failure", resp.Status, resp.Proto)
	}
}

func TestWebSocketBesideHTTP2(t *testing.T) {
	n := startNATS(t)
	e, pair := startTLSEdge(t, n, Config{}, HubOptions{})

	// Over HTTP/2 there is no upgrade: a clear refusal, not a crash.
	resp, err := clientFor(t, h2Only, []tlscerttest.Pair{pair}).Get(e.url + "/ws?topic=market.*")
	if err != nil {
		t.Fatal(err)
	}
	var body wire.ErrorBody
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusHTTPVersionNotSupported || body.Code != "http_version_not_supported" {
		t.Errorf("GET /ws over %s: %s %+v, want 505 http_version_not_supported over HTTP/2", resp.Proto, resp.Status, body)
	}

	// Over HTTP/1.1 on the same port, as browsers do: a working WebSocket.
	h1 := clientFor(t, h1Only, []tlscerttest.Pair{pair})
	conn, _, err := websocket.Dial(t.Context(), "wss"+strings.TrimPrefix(e.url, "https")+"/ws?topic=market.AAPL",
		&websocket.DialOptions{HTTPClient: h1})
	if err != nil {
		t.Fatalf("wss over HTTP/1.1: %v", err)
	}
	defer conn.CloseNow()
	read := func() wsMessage {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m wsMessage
		if err := json.Unmarshal([]byte(strings.SplitN(string(data), "\n", 2)[0]), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := read(); m.Type != "subscribed" {
		t.Fatalf("first message %+v, want subscribed", m)
	}
	want := n.publish(t, "market.AAPL", quote("AAPL"))
	if m := read(); m.Type != "update" || m.Cursor != fmt.Sprint(want) {
		t.Fatalf("got %+v, want the update at %d", m, want)
	}
}

func TestCertificateReloadOnARunningEdge(t *testing.T) {
	n := startNATS(t)
	first, second := tlscerttest.New(t, "first"), tlscerttest.New(t, "second")
	certFile, keyFile := first.WriteFiles(t)
	certs, err := tlscert.New(tlscert.Config{CertFile: certFile, KeyFile: keyFile, CheckEvery: 50 * time.Millisecond,
		Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, n, Config{TLS: certs.TLSConfig()}, HubOptions{})
	trusted := []tlscerttest.Pair{first, second}
	stream := openSSEWith(t, clientFor(t, h2Only, trusted), e.url, url.Values{"topic": {"market.*"}}, nil)
	mustProto(t, stream, 2)

	// served is the certificate a new connection sees.
	served := func() string {
		resp, err := clientFor(t, h2Only, trusted).Get(e.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "first" {
		t.Fatalf("served %q, want first", got)
	}
	second.Write(t, certFile, keyFile)
	deadline := time.Now().Add(5 * time.Second)
	for served() != "second" {
		if time.Now().After(deadline) {
			t.Fatal("new connections still see the first certificate 5s after the files changed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The stream opened before goes on.
	want := n.publish(t, "market.AAPL", quote("AAPL"))
	if r := stream.next(t); r.Cursor != want {
		t.Fatalf("stream opened before the reload got %d, want %d", r.Cursor, want)
	}
}

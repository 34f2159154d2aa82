package push

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/natstest"
	"github.com/livepush/livepush/internal/stream"
)

// The tests run real parts: an embedded nats-server with JetStream, edges serving on loopback ports, and real SSE
// and WebSocket clients.

func testLogger(testing.TB) *slog.Logger { return natstest.Logger() }

// testNATS is an embedded nats-server with the stream (natstest), as every edge here follows it.
type testNATS struct {
	*natstest.NATS
}

func startNATS(t testing.TB) *testNATS {
	t.Helper()
	return &testNATS{natstest.Start(t, stream.Config{Name: "LIVEPUSH"})}
}

// publish stores payload under topic through JetStream and returns its cursor.
func (n *testNATS) publish(t testing.TB, topic string, payload string) uint64 {
	t.Helper()
	return n.Publish(t, topic, payload)
}

var quoteSeq atomic.Int64

// quote returns a quote payload for symbol with a distinct price each call.
func quote(symbol string) string {
	seq := quoteSeq.Add(1)
	return fmt.Sprintf(`{"topic":"market.%s","kind":"quote","symbol":"%s","price":%d.25,"ts":"%s"}`,
		symbol, symbol, 100+seq, time.Now().UTC().Format(time.RFC3339Nano))
}

func score(league, match string, home, away int) string {
	return fmt.Sprintf(`{"topic":"sports.%s.%s","kind":"score","league":"%s","match":"%s","home":{"name":"A","score":%d},`+
		`"away":{"name":"B","score":%d},"status":"live","ts":"%s"}`,
		league, match, league, match, home, away, time.Now().UTC().Format(time.RFC3339Nano))
}

type testEdge struct {
	url    string // http://127.0.0.1:port, or https:// with cfg.TLS
	hub    *Hub
	stop   func()
	client *http.Client // for waitReady; nil: http.DefaultClient
}

// startEdge runs an edge on a loopback port against n and waits until it is ready.
func startEdge(t testing.TB, n *testNATS, cfg Config, hubOpts HubOptions) *testEdge {
	t.Helper()
	return startEdgeOn(t, n, listen(t, "127.0.0.1:0"), cfg, hubOpts)
}

// listen listens on addr, retrying a little: a port an edge just released may take a moment to be free.
func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal(err)
	return nil
}

// startEdgeOn runs an edge on ln; tune, if given, adjusts its source before it starts.
func startEdgeOn(t testing.TB, n *testNATS, ln net.Listener, cfg Config, hubOpts HubOptions, tune ...func(*Source)) *testEdge {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = testLogger(t)
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 2 * time.Second
	}
	src := NewSource(n.JS, n.Stream, cfg.Log)
	hubOpts.History = src
	hub := NewHub(hubOpts)
	for _, f := range tune {
		f(src)
	}
	srv := NewServer(cfg, hub, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("edge stopped with %v", err)
			}
		})
	}
	t.Cleanup(stop)
	e := &testEdge{url: "http://" + ln.Addr().String(), hub: hub, stop: stop}
	if cfg.TLS != nil {
		e.url = "https://" + ln.Addr().String()
		e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	e.waitReady(t)
	return e
}

func (e *testEdge) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		client := e.client
		if client == nil {
			client = http.DefaultClient
		}
		resp, err := client.Get(e.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge not ready after 10s (last: %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSubscribers waits until the edge has k connections.
func (e *testEdge) waitSubscribers(t testing.TB, k int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.hub.Stats().Subscribers != k {
		if time.Now().After(deadline) {
			t.Fatalf("edge has %d connections, want %d", e.hub.Stats().Subscribers, k)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitHead waits until the edge has seen the update with cursor seq.
func (e *testEdge) waitHead(t testing.TB, seq uint64) {
	t.Helper()
	e.waitHeadWithin(t, seq, 5*time.Second)
}

// waitHeadWithin waits up to d until the edge has seen the update with cursor seq.
func (e *testEdge) waitHeadWithin(t testing.TB, seq uint64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for e.hub.Head() < seq {
		if time.Now().After(deadline) {
			t.Fatalf("edge head %d, want %d", e.hub.Head(), seq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// received is an update as a client saw it on any transport.
type received struct {
	Kind   string
	Topic  string
	Cursor uint64
	Data   string
}

func mustCursor(t testing.TB, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("cursor %q: %v", s, err)
	}
	return n
}

func topicOf(t testing.TB, data string) string {
	t.Helper()
	var p struct{ Topic string }
	if err := json.Unmarshal([]byte(data), &p); err != nil {
		t.Fatalf("payload %q: %v", data, err)
	}
	return p.Topic
}

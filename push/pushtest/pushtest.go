// Package pushtest runs real Livepush edges for tests of code that subscribes: an embedded nats-server with
// JetStream, and edges (package push) serving on loopback ports that can be stopped and started again on the same
// address, as an edge restart or an outage looks to a client.
package pushtest

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/livepush/livepush/internal/natstest"
	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/push"
)

// Logger returns the logger tests give edges and clients: silent unless LIVEPUSH_TEST_LOG is set.
func Logger() *slog.Logger { return natstest.Logger() }

// NATS is an embedded nats-server holding the stream: NC and JS connect to it in process, URL over TCP.
type NATS struct {
	*natstest.NATS
}

// StartNATS starts a nats-server with its own storage and creates the stream with cfg; it stops at the end of the
// test.
func StartNATS(t testing.TB, cfg stream.Config) *NATS {
	t.Helper()
	return &NATS{natstest.Start(t, cfg)}
}

// Quote returns a quote payload in the feeds' format.
func Quote(symbol string, price float64) string { return natstest.Quote(symbol, price) }

// Score returns a score payload in the feeds' format.
func Score(league, match string, home, away int) string {
	return natstest.Score(league, match, home, away)
}

// Edge is an edge serving on a loopback port.
type Edge struct {
	URL    string // http://127.0.0.1:port, or https:// with push.Config.TLS
	Addr   string // 127.0.0.1:port
	Hub    *push.Hub
	client *http.Client
	stop   func()
}

// StartEdge runs an edge against n on addr ("127.0.0.1:0" for any free port) and waits until it is ready; opts
// configure its source (push.WithContract, say). It stops at the end of the test, if Stop has not been called.
func (n *NATS) StartEdge(t testing.TB, addr string, cfg push.Config, hubOpts push.HubOptions, opts ...push.SourceOption) *Edge {
	t.Helper()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// The address of an edge just stopped may take a moment to free.
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log == nil {
		cfg.Log = Logger()
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 2 * time.Second
	}
	src := push.NewSource(n.JS, n.Stream, cfg.Log, opts...)
	hubOpts.History = src
	hub := push.NewHub(hubOpts)
	srv := push.NewServer(cfg, hub, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	var once sync.Once
	e := &Edge{URL: "http://" + ln.Addr().String(), Addr: ln.Addr().String(), Hub: hub, client: http.DefaultClient}
	if cfg.TLS != nil {
		e.URL = "https://" + ln.Addr().String()
		// The listener is the test's own: what answers on it is this edge, whatever certificate it shows.
		e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("edge %s stopped with %v", e.Addr, err)
			}
		})
	}
	t.Cleanup(e.stop)
	e.waitReady(t)
	return e
}

// Stop drains the edge (clients are told to reconnect) and waits until it has stopped.
func (e *Edge) Stop() { e.stop() }

func (e *Edge) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := e.client.Get(e.URL + "/readyz")
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

// WaitHead waits until the edge has seen the update with cursor seq.
func (e *Edge) WaitHead(t testing.TB, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.Hub.Head() < seq {
		if time.Now().After(deadline) {
			t.Fatalf("edge head %d, want %d", e.Hub.Head(), seq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tokenSecret signs the tokens of Token; Authenticator checks them.
var tokenSecret = []byte("pushtest: a secret long enough for HS256")

// Authenticator returns an edge authenticator (push.Config.Auth) that checks the tokens Token makes.
func Authenticator(t testing.TB) *push.Authenticator {
	t.Helper()
	a, err := push.NewAuthenticator(push.AuthConfig{HMACSecret: tokenSecret})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Token returns a token for Authenticator's edges that allows topics and expires after ttl (to the second).
func Token(topics []string, ttl time.Duration) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"topics": topics, "exp": time.Now().Add(ttl).Unix(),
	}).SignedString(tokenSecret)
}

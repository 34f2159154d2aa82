// Package natstest runs the NATS side of Livepush for tests: an embedded nats-server with JetStream holding the
// stream, reachable in process and on a loopback port it takes itself, and the payloads the feeds publish. Every
// test package that needs NATS starts it here: push's own tests, push/pushtest (and through it the cmd and web
// tests), the stream reader's.
package natstest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/internal/natsconn"
	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/internal/testlog"
)

// Logger is testlog.Logger, for what the tests start alongside NATS.
func Logger() *slog.Logger { return testlog.Logger() }

// NATS is an embedded nats-server holding the stream, with a connection to it.
type NATS struct {
	Server *natsconn.Embedded
	NC     *nats.Conn
	JS     jetstream.JetStream
	Stream stream.Config
	URL    string // where TCP clients (a process of its own, say) reach it: a loopback port the server chose
}

// Start starts a nats-server with storage of its own, connects to it and creates the stream with cfg; all of it
// stops at the end of the test.
func Start(t testing.TB, cfg stream.Config) *NATS {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Ensure(t.Context(), js, cfg, Logger()); err != nil {
		t.Fatal(err)
	}
	return &NATS{Server: srv, NC: nc, JS: js, Stream: cfg, URL: srv.ClientURL()}
}

// Publish stores payload under topic and returns its cursor.
func (n *NATS) Publish(t testing.TB, topic, payload string) uint64 {
	t.Helper()
	ack, err := n.JS.Publish(t.Context(), topic, []byte(payload))
	if err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return ack.Sequence
}

// PublishMany stores count messages, message(i) giving each one's subject and payload, acknowledged in windows so
// that never too many wait for their acknowledgement at once. It returns the last cursor.
func (n *NATS) PublishMany(t testing.TB, count int, message func(i int) (subject, payload string)) (last uint64) {
	t.Helper()
	var acks []jetstream.PubAckFuture
	wait := func() {
		select {
		case <-n.JS.PublishAsyncComplete():
		case <-time.After(time.Minute):
			t.Fatal("publishes not acknowledged within a minute")
		}
		for _, a := range acks {
			select {
			case ack := <-a.Ok():
				last = max(last, ack.Sequence)
			case err := <-a.Err():
				t.Fatalf("publish %s: %v", a.Msg().Subject, err)
			}
		}
		acks = acks[:0]
	}
	for i := range count {
		subject, payload := message(i)
		a, err := n.JS.PublishAsync(subject, []byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		if acks = append(acks, a); len(acks) == 1000 {
			wait()
		}
	}
	wait()
	return last
}

// Consumers returns how many consumers the stream has.
func (n *NATS) Consumers(t testing.TB) int {
	t.Helper()
	c, err := n.ConsumerCount(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ConsumerCount is Consumers for a goroutine other than the test's, which must not call t.Fatal: the error is the
// caller's to judge.
func (n *NATS) ConsumerCount(ctx context.Context) (int, error) {
	str, err := n.JS.Stream(ctx, n.Stream.StreamName())
	if err != nil {
		return 0, err
	}
	return str.CachedInfo().State.Consumers, nil
}

// Quote returns a quote payload in the feeds' format.
func Quote(symbol string, price float64) string {
	return fmt.Sprintf(`{"topic":"market.%s","kind":"quote","symbol":"%s","price":%g,"bid":%g,"ask":%g,"open":100,`+
		`"change":%g,"changePct":1.5,"volume":1234567,"ts":"%s"}`, symbol, symbol, price, price-0.01, price+0.01,
		price-100, time.Now().UTC().Format(time.RFC3339Nano))
}

// Score returns a score payload in the feeds' format.
func Score(league, match string, home, away int) string {
	return fmt.Sprintf(`{"topic":"sports.%s.%s","kind":"score","league":"%s","match":"%s","home":{"name":"Lakers",`+
		`"score":%d},"away":{"name":"Celtics","score":%d},"period":"Q3","clock":"07:42","status":"live",`+
		`"event":"3PT Curry","ts":"%s"}`, league, match, league, match, home, away,
		time.Now().UTC().Format(time.RFC3339Nano))
}

package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/internal/natsconn/natsconntest"
	"github.com/livepush/livepush/internal/stream"
)

// The publisher reaches a NATS that wants a user and password, given as the edge takes them; the report names the
// server without the password.
func TestPublisherJoinsSecuredNATS(t *testing.T) {
	s := natsconntest.Start(t, natsconntest.Options{Auth: natsconntest.UserPassword, TLS: true})
	env := map[string]string{"NATS_URL": s.URL, "NATS_USER": s.User, "NATS_PASSWORD": s.Password, "NATS_CA": s.CAFile}
	cfg, err := parseConfig([]string{"-publish-rate", "10", "-symbols", "3"}, func(k string) string { return env[k] }, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS != s.URL {
		t.Errorf("report's NATS = %q, want %q", cfg.NATS, s.URL)
	}

	// The stream, as an edge would create it.
	nc, err := cfg.natsConn.Connect("edge", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := stream.Ensure(t.Context(), js, stream.Config{}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}

	p, err := dialPublisher(t.Context(), cfg, "run1")
	if err != nil {
		t.Fatalf("dialPublisher: %v", err)
	}
	defer p.close()
	for i := range 3 {
		p.publish(i)
	}
	if !p.wait(5*time.Second) || p.acked.Load() != 3 {
		t.Errorf("%d of 3 publishes acknowledged, %d failed", p.acked.Load(), p.failed.Load())
	}
}

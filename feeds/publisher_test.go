package feeds

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/internal/natsconn"
	"github.com/livepush/livepush/internal/stream"
)

// The simulators publish through a NATS restart: every update is acknowledged, none is lost, none is stored twice.
func TestFeedsRideThroughNATSRestart(t *testing.T) {
	addr, dir := "127.0.0.1:0", t.TempDir()
	start := func() *natsconn.Embedded {
		t.Helper()
		ns, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{StoreDir: dir, Listen: addr})
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}
	ns := start() // on a free port, which the restart below takes again: the clients' one address
	addr = strings.TrimPrefix(ns.ClientURL(), "nats://")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, err := natsconn.Connect("nats://"+addr, "feeds-test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cfg := stream.Config{}
	if _, err := stream.Ensure(t.Context(), js, cfg, log); err != nil {
		t.Fatal(err)
	}
	pub := NewPublisher(js, 30*time.Second, log)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Market: MarketConfig{Rate: 200, Seed: 1}, NoSports: true}, pub.Publish, log)
	}()
	waitPublished := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for pub.Stats().Published < n {
			if time.Now().After(deadline) {
				t.Fatalf("published %+v, want %d", pub.Stats(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitPublished(100)

	ns.Stop() // NATS goes away mid-stream, longer than one publish attempt waits for its acknowledgement...
	time.Sleep(3 * time.Second)
	during := pub.Stats()
	ns = start() // ...and comes back on the same storage.
	defer ns.Stop()
	waitPublished(during.Published + 100)
	cancel()
	<-done

	st := pub.Stats()
	if st.Retried == 0 {
		t.Errorf("no publish was retried across the outage: %+v", st)
	}
	if st.Failed != 0 {
		t.Errorf("%d updates lost across a 3s outage", st.Failed)
	}
	// Every acknowledged update is in the stream once.
	str, err := js.Stream(t.Context(), cfg.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	if got := str.CachedInfo().State.Msgs; got != st.Published {
		t.Errorf("stream holds %d updates, publisher acknowledged %d", got, st.Published)
	}
}

// Publish gives up after its retry budget, and says so.
func TestPublishFailsLoudlyWhenNATSStaysAway(t *testing.T) {
	ns, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, _ := natsconn.Connect(ns.ClientURL(), "feeds-test", log)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream.Ensure(t.Context(), js, stream.Config{}, log)
	ns.Stop()
	pub := NewPublisher(js, 500*time.Millisecond, log)
	_, err = pub.Publish(t.Context(), "market.AAPL", []byte(`{"n":`+strconv.Itoa(1)+`}`))
	if err == nil || pub.Stats().Failed != 1 {
		t.Fatalf("publish with NATS away: %v, stats %+v; want ErrPublishFailed counted", err, pub.Stats())
	}
}
